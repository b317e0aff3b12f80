"""The flow kernels a tiled run can use: their parameters, halo and memory cost.

One place knows, for each method, which parameters the kernel takes (with scikit-image's
defaults), how wide a halo (``depth``) makes a tile's flow match the whole-volume flow, and how
much memory one call needs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

__all__ = [
    "DEFAULT_MOTION",
    "depth_rule",
    "flow_depth",
    "kernel",
    "kernel_memory_factor",
    "method_name",
    "resolve_method",
]

#: Largest displacement (pixels) ``depth="auto"`` allows for when sizing the halo.
DEFAULT_MOTION = 4


@dataclass(frozen=True)
class _Param:
    default: Any
    kind: type  # numbers.Integral, numbers.Real, bool or str
    minimum: float | None = None
    exclusive: bool = False  # minimum is exclusive
    choices: tuple[str, ...] = ()  # for kind str

    def check(self, name: str, value, method: str):
        if self.kind is str:
            if value not in self.choices:
                raise InputError(
                    f"{name} must be one of {list(self.choices)} for method {method!r}, "
                    f"got {value!r}."
                )
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise InputError(
                    f"{name} must be True or False for method {method!r}, got {value!r}."
                )
            return value
        if isinstance(value, bool) or not isinstance(value, self.kind):
            what = "an integer" if self.kind is numbers.Integral else "a number"
            raise InputError(f"{name} must be {what} for method {method!r}, got {value!r}.")
        value = int(value) if self.kind is numbers.Integral else float(value)
        if not math.isfinite(value):
            raise InputError(f"{name} must be finite, got {value!r}.")
        if self.minimum is not None and (
            value <= self.minimum if self.exclusive else value < self.minimum
        ):
            op = ">" if self.exclusive else ">="
            raise InputError(f"{name} must be {op} {self.minimum:g}, got {value!r}.")
        return value


# scikit-image's defaults (skimage.registration.optical_flow_ilk / optical_flow_tvl1); DIS's
# None values come from its preset (chunkreg.optical_flow_dis).
_PARAMS: dict[str, dict[str, _Param]] = {
    "ilk": {
        "radius": _Param(7, numbers.Integral, 1),
        "num_warp": _Param(10, numbers.Integral, 1),
        "gaussian": _Param(False, bool),
        "prefilter": _Param(False, bool),
        "tol": _Param(1e-4, numbers.Real, 0),
    },
    "tvl1": {
        "attachment": _Param(15.0, numbers.Real, 0, exclusive=True),
        "tightness": _Param(0.3, numbers.Real, 0, exclusive=True),
        "num_warp": _Param(5, numbers.Integral, 1),
        "num_iter": _Param(10, numbers.Integral, 1),
        "tol": _Param(1e-4, numbers.Real, 0),
        "prefilter": _Param(False, bool),
    },
    "dis": {
        "preset": _Param("medium", str, choices=("fast", "medium", "fine")),
        "patch_size": _Param(None, numbers.Integral, 2),
        "patch_stride": _Param(None, numbers.Integral, 1),
        "num_levels": _Param(None, numbers.Integral, 1),
        "finest_level": _Param(None, numbers.Integral, 0),
        "gd_iterations": _Param(None, numbers.Integral, 0),
        "variational_iterations": _Param(None, numbers.Integral, 0),
        "smoothness": _Param(None, numbers.Real, 0, exclusive=True),
        "robust_smoothness": _Param(None, bool),
        "normalize_patches": _Param(None, bool),
    },
}

_KERNELS = {"ilk": "optical_flow_ilk", "tvl1": "optical_flow_tvl1", "dis": "optical_flow_dis"}

# Peak memory of one kernel call, in multiples of its float32 input image. chunkreg's iLK and
# TV-L1 measured ~12-13x in 2-D and ~22x in 3-D (ru_maxrss, 1024² and 96³-128³ inputs); the
# factors below add ~20% margin. An unknown (custom) kernel is assumed as hungry as
# scikit-image's iLK in 3-D (~54x).
# chunkreg's DIS measured up to 13.3x in 2-D and 13.3x in 3-D at 96³ (tracemalloc, all
# presets, benchmarks/bench_dis.py); ~20% margin as well.
_MEMORY_FACTOR = {
    ("ilk", 2): 16,
    ("ilk", 3): 26,
    ("tvl1", 2): 16,
    ("tvl1", 3): 26,
    ("dis", 2): 16,
    ("dis", 3): 16,
}
_UNKNOWN_MEMORY_FACTOR = 54


def method_name(method) -> str:
    """Name of ``method`` for reports and run signatures."""
    if callable(method):
        module = getattr(method, "__module__", None) or "?"
        return f"{module}.{getattr(method, '__qualname__', type(method).__name__)}"
    return str(method)


def resolve_method(method, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``method`` and its keyword parameters; return all parameters with defaults.

    A callable ``method`` (a custom kernel ``f(reference, moving, **params) -> flow``) gets its
    parameters passed through unchecked.
    """
    if callable(method):
        return dict(params)
    if method not in _PARAMS:
        raise InputError(
            f"method must be one of {sorted(_PARAMS)} or a callable kernel, got {method!r}."
        )
    spec = _PARAMS[method]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise InputError(
            f"unknown parameter(s) {unknown} for method {method!r}; it takes {sorted(spec)}."
        )
    out = {}
    for name, p in spec.items():
        value = params.get(name)
        out[name] = p.default if value is None else p.check(name, value, method)
    return out


