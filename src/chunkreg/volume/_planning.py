"""Planning a tiled flow run: validated inputs, tile grid, halo and cost estimates (no writes)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from .._validation import per_axis
from ..errors import InputError
from ..io import ArrayRef, open_array
from ..tiling import TileGrid
from ._methods import depth_rule, kernel_memory_factor, method_name, resolve_method

__all__ = ["FlowPlan", "default_tile", "plan_flow"]

#: Memory one kernel call may use when the tile is chosen automatically.
TASK_MEMORY_BUDGET = 2**30
#: Baseline memory of a worker process (Python, numpy, scipy, dask, zarr imported).
WORKER_BASELINE = 300 * 2**20
#: Tile edge the automatic choice aims at, by number of axes.
_TARGET_EDGE = {2: 1024, 3: 256}


def _absolute_ref(array: zarr.Array) -> ArrayRef:
    """A reference to ``array`` usable from workers in other directories."""
    store = array.store
    if isinstance(store, zarr.storage.LocalStore):
        return ArrayRef(os.path.abspath(store.root), array.path)
    return ArrayRef(store, array.path)


def default_tile(
    shape, chunks, depth, *, method="ilk", memory_budget: int = TASK_MEMORY_BUDGET
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
        Bytes one kernel call may use (default 1 GiB).

    Returns
    -------
    tuple of int
    """
    ndim = len(shape)
    target = _TARGET_EDGE.get(ndim, 256)
    factor = kernel_memory_factor(method, ndim)
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


@dataclass(frozen=True)
class FlowPlan:
    """Everything a tiled flow run will do, decided before anything is written.

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
        Tiles (cores aligned to the output chunks) and the halo (``grid.depth``).
    method : str or callable
        The flow kernel.
    params : dict
        Its parameters, defaults filled in.
    depth_rule : str
        How the halo was chosen.
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

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.shape)

    @property
    def method_name(self) -> str:
        """Name of the kernel."""
        return method_name(self.method)

    @property
    def task_memory(self) -> int:
        """Estimated peak bytes of one tile task (largest tile: inputs, kernel, output)."""
        read = math.prod(self.grid.max_read_shape)
        core = math.prod(min(t, n) for t, n in zip(self.grid.tile_shape, self.shape, strict=True))
        inputs = 2 * read * self.input_dtype.itemsize
        return inputs + kernel_memory_factor(self.method, self.ndim) * read + 4 * self.ndim * core

    @property
    def worker_memory(self) -> int:
        """Estimated peak bytes of a one-thread worker running these tasks."""
        return WORKER_BASELINE + self.task_memory

    @property
    def read_amplification(self) -> float:
        """Elements decoded from both inputs' chunks per element of the inputs."""
        return (
            self.grid.read_amplification(self.input_chunks)
            + self.grid.read_amplification(self.moving_chunks)
        ) / 2

    def signature(self) -> dict:
        """What determines the output's content (stored with it; resume checks it)."""
        return {
            "method": self.method_name,
            "params": self.params,
            "reference": str(self.reference),
            "moving": str(self.moving),
            "shape": list(self.shape),
            "input_dtype": str(self.input_dtype),
            "dtype": "float32",
            "chunks": list(self.chunks),
            "tile": list(self.grid.tile_shape),
            "depth": list(self.grid.depth),
        }

    def describe(self) -> str:
        """Human-readable plan (what ``chunkreg flow --dry-run`` prints)."""
        g = self.grid
        mib = 2**20
        lines = [
            f"flow: method {self.method_name}, parameters "
            + ", ".join(f"{k}={v}" for k, v in self.params.items()),
            f"inputs: shape {self.shape}, dtype {self.input_dtype}, chunks {self.input_chunks}"
            + (
                f" (moving: {self.moving_chunks})"
                if self.moving_chunks != self.input_chunks
                else ""
            ),
            f"output: shape {(self.ndim, *self.shape)}, float32, chunks {self.chunks}",
            f"tiles: {len(g)} = {' x '.join(map(str, g.grid_shape))} of {g.tile_shape}",
            f"halo (depth): {g.depth} ({self.depth_rule})",
            f"computed per input voxel (halo cost): {g.halo_factor:.2f}x",
            f"read amplification vs the input chunk grid: {self.read_amplification:.2f}x",
            f"estimated memory: {self.task_memory / mib:.1f} MiB per task, "
            f"{self.worker_memory / mib:.0f} MiB per one-thread worker",
        ]
        return "\n".join(lines)


def _open_input(source, level, name) -> zarr.Array:
    array = open_array(source, level=level, name=name)
    if array.dtype.kind not in "biuf":
        raise InputError(
            f"{name} must have a real numeric dtype, got {array.dtype}; convert it first."
        )
    if array.ndim not in (2, 3):
        raise InputError(
            f"{name} must be 2-D or 3-D, got {array.ndim}-D with shape {array.shape}; "
            "register one channel or time point at a time."
        )
    return array


def plan_flow(
    reference,
    moving,
    *,
    method="ilk",
    level: int | None = None,
    tile=None,
    overlap="auto",
    chunks=None,
    **kernel_params,
) -> FlowPlan:
    """Open the inputs read-only, validate everything and plan a tiled flow run.

    Parameters are those of :func:`chunkreg.compute_flow`; nothing is written. See
    :meth:`FlowPlan.describe` for a readable account.

    Returns
    -------
    FlowPlan

    Raises
    ------
    InputError
        On unusable inputs or parameters, with what to change.
    """
    ref = _open_input(reference, level, "reference")
    mov = _open_input(moving, level, "moving")
    if ref.shape != mov.shape:
        raise InputError(
            f"reference and moving must have the same shape, got {ref.shape} and {mov.shape}; "
            "crop or pad them to a common shape first."
        )
    ndim = ref.ndim
    params = resolve_method(method, kernel_params)
    out_chunks = ref.chunks if chunks is None else per_axis(chunks, ndim, "chunks", minimum=1)
    if isinstance(overlap, str):
        if overlap != "auto":
            raise InputError(f"overlap must be 'auto' or pixels per axis, got {overlap!r}.")
        depth, rule = depth_rule(method, **params)
        depth = (depth,) * ndim
    else:
        depth = per_axis(overlap, ndim, "overlap", minimum=0)
        rule = "given"
    if tile is None:
        tile_shape = default_tile(ref.shape, out_chunks, depth, method=method)
    else:
        tile_shape = per_axis(tile, ndim, "tile", minimum=1)
    grid = TileGrid(shape=ref.shape, tile_shape=tile_shape, depth=depth, chunks=out_chunks)
    return FlowPlan(
        reference=_absolute_ref(ref),
        moving=_absolute_ref(mov),
        shape=tuple(ref.shape),
        input_dtype=np.dtype(ref.dtype),
        input_chunks=tuple(ref.chunks),
        moving_chunks=tuple(mov.chunks),
        chunks=(1, *out_chunks),
        grid=grid,
        method=method,
        params=params,
        depth_rule=rule,
    )
