"""Dense displacement field from a grid of per-block shifts, computed tile by tile.

The block shifts are interpolated at every voxel with a tensor-product spline through the
block centres (linear or cubic), constant beyond the outermost centres. Because the spline is
separable, a tile's field is a few small matrix products, not a resampling of the volume.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import zarr
from scipy import ndimage

from .._validation import per_axis
from ..engine import IndexedTasks, ResultSink, StageRunner, workflow_scope
from ..errors import InputError
from ..execution import RunReport
from ..io import (
    FIELD_COMPRESSORS,
    ArrayRef,
    Space,
    array_ref,
    create_array,
    open_output_group,
    require_shard_aligned,
    require_shared_store,
    resolve_shards,
    write_space,
)
from ..io._flow_layout import FLOW_ARRAY
from ..tiling import TileGrid
from ._blockwise import BlockShifts, _centres, load_block_shifts
from ._qc import combine_seam_sums, seam_sums, write_qc

__all__ = [
    "ShiftsToFlowPlan",
    "default_tile",
    "interpolate_shifts",
    "plan_shifts_to_flow",
    "shifts_to_flow",
]

_TILE_VOXELS = 2**22


def default_tile(shape, chunks, *, target: int = _TILE_VOXELS) -> tuple[int, ...]:
    """A tile shape made of whole chunks, grown until it holds about ``target`` voxels."""
    tile = [min(c, n) for c, n in zip(chunks, shape, strict=True)]
    while math.prod(tile) < target:
        growable = [a for a in range(len(tile)) if tile[a] < shape[a]]
        if not growable:
            break
        axis = min(growable, key=lambda a: tile[a] / shape[a])
        tile[axis] = min(tile[axis] * 2, math.ceil(shape[axis] / chunks[axis]) * chunks[axis])
    return tuple(tile)


def _weights(positions: np.ndarray, centres: np.ndarray, order: int) -> np.ndarray:
    """Matrix ``W`` such that ``W @ values`` interpolates values given at ``centres``."""
    g = len(centres)
    if g == 1:
        return np.ones((len(positions), 1))
    index = np.interp(positions, centres, np.arange(g, dtype=np.float64))
    eye = np.eye(g)
    return np.stack(
        [
            ndimage.map_coordinates(eye[j], index[None], order=order, mode="nearest")
            for j in range(g)
        ],
        axis=1,
    )


def interpolate_shifts(
    shifts: np.ndarray,
    axis_centres,
    region: tuple[slice, ...],
    *,
    order: int = 3,
) -> np.ndarray:
    """Displacement field ``-shift`` interpolated over ``region`` (pure numpy/scipy).

    Parameters
    ----------
    shifts : ndarray, shape (*grid_shape, ndim)
        Block shifts (registering moving onto reference).
    axis_centres : sequence of ndarray
        Block-centre coordinates along each axis (increasing), one array of ``grid_shape[a]``
        values per axis.
    region : tuple of slice
        Part of the volume to compute.
    order : int
        Spline order: 1 (multilinear) or 3 (cubic, smooth). Both pass through the centres.

    Returns
    -------
    ndarray of float32, shape (ndim, *region_shape)
        ``flow`` with ``reference(x) ≈ moving(x + flow(x))``, i.e. ``flow = -shift``.
    """
    ndim = shifts.shape[-1]
    out = -np.asarray(shifts, dtype=np.float64)
    for axis in range(ndim):
        s = region[axis]
        positions = np.arange(s.start, s.stop, dtype=np.float64)
        w = _weights(positions, np.asarray(axis_centres[axis], dtype=np.float64), order)
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return np.moveaxis(out, -1, 0).astype(np.float32)


@dataclass(frozen=True)
class _FlowTile:
    grid_ref: ArrayRef  # the (*grid_shape, ndim) shifts stored in the output
    flow: ArrayRef
    tiles: TileGrid
    number: int
    axis_centres: tuple[tuple[float, ...], ...]
    block: tuple[int, ...]
    order: int


def _flow_tile(task: _FlowTile) -> dict:
    start = time.perf_counter()
    tile = task.tiles.tile(task.number)
    shape = task.tiles.shape
    shifts = task.grid_ref.open()[...]
    # one voxel more below and two above (where the volume continues) for the seam sums
    region = tuple(
        slice(max(s.start - 1, 0), min(s.stop + 2, n))
        for s, n in zip(tile.core, shape, strict=True)
    )
    flow = interpolate_shifts(shifts, task.axis_centres, region, order=task.order)
    core = tuple(
        slice(c.start - r.start, c.stop - r.start) for c, r in zip(tile.core, region, strict=True)
    )
    task.flow.open(mode="r+")[(slice(None), *tile.core)] = flow[(slice(None), *core)]
    sums = seam_sums(
        flow, task.block, origin=[r.start for r in region], core=tile.core, shape=shape
    )
    return {
        "seam": sums,
        "bytes_written": flow[(slice(None), *core)].nbytes,
        "seconds": time.perf_counter() - start,
    }


def _blocks_space(blocks, ndim: int) -> Space | None:
    """The flow's space: the blockwise reference's (recorded with the shifts), else voxels."""
    spatial = ("z", "y", "x")[-ndim:] if ndim <= 3 else None
    space = None
    if isinstance(blocks, (str, os.PathLike, zarr.Group)):
        group = blocks if isinstance(blocks, zarr.Group) else zarr.open_group(blocks, mode="r")
        recorded = group.attrs.get("blocks", {}).get("space")
        if recorded is not None:
            space = Space.from_attrs(recorded).last(ndim)
    if space is None and spatial is not None:
        space = Space.voxels(spatial)
    return None if space is None else space.with_leading(("c",))


def _as_blocks(blocks, shape, block) -> BlockShifts:
    if isinstance(blocks, np.ndarray):
        if shape is None or block is None:
            raise InputError(
                "a plain shifts array needs the volume shape and the block shape: "
                "shifts_to_flow(shifts, output, shape=..., block=...)."
            )
        ndim = blocks.shape[-1] if blocks.ndim else 0
        if blocks.ndim != ndim + 1 or ndim < 1:
            raise InputError(f"shifts must have shape (*grid_shape, ndim), got {blocks.shape}.")
        shape = per_axis(tuple(shape), ndim, "shape", minimum=1)
        block = per_axis(block, ndim, "block", minimum=1)
        grid = TileGrid(shape, block, (0,) * ndim)
        if blocks.shape[:-1] != grid.grid_shape:
            raise InputError(
                f"shifts grid {blocks.shape[:-1]} does not match shape {shape} cut into blocks "
                f"of {block}, which gives a grid of {grid.grid_shape}."
            )
        if not np.all(np.isfinite(blocks)):
            raise InputError("shifts contain NaN or infinite values; fill them first.")
        reliable = np.ones(grid.grid_shape, dtype=bool)
        nan = np.full(grid.grid_shape, np.nan)
        return BlockShifts(
            shifts=blocks.astype(np.float64),
            measured_shifts=blocks.astype(np.float64),
            quality=nan,
            ncc_before=nan,
            error=nan,
            reliable=reliable,
            outlier=np.zeros(grid.grid_shape, dtype=bool),
            centres=_centres(grid),
            shape=shape,
            block=block,
            overlap=(0,) * ndim,
            chunks=tuple(min(64, n) for n in shape),
        )
    result = load_block_shifts(blocks)
    if not result.complete:
        raise InputError(
            f"{blocks!s} is an unfinished blockwise_shifts output; run blockwise_shifts (or "
            "`chunkreg blocks`) again with the same arguments to finish it."
        )
    if shape is not None and tuple(shape) != result.shape:
        raise InputError(
            f"shape {tuple(shape)} differs from the shape {result.shape} the block shifts were "
            "measured on."
        )
    return result


@dataclass(frozen=True)
class ShiftsToFlowPlan:
    """What :func:`shifts_to_flow` would do: the block shifts, the field's layout, its tiles."""

    blocks: BlockShifts
    tiles: TileGrid  # regions of the field one task computes (depth 0: no halo is read)
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    order: int

    @property
    def initial_affine(self) -> list | None:
        """The affine the blocks were measured through (the field is the residual after it)."""
        a = self.blocks.initial_affine
        return None if a is None else np.asarray(a).tolist()

    @property
    def axis_centres(self) -> tuple[tuple[float, ...], ...]:
        """Block centres along each axis (the spline's knots)."""
        c, ndim = self.blocks.centres, len(self.blocks.shape)
        return tuple(
            tuple(float(v) for v in c[(*(0,) * a, slice(None), *(0,) * (ndim - 1 - a), a)])
            for a in range(ndim)
        )

    def signature(self) -> dict:
        """What determines the field (stored in the output; resume checks it)."""
        r = self.blocks
        out = {
            "shape": r.shape,
            "chunks": self.chunks,
            **({"shards": self.shards} if self.shards else {}),
            "tile": self.tiles.tile_shape,
            "block": r.block,
            "order": self.order,
            "grid_shape": r.shifts.shape[:-1],
            "shifts_sha1": hashlib.sha1(np.ascontiguousarray(r.shifts).tobytes()).hexdigest(),
        }
        if r.initial_affine is not None:
            out["initial_affine"] = self.initial_affine
        return out

    def describe(self) -> str:
        """Human-readable plan."""
        r, t = self.blocks, self.tiles
        kind = "cubic spline" if self.order == 3 else "multilinear"
        return "\n".join(
            [
                f"block shifts: grid {r.shifts.shape[:-1]} of blocks {r.block} over {r.shape}",
                f"field: {(len(r.shape), *r.shape)} float32, chunks {(1, *self.chunks)}"
                + (f", shards {self.shards}" if self.shards else ""),
                f"interpolation: {kind} through the block centres (order {self.order}), "
                "constant beyond the outermost ones"
                + ("; residual after the blocks' initial affine" if r.initial_affine is not None
                   else ""),
                f"tiles: {len(t)} in a grid of {t.grid_shape}, tile {t.tile_shape}, depth "
                f"{t.depth} (a tile's field needs only the block shifts)",
            ]
        )  # fmt: skip

    __str__ = describe


