"""The levels of a coarse-to-fine flow run: shapes, where each level's images come from, and
how each level's flow is computed (no writes).

Level 0 is the input resolution; level ``L + 1`` halves level ``L`` along every axis, or, with
anisotropic voxels (``spacing``), along the axes whose voxel is finer than twice the finest
(:func:`level_steps`: z of 4 x 4 x 50 nm EM waits until y and x reach 32 nm). The
coarsest level's flow is computed over the whole level in one task when it fits the memory
budget (``"whole"``), else tile by tile with a per-tile image pyramid (``"tiled"``); every finer
level refines the upsampled flow of the level above, tile by tile (``"refine"``). A single-level
run (``levels=1``) is one ``"tiled"`` level: every tile computed from scratch, no pyramid.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import zarr
import zarr.errors

from ..errors import InputError
from ..io import ArrayRef, multiscale_dataset_paths
from ..registration._methods import task_bytes_per_voxel
from ..registration._multiscale import FACTOR
from ..registration._pyramid import reduced_axes
from ..tiling import TileGrid

__all__ = [
    "MIN_LEVEL_EDGE",
    "REFINE_MOTION",
    "LevelPlan",
    "input_levels",
    "level_steps",
    "parse_levels",
]

#: Smallest edge (voxels) any level may have.
MIN_LEVEL_EDGE = 8
#: Residual motion (voxels) the halo of a refinement level allows for with ``overlap="auto"``.
REFINE_MOTION = 2


@dataclass(frozen=True)
class LevelPlan:
    """How one level of a coarse-to-fine run is computed.

    Attributes
    ----------
    level : int
        0 for the input resolution; level ``L`` is ``2**L`` times coarser.
    shape : tuple of int
        Spatial shape of the level.
    chunks : tuple of int
        Spatial chunks of this level's flow (and of its pyramid images when built).
    mode : {"whole", "tiled", "refine"}
        One in-memory task over the whole level; tiles each running the kernel with its own
        image pyramid; tiles refining the upsampled flow of the level above.
    grid : TileGrid
        Tiles and halo (one tile without halo for ``"whole"``).
    band : tuple of int
        Half-width of the band across each tile border where neighbouring tiles' results are
        blended (``depth // 2``); 0 for ``"whole"``.
    depth_rule : str
        How the halo was chosen.
    reference, moving : ArrayRef or None
        Where this level's images are read; None for a pyramid level this run builds.
    factors : tuple of int
        Input voxels per voxel of this level, per axis (``2**level`` along every axis unless
        the voxels are anisotropic); empty: ``2**level``.
    spacing : tuple of float or None
        Voxel size of this level, when the run is anisotropy-aware (else None).
    """

    level: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    mode: str
    grid: TileGrid
    band: tuple[int, ...]
    depth_rule: str
    reference: ArrayRef | None
    moving: ArrayRef | None
    factors: tuple[int, ...] = ()
    spacing: tuple[float, ...] | None = None

    @property
    def voxel_factors(self) -> tuple[int, ...]:
        """Input voxels per voxel of this level, per axis."""
        return self.factors or (FACTOR**self.level,) * len(self.shape)

    @property
    def n_tasks(self) -> int:
        """Tasks of the flow stage(s) of this level."""
        return len(self.grid)

    def signature(self) -> dict:
        """What of this level determines the output."""
        return {
            "level": self.level,
            "shape": list(self.shape),
            "mode": self.mode,
            "tile": list(self.grid.tile_shape),
            "depth": list(self.grid.depth),
            "band": list(self.band),
            "reference": "built" if self.reference is None else str(self.reference),
            "moving": "built" if self.moving is None else str(self.moving),
            **({} if self.spacing is None else {"factors": list(self.voxel_factors)}),
        }

    def describe(self) -> str:
        """One line for the dry run."""
        shape = " x ".join(map(str, self.shape))
        if self.spacing is not None:
            shape += f"; voxel {' x '.join(f'{v:g}' for v in self.spacing)}"
            if self.level:
                shape += f" = {' x '.join(map(str, self.voxel_factors))} input voxels"
        src = "input" if self.level == 0 else "pyramid"
        if self.level and self.reference is not None:
            src = "input's multiscale level"
        if self.mode == "whole":
            how = "whole level in memory, kernel with its own image pyramid"
        else:
            g = self.grid
            how = (
                f"{len(g)} tile{'s' if len(g) != 1 else ''} = {' x '.join(map(str, g.grid_shape))} of {g.tile_shape}, "
                f"halo {g.depth}, blend band {self.band}"
            )
            how += (
                ", refining the upsampled flow of the level above"
                if self.mode == "refine"
                else ", kernel with a per-tile image pyramid"
            )
        return f"level {self.level} ({shape}, images from {src}): {how}"


def parse_levels(levels) -> int | str:
    """Validate ``levels``: ``"auto"`` or an integer >= 1."""
    if isinstance(levels, str):
        if levels == "auto":
            return levels
        try:
            levels = int(levels)
        except ValueError:
            raise InputError(f"levels must be 'auto' or an integer >= 1, got {levels!r}.") from None
    if isinstance(levels, bool) or not isinstance(levels, numbers.Integral) or levels < 1:
        raise InputError(f"levels must be 'auto' or an integer >= 1, got {levels!r}.")
    return int(levels)


def halve(shape, step=None) -> tuple[int, ...]:
    """Shape of the next coarser level (ceil of half, along the axes of ``step`` 2)."""
    step = (FACTOR,) * len(shape) if step is None else step
    return tuple(math.ceil(n / f) for n, f in zip(shape, step, strict=True))


def level_steps(spacing, ndim: int, count: int) -> list[tuple[int, ...]]:
    """Per-axis step (1 or 2) from each level to the next coarser one, ``count - 1`` of them.

    Without ``spacing`` every axis is halved; with it, a level halves the axes whose voxel
    (``spacing`` times the level's factors) is finer than twice the finest voxel
    (:func:`chunkreg.registration.reduced_axes`), so the voxels approach isotropy first.

    >>> level_steps((50, 4, 4), 3, 5)
    [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]
    """
    steps, scale = [], None if spacing is None else tuple(float(v) for v in spacing)
    for _ in range(count - 1):
        if scale is None:
            steps.append((FACTOR,) * ndim)
            continue
        step = tuple(FACTOR if f else 1 for f in reduced_axes(scale))
        steps.append(step)
        scale = tuple(v * f for v, f in zip(scale, step, strict=True))
    return steps


def _array_ref(array: zarr.Array) -> ArrayRef:
    store, index = array.store, tuple(getattr(array, "fixed", ()))
    if isinstance(store, zarr.storage.LocalStore):
        return ArrayRef(os.path.abspath(store.root), array.path, index)
    return ArrayRef(store, array.path, index)


def input_levels(source, level: int, steps=None) -> list[ArrayRef]:
    """The input's own coarser levels usable as pyramid levels ``1, 2, ...`` (maybe none).

    ``source`` is what the caller gave; only an OME-Zarr multiscale group (a path) has levels.
    Its level ``level + k`` is used as pyramid level ``k`` while each level halves the one
    before it (ceil or floor of half) along the axes of ``steps[k - 1]`` 2 and keeps the
    others (``steps`` None: halves every axis).
    """
    if not isinstance(source, (str, os.PathLike)):
        return []
    try:
        node = zarr.open(os.fspath(source), mode="r")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.NodeTypeValidationError):
        return []  # open_array accepted it before; anything else has no levels to offer
    if not isinstance(node, zarr.Group):
        return []
    paths = multiscale_dataset_paths(node.attrs.asdict())
    out: list[ArrayRef] = []
    try:
        previous = node[paths[level]].shape
        for k, path in enumerate(paths[level + 1 :]):
            array = node[path]
            step = (FACTOR,) * len(previous) if steps is None or k >= len(steps) else steps[k]
            ok = len(array.shape) == len(previous) and all(
                m in (n // f, math.ceil(n / f))
                for m, n, f in zip(array.shape, previous, step, strict=True)
            )
            if not ok or array.dtype.kind not in "biuf" or min(array.shape) < 1:
                break
            out.append(_array_ref(array))
            previous = array.shape
    except (KeyError, IndexError):
        return out
    return out


def whole_memory(method, shape, input_itemsize: int = 4) -> int:
    """Peak bytes of one in-memory kernel call over a whole level of ``shape``."""
    per_voxel = task_bytes_per_voxel(method, len(shape), "tile", input_itemsize)
    return per_voxel * math.prod(shape)


def refine_memory(method, grid: TileGrid) -> int:
    """Peak bytes of one refinement task (largest tile)."""
    return task_bytes_per_voxel(method, grid.ndim, "refine") * math.prod(grid.max_read_shape)


def tiled_memory(method, grid: TileGrid, input_itemsize: int) -> int:
    """Peak bytes of one single-level tile task (largest tile)."""
    per_voxel = task_bytes_per_voxel(method, grid.ndim, "tile", input_itemsize)
    return per_voxel * math.prod(grid.max_read_shape)
