"""Dense inverse search (DIS) optical flow, in any number of dimensions.

Coarse to fine over an image pyramid (factor 2); on each level: patch search by
inverse-compositional Gauss-Newton and densification (:mod:`._dis_patches`), then variational
refinement (:mod:`._dis_variational`). From ``finest_level`` the flow is upsampled to full
resolution. numpy, with the per-patch and per-voxel loops compiled by numba.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._coarse_to_fine import prepare_images
from ._dis_patches import PatchGrid, patch_flow
from ._dis_variational import variational_refine
from ._optical_flow_ilk import _check_int
from ._pyramid import pyramid_reduce, resample_axis

__all__ = ["DIS_PRESETS", "optical_flow_dis", "patch_centres", "refine_flow_dis"]

#: Preset name -> parameters, for 2-D images and for volumes (3-D and more). Volumes use
#: smaller patches (6³ holds as many pixels as 15²) and fewer iterations: their deformations
#: are smooth and the refinement does more of the work. 3-D "medium": 2 Gauss-Newton
#: iterations and 4 sweeps (was 4 and 5: 0.100 vs 0.098 px at 96³, 0.076 vs 0.075 at 128³,
#: bench_dis.py volumes; the time at level 0 goes into the sweeps and the candidates).
DIS_PRESETS: dict[str, dict[int, dict[str, object]]] = {
    "fast": {
        2: {"patch_size": 8, "patch_stride": 8, "finest_level": 1, "gd_iterations": 6,
            "variational_iterations": 5},
        3: {"patch_size": 6, "patch_stride": 6, "finest_level": 1, "gd_iterations": 4,
            "variational_iterations": 5},
    },
    "medium": {
        2: {"patch_size": 8, "patch_stride": 8, "finest_level": 0, "gd_iterations": 6,
            "variational_iterations": 8},
        3: {"patch_size": 6, "patch_stride": 6, "finest_level": 0, "gd_iterations": 2,
            "variational_iterations": 4},
    },
    "fine": {
        2: {"patch_size": 8, "patch_stride": 6, "finest_level": 0, "gd_iterations": 8,
            "variational_iterations": 10},
        3: {"patch_size": 6, "patch_stride": 5, "finest_level": 0, "gd_iterations": 6,
            "variational_iterations": 8},
    },
}  # fmt: skip

#: Default weight of the smoothness term: robust (Charbonnier) and quadratic penalty.
DEFAULT_SMOOTHNESS = {True: 0.05, False: 1.0}
#: Densification weights are 1 / max(|residual|, floor * contrast).
_DENSE_FLOOR = 1.0 / 255


@dataclass(frozen=True)
class DISParams:
    """Validated parameters of one DIS call (frozen, so it pickles)."""

    patch_size: int
    patch_stride: int
    num_levels: int | None
    finest_level: int
    gd_iterations: int
    variational_iterations: int
    smoothness: float
    normalize_patches: bool
    robust_smoothness: bool

    def __post_init__(self) -> None:
        _check_int(self.patch_size, "patch_size", 2)
        _check_int(self.patch_stride, "patch_stride", 1)
        if self.patch_stride > self.patch_size:
            raise InputError(
                f"patch_stride must be <= patch_size (patches must cover the image), got "
                f"patch_stride={self.patch_stride} > patch_size={self.patch_size}."
            )
        if self.num_levels is not None:
            _check_int(self.num_levels, "num_levels", 1)
        _check_int(self.finest_level, "finest_level", 0)
        _check_int(self.gd_iterations, "gd_iterations", 0)
        _check_int(self.variational_iterations, "variational_iterations", 0)
        s = self.smoothness
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not (0 < s < math.inf):
            raise InputError(f"smoothness must be a finite number > 0, got {s!r}.")
        for name in ("normalize_patches", "robust_smoothness"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}.")


def resolve_params(params: dict, ndim: int = 2) -> DISParams:
    """:class:`DISParams` from :func:`optical_flow_dis`'s keywords (None: from the preset)."""
    params = dict(params)
    return _resolve(params.pop("preset", "medium"), params, ndim)


def _resolve(preset: str, overrides: dict, ndim: int) -> DISParams:
    if not isinstance(preset, str) or preset not in DIS_PRESETS:
        raise InputError(f"preset must be one of {sorted(DIS_PRESETS)}, got {preset!r}.")
    values = dict(DIS_PRESETS[preset][2 if ndim <= 2 else 3])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("num_levels", None)
    values.setdefault("normalize_patches", True)
    robust = values.setdefault("robust_smoothness", ndim <= 2)
    if isinstance(robust, bool):
        values.setdefault("smoothness", DEFAULT_SMOOTHNESS[robust])
    return DISParams(**values)