def kernel(method) -> Callable:
    """Return the in-memory kernel for ``method`` (imported on the worker that calls it)."""
    if callable(method):
        return method
    from .. import registration  # the package: its public kernels by name

    return getattr(registration, _KERNELS[method])


#: Methods whose kernels take ``spacing`` (per-axis windows and an anisotropy-aware pyramid).
SPACING_METHODS = ("ilk", "tvl1")


def level_params(method, params: Mapping[str, Any], spacing) -> dict[str, Any]:
    """The kernel's keyword arguments at a level of voxel size ``spacing`` (None: isotropic)."""
    if spacing is None or callable(method) or method not in SPACING_METHODS:
        return dict(params)
    return {**params, "spacing": tuple(spacing)}


def flow_depth(
    method: str = "ilk",
    *,
    motion: float = DEFAULT_MOTION,
    ndim: int = 2,
    spacing=None,
    **params,
) -> int | tuple[int, ...]:
    """Halo (``depth``, pixels per side) that makes tiled flow match whole-volume flow.

    A flow value depends on the images around it: iLK sums over a window of half-width
    ``w`` (``radius``; ``2 * radius + 1`` for the Gaussian window, which is truncated at four
    standard deviations of ``(2 * radius + 1) / 4``), TV-L1 regularisation spreads information
    over about ``sqrt(num_warp * num_iter)`` pixels, each median prefilter pass by one pixel per
    warp, and a displacement of ``motion`` pixels moves the samples a tile needs by as much. The
    rule is

    * iLK: ``depth = 2 * w + 2 + motion (+ num_warp with prefilter)``;
    * TV-L1: ``depth = 2 * ceil(sqrt(num_warp * num_iter)) + 2 + motion
      (+ num_warp with prefilter)``;
    * DIS (with the parameters of its preset for ``ndim``): a pixel's flow comes from the
      patches that cover it, which start up to ``patch_size - 1`` pixels before it, and each
      of which also tried its grid neighbours' displacements, a ``patch_stride`` further;
      the patch gradients add a pixel. The refinement's red-black sweeps carry information
      up to two pixels each, but its weight falls by about half per pixel, so that after
      ``variational_iterations`` pixels a change at the edge is below 0.01 px (measured on
      textured volumes, tests/volume/test_dis_tiles.py):
      ``depth = patch_size + patch_stride + variational_iterations + 2 + motion`` (30 with
      the 2-D presets "fast" and "medium", 22 with the 3-D ones). A tile refining a coarser
      level runs one DIS level, so that is its whole support; a tile without a coarser
      level runs DIS's own pyramid, whose coarser levels reach further (as iLK's and
      TV-L1's pyramids do).

    With the defaults (``radius=7``; ``num_warp=5, num_iter=10``) and ``motion=4`` this gives
    20 and 22 pixels. Measured on textured images with smooth displacements of up to 2 px, the
    tiled iLK flow with this halo differs from the whole-image flow by < 0.002 px at the 99th
    percentile (docs/tiling.md).

    With ``spacing`` (voxel size per axis) the halo is per axis: ``motion`` counts voxels of
    the finest axis and becomes the same physical distance along each axis, iLK's window
    half-width is per axis (:func:`chunkreg.registration.axis_radii`), TV-L1's spread along
    an axis shrinks by ``sqrt(finest voxel / its voxel)`` (its TV term weights the axis's
    differences so), and DIS's patches keep their size in voxels along every axis.

    Parameters
    ----------
    method : {"ilk", "tvl1", "dis"}
        The flow kernel.
    motion : float
        Largest displacement expected, in pixels (of the finest axis with ``spacing``).
    ndim : int
        Dimensions of the images (DIS's presets differ for 2-D and volumes); with
        ``spacing``, its length.
    spacing : sequence of float, optional
        Voxel size per axis; None: isotropic.
    **params
        The kernel's parameters (defaults as in :func:`chunkreg.optical_flow_ilk` /
        :func:`chunkreg.optical_flow_tvl1`, :func:`chunkreg.optical_flow_dis`).

    Returns
    -------
    int or tuple of int
        Halo per side, the same along every axis; per axis with ``spacing``.

    Examples
    --------
    >>> flow_depth("ilk"), flow_depth("ilk", radius=3, motion=10), flow_depth("tvl1")
    (20, 18, 22)
    >>> flow_depth("dis"), flow_depth("dis", preset="fine"), flow_depth("dis", ndim=3)
    (30, 30, 22)
    >>> flow_depth("ilk", spacing=(50, 4, 4)), flow_depth("tvl1", spacing=(50, 4, 4))
    ((5, 20, 20), (7, 22, 22))
    """
    return depth_rule(method, motion=motion, ndim=ndim, spacing=spacing, **params)[0]


