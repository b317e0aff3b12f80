"""Benchmark of the full volume pipeline: pyramid, coarse-to-fine flow, warp, on a generated pair.

For each volume shape: generate a float32 3-D reference (a smooth random texture) and a moving
volume deformed by a smooth displacement several times larger than the tiles' halo (zarr, 64³
chunks), then run on an embedded LocalCluster

* ``chunkreg.compute_flow`` (iLK unless ``--method``, coarse to fine with ``levels="auto"``),
  reporting each of its stages — pyramid, coarsest level, tiles, blend (+ QC) — with wall time
  and throughput;
* ``chunkreg.warp_volume`` of the moving volume by that flow;

and the peak RSS per worker (the workers are restarted between steps, so each figure belongs
to one step), the endpoint error of the flow against the known truth (over the whole volume
and 16 voxels inside its faces), and the mean |registered - reference| against the
unregistered |moving - reference|. A single-level run with the same tiles and halo
(``--single``) shows what the coarse level buys.

Nothing is ever held whole in memory (neither in this process nor in a task), so the sizes
are bounded by disk, not RAM. The pair is analytic (``_synthetic.py``): the texture is a sum of
plane waves with periods of 4 to 256 voxels and the displacement a sum of one-axis sinusoids,
so the reference, the moving volume and the true flow can each be computed exactly for any
block of voxels. Generation and evaluation run as tasks on the benchmark's cluster, one block
of 64 x 256 x 256 voxels (16 chunks) per task: each generation task writes its own chunks of
both volumes and returns its sum of |moving - reference|; each evaluation task computes the
true flow of its block (fixed-point iteration), reads the flows, the reference and the
registered volume there and returns partial sums of the errors, which this process adds up.

Disk: a 1024³ pair (4 GiB per volume) needs about 36-41 GiB at the peak: the pair, the flow
(12 GiB), the pyramid, and level 0's scratch (every tile's blend region: 13-19 GiB with tiles of
256³ down to 64³) until it is blended; 12 GiB more plus a second scratch with ``--single``. The
script prints its estimate and stops before generating anything if ``--dir`` has less free.
Generated data are deleted afterwards.

Usage::

    python benchmarks/bench_volume_pipeline.py --shapes 96x192x192 --workers 1
    python benchmarks/bench_volume_pipeline.py --shapes 128x256x256,128x384x384 --amplitude 12
    python benchmarks/bench_volume_pipeline.py --shapes 1024x1024x1024 --workers 2 \\
        --tile 128 --dir /big/disk --progress
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import zarr
from _common import peak_rss_mib
from _synthetic import blocks, evaluate_block, generate_block, make_pair

from chunkreg.execution import open_client, run_tasks
from chunkreg.volume import compute_flow, plan_flow, warp_volume

CHUNK = 64
#: Region of one generation or evaluation task (16 chunks, 16 MiB of each volume).
BLOCK = (CHUNK, 4 * CHUNK, 4 * CHUNK)
#: Evaluation "inside": this many voxels away from every face.
MARGIN = 16
GIB = 2**30

_START = time.perf_counter()


def log(message: str) -> None:
    """A progress line, with the time since the script started."""
    print(f"# [{time.perf_counter() - _START:6.0f} s] {message}", flush=True)


def _create_inputs(root: Path, shape) -> list[str]:
    """Empty reference and moving arrays (metadata only; the chunks are written by tasks)."""
    paths = []
    for name in ("reference", "moving"):
        path = str(root / f"{name}.zarr")
        zarr.create_array(path, shape=shape, dtype="float32", chunks=(CHUNK,) * 3)
        paths.append(path)
    return paths


def _plans(paths, args):
    kwargs = {"tile": args.tile, "method": args.method, "levels": args.levels}
    if args.method == "ilk":
        kwargs["radius"] = args.radius
    if args.overlap is not None:
        kwargs["overlap"] = args.overlap
    plan = plan_flow(*paths, **kwargs)
    single_kwargs = {**kwargs, "levels": 1, "overlap": plan.grid.depth}
    single = plan_flow(*paths, **single_kwargs) if args.single else None
    return kwargs, single_kwargs, plan, single


def disk_needed(plan, single) -> tuple[dict[str, int], int]:
    """Bytes each part of one run writes (uncompressed, from the plans), and the peak on disk.

    The scratch of a level is deleted once it is blended, before the warp; the rest stays
    until the end of the run.
    """
    volume = math.prod(plan.shape) * 4
    disk = plan.disk_bytes
    parts = {
        "pair": 2 * volume,
        "pyramid + coarse flows": disk["coarse"],
        "flow": disk["flow"],
        "flow scratch": disk["scratch"],
        "registered": volume,
    }
    after = volume
    if single is not None:
        one = single.disk_bytes
        parts["single-level flow + scratch"] = one["flow"] + one["scratch"]
        after += parts["single-level flow + scratch"]
    peak = 2 * volume + disk["flow"] + disk["coarse"] + max(disk["scratch"], after)
    return parts, peak


def _check_disk(shapes, args) -> None:
    """Plan every shape (metadata only) and stop unless the largest run fits on the disk."""
    where = args.dir or tempfile.gettempdir()
    worst = (-1, None, None)
    for shape in shapes:
        root = Path(tempfile.mkdtemp(prefix="bench-pipeline-plan-", dir=args.dir))
        try:
            *_, plan, single = _plans(_create_inputs(root, shape), args)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        parts, peak = disk_needed(plan, single)
        peak = int(1.05 * peak) + GIB // 4
        if peak > worst[0]:
            worst = (peak, shape, parts)
    peak, shape, parts = worst
    name = "x".join(map(str, shape))
    free = shutil.disk_usage(where).free
    detail = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items())
    log(f"disk: the largest run ({name}) needs up to {peak / GIB:.1f} GiB at its peak in "
        f"{where} ({detail} GiB; the flow scratch is deleted before the warp; +5% and "
        f"0.25 GiB slack); {free / GIB:.1f} GiB free")  # fmt: skip
    if peak > free:
        raise SystemExit(
            f"not enough disk: a {name} run needs up to {peak / GIB:.1f} GiB but {where} has "
            f"{free / GIB:.1f} GiB free; point --dir at a disk with room, use larger tiles "
            "(less scratch), or run smaller shapes."
        )


def _run_blocks(client, func, tasks, label: str):
    """Run one task per block; return (wall seconds, results in completion order)."""
    results = []
    every = max(1, len(tasks) // 10)

    def on_result(_, result):
        results.append(result)
        if len(results) % every == 0 or len(results) == len(tasks):
            log(f"  {label}: {len(results)}/{len(tasks)} blocks")

    report = run_tasks(func, tasks, client=client, label=label, progress=False,
                       on_result=on_result, describe=lambda task: f"block {task[0]}")  # fmt: skip
    report.raise_if_failed()
    return report.wall_time, results


def _per_chunk_ms(seconds: float, voxels: int) -> float:
    return 1e3 * seconds / voxels * CHUNK**3


def _projection(per_chunk_ms: float, workers: int) -> str:
    """Time of the same per-chunk work on a 1024³ volume (4096 chunks).

    The rate includes each worker's first, slower task: small runs over-estimate.
    """
    seconds = per_chunk_ms * 1e-3 * 16**3 / workers
    return f"at this rate ~{seconds:.0f} s for 1024³ with {workers} worker(s)"


def generate(client, pair, paths, args) -> tuple[float, float]:
    """Write both volumes block by block; return (wall seconds, mean |moving - reference|)."""
    tasks = [(region, pair, *paths) for region in blocks(pair.shape, BLOCK)]
    log(f"generating the pair: {len(tasks)} blocks of {BLOCK} voxels")
    wall, results = _run_blocks(client, generate_block, tasks, "generate")
    voxels = math.prod(pair.shape)
    compute = _per_chunk_ms(sum(r["compute_s"] for r in results), voxels)
    write = _per_chunk_ms(sum(r["write_s"] for r in results), voxels)
    log(f"generated in {wall:.1f} s; per 64³ chunk of both volumes {compute:.1f} ms compute + "
        f"{write:.1f} ms zarr write: {_projection(compute + write, args.workers)}")  # fmt: skip
    return wall, sum(r["abs_diff"] for r in results) / voxels


def evaluate(client, pair, flows, reference, registered, args) -> tuple[float, dict]:
    """Endpoint errors and mean |registered - reference|, from per-block partial sums."""
    tasks = [(region, pair, flows, reference, registered, MARGIN)
             for region in blocks(pair.shape, BLOCK)]  # fmt: skip
    log(f"evaluating: {len(tasks)} blocks")
    wall, results = _run_blocks(client, evaluate_block, tasks, "evaluate")
    voxels = sum(r["voxels"] for r in results)
    inside = sum(r["voxels_inside"] for r in results)
    out = {}
    for name in ("none", *flows):
        total = [sum(r[f"epe:{name}"][i] for r in results) for i in (0, 1)]
        out[name] = (total[0] / voxels, total[1] / inside if inside else float("nan"))
    out["after"] = sum(r["abs_diff"] for r in results) / voxels
    truth = _per_chunk_ms(sum(r["truth_s"] for r in results), voxels)
    total = _per_chunk_ms(sum(r["seconds"] for r in results), voxels)
    log(f"evaluated in {wall:.1f} s; true flow: at most {max(r['iterations'] for r in results)} "
        f"fixed-point iterations, last change <= {max(r['change'] for r in results):.1e} voxel; "
        f"per 64³ chunk {truth:.1f} ms true flow, {total:.1f} ms in all: "
        f"{_projection(total, args.workers)}")  # fmt: skip
    return wall, out


def _stages(report) -> list[tuple[str, float]]:
    """(stage, wall seconds) from the flow report's notes."""
    out = []
    for key, line in report.notes.items():
        if key.startswith("stage ") and line.endswith(" s)"):
            name = line.split(":")[0]
            out.append((name, float(line.rsplit("(", 1)[1].split()[0])))
    return out


