"""Benchmark of ``chunkreg.map_tiles`` with small 2-D tiles: engine overhead against the kernel.

A 500 x 741 float32 pair in zarr (64-px chunks) is processed in 128-px tiles (24 tiles), in
this process (``scheduler="synchronous"``, so every CPU second is counted by
``time.process_time``), by two kernels:

* iLK optical flow of the pair (``chunkreg.optical_flow_ilk``, radius 4), depth 16, blended
  linearly (tiles, then blend tasks: the path of the flow workflow);
* a Gaussian filter (sigma 2, truncated at 4 sigma), depth 8, cropped: a kernel so cheap that
  the I/O dominates.

For each it prints, side by side: the in-memory kernel on the whole array (CPU s), the kernel
inside the tasks (CPU s, summed: more than the whole-array run by the halo's extra compute),
and map_tiles' wall and CPU time, whose excess over the tasks' kernel time is the engine's
overhead (reads, writes, blending, records). ``--zarr`` also runs the same with every request
through zarr's event loop (chunkreg's direct reads and writes of local chunks switched off,
:mod:`chunkreg.io._direct`), and ``--serial`` with every zarr request of a task made one after
another (the I/O path before batching), for comparison.

Usage::

    python benchmarks/bench_map_tiles.py [--repeat 3] [--zarr] [--serial]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

import chunkreg
from chunkreg.io import _batch, _direct
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

SHAPE = (500, 741)
CHUNKS = (64, 64)
TILE = 128

_KERNEL_CPU = [0.0]  # CPU seconds spent inside the kernel, summed over the tasks


def timed(func):
    """``func`` that adds the CPU time of every call to ``_KERNEL_CPU``."""

    def run(*args):
        start = time.process_time()
        try:
            return func(*args)
        finally:
            _KERNEL_CPU[0] += time.process_time() - start

    run.__qualname__ = getattr(func, "__qualname__", "kernel")
    return run


def ilk(reference, moving):
    return chunkreg.optical_flow_ilk(reference, moving, radius=4)


def gaussian(image):
    return ndimage.gaussian_filter(image, 2.0)


def _serial_io():
    """Patch the batched I/O helpers to make their requests one by one through zarr (as
    before batching)."""
    read, write = _batch.read_many, _batch.write_many
    through_zarr = _zarr_io()

    def read_serial(requests, name="input"):
        return [_batch.read_region(a, s, name) for a, s in requests]

    def write_serial(requests):
        for a, s, v in requests:
            a[s] = v

    def restore():
        for module in _modules():
            module.read_many, module.write_many = read, write
        through_zarr()

    for module in _modules():
        module.read_many, module.write_many = read_serial, write_serial
    return restore


def _zarr_io():
    """Send every request through zarr (no direct local chunk I/O)."""
    saved = _direct.direct

    def restore():
        _direct.direct = saved

    _direct.direct = lambda array: None
    return restore


def _modules():
    from chunkreg.engine import _blend, _map_tasks

    return (_blend, _map_tasks)


def measure(name, kernel, sources, depth, blend, root: Path, repeat: int) -> dict:
    arrays = [zarr.open_array(str(s), mode="r")[:] for s in sources]
    whole = []
    for _ in range(repeat):
        start = time.process_time()
        kernel(*arrays)
        whole.append(time.process_time() - start)
    best = None
    for k in range(repeat):
        out = root / f"{name}-{k}.zarr"
        _KERNEL_CPU[0] = 0.0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        report = chunkreg.map_tiles(timed(kernel), sources, out, tile=TILE, depth=depth,
                                    blend=blend, scheduler="synchronous", progress=False)  # fmt: skip
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        assert report.ok, report.summary()
        run = {"wall": wall, "cpu": cpu, "tasks_kernel": _KERNEL_CPU[0]}
        if best is None or run["cpu"] < best["cpu"]:
            best = run
        shutil.rmtree(out)
    best["whole"] = min(whole)
    best["overhead"] = (best["cpu"] - best["tasks_kernel"]) / best["tasks_kernel"]
    best["vs_whole"] = best["cpu"] / best["whole"]
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best CPU kept)")
    parser.add_argument("--zarr", action="store_true", help="also time I/O through zarr's loop")
    parser.add_argument("--serial", action="store_true", help="also time unbatched I/O")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_map_tiles_"))
    try:
        ref = textured_image(SHAPE, seed=0)
        mov = apply_flow(ref, -smooth_displacement(SHAPE, amplitude=3, seed=1))
        for name, data in (("ref", ref), ("mov", mov)):
            zarr.create_array(str(root / f"{name}.zarr"), data=data.astype(np.float32),
                              chunks=CHUNKS)  # fmt: skip
        pair = [root / "ref.zarr", root / "mov.zarr"]
        cases = [
            ("ilk", ilk, pair, 16, "linear"),
            ("gaussian", gaussian, pair[:1], 8, None),
        ]
        modes = [("direct", None)]
        modes += [("zarr", _zarr_io)] if args.zarr else []
        modes += [("serial", _serial_io)] if args.serial else []
        n_tiles = -(-SHAPE[0] // TILE) * -(-SHAPE[1] // TILE)
        print(f"{SHAPE[0]}x{SHAPE[1]} float32, chunks {CHUNKS}, {n_tiles} tiles of {TILE} px, "
              f"synchronous; CPU seconds (best of {args.repeat})")  # fmt: skip
        header = (f"{'kernel':9} {'I/O':8} {'whole-array':>11} {'in tasks':>9} {'map wall':>9} "
                  f"{'map CPU':>8} {'overhead':>9} {'vs whole':>9}")  # fmt: skip
        print(header)
        for name, kernel, sources, depth, blend in cases:
            for mode, patch in modes:
                restore = patch() if patch else None
                try:
                    r = measure(f"{name}-{mode}", kernel, sources, depth, blend, root,
                                args.repeat)  # fmt: skip
                finally:
                    if restore:
                        restore()
                print(f"{name:9} {mode:8} {r['whole']:11.3f} {r['tasks_kernel']:9.3f} "
                      f"{r['wall']:9.3f} {r['cpu']:8.3f} {100 * r['overhead']:8.0f}% "
                      f"{r['vs_whole']:8.2f}x")  # fmt: skip
        print("overhead: map_tiles CPU beyond the kernel's CPU inside the tasks, relative to it")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