def depth_rule(
    method, *, motion: float = DEFAULT_MOTION, ndim: int = 2, spacing=None, **params
) -> tuple[int | tuple[int, ...], str]:
    """Return :func:`flow_depth` and the formula it used, in words."""
    if spacing is not None:
        return _axis_depths(method, motion, tuple(float(v) for v in spacing), params)
    if callable(method):
        raise InputError(
            "depth='auto' needs a known method ('ilk', 'tvl1' or 'dis'); give depth=<pixels> "
            "(--depth N) for a custom kernel."
        )
    full = resolve_method(method, params)
    if isinstance(motion, bool) or not isinstance(motion, numbers.Real) or not motion >= 0:
        raise InputError(f"motion must be a number >= 0 (pixels), got {motion!r}.")
    if method == "dis":
        from ._optical_flow_dis import resolve_params

        p = resolve_params(full, ndim)
        depth = p.patch_size + p.patch_stride + p.variational_iterations + 2 + math.ceil(motion)
        rule = "patch_size+patch_stride+variational_iterations+2"
        return int(depth), f"auto: {rule}+motion with motion {motion:g} px"
    if method == "ilk":
        if full["gaussian"]:
            depth, rule = 2 * (2 * full["radius"] + 1) + 2, "2*(2*radius+1)+2"
        else:
            depth, rule = 2 * full["radius"] + 2, "2*radius+2"
    else:
        depth = 2 * math.ceil(math.sqrt(full["num_warp"] * full["num_iter"])) + 2
        rule = "2*ceil(sqrt(num_warp*num_iter))+2"
    if full["prefilter"]:
        depth += full["num_warp"]
        rule += "+num_warp"
    depth += math.ceil(motion)
    return int(depth), f"auto: {rule}+motion with motion {motion:g} px"


