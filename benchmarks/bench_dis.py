"""Benchmark chunkreg.optical_flow_dis side by side with OpenCV DIS, our iLK/TV-L1 and demons.

Everything runs in this one process, pinned to one CPU, with every native thread pool at one
thread, on identical inputs:

- 2-D, the Middlebury-2014 motorcycle stereo pair shipped with scikit-image
  (``skimage.data.stereo_motorcycle``, grey, uint8, 500 x 741): the ground-truth disparity
  ``d`` of the left image gives the flow ``(0, -d)`` that maps the right (moving) image onto
  the left (reference). Pixels without a disparity and pixels occluded in the right image
  (another left pixel with a larger disparity lands within half a pixel of the same place)
  are left out of the error.
- 2-D, a real serial-section TEM slice (ISBI 2012, 512 x 512, uint8, from
  ``/work/shared/data/isbi2012-em-ssTEM`` or ``--em PATH``) deformed by a known smooth field of
  up to 4 px (``chunkreg.testing.smooth_displacement``) and rounded back to uint8; a band of
  8 px along the border, where content leaves the frame, is left out of the error.
- 3-D, generated pairs (band-limited texture, smooth displacement of up to 4 px, half a
  period across the volume) at 96³ and 128³.

Competitors: OpenCV's ``cv2.DISOpticalFlow_create`` presets ultrafast/fast/medium (2-D),
chunkreg's iLK (scikit-image defaults) and TV-L1 (2-D), SimpleITK's multi-level
``FastSymmetricForcesDemonsRegistrationFilter`` (3-D; skipped when SimpleITK is not
installed). Each is reported with its mean endpoint error (EPE, px) and CPU seconds
(``time.process_time``, best of the repeats) per megapixel; our DIS also with its peak
memory (``tracemalloc``, in a separate untimed run) as a multiple of one float32 input image.

Usage::

    python benchmarks/bench_dis.py [--quick] [--em PATH]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import tracemalloc
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
from _common import pin_one_cpu  # noqa: E402

EM_DEFAULT = Path("/work/shared/data/isbi2012-em-ssTEM/train-image/0.png")


def _epe(flow: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    err = np.sqrt(((np.asarray(flow, np.float64) - truth) ** 2).sum(axis=0))
    return float(err[mask].mean())


def _cpu(func, repeats: int):
    best, result = np.inf, None
    for _ in range(repeats):
        t0 = time.process_time()
        result = func()
        best = min(best, time.process_time() - t0)
    return best, result


def _peak_ratio(func, image_bytes: int) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        func()
        return tracemalloc.get_traced_memory()[1] / image_bytes
    finally:
        tracemalloc.stop()


def _fixed_point_truth(displacement: np.ndarray) -> np.ndarray:
    """``u`` with ``moving(x + u) = reference(x)`` for ``moving = apply_flow(reference, -d)``."""
    from chunkreg.testing import apply_flow

    truth = displacement.copy()
    for _ in range(6):
        truth = np.stack([apply_flow(c, truth, order=1) for c in displacement])
    return truth


def motorcycle():
    """Grey uint8 left/right images, the true flow and the mask of scored pixels."""
    from skimage import color, data

    left, right, disparity = data.stereo_motorcycle()
    ref = (color.rgb2gray(left) * 255).round().astype(np.uint8)
    mov = (color.rgb2gray(right) * 255).round().astype(np.uint8)
    valid = np.isfinite(disparity)
    d = np.where(valid, disparity, 0).astype(np.float64)
    # occluded in the right image: a pixel with a larger disparity lands on the same spot
    rows, cols = np.indices(d.shape)
    target = np.round(cols - d).astype(np.intp)
    inside = valid & (target >= 0)
    best = np.full(d.shape, -np.inf)
    np.maximum.at(best, (rows[inside], target[inside]), d[inside])
    seen = np.full(d.shape, -np.inf)
    seen[inside] = best[rows[inside], target[inside]]
    mask = inside & (seen <= d + 1.0)
    truth = np.stack([np.zeros_like(d), -d])
    return "motorcycle 500x741", ref, mov, truth, mask


def em_slice(path: Path):
    """An EM slice and a copy deformed by a known smooth field (both uint8)."""
    import imageio.v3 as iio

    from chunkreg.testing import apply_flow, smooth_displacement

    ref = np.asarray(iio.imread(path))
    if ref.ndim == 3:
        ref = ref[..., 0]
    displacement = smooth_displacement(ref.shape, amplitude=4.0, seed=3, periods=0.5)
    mov = np.clip(apply_flow(ref.astype(np.float32), -displacement), 0, 255)
    mov = mov.round().astype(np.uint8)
    truth = _fixed_point_truth(displacement)
    mask = np.zeros(ref.shape, dtype=bool)
    mask[8:-8, 8:-8] = True
    return f"EM slice {ref.shape[0]}x{ref.shape[1]}", ref, mov, truth, mask


def volume(n: int):
    from chunkreg.testing import apply_flow, smooth_displacement, textured_image

    shape = (n, n, n)
    ref = textured_image(shape, seed=1)
    displacement = smooth_displacement(shape, amplitude=4.0, seed=2, periods=0.5)
    mov = apply_flow(ref, -displacement)
    truth = _fixed_point_truth(displacement)
    return f"volume {n}³", ref, mov, truth, np.ones(shape, dtype=bool)


def opencv_dis(preset: str):
    import cv2

    cv2.setNumThreads(1)
    code = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }[preset]

    def run(ref, mov):
        flow = cv2.DISOpticalFlow_create(code).calc(ref, mov, None)
        return np.stack([flow[..., 1], flow[..., 0]])

    return run


def demons(ref, mov, levels=(4, 2, 1), iterations=(50, 30, 15)):
    """SimpleITK multi-level fast symmetric forces demons; flow in numpy axis order."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    fixed = sitk.GetImageFromArray(np.asarray(ref, np.float32))
    moving = sitk.GetImageFromArray(np.asarray(mov, np.float32))
    field = None
    for factor, count in zip(levels, iterations, strict=True):
        f, m = fixed, moving
        if factor > 1:
            sigma = 0.5 * factor
            f = sitk.Shrink(sitk.SmoothingRecursiveGaussian(fixed, sigma), [factor] * 3)
            m = sitk.Shrink(sitk.SmoothingRecursiveGaussian(moving, sigma), [factor] * 3)
        if field is None:
            field = sitk.Image(f.GetSize(), sitk.sitkVectorFloat64, 3)
            field.CopyInformation(f)
        else:
            field = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0,
                                  sitk.sitkVectorFloat64)  # fmt: skip
        flt = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        flt.SetNumberOfIterations(count)
        flt.SetSmoothDisplacementField(True)
        flt.SetStandardDeviations(1.0)
        field = flt.Execute(f, m, field)
    arr = sitk.GetArrayFromImage(field)  # (z, y, x, 3) with components (x, y, z)
    return np.moveaxis(arr[..., ::-1], -1, 0).astype(np.float32)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, skip 128³")
    parser.add_argument("--em", type=Path, default=EM_DEFAULT, help="EM slice (PNG)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import chunkreg

    where = pin_one_cpu()
    repeats = 1 if args.quick else 3
    print(f"# {where}, one thread; time = CPU s (best of {repeats}) per Mpx; EPE in px")
    print("| case | method | EPE | CPU s | s/Mpx | peak / image |")
    print("|---|---|---|---|---|---|")

    def row(case, name, ref, mov, truth, mask, func, memory=False):
        seconds, flow = _cpu(lambda: func(ref, mov), repeats)
        mpx = ref.size / 1e6
        peak = ""
        if memory:
            peak = f"{_peak_ratio(lambda: func(ref, mov), ref.size * 4):.1f}x"
        print(
            f"| {case} | {name} | {_epe(flow, truth, mask):.3f} | {seconds:.3f} | "
            f"{seconds / mpx:.3f} | {peak} |",
            flush=True,
        )

    cases_2d = [motorcycle()]
    if args.em.exists():
        cases_2d.append(em_slice(args.em))
    else:
        print(f"# EM slice {args.em} not found: skipped")

    def ours(case, ref, mov, truth, mask):
        for preset in ("fast", "medium", "fine"):
            run = functools.partial(chunkreg.optical_flow_dis, preset=preset)
            row(case, f"chunkreg DIS {preset}", ref, mov, truth, mask, run, memory=True)
        row(case, "chunkreg iLK", ref, mov, truth, mask, chunkreg.optical_flow_ilk)

    # compile the numba kernels (2-D and 3-D) outside the timings
    for shape in ((64, 64), (24, 24, 24)):
        warm = np.random.default_rng(0).random(shape, dtype=np.float32)
        chunkreg.optical_flow_dis(warm, np.roll(warm, 1, axis=0))
    for case, ref, mov, truth, mask in cases_2d:
        if _has("cv2"):
            for preset in ("ultrafast", "fast", "medium"):
                row(case, f"OpenCV DIS {preset}", ref, mov, truth, mask, opencv_dis(preset))
        ours(case, ref, mov, truth, mask)
        if not args.quick:
            row(case, "chunkreg TV-L1", ref, mov, truth, mask, chunkreg.optical_flow_tvl1)
    sizes = (96,) if args.quick else (96, 128)
    for n in sizes:
        case, ref, mov, truth, mask = volume(n)
        ours(case, ref, mov, truth, mask)
        if _has("SimpleITK"):
            row(case, "SimpleITK demons", ref, mov, truth, mask, demons)
        else:
            print(f"# {case}: SimpleITK not installed, demons skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
