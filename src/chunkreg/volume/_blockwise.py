"""Blockwise rigid (piecewise-rigid) registration of two zarr volumes on a cluster.

The volume is cut into blocks (a :class:`~chunkreg.tiling.TileGrid` with ``tile_shape=block``
and ``depth=overlap``); a task reads each block's region of both volumes from the store and
estimates one shift for it by phase cross-correlation. The result is a small grid of shifts
with a quality score each; blocks without content, with a poor match or whose shift disagrees
with their neighbours' (outliers) are marked unreliable and filled from their reliable
neighbours. :func:`~chunkreg.shifts_to_flow` turns the grid into a dense displacement field.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import zarr

from .._validation import per_axis
from ..engine import IndexedTasks, ResultSink, StageRunner, workflow_scope
from ..errors import IncompatibleOutputError, InputError
from ..execution import RunReport
from ..io import (
    ArrayRef,
    array_ref,
    check_inputs_stored,
    open_output_group,
    read_region,
    read_space,
    require_shared_store,
)
from ..registration import normalized_cross_correlation
from ..registration._block_kernels import (
    common_regions,
    estimate_shift,
    fill_unreliable,
    find_outliers,
    shifted_ncc,
)
from ..tiling import TileGrid
from ._affine_view import through_affine
from ._qc import qc_regressions, write_qc

__all__ = ["BlockShifts", "blockwise_shifts", "load_block_shifts", "plan_blockwise_shifts"]

#: Per-block arrays of the output group that every version wrote (``outlier`` came later).
_GRID_ARRAYS = ("shifts", "measured_shifts", "quality", "ncc_before", "error", "reliable")

MIN_BLOCK = 8  # smallest block side that phase correlation can work with
_TARGET_VOXELS = 4_000_000  # voxels read per task: a few hundred ms of work
_FIELDS = ("shift", "error", "ncc_before", "ncc_after", "std_reference", "std_moving")


@dataclass(frozen=True)
class BlockShifts:
    """Per-block shifts of a blockwise rigid registration.

    Attributes
    ----------
    shifts : ndarray of float64, shape (*grid_shape, ndim)
        Shift of each block, registering moving onto reference (``ndimage.shift(moving_block,
        shift)`` approximates the reference block); unreliable blocks hold values filled from
        their reliable neighbours. The matching displacement field is ``-shifts``.
    measured_shifts : ndarray of float64, shape (*grid_shape, ndim)
        Shifts as measured, NaN where a block could not be measured.
    quality : ndarray of float64, shape grid_shape
        NCC between the reference block and the moving block after shifting (NaN if not
        measured).
    ncc_before : ndarray of float64, shape grid_shape
        NCC between the blocks before shifting.
    error : ndarray of float64, shape grid_shape
        Phase-correlation error (0 best, 1 worst).
    reliable : ndarray of bool, shape grid_shape
        Blocks whose measured shift is trusted.
    outlier : ndarray of bool, shape grid_shape
        Blocks whose shift was measured with enough quality but disagreed with their reliable
        neighbours' by more than ``max_deviation`` (not reliable either).
    centres : ndarray of float64, shape (*grid_shape, ndim)
        Centre of each block's core, in voxels.
    shape, block, overlap : tuple of int
        Volume shape, block (core) shape and overlap per axis.
    chunks : tuple of int
        Chunk shape of the reference volume (the default chunking of derived flows).
    complete : bool
        Whether every block was processed.
    report : RunReport or None
        The run's report (None when loaded from an existing output).
    """

    shifts: np.ndarray
    measured_shifts: np.ndarray
    quality: np.ndarray
    ncc_before: np.ndarray
    error: np.ndarray
    reliable: np.ndarray
    outlier: np.ndarray
    centres: np.ndarray
    shape: tuple[int, ...]
    block: tuple[int, ...]
    overlap: tuple[int, ...]
    chunks: tuple[int, ...]
    complete: bool = True
    report: RunReport | None = None
    #: Reference to moving voxels the blocks were measured through (None: none); the shifts
    #: are then the residual after it.
    initial_affine: np.ndarray | None = None

    @property
    def grid(self) -> TileGrid:
        """The block grid (cores ``block``, read with ``overlap``)."""
        return TileGrid(self.shape, self.block, self.overlap)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of blocks along each axis."""
        return self.reliable.shape


