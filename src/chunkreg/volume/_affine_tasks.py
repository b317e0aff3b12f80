"""The tasks of the global affine estimation; each runs on a worker and reads its own inputs.

* :class:`Downsample`: one region of a coarse level (block means of the input);
* :class:`Coarse`: the whole coarse estimate, in memory;
* :class:`Fine`: a batch of full-resolution blocks, each read with the moving region the
  current estimate maps it to, resampled and phase-correlated (blocks of which more
  than a tenth maps beyond the moving volume are left out).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io import ArrayRef
from ..registration import normalized_cross_correlation
from ..registration._affine_kernels import (
    affine_bounds,
    block_match,
    estimate_in_memory,
    inside_fraction,
    resample_affine,
)
from ..registration._downsample import block_mean
from ..tiling import TileGrid

__all__ = ["Coarse", "Downsample", "Fine", "coarse", "downsample", "fine"]

#: Spline order of the refinement's resampling: linear (a cubic prefilter of each block's
#: region would double its cost).
FINE_ORDER = 1
#: Least fraction of a refinement block that must map inside the moving volume.
MIN_INSIDE = 0.75


@dataclass(frozen=True)
class Downsample:
    source: ArrayRef
    target: ArrayRef
    factor: int
    grid: TileGrid
    number: int

    def __str__(self) -> str:
        return f"coarse region {self.grid.tile(self.number).core} of {self.target.path}"


def downsample(task: Downsample) -> dict:
    t0 = time.perf_counter()
    core = task.grid.tile(task.number).core
    fine = task.source.open()
    f = task.factor
    src = tuple(
        slice(c.start * f, min(c.stop * f, n)) for c, n in zip(core, fine.shape, strict=True)
    )
    region = np.asarray(fine[src])
    values = block_mean(region, (f,) * region.ndim, partial="mean")
    task.target.open(mode="r+")[core] = values
    return {"bytes_read": region.nbytes, "bytes_written": values.nbytes,
            "seconds": time.perf_counter() - t0}  # fmt: skip


@dataclass(frozen=True)
class Coarse:
    reference: ArrayRef
    moving: ArrayRef
    model: str
    block: tuple[int, ...]
    iterations: int
    threshold: float
    upsample_factor: int
    min_std: float
    seed: int
    min_quality: float = 0.2

    def __str__(self) -> str:
        return "coarse estimate"


def coarse(task: Coarse) -> dict:
    """The coarse estimate; ``{"error": message}`` when the data allow none (not retried)."""
    t0 = time.perf_counter()
    ref = np.asarray(task.reference.open()[...], dtype=np.float32)
    mov = np.asarray(task.moving.open()[...], dtype=np.float32)
    try:
        matrix, stages = estimate_in_memory(
            ref, mov, model=task.model, block=task.block, iterations=task.iterations,
            threshold=task.threshold, upsample_factor=task.upsample_factor,
            min_std=task.min_std, seed=task.seed, min_quality=task.min_quality,
        )  # fmt: skip
    except InputError as exc:
        return {"error": str(exc), "bytes_read": ref.nbytes + mov.nbytes}
    return {"matrix": matrix.tolist(), "stages": stages, "bytes_read": ref.nbytes + mov.nbytes,
            "seconds": time.perf_counter() - t0}  # fmt: skip


@dataclass(frozen=True)
class Fine:
    reference: ArrayRef
    moving: ArrayRef
    matrix: tuple
    regions: tuple
    upsample_factor: int
    min_std: float
    identity_qc: bool

    def __str__(self) -> str:
        return f"refinement blocks from {self.regions[0]}"


def fine(task: Fine) -> dict:
    t0 = time.perf_counter()
    ref_array, mov_array = task.reference.open(), task.moving.open()
    matrix = np.asarray(task.matrix)
    rows = []
    read = 0
    for region in task.regions:
        if inside_fraction(matrix, region, mov_array.shape) < MIN_INSIDE:
            # much of the block would be resampled from beyond the moving volume's edge,
            # which biases its shift: left out
            rows.append((np.full(len(region), np.nan), np.nan, np.nan))
            continue
        ref = np.asarray(ref_array[region], dtype=np.float32)
        bounds = affine_bounds(matrix, region, mov_array.shape, FINE_ORDER)
        source = np.asarray(mov_array[bounds])
        read += ref.nbytes + source.nbytes
        warped = resample_affine(
            source, [b.start for b in bounds], matrix, region, order=FINE_ORDER
        )
        shift, quality = block_match(ref, warped, upsample_factor=task.upsample_factor,
                                          min_std=task.min_std)  # fmt: skip
        before = np.nan
        if task.identity_qc:
            same = np.asarray(mov_array[region], dtype=np.float32)
            read += same.nbytes
            if same.std() > 0 and ref.std() > 0:
                before = normalized_cross_correlation(ref, same)
        rows.append((shift, quality, before))
    return {
        "shift": np.array([r[0] for r in rows]),
        "quality": np.array([r[1] for r in rows]),
        "ncc_identity": np.array([r[2] for r in rows]),
        "bytes_read": read,
        "seconds": time.perf_counter() - t0,
    }
