"""Frames per second of time-series drift correction, against a plain scikit-image loop.

A uint16 movie of drifting frames (a textured scene moved by a subpixel random walk, plus
noise) is written to zarr, one frame per chunk. Then, over the same frames:

* baseline: one process, a loop of ``skimage.registration.phase_cross_correlation``
  (``upsample_factor=10``) against frame 0 and ``scipy.ndimage.shift`` (its default cubic
  spline), reading each frame from zarr and writing the corrected frame to zarr;
* chunkreg: :func:`chunkreg.register_timeseries` (rigid, ``upsample_factor=10``, reference
  frame 0; then piecewise with 128-pixel patches overlapping by 32) on a LocalCluster of 1 and
  2 single-threaded workers started beforehand, writing shifts, quality and the corrected
  stack.

Run: ``python benchmarks/bench_timeseries.py [--frames 2000] [--size 512]``. The baseline runs
on ``--baseline-frames`` frames (its rate does not depend on the count). Each configuration
runs ``--repeat`` times and the fastest run is reported (the machine is shared).

Worker memory allocator: the embedded LocalCluster of ``chunkreg.execution.open_client``
starts workers with glibc malloc thresholds that keep large numpy temporaries on the heap
(``WORKER_ALLOCATOR_ENV``); distributed's own default made kernels 2-2.5x slower in workers.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft as sfft  # noqa: E402
import zarr  # noqa: E402
from scipy import ndimage  # noqa: E402

from chunkreg import register_timeseries  # noqa: E402
from chunkreg.execution import open_client  # noqa: E402
from chunkreg.testing import textured_image  # noqa: E402


def make_movie(path: Path, n_frames: int, size: int, seed: int = 0) -> np.ndarray:
    """Write a drifting uint16 movie; return the true shifts (frame -> frame 0)."""
    rng = np.random.default_rng(seed)
    margin = 32
    scene = textured_image((size + 2 * margin,) * 2, seed=seed, sigma=2.0)
    spectrum = sfft.rfft2(scene)
    ky = sfft.fftfreq(scene.shape[0])[:, None]
    kx = sfft.rfftfreq(scene.shape[1])[None, :]
    steps = rng.normal(0, 0.3, (n_frames, 2))
    steps[0] = 0
    positions = np.cumsum(steps, axis=0)
    positions *= min(1.0, 20.0 / max(np.abs(positions).max(), 1e-9))
    stack = zarr.create_array(
        str(path), shape=(n_frames, size, size), chunks=(1, size, size), dtype="uint16"
    )
    crop = (slice(margin, margin + size),) * 2
    block = 50
    for start in range(0, n_frames, block):
        frames = []
        for p in positions[start : start + block]:
            ramp = np.exp(-2j * np.pi * (ky * p[0] + kx * p[1]))
            moved = sfft.irfft2(spectrum * ramp, s=scene.shape)[crop]
            noisy = moved * 20000 + 1000 + rng.normal(0, 300, moved.shape)
            frames.append(np.clip(noisy, 0, 65535).astype(np.uint16))
        stack[start : start + len(frames)] = np.stack(frames)
    return positions[0] - positions


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baseline(stack: zarr.Array, out_path: Path, n_frames: int) -> tuple[float, float]:
    """Wall and CPU seconds per frame of the scikit-image loop (read, register, shift, write)."""
    from skimage.registration import phase_cross_correlation

    out = zarr.create_array(
        str(out_path),
        shape=(n_frames, *stack.shape[1:]),
        chunks=(1, *stack.shape[1:]),
        dtype=stack.dtype,
    )
    reference = stack[0].astype(np.float32)
    start, cpu = time.perf_counter(), _cpu_seconds()
    for t in range(n_frames):
        frame = stack[t].astype(np.float32)
        shift, _, _ = phase_cross_correlation(reference, frame, upsample_factor=10)
        moved = ndimage.shift(frame, shift)
        out[t] = np.clip(np.rint(moved), 0, 65535).astype(np.uint16)
    return (time.perf_counter() - start) / n_frames, (_cpu_seconds() - cpu) / n_frames


def _workers_cpu(client) -> float:
    return sum(client.run(_cpu_seconds).values())


def chunkreg_run(stack, out_path: Path, client, piecewise) -> tuple[float, float, np.ndarray]:
    """Wall seconds, worker CPU seconds and shifts of one run."""
    cpu = _workers_cpu(client)
    start = time.perf_counter()
    result = register_timeseries(
        stack,
        out_path,
        upsample_factor=10,
        piecewise=piecewise,
        client=client,
        progress=False,
        overwrite=True,
        csv_path=False,
    )
    return time.perf_counter() - start, _workers_cpu(client) - cpu, result.shifts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--baseline-frames", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per configuration; the fastest is reported"
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-timeseries-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        truth = make_movie(workdir / "movie.zarr", args.frames, args.size)
        print(f"movie: {args.frames} x {args.size}^2 uint16 in {time.perf_counter() - t0:.0f} s")
        stack = zarr.open_array(str(workdir / "movie.zarr"), mode="r")
        n_base = min(args.baseline_frames, args.frames)
        base_wall, base_cpu = min(
            baseline(stack, workdir / f"baseline{i}.zarr", n_base) for i in range(args.repeat)
        )
        base_fps = 1 / base_wall
        rows = [("scikit-image loop (1 process)", 1, base_fps, 1 / base_cpu, 1.0, "")]
        rigid_seconds = {}
        for workers in args.workers:
            with open_client(n_workers=workers) as client:
                for name, piecewise in (
                    ("rigid", None),
                    ("piecewise", {"patch": 128, "overlap": 32}),
                ):
                    runs = [
                        chunkreg_run(stack, workdir / f"{name}.zarr", client, piecewise)
                        for _ in range(args.repeat)
                    ]
                    seconds, cpu, shifts = min(runs, key=lambda run: run[0])
                    fps = args.frames / seconds
                    per_cpu = args.frames / cpu
                    note = f"max shift error {np.abs(shifts - truth).max():.3f} px"
                    if name == "rigid":
                        rigid_seconds[workers] = (seconds, cpu)
                    else:
                        wall_ratio = seconds / rigid_seconds[workers][0]
                        cpu_ratio = cpu / rigid_seconds[workers][1]
                        note += f"; {wall_ratio:.2f}x rigid wall time, {cpu_ratio:.2f}x CPU"
                    rows.append(
                        (f"chunkreg {name}", workers, fps, per_cpu, per_cpu * base_cpu, note)
                    )
        print()
        print(
            "| method | workers | frames/s (wall) | frames per CPU-second | "
            "per core vs scikit-image | note |"
        )
        print("|---|---|---|---|---|---|")
        for name, workers, fps, per_cpu, ratio, note in rows:
            print(f"| {name} | {workers} | {fps:.1f} | {per_cpu:.1f} | {ratio:.2f}x | {note} |")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
