"""Planning a flow run: validated inputs, levels, tile grids, halos and cost estimates (no writes)."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from .._validation import per_axis
from ..engine._blend import BLEND_KIND
from ..errors import InputError
from ..io import (
    ArrayRef,
    ArrayView,
    check_inputs_stored,
    open_array,
    read_space,
    select_channels,
)
from ..io._arrays import require_shard_aligned, resolve_shards
from ..registration._methods import (
    depth_rule,
    level_params,
    method_name,
    resolve_method,
    task_bytes_per_voxel,
)
from ..tiling import PieceLayout, TileGrid
from ._intensity import IDENTITY, Intensity, plan_intensity
from ._levels import (
    MIN_LEVEL_EDGE,
    REFINE_MOTION,
    LevelPlan,
    halve,
    input_levels,
    level_steps,
    parse_levels,
    refine_memory,
    tiled_memory,
    whole_memory,
)

__all__ = ["FlowPlan", "default_tile", "plan_flow", "pyramid_tile"]

#: Memory one kernel call may use when the tile is chosen automatically.
TASK_MEMORY_BUDGET = 2**30
#: Baseline memory of a worker process (Python, numpy, scipy, dask, zarr imported).
WORKER_BASELINE = 300 * 2**20
#: Tile edge the automatic choice aims at, by number of axes.
_TARGET_EDGE = {2: 1024, 3: 256}
#: Edge of the region one pyramid task computes, by number of axes.
_PYRAMID_EDGE = {2: 1024, 3: 128}


def _absolute_ref(array: zarr.Array) -> ArrayRef:
    """A reference to ``array`` (one channel of it, for a view) usable from workers in other
    directories."""
    store, index = array.store, tuple(getattr(array, "fixed", ()))
    if isinstance(store, zarr.storage.LocalStore):
        return ArrayRef(os.path.abspath(store.root), array.path, index)
    return ArrayRef(store, array.path, index)


def default_tile(
    shape,
    chunks,
    depth,
    *,
    method="ilk",
    memory_budget: int = TASK_MEMORY_BUDGET,
    mode: str = "kernel",
    input_itemsize: int = 4,
) -> tuple[int, ...]:
    """Choose a tile shape: a multiple of ``chunks``, large, within a memory budget.

    Starts from the largest multiple of the chunk not above 1024 (2-D) or 256 (3-D) pixels per
    axis, then removes one chunk at a time from the longest axis until one kernel call on the
    tile plus its halo fits ``memory_budget`` bytes (or every axis is down to one chunk). Large
    tiles keep the halo's share of the work small: a 128³ tile with a 20-pixel halo computes
    2.2x its volume, a 256³ tile 1.5x. With 64³ chunks and iLK's default halo (20) this gives
    128 x 192 x 192 tiles (about 0.9 GiB per task) in 3-D and 1024² in 2-D.

    Parameters
    ----------
    shape, chunks, depth : tuple of int
        Array shape, chunk shape the tiles must align to, halo per axis.
    method : str or callable
        The flow kernel, for its memory cost.
    memory_budget : int
        Bytes one task may use (default 1 GiB).
    mode : {"kernel", "tile", "refine"}, optional
        What must fit the budget: the kernel call alone (default), or the whole task of a
        single-level or refinement tile, as the plans estimate it
        (:func:`~chunkreg.registration._methods.task_bytes_per_voxel`, the one cost model).
    input_itemsize : int
        Bytes per stored input voxel (``mode="tile"``).

    Returns
    -------
    tuple of int
    """
    ndim = len(shape)
    target = _TARGET_EDGE.get(ndim, 256)
    factor = task_bytes_per_voxel(method, ndim, mode, input_itemsize)
    tile = [
        n if n <= max(c, target) else max(c, target // c * c)
        for n, c in zip(shape, chunks, strict=True)
    ]

    def cost(t):
        return factor * math.prod(
            min(a + 2 * d, n) for a, d, n in zip(t, depth, shape, strict=True)
        )

    while cost(tile) > memory_budget:
        shrinkable = [a for a in range(ndim) if tile[a] > chunks[a]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: tile[a])
        tile[axis] = (math.ceil(tile[axis] / chunks[axis]) - 1) * chunks[axis]
    return tuple(tile)


def pyramid_tile(shape, chunks) -> tuple[int, ...]:
    """Region of a pyramid level one downsampling task computes (a multiple of its chunks)."""
    target = _PYRAMID_EDGE.get(len(shape), 128)
    return tuple(
        n if n <= max(c, target) else max(c, target // c * c)
        for n, c in zip(shape, chunks, strict=True)
    )


@dataclass(frozen=True)
class FlowPlan:
    """Everything a flow run will do, decided before anything is written.

    Attributes
    ----------
    reference, moving : ArrayRef
        The inputs (opened read-only by each task).
    shape : tuple of int
        Spatial shape of the inputs; the flow has shape ``(ndim, *shape)``.
    input_dtype : numpy.dtype
        Dtype of the reference.
    input_chunks : tuple of int
        Chunk shape of the reference (the moving image's may differ).
    moving_chunks : tuple of int
        Chunk shape of the moving image.
    chunks : tuple of int
        Output chunk shape, ``(1, *spatial)``.
    grid : TileGrid
        Tiles of level 0 (cores aligned to the output chunks) and their halo (``grid.depth``).
    method : str or callable
        The flow kernel.
    params : dict
        Its parameters, defaults filled in.
    depth_rule : str
        How the halo of level 0 was chosen.
    levels : tuple of LevelPlan
        The levels, finest (0) first; one for a single-level run.
    coarse_memory : int
        Bytes the in-memory computation of the coarsest level may use.
    reference_intensity, moving_intensity : Intensity
        How tiles turn each input's stored values into kernel intensities (dtype scaling as
        the in-memory kernels do, then the normalisation ``normalize`` chose).
    intensity_note : str
        What was decided about intensities, in words.
    spacing : tuple of float or None
        Voxel size per axis when it is anisotropic (levels, windows and halos then follow it,
        see :func:`plan_flow`); None when isotropic or unknown.
    """

    reference: ArrayRef
    moving: ArrayRef
    shape: tuple[int, ...]
    input_dtype: np.dtype
    input_chunks: tuple[int, ...]
    moving_chunks: tuple[int, ...]
    chunks: tuple[int, ...]
    grid: TileGrid
    method: Any
    params: dict = field(hash=False)
    depth_rule: str = ""
    levels: tuple[LevelPlan, ...] = ()
    coarse_memory: int = TASK_MEMORY_BUDGET
    reference_intensity: Intensity = IDENTITY
    moving_intensity: Intensity = IDENTITY
    intensity_note: str = ""
    shards: tuple[int, ...] | None = None
    #: Reference to moving voxels, applied before the flow (None: none); rows as tuples.
    initial_affine: tuple | None = None
    spacing: tuple[float, ...] | None = None
    #: The channel registered on, for multi-channel inputs (None: single-channel inputs).
    channel: int | None = None

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.shape)

    @property
    def method_name(self) -> str:
        """Name of the kernel."""
        return method_name(self.method)

    def level_params(self, level: int) -> dict:
        """The kernel's keyword arguments at level ``level`` (its voxel size added when the
        run is anisotropy-aware and the kernel takes one)."""
        return level_params(self.method, self.params, self.levels[level].spacing)

    def level_memory(self, lp: LevelPlan) -> int:
        """Estimated peak bytes of one flow task of level ``lp``."""
        if lp.mode == "whole":
            return whole_memory(self.method, lp.shape)
        itemsize = self.input_dtype.itemsize if lp.level == 0 else 4
        if lp.mode == "refine":
            return refine_memory(self.method, lp.grid)
        return tiled_memory(self.method, lp.grid, itemsize)

    @property
    def task_memory(self) -> int:
        """Estimated peak bytes of the largest task (any level, any stage)."""
        return max(self.level_memory(lp) for lp in self.levels)

    @property
    def worker_memory(self) -> int:
        """Estimated peak bytes of a one-thread worker running these tasks."""
        return WORKER_BASELINE + self.task_memory

    @property
    def read_amplification(self) -> float:
        """Elements decoded from both inputs' chunks per element of the inputs (level 0)."""
        return (
            self.grid.read_amplification(self.input_chunks)
            + self.grid.read_amplification(self.moving_chunks)
        ) / 2

    @property
    def disk_bytes(self) -> dict[str, int]:
        """Uncompressed bytes the run writes: ``flow`` (level 0), ``coarse`` (the pyramid it
        builds and the coarser levels' flows) and ``scratch`` (the largest level's tile results
        before blending; deleted once that level is blended)."""
        ndim = self.ndim
        coarse = 0
        scratch = 0
        for lp in self.levels:
            if lp.level:
                coarse += 4 * ndim * math.prod(lp.shape)
                if lp.reference is None:  # pyramid levels of both inputs, float32
                    coarse += 2 * 4 * math.prod(lp.shape)
            if lp.mode != "whole":
                # the pieces the tiles write before blending: float32, one component per axis
                scratch = max(scratch, PieceLayout(lp.grid, lp.band).nbytes(ndim, 4))
        return {"flow": 4 * ndim * math.prod(self.shape), "coarse": coarse, "scratch": scratch}

    def signature(self) -> dict:
        """What determines the output's content (stored with it; resume checks it)."""
        extra = {} if self.initial_affine is None else {"initial_affine": self.initial_affine}
        if self.spacing is not None:
            extra["spacing"] = list(self.spacing)
        return {
            **extra,
            "method": self.method_name,
            "params": self.params,
            "reference": str(self.reference),
            "moving": str(self.moving),
            "shape": list(self.shape),
            "input_dtype": str(self.input_dtype),
            "dtype": "float32",
            "chunks": list(self.chunks),
            **({"shards": list(self.shards)} if self.shards else {}),
            "tile": list(self.grid.tile_shape),
            "depth": list(self.grid.depth),
            "stitch": f"{BLEND_KIND} blend across half the halo",
            "levels": [lp.signature() for lp in self.levels],
            "intensity": {
                "reference": self.reference_intensity.signature(),
                "moving": self.moving_intensity.signature(),
            },
        }

    def describe(self) -> str:
        """Human-readable plan (what ``chunkreg flow --dry-run`` prints)."""
        g = self.grid
        mib = 2**20
        n = len(self.levels)
        disk = self.disk_bytes
        lines = [
            f"flow: method {self.method_name}, parameters "
            + ", ".join(f"{k}={v}" for k, v in self.params.items()),
            f"inputs: shape {self.shape}, dtype {self.input_dtype}, chunks {self.input_chunks}"
            + (
                f" (moving: {self.moving_chunks})"
                if self.moving_chunks != self.input_chunks
                else ""
            ),
            *(
                [
                    f"channel: {self.channel} (the registration channel of the multi-channel "
                    "input(s); warp_volume applies the flow to every channel)"
                ]
                if self.channel is not None
                else []
            ),
            f"intensities: {self.intensity_note}",
            *(
                [
                    f"voxel size (spacing): {self.spacing}: anisotropic, so each coarser level "
                    "halves only the axes finer than twice the finest voxel, and windows and "
                    "halos are per axis (same physical extent); flows stay in voxels"
                ]
                if self.spacing is not None
                else []
            ),
            f"output: shape {(self.ndim, *self.shape)}, float32, chunks {self.chunks}"
            + (f", shards {self.shards}" if self.shards else ""),
            f"levels: {n}"
            + (
                " (coarse-to-fine: the coarsest level over the whole volume, then each finer "
                "level refines the upsampled flow tile by tile)"
                if n > 1
                else " (single level: each tile runs the kernel with its own image pyramid)"
            ),
        ]
        if self.initial_affine is not None:
            lines.append(
                "initial affine: the moving volume is resampled through it (cubic) wherever a "
                "task reads it; the flow is the residual (warp applies affine after flow)"
            )
        lines += [f"  {lp.describe()}" for lp in reversed(self.levels)]
        lines += [
            f"tiles: {len(g)} = {' x '.join(map(str, g.grid_shape))} of {g.tile_shape}",
            f"halo (depth): {g.depth} ({self.depth_rule})",
            f"stitching: {BLEND_KIND} blend of neighbouring tiles across "
            f"{tuple(2 * b for b in self.levels[0].band)} voxels at each border",
            f"computed per input voxel (halo cost): {g.halo_factor:.2f}x",
            f"read amplification vs the input chunk grid: {self.read_amplification:.2f}x",
            f"estimated memory: {self.task_memory / mib:.1f} MiB per task, "
            f"{self.worker_memory / mib:.0f} MiB per one-thread worker",
            f"disk (uncompressed): flow {_size(disk['flow'])}, pyramid and coarse levels "
            f"{_size(disk['coarse'])}, plus up to {_size(disk['scratch'])} of scratch while a "
            "level is blended (deleted after)",
        ]
        return "\n".join(lines)


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def _check_input(array, name) -> zarr.Array:
    if array.dtype.kind not in "biuf":
        raise InputError(
            f"{name} must have a real numeric dtype, got {array.dtype}; convert it first."
        )
    if array.ndim not in (2, 3):
        raise InputError(
            f"{name} must be 2-D or 3-D, got {array.ndim}-D with shape {array.shape}; "
            "register one time point at a time, and give channel= (--channel) for a "
            "multi-channel image (its channel axis named 'c', or first)."
        )
    return array


