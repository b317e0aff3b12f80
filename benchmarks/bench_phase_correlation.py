"""Benchmark chunkreg.phase_cross_correlation against scikit-image on one CPU core.

Both run in this process on identical inputs: a noisy band-limited texture and a copy shifted by
a known sub-pixel amount with ``scipy.ndimage.fourier_shift`` (independent 1% noise on each).
The process pins itself to one CPU, scipy.fft to one worker and BLAS to one thread, and prints
the median CPU time of interleaved repeats (fewer for big cases). Takes about two minutes.

Usage::

    python benchmarks/bench_phase_correlation.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

# One thread everywhere, set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import scipy.fft as sfft  # noqa: E402
from _common import pin_one_cpu as _pin_one_cpu  # noqa: E402
from scipy import ndimage  # noqa: E402


def _pair(shape, shift, seed):
    from chunkreg.testing import textured_image

    rng = np.random.default_rng(seed)
    ref = textured_image(shape, seed=seed, sigma=1.0, dtype=np.float64)
    spec = sfft.rfftn(ref)
    mov = sfft.irfftn(ndimage.fourier_shift(spec, -np.asarray(shift), n=shape[-1]), s=shape)
    ref = ref + 0.01 * rng.standard_normal(shape)
    mov = mov + 0.01 * rng.standard_normal(shape)
    return ref.astype(np.float32), mov.astype(np.float32)


def _median_ms(funcs, repeats):
    """Median CPU time (ms) of each function, calls interleaved so load drift hits all alike.

    The process runs one thread on one core, so its CPU time is the wall time it would take on
    an idle core; unlike wall time it does not count the time other processes hold the core.
    """
    for func in funcs:
        func()  # warm-up (plans, caches)
    times = [[] for _ in funcs]
    for _ in range(repeats):
        for func, bucket in zip(funcs, times, strict=True):
            t0 = time.process_time()
            func()
            bucket.append(time.process_time() - t0)
    return [1e3 * float(np.median(t)) for t in times]


CASES = [  # shape, upsample_factor, repeats, masked
    ((512, 512), 1, 9, False),
    ((512, 512), 100, 9, False),
    ((2048, 2048), 1, 5, False),
    ((2048, 2048), 100, 5, False),
    ((128, 128, 128), 1, 5, False),
    ((128, 128, 128), 100, 3, False),
    ((256, 256, 256), 1, 3, False),
    ((256, 256, 256), 100, 1, False),
    ((512, 512), 1, 5, True),
]


def _run_case(shape, upsample, repeats, masked):
    from skimage.registration import phase_cross_correlation as skimage_pcc

    from chunkreg import phase_cross_correlation as ours

    true = np.array([3.37, -5.81, 2.26][: len(shape)]) if not masked else np.array([4.0, -7.0])
    ref, mov = _pair(shape, true, seed=len(shape))
    kwargs = {"upsample_factor": upsample}
    if masked:
        mask = np.ones(shape, dtype=bool)
        mask[:, : shape[1] // 2] = False
        kwargs = {"reference_mask": mask}
    sk_shift = np.asarray(skimage_pcc(ref, mov, **kwargs)[0], dtype=np.float64)
    our_shift = np.asarray(ours(ref, mov, **kwargs)[0], dtype=np.float64)
    t_sk, t_ours = _median_ms(
        [
            functools.partial(skimage_pcc, ref, mov, **kwargs),
            functools.partial(ours, ref, mov, **kwargs),
        ],
        repeats,
    )
    name = "x".join(map(str, shape)) + (" masked" if masked else f" up={upsample}")
    return (
        f"| {name:<20} | {t_sk:>10.1f} | {t_ours:>8.1f} | {t_sk / t_ours:>5.1f}x | "
        f"{np.abs(sk_shift - true).max():>14.3f} | {np.abs(our_shift - true).max():>11.3f} | "
        f"{np.abs(our_shift - sk_shift).max():>13.2g} |"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 256^3 cases")
    args = parser.parse_args(argv)
    cases = CASES
    if args.quick:
        cases = [(s, u, max(1, r // 2), m) for s, u, r, m in cases if s != (256, 256, 256)]

    where = _pin_one_cpu()
    print(
        f"phase_cross_correlation, float32, one core ({where}), scipy.fft workers=1, median CPU ms"
    )
    header = (
        f"| {'case':<20} | {'skimage ms':>10} | {'ours ms':>8} | {'ratio':>6} | "
        f"{'skimage err px':>14} | {'ours err px':>11} | {'ours-skimage':>13} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    with sfft.set_workers(1):
        for case in cases:
            print(_run_case(*case), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