def _axis_depths(method, motion, spacing, params) -> tuple[tuple[int, ...], str]:
    """:func:`depth_rule` per axis for anisotropic voxels ``spacing``."""
    if callable(method):
        depth_rule(method)  # raises: a custom kernel's reach is unknown
    full = resolve_method(method, params)
    if isinstance(motion, bool) or not isinstance(motion, numbers.Real) or not motion >= 0:
        raise InputError(f"motion must be a number >= 0 (pixels), got {motion!r}.")
    finest = min(spacing)
    weight = [finest / v for v in spacing]  # voxels of each axis per finest voxel
    moves = [math.ceil(motion * w - 1e-9) for w in weight]
    where = f"per axis for voxel size {tuple(spacing)}, motion {motion:g} px of the finest axis"
    if method == "dis":  # patches of patch_size voxels along every axis
        depth = depth_rule("dis", motion=0, ndim=len(spacing), **params)[0]
        rule = "patch_size+patch_stride+variational_iterations+2"
        return tuple(depth + m for m in moves), f"auto: {rule}+motion, {where}"
    if method == "ilk":
        from ._optical_flow_ilk import axis_radii

        radii = axis_radii(full["radius"], spacing, len(spacing))
        if full["gaussian"]:
            reach, rule = [2 * (2 * r + 1) + 2 for r in radii], "2*(2*radius_axis+1)+2"
        else:
            reach, rule = [2 * r + 2 for r in radii], "2*radius_axis+2"
    else:
        spread = math.sqrt(full["num_warp"] * full["num_iter"])  # TV weights sqrt(finest/voxel)
        reach = [2 * math.ceil(spread * math.sqrt(w) - 1e-9) + 2 for w in weight]
        rule = "2*ceil(sqrt(num_warp*num_iter*finest/voxel))+2"
    if full["prefilter"]:
        reach = [d + full["num_warp"] for d in reach]
        rule += "+num_warp"
    depth = tuple(int(d + m) for d, m in zip(reach, moves, strict=True))
    return depth, f"auto: {rule}+motion, {where}"


def kernel_memory_factor(method, ndim: int) -> int:
    """Peak bytes of one kernel call per voxel of its (float32) input region."""
    if callable(method):
        return _UNKNOWN_MEMORY_FACTOR * 4
    return _MEMORY_FACTOR.get((method, min(max(ndim, 2), 3)), _UNKNOWN_MEMORY_FACTOR) * 4


#: What a flow task holds, per voxel of its read region, besides the kernel's own peak.
TASK_MODES = ("kernel", "tile", "refine")


def task_bytes_per_voxel(method, ndim: int, mode: str = "tile", input_itemsize: int = 4) -> int:
    """Peak bytes of one flow task per voxel of the region it reads: the one memory cost model.

    The tile chooser (:func:`chunkreg.volume.default_tile`) sizes tiles with it and the plans
    estimate their tasks' memory with it, so a chosen tile's task fits the budget the plan
    then reports.

    Parameters
    ----------
    method : str or callable
        The flow kernel.
    ndim : int
        Spatial axes.
    mode : {"kernel", "tile", "refine"}
        ``"kernel"``: the kernel call alone; ``"tile"``: a single-level tile (both inputs as
        read, the kernel, the float32 flow), also a whole level computed at once;
        ``"refine"``: a refinement tile (the kernel, the initial flow, the moving region it
        samples and the pre-warped image, see :func:`refine_extra`).
    input_itemsize : int
        Bytes per voxel of the inputs as stored (``"tile"``).
    """
    factor = kernel_memory_factor(method, ndim)
    if mode == "kernel":
        return factor
    if mode == "tile":
        return 2 * int(input_itemsize) + factor + 4 * ndim
    if mode == "refine":
        return factor + refine_extra(ndim)
    raise InputError(f"mode must be one of {TASK_MODES}, got {mode!r}.")


def refine_extra(ndim: int) -> int:
    """Bytes per read voxel a refinement task holds beside the kernel's own peak.

    The initial flow (float32 per axis), the moving region it samples (assumed half as large
    again as the read region) and the pre-warped moving image; the pre-warp's float64
    coordinates and the composition's temporaries are freed before or allocated after the
    kernel's peak, and are smaller than it.
    """
    return 4 * ndim + 6 + 4