def open_inputs(reference, moving, *, level=None, channel=None) -> tuple:
    """Open a registration's two inputs read-only, seen at one channel for multi-channel ones.

    ``channel`` selects the registration channel of inputs with a channel axis (see
    :func:`chunkreg.io.select_channels`); the others are used as they are.

    Returns
    -------
    reference, moving : zarr.Array or ArrayView
    channel : int or None
        The channel read (None when neither input has channels).
    """
    arrays = {
        "reference": open_array(reference, level=level, name="reference"),
        "moving": open_array(moving, level=level, name="moving"),
    }
    picked = select_channels(arrays, channel)
    ref, mov = picked["reference"], picked["moving"]
    views = [a for a in (ref, mov) if isinstance(a, ArrayView)]
    used = views[0].fixed[0][1] if views else None
    return ref, mov, used


def _bytes(value, name: str) -> int:
    if isinstance(value, str):
        from dask.utils import parse_bytes

        try:
            value = parse_bytes(value)
        except ValueError:
            raise InputError(
                f"{name} must be bytes such as 2**30 or '1GiB', got {value!r}."
            ) from None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive number of bytes, got {value!r}.")
    return int(value)


def _depths(method, params, overlap, ndim, name="depth", spacing=None):
    """(single-level depth, rule), (refinement depth, rule) per axis, for voxels ``spacing``."""
    if isinstance(overlap, str):
        if overlap != "auto":
            raise InputError(f"{name} must be 'auto' or pixels per axis, got {overlap!r}.")
        single, single_rule = depth_rule(method, ndim=ndim, spacing=spacing, **params)
        refine, refine_rule = depth_rule(
            method, motion=REFINE_MOTION, ndim=ndim, spacing=spacing, **params
        )
        if spacing is not None:
            return (single, single_rule), (refine, refine_rule + " (residual)")
        return ((single,) * ndim, single_rule), ((refine,) * ndim, refine_rule + " (residual)")
    depth = per_axis(overlap, ndim, name, minimum=0)
    return (depth, "given"), (depth, "given")


