"""Benchmark of the full volume pipeline: pyramid, coarse-to-fine flow, warp, on a generated pair.

For each volume shape: generate a float32 3-D reference (a smooth random texture) and a moving
volume deformed by a smooth displacement several times larger than the tiles' halo (zarr, 64³
chunks), then run on an embedded LocalCluster

* ``chunkreg.compute_flow`` (iLK, coarse to fine with ``levels="auto"``), reporting each of its
  stages — pyramid, coarsest level, tiles, blend (+ QC) — with wall time and throughput;
* ``chunkreg.warp_volume`` of the moving volume by that flow;

and the peak RSS per worker (the workers are restarted between the flow and the warp, so each
figure belongs to one step), the endpoint error of the flow against the known truth (over the
whole volume and 16 voxels inside its faces), and the mean |registered - reference| against the
unregistered |moving - reference|. A single-level run with the same tiles and halo
(``--single``) shows what the coarse level buys.

The pair is generated in memory (the deformation is applied to the whole volume), which bounds
the sizes this script can make; the issue's 4 GiB would take hours on this 2-vCPU machine at
~0.2 Mvoxel/s per core anyway. Generated data are deleted afterwards.

Usage::

    python benchmarks/bench_volume_pipeline.py --shapes 96x192x192 --workers 1
    python benchmarks/bench_volume_pipeline.py --shapes 128x256x256,128x384x384 --amplitude 12
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

import numpy as np
import zarr
from _common import peak_rss_mib
from scipy import ndimage

from chunkreg.execution import open_client
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import compute_flow, plan_flow, warp_volume

CHUNK = 64


def inverse_displacement(truth: np.ndarray, iterations: int = 12) -> np.ndarray:
    """The flow that registers ``apply_flow(ref, -truth)`` onto ``ref`` (fixed point)."""
    grid = np.indices(truth.shape[1:], dtype=np.float32)
    flow = truth.copy()
    for _ in range(iterations):
        coords = grid + flow
        flow = np.stack(
            [ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in truth]
        )
    return flow


def generate(directory: Path, shape, amplitude: float) -> tuple[list[str], np.ndarray, float]:
    ref = textured_image(shape, seed=0)
    displacement = smooth_displacement(shape, amplitude=amplitude, seed=1, periods=0.5)
    mov = apply_flow(ref, -displacement)
    paths = []
    for name, data in (("reference", ref), ("moving", mov)):
        path = str(directory / f"{name}.zarr")
        zarr.create_array(path, data=data, chunks=(CHUNK,) * 3)
        paths.append(path)
    before = float(np.abs(mov - ref).mean())
    return paths, inverse_displacement(displacement), before


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
    t0 = time.perf_counter()
    paths, truth, before = generate(root, shape, args.amplitude)
    gen = time.perf_counter() - t0
    kwargs = {"tile": args.tile, "radius": args.radius, "levels": args.levels}
    if args.overlap is not None:
        kwargs["overlap"] = args.overlap
    plan = plan_flow(*paths, **kwargs)
    print(f"# {shape} ({nbytes / 2**20:.0f} MiB), generated in {gen:.0f} s", flush=True)
    print("\n".join(f"#   {line}" for line in plan.describe().splitlines()), flush=True)
    result = {"shape": shape, "bytes": nbytes, "plan": plan, "load": os.getloadavg()[0]}
    flow_out, warp_out = root / "flow.zarr", root / "registered.zarr"
    with open_client(n_workers=args.workers) as client:
        report = compute_flow(*paths, flow_out, client=client, progress=False, **kwargs)
        report.raise_if_failed()
        result["flow_rss"] = max(client.run(peak_rss_mib).values())
    result["flow_wall"] = report.wall_time
    result["stages"] = _stages(report)
    result["kernel"] = report.task_seconds
    result["qc"] = {k: report.notes.get(k) for k in ("seam metric", "tile disagreement")}
    with open_client(n_workers=args.workers) as client:  # fresh workers: their own peak RSS
        t0 = time.perf_counter()
        warp = warp_volume(paths[1], flow_out, warp_out, client=client, progress=False)
        warp.raise_if_failed()
        result["warp_wall"] = time.perf_counter() - t0
        result["warp_rss"] = max(client.run(peak_rss_mib).values())
    if args.single:
        with open_client(n_workers=args.workers) as client:
            single = compute_flow(*paths, root / "single.zarr", client=client, progress=False,
                                  **{**kwargs, "levels": 1, "overlap": plan.grid.depth})  # fmt: skip
            single.raise_if_failed()
        flow1 = zarr.open_array(str(root / "single.zarr"), path="flow", mode="r")[:]
        result["single_epe"] = _epe(flow1, truth)
        result["single_wall"] = single.wall_time
    result["load"] = max(result["load"], os.getloadavg()[0])
    flow = zarr.open_array(str(flow_out), path="flow", mode="r")[:]
    result["epe"] = _epe(flow, truth)
    result["epe0"] = _epe(np.zeros_like(truth), truth)
    ref = zarr.open_array(paths[0], mode="r")[:]
    registered = zarr.open_group(str(warp_out), mode="r")["0"][:]
    result["mad"] = (before, float(np.abs(registered - ref).mean()))
    return result


def _epe(flow, truth) -> tuple[float, float]:
    err = np.sqrt(((flow - truth) ** 2).sum(axis=0))
    return float(err.mean()), float(err[(slice(16, -16),) * 3].mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="96x192x192", help="e.g. 96x192x192,128x256x256")
    parser.add_argument("--amplitude", type=float, default=12.0, help="largest displacement, px")
    parser.add_argument("--tile", type=int, default=64, help="tile edge (multiple of 64)")
    parser.add_argument("--overlap", type=int, default=None, help="halo (default: auto)")
    parser.add_argument("--radius", type=int, default=3, help="iLK window radius")
    parser.add_argument("--levels", default="auto")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--single", action="store_true", help="also run one level, same tiles")
    parser.add_argument("--dir", default=None, help="where to generate data (default: tmp)")
    args = parser.parse_args(argv)
    if args.levels != "auto":
        args.levels = int(args.levels)
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    rows = []
    for shape in shapes:
        root = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.dir))
        try:
            rows.append(run(shape, args, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        r = rows[-1]
        print(f"# done: flow {r['flow_wall']:.0f} s, warp {r['warp_wall']:.0f} s", flush=True)

    print()
    print("| volume | stage | wall (s) | MB/s of one input | Mvox/s | peak RSS / worker |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = f"{'x'.join(map(str, r['shape']))} ({r['bytes'] / 2**20:.0f} MiB)"
        stages = [*r["stages"], ("flow, all stages", r["flow_wall"]), ("warp", r["warp_wall"])]
        if "single_wall" in r:
            stages.append(("(single-level flow, same tiles and halo)", r["single_wall"]))
        for stage, wall in stages:
            rss = {"flow, all stages": r["flow_rss"], "warp": r["warp_rss"]}.get(stage)
            print(
                f"| {name} | {stage} | {wall:.1f} | {r['bytes'] / 1e6 / wall:.2f} "
                f"| {r['bytes'] / 4 / 1e6 / wall:.3f} | {f'{rss:.0f} MiB' if rss else ''} |"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