def _level_count(shape: tuple[int, ...], params: DISParams) -> int:
    """Levels (full resolution included) while the smallest axis keeps >= 2 patches."""
    count = 1
    while min(math.ceil(n / 2**count) for n in shape) >= 2 * params.patch_size:
        count += 1
    if params.num_levels is not None:
        count = min(count, params.num_levels)
    return count


def _contrast(image: np.ndarray) -> float:
    """Robust intensity range of ``image``: its 1st-99th percentile spread, on a subsample."""
    flat = image.reshape(-1)
    step = max(1, flat.size // 65536)
    low, high = np.percentile(flat[::step], [1.0, 99.0])
    spread = float(high - low)
    if not spread > 0:
        spread = float(np.max(flat) - np.min(flat))
    return spread if spread > 0 else 1.0


def _resize_flow(flow: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a flow linearly to ``shape`` and scale its values by the size ratio.

    Only for ``finest_level > 0``. Deliberately not the iLK/TV-L1 pyramid's upsampling,
    whose interpolation is tuned for those solvers: DIS's flow is already smooth here.
    """
    out = np.empty((flow.shape[0], *shape), dtype=flow.dtype)
    for axis, component in enumerate(flow):
        resized = component
        for k, size in enumerate(shape):
            resized = resample_axis(resized, size, k)
        np.multiply(resized, shape[axis] / flow.shape[axis + 1], out=out[axis])
    return out


def dis_pyramid(ref: np.ndarray, mov: np.ndarray, params: DISParams) -> np.ndarray:
    """:func:`optical_flow_dis` on validated images of one float dtype."""
    if np.array_equal(ref, mov):
        # Exactly zero, as promised: linear sampling at the last pixel of an axis computes
        # a + 1 * (b - a), which can differ from b in the last bit.
        return np.zeros((ref.ndim, *ref.shape), dtype=ref.dtype)
    count = _level_count(ref.shape, params)
    finest = min(params.finest_level, count - 1)
    contrast = _contrast(ref)
    refs, movs = [ref], [mov]
    for _ in range(count - 1):
        refs.append(pyramid_reduce(refs[-1], 2))
        movs.append(pyramid_reduce(movs[-1], 2))
    flow = np.zeros((ref.ndim, *refs[-1].shape), dtype=ref.dtype)
    for level in range(count - 1, finest - 1, -1):
        r, m = refs[level], movs[level]
        flow = patch_flow(
            r,
            m,
            flow,
            size=params.patch_size,
            stride=params.patch_stride,
            iterations=params.gd_iterations,
            normalize=params.normalize_patches,
            floor=_DENSE_FLOOR * contrast,
            interpolate=level == 0,  # measured: blocks of coarser levels are searched again
        )
        variational_refine(
            r,
            m,
            flow,
            iterations=params.variational_iterations,
            smoothness=params.smoothness,
            contrast=contrast,
            robust=params.robust_smoothness,
        )
        if level:
            refs[level] = movs[level] = None
    if flow.shape[1:] != ref.shape:
        return _resize_flow(flow, ref.shape)
    return np.ascontiguousarray(flow)


def patch_centres(shape, params: DISParams, grid_start=None) -> list[np.ndarray]:
    """Positions (local, per axis) where :func:`refine_flow_dis` reads its initial flow."""
    out = []
    for k, n in enumerate(shape):
        front = 0 if grid_start is None else int(grid_start[k]) % params.patch_stride
        grid = PatchGrid((n + front,), params.patch_size, params.patch_stride, 0)
        centres = np.arange(grid.counts[0]) * params.patch_stride + params.patch_size // 2
        out.append(np.clip(centres - front, 0, n - 1))
    return out


def refine_flow_dis(
    reference: np.ndarray,
    moving: np.ndarray,
    initial: np.ndarray,
    params: DISParams,
    *,
    moving_offset=None,
    grid_start=None,
    contrast: float | None = None,
) -> np.ndarray:
    """One level of DIS from a given flow, on a region of the moving image of its own.

    What a tile of a coarse-to-fine run computes: no image pyramid (the coarser level gave
    ``initial``), the patch search starting from ``initial`` and the variational refinement
    of the total flow, the moving image sampled where the flow points. No pre-warp and no
    composition of flows: the moving image is interpolated once (linearly), as between the
    levels of :func:`optical_flow_dis`.

    Parameters
    ----------
    reference : ndarray, shape S
        The reference over the region (float, validated).
    moving : ndarray
        A region of the moving image, same dtype, holding every sample ``x + initial(x)``
        (plus the residual motion and a patch); its first voxel lies at ``moving_offset``
        relative to the reference's first voxel.
    initial : ndarray, shape (ndim, *S), or callable
        The initial flow over the reference's region; only its values at the patch centres
        are used, so it may be a callable ``initial(points)`` returning the flow at the
        outer product of ``points`` (sorted local pixel positions per axis), of shape
        ``(ndim, *[len(p) for p in points])``.
    params : DISParams
        Patch and refinement parameters (``num_levels`` and ``finest_level`` are not used).
    moving_offset : sequence of int, optional
        Position of the moving region relative to the reference region (default 0).
    grid_start : sequence of int, optional
        Position of the reference region in the whole image: the patch grid is then laid at
        the image's multiples of ``patch_stride``, so that overlapping regions place the same
        patches (default: the grid starts at the region's first voxel).
    contrast : float, optional
        Intensity range the residuals are measured against (default: the reference's 1st-99th
        percentile spread).

    Returns
    -------
    ndarray, shape (ndim, *S), the reference's dtype
        The total flow (``initial`` plus the residual found).
    """
    ndim = reference.ndim
    dtype = reference.dtype
    offset = np.zeros(ndim) if moving_offset is None else np.asarray(moving_offset, float)
    front = [0] * ndim if grid_start is None else [int(g) % params.patch_stride for g in grid_start]
    if contrast is None:
        contrast = _contrast(reference)
    # Local coordinates of the (front-padded) reference region, displacements into the
    # moving region's: u = initial - offset - front.
    shift = (offset + np.asarray(front)).astype(dtype).reshape((ndim,) + (1,) * ndim)
    if callable(initial):
        shape = reference.shape

        def flow(centres):  # centres in the padded region -> the caller's local positions
            local = [
                np.clip(c - f, 0, n - 1) for c, f, n in zip(centres, front, shape, strict=True)
            ]
            return np.subtract(initial(local), shift, dtype=dtype)
    else:
        flow = np.subtract(initial, shift, dtype=dtype)
    if any(front):
        pads = [(f, 0) for f in front]
        reference = np.pad(reference, pads, mode="edge")
        if not callable(flow):
            flow = np.pad(flow, [(0, 0), *pads], mode="edge")
    flow = patch_flow(
        reference,
        moving,
        flow,
        size=params.patch_size,
        stride=params.patch_stride,
        iterations=params.gd_iterations,
        normalize=params.normalize_patches,
        floor=_DENSE_FLOOR * contrast,
    )
    variational_refine(
        reference,
        moving,
        flow,
        iterations=params.variational_iterations,
        smoothness=params.smoothness,
        contrast=contrast,
        robust=params.robust_smoothness,
    )
    flow = flow[(slice(None), *(slice(f, None) for f in front))]
    flow += shift
    return np.ascontiguousarray(flow)


def optical_flow_dis(
    reference_image: np.ndarray,
    moving_image: np.ndarray,
    *,
    preset: str = "medium",
    patch_size: int | None = None,
    patch_stride: int | None = None,
    num_levels: int | None = None,
    finest_level: int | None = None,
    gd_iterations: int | None = None,
    variational_iterations: int | None = None,
    smoothness: float | None = None,
    robust_smoothness: bool | None = None,
    normalize_patches: bool | None = None,
    dtype=np.float32,
) -> np.ndarray:
    """Dense optical flow by dense inverse search (DIS), in 2-D, 3-D or more.

    Coarse to fine over an image pyramid (factor 2). On each level the reference is cut into
    patches of ``patch_size`` pixels on a grid of step ``patch_stride``; each patch's
    displacement is found by inverse-compositional Gauss-Newton [1]_ from the coarser
    level's flow, the dense flow is the average of the patch displacements covering each
    pixel weighted by how well each patch fits there (at full resolution, patches that tile
    the image, ``patch_stride == patch_size`` as in the 3-D presets, have their displacements
    interpolated linearly between their centres instead), and a few sweeps of a variational
    refinement (robust brightness constancy and smoothness) polish it. Levels finer than
    ``finest_level`` are not searched: the flow of that level is upsampled.

    Intensities are compared relative to the reference's contrast (its 1st-99th percentile
    range), so the result does not depend on the intensity scale: a 12-bit image stored in
    uint16 behaves like the same image stretched to the full range.

    Parameters
    ----------
    reference_image : ndarray, shape (M, N[, P[, ...]])
        Fixed greyscale image. Integer images are scaled by their dtype's range.
    moving_image : ndarray, shape (M, N[, P[, ...]])
        Greyscale image to register onto the reference.
    preset : {"fast", "medium", "fine"}, optional
        Default values of the parameters below. In 2-D: "fast"
        (patch 8, stride 8, finest level 1, 6 Gauss-Newton iterations, 5 refinement
        sweeps), "medium" (the same at full resolution with 8 sweeps) or "fine" (patch 8,
        stride 6, 8 iterations, 10 sweeps). In 3-D: "fast" (patch 6, stride 6, finest level
        1, 4 iterations, 5 sweeps), "medium" (patch 6, stride 6, full resolution, 2
        iterations, 4 sweeps), "fine" (patch 6, stride 5, 6 iterations, 8 sweeps).
        Explicit parameters override the preset.
    patch_size : int, optional
        Patch width in pixels along every axis (>= 2). Larger patches find larger motions
        and resist noise, smaller ones follow finer detail.
    patch_stride : int, optional
        Step of the patch grid, 1 to ``patch_size``; smaller is denser, slower and smoother.
    num_levels : int, optional
        Most pyramid levels, full resolution included. None: as many as keep at least two
        patches along the smallest axis of the coarsest level.
    finest_level : int, optional
        Finest level searched (0 = full resolution); its flow is upsampled (linear) to the
        full resolution. Clipped to the coarsest level when the pyramid is shorter.
    gd_iterations : int, optional
        Gauss-Newton iterations per patch and level (>= 0). Each patch keeps the
        displacement of lowest error among those visited.
    variational_iterations : int, optional
        Relaxation sweeps of the variational refinement per level; 0 skips it.
    smoothness : float, optional
        Weight (> 0) of the smoothness term of the refinement; larger gives smoother flows.
        Default 0.05 with the robust penalty, 1.0 with the quadratic one.
    robust_smoothness : bool, optional
        Penalise the flow's gradient by the robust Charbonnier function, which keeps motion
        edges sharp (True), or quadratically, which suits smooth deformations and is faster
        (False). Default: True for 2-D images, False for volumes.
    normalize_patches : bool, optional
        Compare patches after subtracting their mean intensity (default True), which makes
        the patch search robust to slow brightness changes.
    dtype : {numpy.float32, numpy.float64}, optional
        Working and output precision.

    Returns
    -------
    flow : ndarray, shape (reference_image.ndim, M, N[, P[, ...]])
        Displacement per axis (numpy axis order) such that ``warp(moving_image, flow)``
        approximates ``reference_image``. Identical images give exactly zero.

    Raises
    ------
    chunkreg.errors.InputError
        Mismatched shapes, colour images (trailing axis of length 3 or 4 on 3+ dimensions),
        NaN/inf, non-float ``dtype``, an axis shorter than ``patch_size``, an unknown preset
        or a parameter out of range.

    Notes
    -----
    Each Gauss-Newton iteration samples the moving image once per patch pixel; the patch
    gradients and Hessians come from the fixed reference patch and are computed once per
    level (the inverse-compositional trick). Before the second half of the iterations each
    patch also tries its grid neighbours' displacements (spatial propagation). The peak
    memory measured at most 13.3 times one float32 input image (2-D and 3-D). The loops run
    compiled by numba; the first call in a fresh environment compiles them.

    References
    ----------
    .. [1] Kroeger, T., Timofte, R., Dai, D., & Van Gool, L. (2016). Fast optical flow
       using dense inverse search. ECCV 2016, LNCS 9908, 471-488.
       :DOI:`10.1007/978-3-319-46493-0_29`

    Examples
    --------
    >>> import numpy as np
    >>> from chunkreg import optical_flow_dis
    >>> from chunkreg.testing import apply_flow, smooth_displacement, textured_image
    >>> reference = textured_image((128, 128), seed=1)
    >>> truth = smooth_displacement((128, 128), amplitude=3.0, seed=2)
    >>> moving = apply_flow(reference, -truth)
    >>> flow = optical_flow_dis(reference, moving)
    >>> flow.shape, flow.dtype
    ((2, 128, 128), dtype('float32'))
    >>> bool(np.abs(flow - truth).mean() < 0.3)
    True
    """
    params = _resolve(
        preset,
        {
            "patch_size": patch_size,
            "patch_stride": patch_stride,
            "num_levels": num_levels,
            "finest_level": finest_level,
            "gd_iterations": gd_iterations,
            "variational_iterations": variational_iterations,
            "smoothness": smoothness,
            "robust_smoothness": robust_smoothness,
            "normalize_patches": normalize_patches,
        },
        np.ndim(reference_image),
    )
    ref, mov = prepare_images(
        reference_image,
        moving_image,
        dtype,
        min_length=params.patch_size,
        window=f" for DIS patches of {params.patch_size} pixels (pass a smaller patch_size)",
        check_channels=True,
    )
    return dis_pyramid(ref, mov, params)