def _count_levels(levels, shape, grid: TileGrid, method, coarse_memory: int, spacing=None) -> int:
    if levels != "auto":
        return levels
    if len(grid) == 1:
        return 1
    steps = level_steps(spacing, len(shape), 64)
    count, coarsest = 2, halve(shape, steps[0])

    def smallest_next(shape, step):  # the smallest axis the next step would halve
        return min(n for n, f in zip(halve(shape, step), step, strict=True) if f > 1)

    while (
        whole_memory(method, coarsest) > coarse_memory
        and smallest_next(coarsest, steps[count - 1]) >= 2 * MIN_LEVEL_EDGE
    ):
        count, coarsest = count + 1, halve(coarsest, steps[count - 1])
    return count


def _input_spacing(array, spacing, ndim: int) -> tuple[float, ...] | None:
    """The voxel size a run follows: ``spacing`` if given, else the input's recorded scale
    (unless its axes are not all spatial or their units differ: the scales do not compare);
    None when isotropic (every axis the same)."""
    from ..io._space import NON_SPATIAL
    from ..registration._pyramid import check_spacing

    if spacing is None:
        space = read_space(array).last(ndim)
        units = {space.units.get(a) for a in space.axes}
        if len(units) > 1 or any(a in NON_SPATIAL for a in space.axes):
            return None
        spacing = space.scale
    else:
        spacing = check_spacing(spacing, ndim)
    return None if len(set(spacing)) == 1 else tuple(float(v) for v in spacing)