@dataclass(frozen=True)
class _Batch:
    """One task: a run of consecutive blocks."""

    reference: ArrayRef
    moving: ArrayRef
    grid: TileGrid
    numbers: tuple[int, ...]
    upsample_factor: int
    normalization: str | None


def _register_block(ref, mov, tile, upsample_factor, normalization) -> dict:
    """Measure one block from its read regions of both volumes; returns its row of results."""
    ndim = ref.ndim
    core = tile.core_in_read
    std_r, std_m = float(ref[core].std()), float(mov[core].std())
    row = dict.fromkeys(_FIELDS, np.nan)
    row.update(std_reference=std_r, std_moving=std_m)
    row["shift"] = np.full(ndim, np.nan)
    if not (std_r > 0 and std_m > 0 and np.isfinite(std_r) and np.isfinite(std_m)):
        return row  # empty (constant) or corrupt block: nothing to correlate
    row["ncc_before"] = normalized_cross_correlation(ref[core], mov[core])
    shift, error = estimate_shift(
        ref, mov, upsample_factor=upsample_factor, normalization=normalization
    )
    if not np.all(np.isfinite(shift)):
        return row
    integer = np.round(shift).astype(int)
    regions = common_regions(ref.shape, integer) if integer.any() else None
    if regions is None or min(r.stop - r.start for r in regions[0]) < MIN_BLOCK:
        row.update(shift=shift, error=error)
        row["ncc_after"] = shifted_ncc(ref, mov, shift, region=core)
        return row
    # Crop both blocks to the parts that show the same content at the integer shift and
    # measure the residual: far less biased by the blocks' edges than the first estimate.
    ref_region, mov_region = regions
    ref2, mov2 = ref[ref_region], mov[mov_region]
    residual, error2 = estimate_shift(
        ref2, mov2, upsample_factor=upsample_factor, normalization=normalization
    )
    if np.all(np.isfinite(residual)):
        shift, error = integer + residual, error2
    else:
        residual = shift - integer
    core_in_ref2 = tuple(
        slice(max(c.start, r.start) - r.start, min(c.stop, r.stop) - r.start)
        for c, r in zip(core, ref_region, strict=True)
    )
    row.update(shift=shift, error=error)
    if all(s.stop > s.start for s in core_in_ref2):
        row["ncc_after"] = shifted_ncc(ref2, mov2, residual, region=core_in_ref2)
    else:
        row["ncc_after"] = 0.0
    return row


def _read_regions(ref_array, mov_array, tiles) -> tuple[list, int]:
    """Each tile's read region of both volumes (float32), and the bytes read from storage.

    Consecutive blocks are neighbours along the last axis, and their overlapping read regions
    share storage chunks: when the batch's bounding box is compact, it is read once and cut,
    so each chunk is decoded once per batch instead of once per block.
    """
    itemsize = ref_array.dtype.itemsize + mov_array.dtype.itemsize
    lo = [min(t.read[a].start for t in tiles) for a in range(ref_array.ndim)]
    hi = [max(t.read[a].stop for t in tiles) for a in range(ref_array.ndim)]
    box_size = math.prod(b - a for a, b in zip(lo, hi, strict=True))
    if box_size > 2 * sum(math.prod(t.read_shape) for t in tiles):
        regions = [
            (
                np.asarray(read_region(ref_array, t.read, "reference"), dtype=np.float32),
                np.asarray(read_region(mov_array, t.read, "moving"), dtype=np.float32),
            )
            for t in tiles
        ]
        return regions, sum(r.size for r, _ in regions) * itemsize
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    ref_box = np.asarray(read_region(ref_array, box, "reference"), dtype=np.float32)
    mov_box = np.asarray(read_region(mov_array, box, "moving"), dtype=np.float32)
    regions = []
    for t in tiles:
        local = tuple(slice(r.start - a, r.stop - a) for r, a in zip(t.read, lo, strict=True))
        regions.append((ref_box[local], mov_box[local]))
    return regions, box_size * itemsize


