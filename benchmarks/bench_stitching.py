"""Benchmark mosaic stitching: pairwise, solve and fusion stages on a generated mosaic.

A band-limited texture is cut into a grid of overlapping uint16 tiles (stored as zarr arrays
with 512-pixel chunks) at known positions: nominal grid plus random stage jitter. The run uses
an embedded LocalCluster (``--workers``, one thread each) and reports per stage the wall time,
the bytes moved and the workers' peak resident memory, then the solve time of a synthetic
100 x 100 grid of links. Positions are checked against the truth.

Usage::

    python benchmarks/bench_stitching.py [--grid 10] [--tile 1024] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

# One thread per process for native pools, set before numpy loads (inherited by workers).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import zarr  # noqa: E402
from scipy import ndimage  # noqa: E402


def _peak_rss_mb() -> float:
    """Peak resident memory (VmHWM) of the calling process since start or the last reset, MB.

    ``getrusage``'s ``ru_maxrss`` is not used: spawned workers inherit their parent's value.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """User + system CPU time of the calling process (all its threads), seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reset_peak_rss() -> None:
    """Start a new peak-memory window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _make_mosaic(root: Path, grid: int, tile: int, overlap: float, seed: int = 0):
    from chunkreg.stitching import regular_grid

    rng = np.random.default_rng(seed)
    layout = regular_grid((grid, grid), (tile, tile), overlap=overlap)
    jitter = max(1, int(0.1 * overlap * tile))  # up to 10% of the overlap
    truth = np.round(layout.positions) + rng.integers(-jitter, jitter + 1, layout.positions.shape)
    truth += jitter
    size = int(truth.max()) + tile + jitter + 1
    noise = rng.standard_normal((size, size), dtype=np.float32)
    source = ndimage.gaussian_filter(noise, 2.0, output=np.float32)
    source = np.clip(8000 + 40000 * source, 0, 65535).astype(np.uint16)
    del noise
    group = zarr.open_group(root / "tiles.zarr", mode="w")
    for name, (y, x) in zip(layout.names, truth.astype(int), strict=True):
        group.create_array(name, data=source[y : y + tile, x : x + tile], chunks=(512, 512))
    return layout, truth, jitter


def _solve_benchmark(n: int, repeats: int = 3) -> tuple[float, float]:
    from chunkreg.stitching import overlapping_pairs, regular_grid, solve_positions

    rng = np.random.default_rng(1)
    nominal = regular_grid((n, n), (100, 100), overlap=0.1).positions
    truth = nominal + rng.uniform(-3, 3, nominal.shape)
    pairs = overlapping_pairs(nominal, (100, 100), adjacent=True)
    offsets = truth[pairs[:, 1]] - truth[pairs[:, 0]] + 0.2 * rng.standard_normal((len(pairs), 2))
    bad = rng.choice(len(pairs), n // 5, replace=False)
    offsets[bad] += 10.0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = solve_positions(pairs, offsets, np.ones(len(pairs)), nominal)
        times.append(time.perf_counter() - t0)
    err = (sol.positions - sol.positions.mean(0)) - (truth - truth.mean(0))
    return float(np.median(times)), float(np.sqrt((err**2).mean()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=10, help="tiles per side (default 10)")
    parser.add_argument("--tile", type=int, default=1024, help="tile size, px (default 1024)")
    parser.add_argument("--overlap", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--solve-grid", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="4 x 4 tiles of 512 px")
    parser.add_argument("--keep", metavar="DIR", help="write data here and keep it")
    args = parser.parse_args(argv)
    if args.quick:
        args.grid, args.tile = 4, 512

    from chunkreg.execution import open_client
    from chunkreg.stitching import solve_positions, stitch

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_stitching_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        layout, truth, jitter = _make_mosaic(root, args.grid, args.tile, args.overlap)
        print(
            f"mosaic: {args.grid} x {args.grid} tiles of {args.tile}^2 uint16, overlap "
            f"{args.overlap:.0%}, jitter <= {jitter} px; generated in "
            f"{time.perf_counter() - t0:.1f} s; {args.workers} workers x 1 thread"
        )
        with open_client(n_workers=args.workers) as client:
            base = client.run(_peak_rss_mb)
            client.run(_reset_peak_rss)
            cpu0 = sum(client.run(_cpu_seconds).values())
            reg = stitch(
                root / "tiles.zarr", layout, None, fuse=False, client=client, progress=False
            )
            after_pairs = client.run(_peak_rss_mb)
            cpu_pairs = sum(client.run(_cpu_seconds).values()) - cpu0
            pairs_report = reg.reports["pairs"]
            times = []
            for _ in range(3):
                t1 = time.perf_counter()
                solve_positions(reg.pairs, reg.offsets, reg.quality, layout.positions)
                times.append(time.perf_counter() - t1)
            solve_s = float(np.median(times))
            client.run(_reset_peak_rss)
            cpu0 = sum(client.run(_cpu_seconds).values())
            fused = stitch(
                root / "tiles.zarr",
                reg.layout,
                root / "mosaic.zarr",
                register=False,
                client=client,
                progress=False,
            )
            after_fusion = client.run(_peak_rss_mb)
            cpu_fusion = sum(client.run(_cpu_seconds).values()) - cpu0
        fusion = fused.reports["fusion"]
        err = (reg.positions - reg.positions.mean(0)) - (truth - truth.mean(0))
        out_mb = fusion.bytes_written / 1e6
        rows = [
            (
                f"pairwise ({len(reg.pairs)} pairs)",
                f"{pairs_report.wall_time:.1f}",
                f"{cpu_pairs:.1f}",
                f"{pairs_report.bytes_read / 1e6:.0f} read",
                f"{len(reg.pairs) / cpu_pairs:.1f} pairs/s",
                f"{max(after_pairs.values()):.0f}",
            ),
            (f"solve ({len(layout)} tiles)", f"{solve_s:.3f}", "", "", "", ""),
            (
                f"fusion ({fusion.n_done} tasks, {out_mb:.0f} MB out)",
                f"{fusion.wall_time:.1f}",
                f"{cpu_fusion:.1f}",
                f"{fusion.bytes_read / 1e6:.0f} read",
                f"{out_mb / fusion.wall_time:.1f} MB/s wall, {out_mb / cpu_fusion:.1f} MB/cpu-s",
                f"{max(after_fusion.values()):.0f}",
            ),
        ]
        print(f"worker RSS after start-up: {max(base.values()):.0f} MB (peaks below are per stage)")
        print("| stage | wall s | worker CPU s | MB | rate | worker peak RSS MB |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print(
            f"positions: max error {np.abs(err).max():.2f} px, "
            f"{int(reg.kept.sum())}/{len(reg.pairs)} links kept"
        )
        solve_time, rms = _solve_benchmark(args.solve_grid)
        n = args.solve_grid
        print(
            f"solve, synthetic {n} x {n} grid ({n * n} tiles, {2 * n * (n - 1)} links, "
            f"{n // 5} gross errors): {solve_time:.2f} s median of 3, rms error {rms:.2f} px"
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