def plan_flow(
    reference,
    moving,
    *,
    method="ilk",
    level: int | None = None,
    levels="auto",
    tile=None,
    depth="auto",
    chunks=None,
    shards="auto",
    coarse_memory=TASK_MEMORY_BUDGET,
    normalize: str = "auto",
    allow_sparse: bool = False,
    initial_affine=None,
    overlap=None,
    spacing: float | Sequence[float] | None = None,
    channel: int | None = None,
    **kernel_params,
) -> FlowPlan:
    """Open the inputs read-only, validate everything and plan a flow run.

    Parameters are those of :func:`chunkreg.compute_flow`; nothing is written. Besides the
    arrays' metadata, the store listings (to find missing chunks) and a small sample of each
    input (:func:`chunkreg.volume.plan_intensity`) are read. See :meth:`FlowPlan.describe`
    for a readable account.

    Returns
    -------
    FlowPlan

    Raises
    ------
    InputError
        On unusable inputs or parameters, with what to change.
    """
    from ._affine_result import resolve_affine
    from ._affine_view import through_affine

    ref, mov, channel = open_inputs(reference, moving, level=level, channel=channel)
    ref, mov = _check_input(ref, "reference"), _check_input(mov, "moving")
    matrix = resolve_affine(initial_affine, ref.ndim)
    if matrix is None and ref.shape != mov.shape:
        raise InputError(
            f"reference and moving must have the same shape, got {ref.shape} and {mov.shape}; "
            "crop or pad them to a common shape first."
        )
    ndim = ref.ndim
    shape = tuple(ref.shape)
    params = resolve_method(method, kernel_params)
    levels = parse_levels(levels)
    coarse_memory = _bytes(coarse_memory, "coarse_memory")
    out_chunks = ref.chunks if chunks is None else per_axis(chunks, ndim, "chunks", minimum=1)
    out_shards = resolve_shards(shards, chunks=out_chunks, shape=shape, like=ref)
    align = out_shards or out_chunks  # tiles are whole shards: one task writes each shard
    spacing = _input_spacing(ref, spacing, ndim)
    name = "depth"
    if overlap is not None:  # the halo's former name, still accepted
        if not (isinstance(depth, str) and depth == "auto"):
            raise InputError("give the halo as depth (or its former name overlap), not both.")
        depth, name = overlap, "overlap"
    (single, single_rule), (refine, refine_rule) = _depths(
        method, params, depth, ndim, name, spacing
    )

    def grid_for(depth, refining=True):
        if tile is None:
            # the task as the plan estimates it: a refinement, or a single-level tile
            tile_shape = default_tile(shape, align, depth, method=method,
                                      mode="refine" if refining else "tile",
                                      input_itemsize=ref.dtype.itemsize)  # fmt: skip
        else:
            # a tile larger than the volume is the volume (clipped before any estimate)
            tile_shape = tuple(
                min(t, n)
                for t, n in zip(per_axis(tile, ndim, "tile", minimum=1), shape, strict=True)
            )
            require_shard_aligned(tile_shape, shape, out_shards)
        return TileGrid(shape=shape, tile_shape=tile_shape, depth=depth, chunks=align)

    count = _count_levels(levels, shape, grid_for(refine), method, coarse_memory, spacing)
    grid0 = grid_for(single, refining=False) if count == 1 else grid_for(refine)
    steps = level_steps(spacing, ndim, count)
    # one channel of an input: the pyramid is built from that channel (its levels hold all)
    ref_levels = input_levels(reference, level or 0, steps) if count > 1 and channel is None else []
    # through an initial affine, the pyramid is built from the resampled moving volume
    own = count > 1 and matrix is None and channel is None
    mov_levels = input_levels(moving, level or 0, steps) if own else []
    mov_ref = through_affine(_absolute_ref(mov), matrix, shape, ref.chunks)
    shapes, sources = [shape], [(_absolute_ref(ref), mov_ref)]
    factors = [(1,) * ndim]
    for lvl in range(1, count):
        pair = (None, None)
        if sources[-1][0] is not None and lvl <= min(len(ref_levels), len(mov_levels)):
            pair = (ref_levels[lvl - 1], mov_levels[lvl - 1])
            if pair[0].open().shape != pair[1].open().shape:
                pair = (None, None)
        step = steps[lvl - 1]
        shapes.append(
            tuple(pair[0].open().shape) if pair[0] is not None else halve(shapes[-1], step)
        )
        sources.append(pair)
        factors.append(tuple(a * b for a, b in zip(factors[-1], step, strict=True)))
    if min(shapes[-1]) < MIN_LEVEL_EDGE:
        raise InputError(
            f"levels={count} makes the coarsest level {shapes[-1]}, smaller than "
            f"{MIN_LEVEL_EDGE} voxels along an axis; use fewer levels (or levels='auto')."
        )
    # after every cheap check: the store listings and a sample of each input
    check_inputs_stored({"reference": ref, "moving": mov}, allow_sparse)
    ref_intensity, mov_intensity, intensity_note = plan_intensity(ref, mov, normalize)
    plans = []
    for lvl, (lshape, (ref_src, mov_src)) in enumerate(zip(shapes, sources, strict=True)):
        lchunks = tuple(min(c, n) for c, n in zip(out_chunks, lshape, strict=True))
        coarsest = lvl == count - 1
        lspacing = None
        lsingle, lsingle_rule, lrefine, lrefine_rule = single, single_rule, refine, refine_rule
        if spacing is not None:  # this level's voxels: windows and halos follow them
            lspacing = tuple(v * f for v, f in zip(spacing, factors[lvl], strict=True))
            if lvl:
                (lsingle, lsingle_rule), (lrefine, lrefine_rule) = _depths(
                    method, params, depth, ndim, name, lspacing
                )
        if coarsest and count > 1 and whole_memory(method, lshape) <= coarse_memory:
            mode, grid, rule = "whole", TileGrid(lshape, lshape, (0,) * ndim), "whole level"
        elif coarsest:
            mode, rule = "tiled", lsingle_rule
            grid = TileGrid(lshape, grid0.tile_shape, lsingle, lchunks)
        else:
            mode, rule = "refine", lrefine_rule
            grid = TileGrid(lshape, grid0.tile_shape, lrefine, lchunks)
        band = tuple(d // 2 for d in grid.depth)
        plans.append(LevelPlan(lvl, lshape, lchunks, mode, grid, band, rule, ref_src, mov_src,
                               factors[lvl] if spacing is not None else (), lspacing))  # fmt: skip
    return FlowPlan(
        reference=_absolute_ref(ref),
        moving=mov_ref,
        shape=shape,
        input_dtype=np.dtype(ref.dtype),
        input_chunks=tuple(ref.chunks),
        moving_chunks=tuple(mov.chunks),
        chunks=(1, *out_chunks),
        grid=plans[0].grid,
        method=method,
        params=params,
        depth_rule=plans[0].depth_rule,
        levels=tuple(plans),
        coarse_memory=coarse_memory,
        reference_intensity=ref_intensity,
        moving_intensity=mov_intensity,
        intensity_note=intensity_note,
        shards=None if out_shards is None else (ndim, *out_shards),
        initial_affine=None if matrix is None else tuple(map(tuple, matrix.tolist())),
        spacing=spacing,
        channel=channel,
    )