def _register_batch(task: _Batch) -> dict:
    start = time.perf_counter()
    tiles = [task.grid.tile(n) for n in task.numbers]
    regions, bytes_read = _read_regions(task.reference.open(), task.moving.open(), tiles)
    rows = [
        _register_block(ref, mov, tile, task.upsample_factor, task.normalization)
        for tile, (ref, mov) in zip(tiles, regions, strict=True)
    ]
    out = {field: np.array([row[field] for row in rows]) for field in _FIELDS}
    out["bytes_read"] = bytes_read
    out["seconds"] = time.perf_counter() - start
    return out


@dataclass(frozen=True)
class BlocksPlan:
    """What :func:`blockwise_shifts` would do; ``str(plan)`` describes it."""

    reference: zarr.Array
    moving: zarr.Array
    grid: TileGrid
    batch_size: int
    upsample_factor: int
    normalization: str | None
    initial_affine: np.ndarray | None = None

    @property
    def n_tasks(self) -> int:
        """Tasks (batches of consecutive blocks)."""
        return math.ceil(len(self.grid) / self.batch_size)

    def signature(self) -> dict:
        """What determines the measured shifts (stored in the output for resume)."""
        extra = {} if self.initial_affine is None else {"initial_affine": self.initial_affine}
        return {
            **extra,
            "reference": str(array_ref(self.reference)),
            "moving": str(array_ref(self.moving)),
            "shape": self.grid.shape,
            "block": self.grid.tile_shape,
            "overlap": self.grid.depth,
            "upsample_factor": self.upsample_factor,
            "normalization": self.normalization,
            "batch_size": self.batch_size,
        }

    def describe(self) -> str:
        """Human-readable plan (``str(plan)``)."""
        return str(self)

    def __str__(self) -> str:
        g = self.grid
        read = math.prod(
            min(t + 2 * d, n) for t, d, n in zip(g.tile_shape, g.depth, g.shape, strict=True)
        )
        return "\n".join(
            [
                f"volume {g.shape} ({self.reference.dtype}), chunks {self.reference.chunks}",
                f"blocks: {len(g)} in a grid of {g.grid_shape}, block {g.tile_shape}, "
                f"overlap {g.depth} (the depth, i.e. halo, each block reads around itself)",
                f"tasks: {self.n_tasks} of up to {self.batch_size} blocks",
                f"read per block: up to {read} voxels of each volume; read amplification "
                f"{g.read_amplification(self.reference.chunks):.2f}x",
                f"upsample_factor {self.upsample_factor}, normalization {self.normalization}",
            ]
        )


