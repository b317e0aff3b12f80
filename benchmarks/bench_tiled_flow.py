"""Benchmark of the tiled flow workflow (``chunkreg.compute_flow``) on generated zarr volumes.

For each volume size: generate a float32 3-D reference/moving pair in zarr (64³ chunks; a
periodic texture block repeated, the moving one shifted by a sub-pixel translation), then
measure

* the in-memory kernel on one tile, with its halo and without (the halo's compute cost);
* the tiled run on an embedded LocalCluster with 1 and with 2 workers: wall time, throughput
  (MB of one input volume per second), the share of worker time not spent in the kernel
  (I/O + scheduling + stitching + idle, relative to kernel time), and peak RSS per worker.

Targets (issue 4): overhead <= 15 % of kernel time; 2 workers >= 1.7x one; peak RSS per worker
independent of the volume size. Generated data are deleted afterwards. These runs use one level
(``--levels 1``, the tiled engine alone); the coarse-to-fine pipeline has its own benchmark
(bench_volume_pipeline.py).

``--stitching`` instead compares, at the same tiles and halo (the same computation), cropping
each tile's core with blending neighbouring tiles across half the halo or across all of it:
the seam metric and the difference to the same pipeline run untiled (docs/tiling.md).

Usage::

    python benchmarks/bench_tiled_flow.py                       # 1 GiB and 4 GiB (slow)
    python benchmarks/bench_tiled_flow.py --sizes 32MiB,128MiB  # what docs/performance.md shows
    python benchmarks/bench_tiled_flow.py --stitching           # the table in docs/tiling.md
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from _common import peak_rss_mib
from scipy import ndimage

import chunkreg
from chunkreg.execution import open_client
from chunkreg.testing import textured_image
from chunkreg.volume import compute_flow, plan_flow

CHUNK = 64
BLOCK = 128
SHIFT = (0.6, -0.4, 0.3)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]i?B)", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"sizes look like 32MiB or 1GiB, got {text!r}")
    unit = {"k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)[0].lower()]
    return int(float(match.group(1)) * unit)


def volume_shape(nbytes: int) -> tuple[int, int, int]:
    """A 3-D float32 shape of about ``nbytes``, each axis a multiple of the texture block."""
    voxels = nbytes // 4
    side = max(BLOCK, round(voxels ** (1 / 3) / BLOCK) * BLOCK)
    depth = max(BLOCK, round(voxels / side**2 / BLOCK) * BLOCK)
    return (depth, side, side)


def generate(directory: Path, shape) -> tuple[str, str]:
    """Write the pair block by block (a periodic texture, so repeating it is seamless)."""
    ref_block = textured_image((BLOCK,) * 3, seed=1, sigma=2.0)
    spectrum = ndimage.fourier_shift(np.fft.fftn(ref_block), SHIFT)
    mov_block = np.fft.ifftn(spectrum).real.astype(np.float32)
    paths = []
    for name, block in (("reference", ref_block), ("moving", mov_block)):
        path = str(directory / f"{name}.zarr")
        array = zarr.create_array(path, shape=shape, chunks=(CHUNK,) * 3, dtype="float32")
        for corner in np.ndindex(*(n // BLOCK for n in shape)):
            region = tuple(slice(c * BLOCK, (c + 1) * BLOCK) for c in corner)
            array[region] = block
        paths.append(path)
    return paths[0], paths[1]


def time_kernel_on_one_tile(plan, method, params) -> tuple[float, float]:
    """Seconds of the in-memory kernel on an interior tile, with and without its halo."""
    grid = plan.grid
    interior = tuple(min(1, g - 1) for g in grid.grid_shape)
    tile = grid.tile(interior)
    ref = zarr.open_array(str(plan.reference), mode="r")
    mov = zarr.open_array(str(plan.moving), mode="r")
    kernel = getattr(chunkreg, f"optical_flow_{method}")
    times = []
    for region in (tile.read, tile.core):
        a, b = ref[region], mov[region]
        t0 = time.perf_counter()
        kernel(a, b, **params)
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


def tiled_run(paths, out, plan_kwargs, n_workers) -> dict:
    with open_client(n_workers=n_workers) as client:
        report = compute_flow(
            *paths, out, client=client, overwrite=True, progress=False, **plan_kwargs
        )
        rss = client.run(peak_rss_mib)
    report.raise_if_failed()
    return {
        "wall": report.wall_time,
        "kernel": report.task_seconds,
        "rss": max(rss.values()),
        "tiles": int(report.notes["tiles"].split()[0]),
    }


# (shape, amplitude of the smooth displacement, tile, chunks, texture periods)
STITCHING_CASES = [
    ((512, 512), 24.0, 128, 64, 1.0),
    ((256, 256), 1.5, 64, 32, 1.0),
    ((96, 96, 96), 12.0, 48, 48, 0.5),
]


def _flow_of(plan, out: Path) -> tuple[np.ndarray, float]:
    from chunkreg.volume import run_flow_plan

    t0 = time.perf_counter()
    run_flow_plan(plan, str(out), scheduler="synchronous", progress=False).raise_if_failed()
    seconds = time.perf_counter() - t0
    flow = zarr.open_array(str(out), path="flow", mode="r")[:]
    shutil.rmtree(out)
    return flow, seconds


def stitching_study(directory=None, halos=(8, 16)) -> int:
    """Crop vs blend at the same tiles and halo; print a markdown table."""
    import dataclasses

    from chunkreg.testing import apply_flow, smooth_displacement
    from chunkreg.volume import seam_metric

    print("| volume | motion | tile | halo | stitching | seam metric | mean / p99 abs(tiled - untiled) "
          "| same, 16 px inside the volume | wall (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    root = Path(tempfile.mkdtemp(prefix="bench-stitching-", dir=directory))
    try:
        for shape, amplitude, tile, chunk, periods in STITCHING_CASES:
            ndim = len(shape)
            ref = textured_image(shape, seed=0)
            truth = smooth_displacement(shape, amplitude=amplitude, seed=1, periods=periods)
            mov = apply_flow(ref, -truth)
            paths = []
            for name, data in (("ref", ref), ("mov", mov)):
                zarr.create_array(str(root / f"{name}.zarr"), data=data, chunks=(chunk,) * ndim,
                                  overwrite=True)  # fmt: skip
                paths.append(str(root / f"{name}.zarr"))
            inner = (slice(None),) + (slice(16, -16),) * ndim
            for halo in halos:
                kwargs = {"overlap": halo, "radius": 3, "levels": 2}
                untiled, _ = _flow_of(plan_flow(*paths, tile=shape, **kwargs), root / "u.zarr")
                plan = plan_flow(*paths, tile=tile, **kwargs)
                for name, band in (
                    ("crop", 0),
                    ("blend, band d/2", halo // 2),
                    ("blend, band d", halo),
                ):
                    levels = tuple(
                        dataclasses.replace(lp, band=(band,) * ndim) if lp.mode != "whole" else lp
                        for lp in plan.levels
                    )
                    flow, seconds = _flow_of(
                        dataclasses.replace(plan, levels=levels), root / "t.zarr"
                    )
                    diff = np.abs(flow - untiled)
                    print(
                        f"| {'x'.join(map(str, shape))} | {amplitude:g} px | {tile} | {halo} | {name} "
                        f"| {seam_metric(flow, (tile,) * ndim):.3f} "
                        f"| {diff.mean():.4f} / {np.percentile(diff, 99):.3f} "
                        f"| {diff[inner].mean():.4f} / {np.percentile(diff[inner], 99):.3f} "
                        f"| {seconds:.1f} |",
                        flush=True,
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1GiB,4GiB", help="volume sizes, e.g. 32MiB,128MiB")
    parser.add_argument(
        "--shapes", default=None, help="explicit shapes instead, e.g. 128x384x384,128x384x1536"
    )
    parser.add_argument("--tile", type=int, default=128, help="tile edge (multiple of 64)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run")
    parser.add_argument("--method", choices=("ilk", "tvl1"), default="ilk")
    parser.add_argument("--dir", default=None, help="where to generate data (default: tmp)")
    parser.add_argument("--levels", default="1", help="pyramid levels (default 1: tiles only)")
    parser.add_argument(
        "--stitching", action="store_true", help="compare cropping and blending instead"
    )
    args = parser.parse_args(argv)
    if args.stitching:
        return stitching_study(args.dir)
    if args.shapes:
        shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    else:
        shapes = [volume_shape(parse_size(s)) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    params: dict = {}
    levels = args.levels if args.levels == "auto" else int(args.levels)
    plan_kwargs = {"method": args.method, "tile": args.tile, "levels": levels, **params}

    rows = []
    for shape in shapes:
        nbytes = math.prod(shape) * 4
        root = Path(tempfile.mkdtemp(prefix="bench-tiled-flow-", dir=args.dir))
        try:
            t0 = time.perf_counter()
            paths = generate(root, shape)
            gen = time.perf_counter() - t0
            plan = plan_flow(*paths, **plan_kwargs)
            with_halo, without = time_kernel_on_one_tile(plan, args.method, params)
            print(
                f"# {shape} = {nbytes / 2**20:.0f} MiB, generated in {gen:.1f} s; "
                f"{len(plan.grid)} tiles of {plan.grid.tile_shape}, halo {plan.grid.depth}, "
                f"halo factor {plan.grid.halo_factor:.2f}, read amplification "
                f"{plan.read_amplification:.2f}, est. {plan.task_memory / 2**20:.0f} MiB/task; "
                f"kernel on one tile {with_halo:.1f} s with halo, {without:.1f} s without "
                f"({with_halo / without:.2f}x)",
                flush=True,
            )
            for k in workers:
                load = os.getloadavg()[0]
                r = tiled_run(paths, str(root / "flow.zarr"), plan_kwargs, k)
                r.update(size=nbytes, workers=k, shape=shape, load=max(load, os.getloadavg()[0]))
                rows.append(r)
                overhead = r["wall"] * k / r["kernel"] - 1
                print(
                    f"#   {k} worker(s): {r['wall']:.1f} s, {nbytes / 1e6 / r['wall']:.2f} MB/s, "
                    f"overhead {100 * overhead:.1f}%, peak RSS/worker {r['rss']:.0f} MiB",
                    flush=True,
                )
        finally:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(
        "| volume | workers | tiles | wall (s) | MB/s | Mvox/s | kernel s / tile "
        "| overhead vs kernel | speed-up | peak RSS / worker | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(x for x in rows if x["size"] == r["size"] and x["workers"] == workers[0])
        overhead = r["wall"] * r["workers"] / r["kernel"] - 1
        print(
            f"| {'x'.join(map(str, r['shape']))} ({r['size'] / 2**20:.0f} MiB) | {r['workers']} "
            f"| {r['tiles']} | {r['wall']:.1f} | {r['size'] / 1e6 / r['wall']:.2f} "
            f"| {r['size'] / 4 / 1e6 / r['wall']:.2f} | {r['kernel'] / r['tiles']:.1f} "
            f"| {100 * overhead:.1f}% | {base['wall'] / r['wall']:.2f}x | {r['rss']:.0f} MiB "
            f"| {r['load']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