def plan_shifts_to_flow(
    blocks, *, shape=None, block=None, chunks=None, shards=None, tile=None, order: int = 3
) -> ShiftsToFlowPlan:
    """Check the inputs of :func:`shifts_to_flow` and plan the field; nothing is written.

    Parameters
    ----------
    blocks, shape, block, chunks, shards, tile, order
        As for :func:`shifts_to_flow`.

    Returns
    -------
    ShiftsToFlowPlan

    Raises
    ------
    InputError
        Unfinished blocks output, mismatching shapes, NaN shifts, bad ``order``, ``chunks``
        or ``tile``.
    """
    result = _as_blocks(blocks, shape, block)
    ndim = len(result.shape)
    if order not in (1, 3):
        raise InputError(f"order must be 1 (linear) or 3 (cubic), got {order!r}.")
    chunks = per_axis(chunks if chunks is not None else result.chunks, ndim, "chunks", minimum=1)
    chunks = tuple(min(c, n) for c, n in zip(chunks, result.shape, strict=True))
    shards = resolve_shards(shards, chunks=chunks, shape=result.shape)
    align = shards or chunks  # tiles are whole shards: one writer per shard
    tile = default_tile(result.shape, align) if tile is None else tile
    require_shard_aligned(per_axis(tile, ndim, "tile", minimum=1), result.shape, shards)
    tiles = TileGrid(result.shape, per_axis(tile, ndim, "tile", minimum=1), (0,) * ndim, align)
    return ShiftsToFlowPlan(result, tiles, chunks, shards, int(order))