def plan_blockwise_shifts(
    reference,
    moving,
    *,
    block,
    overlap=0,
    upsample_factor: int = 10,
    normalization: str | None = None,
    batch_size: int | None = None,
    allow_sparse: bool = False,
    initial_affine=None,
    channel: int | None = None,
) -> BlocksPlan:
    """Validate the inputs of :func:`blockwise_shifts` and plan the run, writing nothing.

    Parameters
    ----------
    reference, moving, block, overlap, upsample_factor, normalization, batch_size, allow_sparse
    initial_affine, channel
        As for :func:`blockwise_shifts`.

    Returns
    -------
    BlocksPlan

    Raises
    ------
    InputError
        If an input is missing or not a zarr array, the volumes differ in shape, the dtype is
        not numeric, a block side is below 8 voxels, the overlap is negative, or
        ``upsample_factor``/``normalization``/``batch_size`` is invalid.
    """
    from ._affine_result import resolve_affine
    from ._planning import open_inputs

    ref, mov, _ = open_inputs(reference, moving, channel=channel)
    matrix = resolve_affine(initial_affine, ref.ndim) if ref.ndim == mov.ndim else None
    if ref.ndim != mov.ndim or (matrix is None and ref.shape != mov.shape):
        raise InputError(
            f"reference and moving must have the same shape, got {ref.shape} and {mov.shape}; "
            "crop or pad them to a common shape first."
        )
    for name, arr in (("reference", ref), ("moving", mov)):
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{name} must be numeric, got dtype {arr.dtype}.")
    if ref.ndim < 1:
        raise InputError("the volumes must have at least one axis.")
    block = per_axis(block, ref.ndim, "block", minimum=MIN_BLOCK)
    overlap = per_axis(overlap, ref.ndim, "overlap", minimum=0)
    if isinstance(upsample_factor, bool) or not isinstance(upsample_factor, numbers.Integral):
        raise InputError(f"upsample_factor must be an integer >= 1, got {upsample_factor!r}.")
    if upsample_factor < 1:
        raise InputError(f"upsample_factor must be >= 1, got {upsample_factor}.")
    if normalization not in (None, "phase"):
        raise InputError(f"normalization must be None or 'phase', got {normalization!r}.")
    grid = TileGrid(ref.shape, block, overlap)
    if batch_size is None:
        read = math.prod(
            min(t + 2 * d, n) for t, d, n in zip(block, overlap, ref.shape, strict=True)
        )
        batch_size = max(1, min(_TARGET_VOXELS // read, math.ceil(len(grid) / 16)))
    elif (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    check_inputs_stored({"reference": ref, "moving": mov}, allow_sparse)
    return BlocksPlan(ref, mov, grid, int(batch_size), int(upsample_factor), normalization, matrix)


def _centres(grid: TileGrid) -> np.ndarray:
    axes = [
        np.array([(i * t + min((i + 1) * t, n) - 1) / 2 for i in range(g)])
        for t, n, g in zip(grid.tile_shape, grid.shape, grid.grid_shape, strict=True)
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _check_max_deviation(max_deviation) -> float | None:
    if max_deviation is None:
        return None
    if isinstance(max_deviation, bool) or not isinstance(max_deviation, numbers.Real):
        raise InputError(
            f"max_deviation must be a number of voxels > 0 or None, got {max_deviation!r}."
        )
    if not (math.isfinite(max_deviation) and max_deviation > 0):
        raise InputError(
            f"max_deviation must be > 0 (or None to keep every block), got {max_deviation}."
        )
    return float(max_deviation)


def _finalise(group, plan, values, thresholds: dict, complete, report) -> BlockShifts:
    """Apply the reliability rules to the measured values, store and return the result.

    ``thresholds`` holds ``min_quality``, ``min_std`` and ``max_deviation``; they are applied
    afresh on every run (resuming with other values recomputes nothing).
    """
    min_quality, min_std = thresholds["min_quality"], thresholds["min_std"]
    max_deviation = thresholds["max_deviation"]
    grid_shape, ndim = plan.grid.grid_shape, plan.grid.ndim
    measured = values["shift"].reshape(*grid_shape, ndim)
    quality = values["ncc_after"].reshape(grid_shape)
    std = np.minimum(values["std_reference"], values["std_moving"]).reshape(grid_shape)
    with np.errstate(invalid="ignore"):
        reliable = (
            np.isfinite(measured).all(axis=-1)
            & (np.nan_to_num(quality, nan=-np.inf) >= min_quality)
            & (np.nan_to_num(std, nan=-np.inf) > min_std)
        )
    if max_deviation is None:
        outlier = np.zeros(grid_shape, dtype=bool)
    else:
        outlier = find_outliers(measured, reliable, max_deviation)
    reliable &= ~outlier
    result = BlockShifts(
        shifts=fill_unreliable(measured, reliable),
        measured_shifts=measured,
        quality=quality,
        ncc_before=values["ncc_before"].reshape(grid_shape),
        error=values["error"].reshape(grid_shape),
        reliable=reliable,
        outlier=outlier,
        centres=_centres(plan.grid),
        shape=plan.grid.shape,
        block=plan.grid.tile_shape,
        overlap=plan.grid.depth,
        chunks=tuple(int(c) for c in plan.reference.chunks),
        complete=complete,
        report=report,
        initial_affine=plan.initial_affine,
    )
    for name in (*_GRID_ARRAYS, "outlier"):
        value = getattr(result, name)
        group.create_array(
            name, shape=value.shape, dtype=value.dtype, chunks=value.shape or (1,), overwrite=True
        )[...] = value
    group.create_array(
        "centres",
        shape=result.centres.shape,
        dtype="float64",
        chunks=result.centres.shape,
        overwrite=True,
    )[...] = result.centres
    write_qc(
        group,
        label="blocks",
        tile_shape=plan.grid.tile_shape,
        ncc_before=result.ncc_before,
        ncc_after=result.quality,
        extra={"reliable": reliable},
    )
    # blocks judged unreliable are replaced by their neighbours' shifts: only the others count
    report.warnings += qc_regressions(result.ncc_before, result.quality, skip=~reliable,
                                      label="block")  # fmt: skip
    group.attrs["blocks"] = {
        "shape": list(result.shape),
        "block": list(result.block),
        "overlap": list(result.overlap),
        "chunks": list(result.chunks),
        "grid_shape": list(grid_shape),
        "min_quality": float(min_quality),
        "min_std": float(min_std),
        "max_deviation": max_deviation,
        "n_reliable": int(reliable.sum()),
        "n_outliers": int(outlier.sum()),
        "complete": bool(complete),
        # the reference's physical space, for the flows made from these shifts
        "space": read_space(plan.reference).to_attrs(),
    }
    if plan.initial_affine is not None:  # the shifts are the residual after it
        group.attrs["initial_affine"] = plan.initial_affine.tolist()
    return result


def blockwise_shifts(
    reference,
    moving,
    output,
    *,
    block,
    overlap=0,
    upsample_factor: int = 10,
    normalization: str | None = None,
    min_quality: float = 0.3,
    min_std: float = 0.0,
    max_deviation: float | None = 5.0,
    batch_size: int | None = None,
    allow_sparse: bool = False,
    initial_affine=None,
    channel: int | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BlockShifts:
    """Estimate one rigid shift per block of two volumes (piecewise-rigid registration).

    Each block is read with ``overlap`` extra voxels per side from both volumes (clipped at the
    volume's edges), both are Hann-windowed and phase cross-correlated; both blocks are then
    cropped to the parts that show the same content at the integer shift and the residual is
    measured again, which removes most of the bias that the blocks' edges cause. Quality is
    the normalised cross-correlation (NCC) between the reference block's core and the moving
    volume shifted by the estimate. Blocks that are constant (empty background), whose smaller
    standard deviation is at most ``min_std``, or whose quality is below ``min_quality``, are
    marked unreliable. So are outliers: blocks whose shift is further than ``max_deviation``
    voxels from the median of their reliable neighbours' shifts (a confident match to the
    wrong place, e.g. on a repetitive texture or a bright artefact). Unreliable blocks are
    filled with the median of their reliable neighbours (iteratively, ring by ring). A run
    whose output exists with the same parameters resumes: finished blocks are not recomputed.

    Parameters
    ----------
    reference, moving : zarr.Array, ArrayRef, str or os.PathLike
        Volumes of the same shape (any number of axes; 2-D and 3-D are typical), or paths to
        them (OME-Zarr multiscale groups open at level 0).
    output : str, os.PathLike or zarr store
        Output group; it receives the arrays ``shifts`` ``(*grid_shape, ndim)``,
        ``measured_shifts``, ``quality``, ``ncc_before``, ``error``, ``reliable``, ``outlier``,
        ``centres`` ``(*grid_shape, ndim)`` and the ``qc`` group.
    block : int or sequence of int
        Block (core) shape, >= 8 per axis; the last block along an axis may be shorter.
    overlap : int or sequence of int
        Extra voxels read on each side of a block: more context for the correlation. This is
        each block's halo (what the other workflows call ``depth``); the name says that
        neighbouring blocks' read windows then overlap (by twice it), while their cores, and
        the grid of shifts, do not.
    upsample_factor : int
        Shifts are resolved to ``1 / upsample_factor`` voxel.
    normalization : {None, "phase"}
        Cross-power normalisation of the correlation. The default (plain cross-correlation)
        is more robust on small or noisy blocks; "phase" sharpens the peak on broadband data.
    min_quality : float
        Smallest NCC after shifting for a block to be reliable.
    min_std : float
        Blocks whose reference or moving standard deviation is at most this are empty.
    max_deviation : float or None
        Largest distance, in voxels, between a block's shift and the component-wise median of
        its reliable neighbours' shifts (faces, edges and corners; judged only with at least
        two of them); further blocks are outliers, marked unreliable and filled. The rule is
        iterated, rejecting only the worst block of each neighbourhood per pass, so one
        outlier does not drag its neighbours' medians into rejection. The default, 5, keeps
        smooth deformations whose neighbouring blocks differ by up to about 7 voxels; raise it
        for stronger strain, and pass None to keep every block (e.g. slabs that moved against
        each other, on a grid of a few blocks). Applied afresh on every run, like
        ``min_quality``.
    batch_size : int, optional
        Blocks per task; by default a few million voxels per task.
    allow_sparse : bool
        Accept inputs whose stores lack some chunk files (zarr reads those as the fill value);
        by default a missing chunk that stored data runs on into is refused before anything runs, naming it.
    initial_affine : array_like, AffineResult, str or os.PathLike, optional
        A global affine found first (:func:`chunkreg.estimate_affine`'s result or output
        path, or a matrix from reference to moving voxels). Each task reads the moving volume
        resampled through it, so the shifts are the residual after the affine (and the moving
        volume may have another shape). The output records it (attribute
        ``initial_affine``), :func:`shifts_to_flow` copies it to the flow, and
        :func:`warp_volume` applies both.
    channel : int, optional
        The channel to register on, for multi-channel inputs (channel axis ``c``, or first):
        as for :func:`compute_flow`. Tasks read only that channel.
    client, scheduler, n_workers :
        Where to run, see :func:`chunkreg.execution.open_client`.
    overwrite : bool
        Replace an existing output instead of resuming it.
    progress : bool
        Draw a progress bar.

    Returns
    -------
    BlockShifts
        The grids (also stored in ``output``) and the run report. Blocks whose task failed
        are unreliable and listed in ``result.report``; running again retries them.

    Raises
    ------
    InputError
        Bad input (see :func:`plan_blockwise_shifts`), ``min_quality`` outside [-1, 1] or
        ``max_deviation`` not a number > 0 or None; nothing is written.
    IncompatibleOutputError
        ``output`` exists from a different run (and ``overwrite`` is false).

    See Also
    --------
    shifts_to_flow : dense displacement field from the block shifts.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> from scipy import ndimage
    >>> from chunkreg.testing import textured_image
    >>> ref = textured_image((128, 128), seed=1)
    >>> mov = ndimage.shift(ref, (2.0, -3.0), order=3, mode="nearest")
    >>> _ = zarr.create_array("ref.zarr", data=ref, chunks=(64, 64), overwrite=True)
    >>> _ = zarr.create_array("mov.zarr", data=mov, chunks=(64, 64), overwrite=True)
    >>> result = blockwise_shifts("ref.zarr", "mov.zarr", "blocks.zarr", block=64,
    ...                           overlap=16, scheduler="synchronous", progress=False)
    >>> np.round(result.shifts[1, 1], 1)  # registers moving back onto reference
    array([-2.,  3.])
    """
    plan = plan_blockwise_shifts(
        reference,
        moving,
        block=block,
        overlap=overlap,
        upsample_factor=upsample_factor,
        normalization=normalization,
        batch_size=batch_size,
        allow_sparse=allow_sparse,
        initial_affine=initial_affine,
        channel=channel,
    )
    if not -1.0 <= float(min_quality) <= 1.0:
        raise InputError(f"min_quality must be within [-1, 1], got {min_quality}.")
    if not float(min_std) >= 0:
        raise InputError(f"min_std must be >= 0, got {min_std}.")
    thresholds = {
        "min_quality": min_quality,
        "min_std": min_std,
        "max_deviation": _check_max_deviation(max_deviation),
    }
    grid, ndim = plan.grid, plan.grid.ndim
    # the output's lease is held until everything is written
    with workflow_scope(client, scheduler=scheduler, n_workers=n_workers) as c:
        group = open_output_group(
            output, signature=plan.signature(), overwrite=overwrite, kind="blocks",
            inputs={"reference": plan.reference, "moving": plan.moving},
        )  # fmt: skip
        require_shared_store(group, c)
        fields = {f: ((ndim,) if f == "shift" else (), "float64") for f in _FIELDS}
        sink = ResultSink(group, "blocks", n_tasks=plan.n_tasks, n_items=len(grid), fields=fields)
        b = plan.batch_size
        numbers = [tuple(range(i * b, min((i + 1) * b, len(grid)))) for i in range(plan.n_tasks)]
        moving_ref = through_affine(
            array_ref(plan.moving), plan.initial_affine, grid.shape, plan.reference.chunks
        )
        make = partial(_Batch, array_ref(plan.reference), moving_ref, grid)
        tasks = IndexedTasks(
            plan.n_tasks, lambda i: make(numbers[i], plan.upsample_factor, plan.normalization)
        )
        label = "block batches" if b > 1 else "blocks"
        runner = StageRunner(c, label=label, progress=progress)
        runner.run("blocks", _register_batch, tasks, sink=sink, items=numbers.__getitem__,
                   label=label, describe=lambda t: f"blocks {t.numbers[0]}..{t.numbers[-1]}")  # fmt: skip
        report = runner.finish()
    complete = bool(sink.record.complete)
    result = _finalise(group, plan, sink.values, thresholds, complete, report)
    report.notes["blocks"] = f"{len(grid)} in a grid of {grid.grid_shape}"
    report.notes["reliable blocks"] = f"{int(result.reliable.sum())} of {len(grid)}"
    if result.outlier.any():
        report.notes["reliable blocks"] += (
            f" ({int(result.outlier.sum())} rejected: further than {thresholds['max_deviation']:g}"
            " voxels from their neighbours' median)"
        )
    return result


def load_block_shifts(output) -> BlockShifts:
    """Read the result of :func:`blockwise_shifts` back from its output group.

    Parameters
    ----------
    output : str, os.PathLike or zarr.Group
        The output group written by :func:`blockwise_shifts`.

    Returns
    -------
    BlockShifts

    Raises
    ------
    InputError
        If ``output`` is not a blockwise-shifts output.
    """
    if isinstance(output, BlockShifts):
        return output
    if isinstance(output, zarr.Group):
        group = output
    else:
        try:
            group = zarr.open_group(output, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise InputError(f"{output!s} is not a blockwise_shifts output ({exc}).") from exc
        except zarr.errors.NodeTypeValidationError as exc:
            raise InputError(f"{output!s} is a zarr array, not a blocks output group.") from exc
    meta = group.attrs.get("blocks")
    if not isinstance(meta, dict):
        raise InputError(
            f"{output!s} is not a blockwise_shifts output (no 'blocks' attributes); give the "
            "output of chunkreg.blockwise_shifts / `chunkreg blocks`."
        )
    try:
        arrays = {name: group[name][...] for name in (*_GRID_ARRAYS, "centres")}
    except KeyError as exc:
        raise IncompatibleOutputError(f"{output!s} lacks the array {exc}.") from exc
    # outputs written before outlier rejection existed have no outliers
    outlier = group["outlier"][...] if "outlier" in group else np.zeros_like(arrays["reliable"])
    initial = group.attrs.get("initial_affine")
    return BlockShifts(
        **arrays,
        initial_affine=None if initial is None else np.asarray(initial, dtype=np.float64),
        outlier=outlier,
        shape=tuple(meta["shape"]),
        block=tuple(meta["block"]),
        overlap=tuple(meta["overlap"]),
        chunks=tuple(meta["chunks"]),
        complete=bool(meta["complete"]),
    )
