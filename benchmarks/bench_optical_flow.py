"""Benchmark chunkreg.optical_flow_ilk / optical_flow_tvl1 against scikit-image on one CPU.

Both run in this process on identical inputs: a band-limited random texture and a copy
deformed by a known smooth displacement of up to 4 px (``chunkreg.testing``, about half a
period across the image). For each case it prints the time of each implementation and
their ratio, the mean endpoint error (EPE) of each against the exact flow, and the peak
memory of each.

- Time: CPU time of this process (``time.process_time``), which the other tenants of a
  shared machine disturb much less than wall time; best of several repeats (one for the
  128³ cases). The process pins itself to one CPU and BLAS/OpenMP to one thread.
- Memory: peak of the numpy allocations made during one call (``tracemalloc``; numpy
  reports its buffers to it), in a separate untimed run, as a multiple of one input image.
- Truth: the flow ``u`` with ``moving(x + u(x)) = reference(x)``, i.e. the fixed point of
  ``u = d(x + u)`` for the displacement ``d`` used to make the moving image.
- ``ilk tol=0`` / ``tvl1 tol=0``: our kernels with the early stop disabled, i.e. exactly
  scikit-image's number of warps (scikit-image's iLK has no early stop, and its TV-L1
  stopping test practically never fires without prefilter). Their speed-up column is
  against the scikit-image run of the row above; ``ilk`` / ``tvl1`` against ``tol=0`` is
  what the early stop saves.
- ``--motorcycle``: the Middlebury-2014 motorcycle stereo pair shipped with scikit-image
  (500 x 741, grey, true flow ``(0, -disparity)``, pixels without disparity left out), iLK
  at radius 3, 7 and 15 and TV-L1, each ours (default and ``tol=0``) next to
  scikit-image's, with the number of "runaway" pixels whose flow exceeds 100 px (the true
  flow stays under ~60 px).

Usage::

    python benchmarks/bench_optical_flow.py [--quick | --switches | --motorcycle]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import tracemalloc

# One thread everywhere, set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
from _common import pin_one_cpu as _pin_one_cpu  # noqa: E402


def _case(shape):
    from chunkreg.testing import apply_flow, smooth_displacement, textured_image

    reference = textured_image(shape, seed=1)
    displacement = smooth_displacement(shape, amplitude=4.0, seed=2, periods=0.5)
    moving = apply_flow(reference, -displacement)
    truth = displacement.copy()
    for _ in range(6):
        truth = np.stack([apply_flow(c, truth, order=1) for c in displacement])
    return reference, moving, truth


def _cpu_seconds(func, repeats):
    best = np.inf
    result = None
    for _ in range(repeats):
        t0 = time.process_time()
        result = func()
        best = min(best, time.process_time() - t0)
    return best, result


def _peak_bytes(func):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _epe(flow, truth):
    return float(np.sqrt(((flow - truth) ** 2).sum(axis=0)).mean())


def _motorcycle():
    from skimage import color, data

    left, right, disparity = data.stereo_motorcycle()
    known = np.isfinite(disparity)
    truth = np.stack([np.zeros_like(disparity), -np.where(known, disparity, 0)])
    grey = [color.rgb2gray(image).astype(np.float32) for image in (left, right)]
    return grey[0], grey[1], truth, known


def _run_motorcycle() -> int:
    from skimage import registration as skreg

    import chunkreg

    reference, moving, truth, known = _motorcycle()

    def epe(flow):
        return float(np.sqrt(((flow - truth) ** 2).sum(axis=0))[known].mean())

    def runaway(flow):
        return int((np.hypot(flow[0], flow[1]) > 100).sum())

    print(
        "| method | skimage s | chunkreg s | speed-up | skimage EPE | chunkreg EPE | "
        "runaway px skimage / chunkreg |"
    )
    print("|" + "---|" * 7)
    rows = [("ilk", {"radius": r}) for r in (3, 7, 15)] + [("tvl1", {})]
    for method, kwargs in rows:
        theirs = getattr(skreg, f"optical_flow_{method}")
        ours = getattr(chunkreg, f"optical_flow_{method}")
        sk_time, sk_flow = _cpu_seconds(functools.partial(theirs, reference, moving, **kwargs), 1)
        for tol in (None, 0):
            extra = {} if tol is None else {"tol": tol}
            run = functools.partial(ours, reference, moving, **kwargs, **extra)
            our_time, our_flow = _cpu_seconds(run, 2)
            label = method + "".join(f" {k}={v}" for k, v in {**kwargs, **extra}.items())
            print(
                f"| {label} | {sk_time:.2f} | {our_time:.2f} | {sk_time / our_time:.1f}x | "
                f"{epe(sk_flow):.3f} | {epe(our_flow):.3f} | "
                f"{runaway(sk_flow)} / {runaway(our_flow)} |",
                flush=True,
            )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2-D 512² and 3-D 64³ only")
    parser.add_argument(
        "--switches",
        action="store_true",
        help="instead: gaussian=True / prefilter=True on 512² and 64³, one repeat",
    )
    parser.add_argument(
        "--motorcycle",
        action="store_true",
        help="instead: the motorcycle stereo pair (real data with ground truth)",
    )
    args = parser.parse_args(argv)
    where = _pin_one_cpu()
    if args.motorcycle:
        print(f"# bench_optical_flow --motorcycle: one thread, {where}, numpy {np.__version__}")
        print("# time = CPU seconds (best of 2 for chunkreg, 1 for scikit-image)")
        return _run_motorcycle()

    from skimage import registration as skreg

    import chunkreg

    cases = [((512, 512), 3), ((1024, 1024), 2), ((64, 64, 64), 2), ((128, 128, 128), 1)]
    if args.quick:
        cases = [((512, 512), 1), ((64, 64, 64), 1)]
    methods = [
        ("ilk", chunkreg.optical_flow_ilk, skreg.optical_flow_ilk, {}),
        ("ilk tol=0", chunkreg.optical_flow_ilk, None, {"tol": 0}),
        ("tvl1", chunkreg.optical_flow_tvl1, skreg.optical_flow_tvl1, {}),
        ("tvl1 tol=0", chunkreg.optical_flow_tvl1, None, {"tol": 0}),
    ]
    if args.switches:
        cases = [((512, 512), 1), ((64, 64, 64), 1)]
        methods = [
            ("ilk gaussian", chunkreg.optical_flow_ilk, skreg.optical_flow_ilk, {"gaussian": True}),
            (
                "ilk prefilter",
                chunkreg.optical_flow_ilk,
                skreg.optical_flow_ilk,
                {"prefilter": True},
            ),
            (
                "tvl1 prefilter",
                chunkreg.optical_flow_tvl1,
                skreg.optical_flow_tvl1,
                {"prefilter": True},
            ),
        ]
    print(f"# bench_optical_flow: one thread, {where}, numpy {np.__version__}, float32 inputs")
    print("# time = CPU seconds (best of repeats); memory = tracemalloc peak / one image")
    header = (
        "| method | shape | skimage s | chunkreg s | speed-up | skimage EPE | chunkreg EPE "
        "| skimage mem | chunkreg mem |"
    )
    print(header)
    print("|" + "---|" * 9)
    started = time.perf_counter()
    for shape, repeats in cases:
        reference, moving, truth = _case(shape)
        image_bytes = reference.nbytes
        label = "×".join(map(str, shape))
        sk_time = None
        for name, ours, theirs, kwargs in methods:
            run_ours = functools.partial(ours, reference, moving, **kwargs)
            our_time, our_flow = _cpu_seconds(run_ours, repeats)
            our_mem = _peak_bytes(run_ours) / image_bytes
            if theirs is not None:
                run_theirs = functools.partial(theirs, reference, moving, **kwargs)
                sk_time, sk_flow = _cpu_seconds(run_theirs, repeats)
                sk_mem = _peak_bytes(run_theirs) / image_bytes
                sk_cells = f"{sk_time:.2f} | "
                sk_epe = f"{_epe(sk_flow, truth):.4f}"
                sk_mem_cell = f"{sk_mem:.0f}x"
            else:  # compare with the preceding scikit-image run of the same method
                sk_cells = "(above) | "
                sk_epe = sk_mem_cell = "—"
            print(
                f"| {name} | {label} | {sk_cells}{our_time:.2f} | {sk_time / our_time:.1f}x | "
                f"{sk_epe} | {_epe(our_flow, truth):.4f} | {sk_mem_cell} | {our_mem:.0f}x |",
                flush=True,
            )
    print(f"# total wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