def shifts_to_flow(
    blocks,
    output,
    *,
    shape=None,
    block=None,
    chunks=None,
    shards=None,
    tile=None,
    order: int = 3,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunReport:
    """Turn per-block shifts into a dense displacement field in zarr, tile by tile.

    Parameters
    ----------
    blocks : BlockShifts, str, os.PathLike, zarr.Group or ndarray
        The result or output of :func:`blockwise_shifts`, or a plain array of shifts shaped
        ``(*grid_shape, ndim)`` (then ``shape`` and ``block`` are required and the blocks are
        ``TileGrid(shape, block)``'s cores).
    output : str, os.PathLike or zarr store
        Output group; the field is its array ``flow``.
    shape : tuple of int, optional
        Volume shape (taken from ``blocks`` when it is a blockwise result).
    block : int or tuple of int, optional
        Block shape, for a plain shifts array.
    chunks : tuple of int, optional
        Spatial chunk shape of the field; default the reference volume's chunks (64 per axis
        for a plain array).
    shards : int or tuple of int, optional
        Spatial shard shape of the field, a multiple of ``chunks`` (one file per shard);
        default unsharded. Tiles are then whole shards.
    tile : tuple of int, optional
        Region computed per task, a multiple of ``chunks`` (of ``shards`` when given);
        default a few million voxels.
    order : {1, 3}
        1: multilinear between block centres; 3: cubic spline (smooth, the default). Both are
        exact at the centres and constant beyond the outermost ones.
    client, scheduler, n_workers, overwrite, progress :
        As for :func:`blockwise_shifts`.

    Returns
    -------
    RunReport
        ``report.notes["seam metric"]`` holds the field's seam metric across block borders
        (about 1: smooth), also stored in the output's ``qc`` group.

    Notes
    -----
    The field follows chunkreg's flow convention, ``warp(moving, flow) ≈ reference``, i.e.
    ``reference(x) ≈ moving(x + flow(x))``. A block shift ``s`` says ``ndimage.shift(moving,
    s) ≈ reference``, i.e. ``reference(x) ≈ moving(x - s)``, so ``flow = -s``. The array is
    ``(ndim, *shape)`` float32 chunked ``(1, *chunks)``, the layout of the ``flow`` workflow.

    Raises
    ------
    InputError
        Unfinished or foreign blocks output, mismatching shapes, NaN shifts, bad ``order``,
        ``chunks`` or ``tile``; nothing is written.
    IncompatibleOutputError
        ``output`` exists from a different run.

    Examples
    --------
    >>> import numpy as np
    >>> shifts = np.zeros((2, 2, 2))
    >>> shifts[..., 1] = 3.0  # every block registers with a shift of +3 along x
    >>> report = shifts_to_flow(shifts, "flow.zarr", shape=(64, 64), block=32,
    ...                         scheduler="synchronous", progress=False, overwrite=True)
    >>> import zarr
    >>> flow = zarr.open_group("flow.zarr", mode="r")["flow"]
    >>> flow.shape, float(flow[1, 10, 10])
    ((2, 64, 64), -3.0)
    """
    plan = plan_shifts_to_flow(blocks, shape=shape, block=block, chunks=chunks, shards=shards,
                               tile=tile, order=order)  # fmt: skip
    result, tiles, chunks, shards = plan.blocks, plan.tiles, plan.chunks, plan.shards
    ndim, axis_centres, signature = len(result.shape), plan.axis_centres, plan.signature()
    affine = {} if result.initial_affine is None else {"initial_affine": plan.initial_affine}
    # the output's lease is held until everything is written
    with workflow_scope(client, scheduler=scheduler, n_workers=n_workers) as c:
        group = open_output_group(output, signature=signature, overwrite=overwrite, kind="flow",
                                  sources={"blocks": blocks})  # content: shifts_sha1  # fmt: skip
        require_shared_store(group, c)
        if "block_shifts" not in group:
            group.create_array(
                "block_shifts",
                shape=result.shifts.shape,
                dtype="float64",
                chunks=result.shifts.shape,
            )[...] = result.shifts
        if FLOW_ARRAY not in group:
            space = _blocks_space(blocks, ndim)
            axes = None if space is None else space.axes
            create_array(
                group,
                name=FLOW_ARRAY,
                shape=(ndim, *result.shape),
                dtype="float32",
                chunks=(1, *chunks),
                shards=None if shards is None else (ndim, *shards),
                fill_value=np.nan,
                dimension_names=axes,
                compressors=FIELD_COMPRESSORS,
                attributes={
                    "description": (
                        "dense displacement field interpolated from per-block shifts: "
                        "warp(moving, flow) ~ reference, i.e. reference(x) = moving(x + "
                        "flow(x)); flow = -(block shift)"
                    ),
                    "units": {"values": "voxel"},
                    "voxel_size": {} if space is None else space.voxel_size(),
                    "method": "blockwise",
                    "block": list(result.block),
                    "order": order,
                    **affine,
                },
            )
            if space is not None:
                write_space(group, [FLOW_ARRAY], space, name="flow")
        sink = ResultSink(
            group,
            "tiles",
            n_tasks=len(tiles),
            n_items=len(tiles),
            fields={"seam": ((3, ndim), "float64")},
        )
        make = partial(_FlowTile, array_ref(group["block_shifts"]), array_ref(group[FLOW_ARRAY]),
                       tiles)  # fmt: skip
        tasks = IndexedTasks(len(tiles), lambda i: make(i, axis_centres, result.block, order))
        runner = StageRunner(c, label="tiles", progress=progress)
        runner.run("tiles", _flow_tile, tasks, sink=sink,
                   describe=lambda t: f"tile {t.tiles.tile(t.number).core}")  # fmt: skip
        report = runner.finish()
    seam = combine_seam_sums(np.nansum(sink.values["seam"], axis=0))
    write_qc(
        group,
        label="blocks",
        tile_shape=result.block,
        ncc_before=result.ncc_before,
        ncc_after=result.quality,
        seam=seam,
        extra={"reliable": result.reliable},
    )
    report.notes["seam metric"] = f"{seam:.3f} across block borders (1 = smooth)"
    return report