def run(shape, args, root: Path) -> dict:
    nbytes = math.prod(shape) * 4
    pair = make_pair(shape, args.amplitude, n_waves=args.waves)
    paths = _create_inputs(root, shape)
    kwargs, single_kwargs, plan, _ = _plans(paths, args)
    log(f"{shape} ({nbytes / 2**20:.0f} MiB per volume), displacement Lipschitz constant "
        f"{pair.lipschitz:.3f}")  # fmt: skip
    print("\n".join(f"#   {line}" for line in plan.describe().splitlines()), flush=True)
    result = {"shape": shape, "bytes": nbytes, "plan": plan, "load": os.getloadavg()[0]}
    stages = []
    with open_client(n_workers=args.workers) as client:
        wall, before = generate(client, pair, paths, args)
        stages.append(("(generate pair)", wall, max(client.run(peak_rss_mib).values())))
    flow_out, warp_out = root / "flow.zarr", root / "registered.zarr"
    log("flow")
    with open_client(n_workers=args.workers) as client:
        report = compute_flow(*paths, flow_out, client=client, progress=args.progress, **kwargs)
        report.raise_if_failed()
        result["flow_rss"] = max(client.run(peak_rss_mib).values())
    result["flow_wall"] = report.wall_time
    result["stages"] = _stages(report)
    result["kernel"] = report.task_seconds
    result["qc"] = {k: report.notes.get(k) for k in ("seam metric", "tile disagreement")}
    log(f"flow done in {report.wall_time:.1f} s; warp")
    with open_client(n_workers=args.workers) as client:  # fresh workers: their own peak RSS
        t0 = time.perf_counter()
        warp = warp_volume(paths[1], flow_out, warp_out, client=client, progress=args.progress)
        warp.raise_if_failed()
        result["warp_wall"] = time.perf_counter() - t0
        result["warp_rss"] = max(client.run(peak_rss_mib).values())
    log(f"warp done in {result['warp_wall']:.1f} s")
    flows = {"flow": (str(flow_out), "flow")}
    if args.single:
        log("single-level flow")
        with open_client(n_workers=args.workers) as client:
            single = compute_flow(*paths, root / "single.zarr", client=client,
                                  progress=args.progress, **single_kwargs)  # fmt: skip
            single.raise_if_failed()
        result["single_wall"] = single.wall_time
        flows["single"] = (str(root / "single.zarr"), "flow")
        log(f"single-level flow done in {single.wall_time:.1f} s")
    result["load"] = max(result["load"], os.getloadavg()[0])
    with open_client(n_workers=args.workers) as client:
        wall, errors = evaluate(client, pair, flows, (paths[0], ""),
                                (str(warp_out), "0"), args)  # fmt: skip
        stages.append(("(evaluate)", wall, max(client.run(peak_rss_mib).values())))
    result["extra_stages"] = stages
    result["epe"] = errors["flow"]
    result["epe0"] = errors["none"]
    if args.single:
        result["single_epe"] = errors["single"]
    result["mad"] = (before, errors["after"])
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="96x192x192", help="e.g. 96x192x192,128x256x256")
    parser.add_argument("--amplitude", type=float, default=12.0, help="largest displacement, px")
    parser.add_argument("--tile", type=int, default=64, help="tile edge (multiple of 64)")
    parser.add_argument("--overlap", type=int, default=None, help="halo (default: auto)")
    parser.add_argument("--method", default="ilk", choices=("ilk", "tvl1", "dis"),
                        help="flow kernel of the tiles (ilk)")  # fmt: skip
    parser.add_argument("--radius", type=int, default=3, help="iLK window radius")
    parser.add_argument("--levels", default="auto")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--single", action="store_true", help="also run one level, same tiles")
    parser.add_argument("--waves", type=int, default=192, help="plane waves in the texture")
    parser.add_argument("--progress", action="store_true", help="progress bars (stderr)")
    parser.add_argument("--dir", default=None, help="where to generate data (default: tmp)")
    args = parser.parse_args(argv)
    if args.levels != "auto":
        args.levels = int(args.levels)
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    if any(len(s) != 3 for s in shapes):
        parser.error(f"--shapes takes 3-D shapes such as 96x192x192, got {args.shapes!r}")
    _check_disk(shapes, args)
    rows = []
    for shape in shapes:
        root = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.dir))
        try:
            rows.append(run(shape, args, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        r = rows[-1]
        log(f"done: flow {r['flow_wall']:.0f} s, warp {r['warp_wall']:.0f} s; this process's "
            f"peak RSS so far {peak_rss_mib():.0f} MiB")  # fmt: skip

    print()
    print("| volume | stage | wall (s) | MB/s of one input | Mvox/s | peak RSS / worker |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = f"{'x'.join(map(str, r['shape']))} ({r['bytes'] / 2**20:.0f} MiB)"
        rss = {"flow, all stages": r["flow_rss"], "warp": r["warp_rss"]}
        stages = [*r["stages"], ("flow, all stages", r["flow_wall"]), ("warp", r["warp_wall"])]
        if "single_wall" in r:
            stages.append(("(single-level flow, same tiles and halo)", r["single_wall"]))
        for stage, wall, peak in r["extra_stages"]:
            stages.append((stage, wall))
            rss[stage] = peak
        for stage, wall in stages:
            peak = rss.get(stage)
            print(
                f"| {name} | {stage} | {wall:.1f} | {r['bytes'] / 1e6 / wall:.2f} "
                f"| {r['bytes'] / 4 / 1e6 / wall:.3f} | {f'{peak:.0f} MiB' if peak else ''} |"
            )
    print()
    print("| volume | levels | tiles, halo | endpoint error: none / flow (inside) | single level "
          "| mean abs(diff) to reference: before / after | seam metric | tile disagreement "
          "| est. MiB per task | load avg |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["plan"]
        single = (
            f"{r['single_epe'][0]:.2f} ({r['single_epe'][1]:.2f})" if "single_epe" in r else "—"
        )
        print(
            f"| {'x'.join(map(str, r['shape']))} | {len(p.levels)} "
            f"| {len(p.grid)} of {p.grid.tile_shape[0]}³, {p.grid.depth[0]} "
            f"| {r['epe0'][0]:.2f} / {r['epe'][0]:.2f} ({r['epe'][1]:.2f}) | {single} "
            f"| {r['mad'][0]:.4f} / {r['mad'][1]:.4f} | {r['qc']['seam metric']} "
            f"| {r['qc']['tile disagreement']} | {p.task_memory / 2**20:.0f} | {r['load']:.1f} |"
        )
    print(f"\nbenchmark process peak RSS: {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
