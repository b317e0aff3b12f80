"""Global affine pre-alignment of two zarr volumes, on a cluster.

Stages, each a set of tasks run by :func:`chunkreg.execution.run_tasks`:

1. the coarse level of both volumes: an OME-Zarr multiscale level when the input has it,
   else block means of ``2**level`` voxels computed region by region (bounded memory) into
   the output group;
2. the coarse estimate, in one task: a global phase correlation for the starting translation,
   then iterations of blockwise phase correlation through the current estimate, fitted by
   RANSAC and least squares (:func:`~chunkreg.registration._affine_kernels.estimate_in_memory`);
3. refinement at full resolution: an evenly spread subset of blocks, each read with the moving
   region the estimate maps it to, resampled, phase-correlated; the correspondences are fitted
   again (``refine`` passes).

The result (matrix, correspondences, inliers, residuals) is stored in the output group; running
again with the same parameters returns it without recomputing.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import zarr
import zarr.errors

from .._validation import per_axis
from ..engine import StageRunner
from ..engine._blend import group_ref
from ..errors import InputError
from ..execution import RunReport, open_client
from ..io import (
    ArrayRef,
    CompletionRecord,
    array_ref,
    open_output_group,
    output_scope,
    require_shared_store,
)
from ..io._ome import multiscale_dataset_paths
from ..registration._affine import (
    MODELS,
    apply_affine,
    level_matrix,
    ransac_affine,
    transform_residuals,
)
from ..registration._affine_kernels import block_regions, centre, correspondence
from ..tiling import TileGrid
from ._affine_result import AFFINE_ATTR, AffineResult, load_affine
from ._affine_tasks import Coarse, Downsample, Fine
from ._affine_tasks import coarse as coarse_task
from ._affine_tasks import downsample as downsample_task
from ._affine_tasks import fine as fine_task
from ._qc import write_qc

__all__ = ["estimate_affine"]

#: Voxels the coarse level may have when ``level="auto"`` (it is held in memory by one task).
COARSE_VOXELS = {2: 2**16, 3: 2**21}
_FINE_BLOCK = {2: 96, 3: 48}
_MAX_FINE_BLOCKS = {2: 144, 3: 125}
_DOWNSAMPLE_VOXELS = 2**24  # level-0 voxels one downsampling task reads
_FINE_TASK_VOXELS = 2**20  # block voxels per refinement task (a few seconds)


def _voxels(shape) -> int:
    return math.prod(int(n) for n in shape)


def _coarse_shape(shape, factor) -> tuple[int, ...]:
    return tuple(math.ceil(n / factor) for n in shape)


def _auto_level(shape, ndim: int) -> int:
    level = 0
    while _voxels(_coarse_shape(shape, 2**level)) > COARSE_VOXELS[ndim]:
        if min(_coarse_shape(shape, 2 ** (level + 1))) < 64:
            break
        level += 1
    return level


def _auto_block(coarse_shape) -> int:
    """Coarse blocks of about a quarter of the shortest axis (16 to 64 voxels): large enough
    to keep matching through rotations of 15 degrees, four or more along every axis."""
    return int(min(max(min(coarse_shape) // 4, 16), 64))


def _multiscale_level(source, level: int, shape) -> ArrayRef | None:
    """The input's own multiscale level ``level`` if it is 2**level coarser (else None)."""
    if level == 0 or isinstance(source, zarr.Array):
        return None
    try:
        node = zarr.open(str(source), mode="r")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.NodeTypeValidationError):
        return None  # open_array accepted it before; anything else has no levels to offer
    if not isinstance(node, zarr.Group):
        return None
    paths = multiscale_dataset_paths(node.attrs.asdict())
    if len(paths) <= level:
        return None
    array = node[paths[level]]
    f = 2**level
    if array.ndim != len(shape) or not all(
        m in (n // f, math.ceil(n / f)) for m, n in zip(array.shape, shape, strict=True)
    ):
        return None
    return array_ref(array)


# -- the run -------------------------------------------------------------------------------


class _Stages:
    """Runs the estimate's stages on the engine; each needs the last one's results whole."""

    def __init__(self, client, progress: bool) -> None:
        self.runner = StageRunner(client, label="tasks", progress=progress)
        self.report, self.lines = self.runner.report, self.runner.lines

    def run(self, name: str, func, tasks, *, record=None, label="tasks") -> list:
        """One stage; its tasks' results in order. Raises if a task failed."""
        results: dict[int, object] = {}
        ok = self.runner.run(name, func, tasks, record=record, label=label,
                             on_result=results.__setitem__)  # fmt: skip
        if not ok:
            self.report.raise_if_failed()
        return [results.get(i) for i in range(len(tasks))]


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _coarse_images(stages, group, refs, sources, shapes, level, chunks) -> dict[str, ArrayRef]:
    """The coarse level of both inputs: the inputs' own, or block means built here."""
    f = 2**level
    out, tasks = {}, []
    for name in ("reference", "moving"):
        if level == 0:
            out[name] = refs[name]
            continue
        own = _multiscale_level(sources[name], level, shapes[name])
        if own is not None:
            out[name] = own
            continue
        cshape = _coarse_shape(shapes[name], f)
        cchunks = tuple(min(c, n) for c, n in zip(chunks, cshape, strict=True))
        path = f"coarse/{name}"
        if path not in group:
            group.create_array(path, shape=cshape, dtype=np.float32, chunks=cchunks,
                               fill_value=np.nan,
                               attributes={"description": f"{name}: mean of each {f}-voxel "
                                           "block per axis", "factor": f})  # fmt: skip
        out[name] = group_ref(group, path)
        edge = max(1, round((_DOWNSAMPLE_VOXELS / f ** len(cshape)) ** (1 / len(cshape))))
        tile = tuple(max(c, edge // c * c) for c in cchunks)
        grid = TileGrid(cshape, tile, (0,) * len(cshape), cchunks)
        tasks += [Downsample(refs[name], out[name], f, grid, i) for i in range(len(grid))]
    if tasks:
        record = CompletionRecord(group, "coarse_images", len(tasks))
        stages.run(f"coarse level {level} images", downsample_task, tasks, record=record,
                   label="coarse regions")  # fmt: skip
    return out


def estimate_affine(
    reference,
    moving,
    output,
    *,
    level="auto",
    model: str = "affine",
    block=None,
    fine_block=None,
    max_blocks: int | None = None,
    iterations: int = 6,
    refine: int = 2,
    threshold: float = 1.5,
    upsample_factor: int = 20,
    min_std: float = 0.0,
    min_quality: float = 0.2,
    seed: int = 0,
    channel: int | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> AffineResult:
    """Estimate the global affine transform between two zarr volumes, on a cluster.

    On a coarse pyramid level, a global phase correlation gives a starting translation; then
    each iteration resamples the moving volume through the current estimate, measures one
    shift per block by windowed phase correlation (blank blocks are rejected), turns block
    centres and shifts into point correspondences and fits the transform to them by RANSAC
    (deterministic seed) and least squares. At full resolution, ``refine`` passes over an
    evenly spread subset of blocks, each read together with the moving region the estimate
    maps it to, refine the matrix to sub-voxel accuracy; a block whose match disagrees with
    the consensus (noise, artefacts, repetitive texture) is an outlier and is reported.

    Parameters
    ----------
    reference, moving : zarr.Array, str or os.PathLike
        2-D or 3-D volumes (zarr arrays, their paths, or OME-Zarr multiscale groups, whose
        coarser levels are used when they are ``2**level`` coarser). Their shapes may differ.
    output : str, os.PathLike or zarr store
        Small output group: the matrix (attributes ``affine`` and OME-Zarr
        ``coordinateTransformations``), the correspondences and the ``qc`` group.
    level : "auto" or int
        Pyramid level of the coarse estimate (``2**level`` times coarser). ``"auto"``: the
        finest level of at most about two million voxels in 3-D (128³), 65,536 in 2-D (256²),
        keeping 64 voxels or more along every axis.
    model : {"affine", "similarity", "rigid", "translation"}
        Degrees of freedom: general linear part, rotation + uniform scale, rotation, shift.
    block : int or tuple of int, optional
        Block shape at the coarse level, in its voxels (default: a quarter of the shortest
        axis, 16 to 64).
    fine_block : int or tuple of int, optional
        Block shape of the full-resolution refinement. Default: the reference's chunks (or
        shards) when they are 24 to 128 voxels per axis, so each block decodes one chunk of
        it; else 48 in 3-D, 96 in 2-D.
    max_blocks : int, optional
        Most blocks a refinement pass measures (default 125 in 3-D, 144 in 2-D).
    iterations : int
        Coarse iterations (each resamples and refits); stops early once converged.
    refine : int
        Full-resolution passes (0: keep the coarse estimate).
    threshold : float
        RANSAC inlier distance, in voxels of the level being fitted.
    upsample_factor : int
        Phase correlation precision, ``1 / upsample_factor`` voxel.
    min_std : float
        Blocks whose standard deviation is at most this (in either volume) are blank.
    min_quality : float
        Blocks whose NCC after the shift is at most this are left out (no match).
    seed : int
        RANSAC seed: the same inputs give the same matrix.
    channel : int, optional
        The channel to register on, for multi-channel inputs (as for
        :func:`chunkreg.compute_flow`); the pyramid is then built from that channel.
    client, scheduler, n_workers, overwrite, progress
        As for :func:`chunkreg.compute_flow`.

    Returns
    -------
    AffineResult
        ``.matrix`` maps reference voxel coordinates to moving voxel coordinates, so
        ``scipy.ndimage.affine_transform(moving, result.matrix)`` approximates the reference;
        ``.inliers``, ``.residuals``, ``.report``, ``.describe()``.

    Raises
    ------
    InputError
        Bad inputs or parameters (nothing is written), or too few usable blocks.
    TaskFailedError
        A task failed after its retries (completed stages are kept; run again to resume).
    IncompatibleOutputError
        ``output`` exists from a different run.

    References
    ----------
    .. [1] Fischler, M. A., & Bolles, R. C. (1981). Random sample consensus. Communications of
       the ACM 24(6), 381-395. :DOI:`10.1145/358669.358692`

    Examples
    --------
    >>> import numpy as np, zarr
    >>> from scipy import ndimage
    >>> from chunkreg.testing import textured_image
    >>> ref = textured_image((192, 192), seed=3)
    >>> truth = np.array([[1.0, 0.05, 2.0], [-0.05, 1.0, -3.0], [0.0, 0.0, 1.0]])
    >>> mov = ndimage.affine_transform(ref, np.linalg.inv(truth), order=3, mode="nearest")
    >>> _ = zarr.create_array("ref.zarr", data=ref, chunks=(64, 64), overwrite=True)
    >>> _ = zarr.create_array("mov.zarr", data=mov, chunks=(64, 64), overwrite=True)
    >>> result = estimate_affine("ref.zarr", "mov.zarr", "affine.zarr", scheduler="synchronous",
    ...                          progress=False, overwrite=True)
    >>> bool(np.abs(result.matrix - truth).max() < 0.05)
    True
    """
    from ._planning import open_inputs

    ref, mov, _ = open_inputs(reference, moving, channel=channel)
    for name, arr in (("reference", ref), ("moving", mov)):
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{name} must have a real numeric dtype, got {arr.dtype}.")
        if arr.ndim not in (2, 3):
            raise InputError(f"{name} must be 2-D or 3-D, got shape {arr.shape}.")
    if ref.ndim != mov.ndim:
        raise InputError(f"reference and moving must have the same number of axes, got "
                         f"{ref.shape} and {mov.shape}.")  # fmt: skip
    if model not in MODELS:
        raise InputError(f"model must be one of {MODELS}, got {model!r}.")
    ndim = ref.ndim
    if fine_block is None:  # one storage chunk per block when it is a usable size: one read
        chunks = ref.shards or ref.chunks
        fine_block = chunks if all(24 <= c <= 128 for c in chunks) else _FINE_BLOCK[ndim]
    fine = per_axis(fine_block, ndim, "fine_block", minimum=8)
    fine = tuple(min(b, n) for b, n in zip(fine, ref.shape, strict=True))
    max_blocks = _positive_int(_MAX_FINE_BLOCKS[ndim] if max_blocks is None else max_blocks,
                               "max_blocks", minimum=1)  # fmt: skip
    if level == "auto":
        level = _auto_level(ref.shape, ndim)
    level = _positive_int(level, "level", minimum=0)
    cshape = _coarse_shape(ref.shape, 2**level)
    if min(cshape) < 8:
        raise InputError(f"level {level} makes the reference {cshape}, under 8 voxels along an "
                         "axis; use a finer level.")  # fmt: skip
    block = per_axis(_auto_block(cshape) if block is None else block, ndim, "block", minimum=8)
    iterations = _positive_int(iterations, "iterations")
    refine = _positive_int(refine, "refine", minimum=0)
    upsample_factor = _positive_int(upsample_factor, "upsample_factor")
    if not (isinstance(threshold, numbers.Real) and threshold > 0):
        raise InputError(f"threshold must be a number of voxels > 0, got {threshold!r}.")
    if not -1.0 <= float(min_quality) < 1.0:
        raise InputError(f"min_quality must be within [-1, 1), got {min_quality}.")
    params = {
        "level": level, "model": model, "block": block, "fine_block": fine,
        "max_blocks": max_blocks, "iterations": iterations, "refine": refine,
        "threshold": float(threshold), "upsample_factor": upsample_factor,
        "min_std": float(min_std), "min_quality": float(min_quality), "seed": int(seed),
    }  # fmt: skip
    signature = {"reference": str(array_ref(ref)), "moving": str(array_ref(mov)),
                 "shape": list(ref.shape), "moving_shape": list(mov.shape), **params}  # fmt: skip
    # the lease: one run at a time writes the output; bad input removes a new output again
    with output_scope():
        group = open_output_group(output, signature=signature, overwrite=overwrite, kind="affine")
        if AFFINE_ATTR in group.attrs:  # complete from an earlier run
            result = load_affine(group)
            report = RunReport(label="tasks", n_tasks=0)
            report.notes["affine"] = "complete from an earlier run (nothing recomputed)"
            _notes(report, result)
            return AffineResult(**{**result.__dict__, "report": report})
        refs = {"reference": array_ref(ref), "moving": array_ref(mov)}
        with open_client(client, scheduler=scheduler, n_workers=n_workers) as c:
            require_shared_store(group, c)
            stages = _Stages(c, progress)
            coarse = _coarse_images(stages, group, refs, {"reference": reference, "moving": moving},
                                    {"reference": ref.shape, "moving": mov.shape}, level,
                                    ref.chunks)  # fmt: skip
            history = []
            saved = group.attrs.get("coarse_estimate")
            if isinstance(saved, dict):
                matrix, coarse_stages = np.asarray(saved["matrix"]), saved["stages"]
                stages.lines.append("coarse estimate: complete from an earlier run")
            else:
                task = Coarse(coarse["reference"], coarse["moving"], model, block, iterations,
                               float(threshold), upsample_factor, float(min_std), int(seed),
                               float(min_quality))  # fmt: skip
                (out,) = stages.run(f"coarse estimate (level {level})", coarse_task, [task])
                if "error" in out:
                    raise InputError(f"coarse estimate (level {level}): {out['error']}")
                matrix, coarse_stages = np.asarray(out["matrix"]), out["stages"]
                group.attrs["coarse_estimate"] = {
                    "matrix": matrix.tolist(),
                    "stages": coarse_stages,
                }
            history += [{"stage": f"coarse iteration {i + 1}", "level": level, **s}
                        for i, s in enumerate(coarse_stages)]  # fmt: skip
            matrix = level_matrix(matrix, 1 / 2**level) if level else matrix
            regions, grid_shape = block_regions(ref.shape, fine, max_blocks=max_blocks)
            src = np.array([centre(r) for r in regions])
            dst = np.full_like(src, np.nan)
            inliers = np.zeros(len(regions), dtype=bool)
            quality = np.full(len(regions), np.nan)
            ncc_identity = np.full(len(regions), np.nan)
            fit = {"model": model, "threshold": threshold, "seed": seed, "min_quality": min_quality}
            for p in range(refine):
                identity_qc = p == 0 and ref.shape == mov.shape
                tasks = _fine_tasks(
                    refs, matrix, regions, fine, upsample_factor, min_std, identity_qc
                )
                outs = stages.run(f"refinement pass {p + 1} (full resolution)", fine_task, tasks,
                                  label="block batches")  # fmt: skip
                if identity_qc:
                    ncc_identity = np.concatenate([o["ncc_identity"] for o in outs])
                quality = np.concatenate([o["quality"] for o in outs])
                shifts = np.concatenate([o["shift"] for o in outs])
                matrix, dst, inliers, stage = _fit_pass(matrix, regions, src, shifts, quality, fit)
                history.append({"stage": f"refinement pass {p + 1}", "level": 0, **stage})
        residuals = np.full(len(regions), np.nan)
        measured = np.all(np.isfinite(dst), axis=1)
        residuals[measured] = transform_residuals(matrix, src[measured], dst[measured])
        result = AffineResult(
            matrix=matrix, model=model, level=level, reference_points=src, moving_points=dst,
            inliers=inliers, residuals=residuals, quality=quality, shape=tuple(ref.shape),
            moving_shape=tuple(mov.shape), stages=history, report=stages.report,
        )  # fmt: skip
        write_qc(group, label="blocks", tile_shape=fine,
                 ncc_before=ncc_identity.reshape(grid_shape), ncc_after=quality.reshape(grid_shape),
                 extra={"inlier": inliers.reshape(grid_shape)})  # fmt: skip
        result.save(group)  # last: marks the output complete
        if "coarse" in group:  # the coarse images are no longer needed
            del group["coarse"]
        stages.runner.finish(min_stages=1)
        _notes(stages.report, result, ncc_identity)
        return result


def _fine_tasks(refs, matrix, regions, block, upsample_factor, min_std, identity_qc) -> list:
    """The tasks of one refinement pass: batches of blocks of about a million voxels."""
    per_task = max(1, _FINE_TASK_VOXELS // _voxels(block))
    m = tuple(tuple(row) for row in np.asarray(matrix).tolist())
    return [
        Fine(refs["reference"], refs["moving"], m, tuple(regions[i : i + per_task]),
              upsample_factor, float(min_std), identity_qc)
        for i in range(0, len(regions), per_task)
    ]  # fmt: skip


def _fit_pass(matrix, regions, src, shifts, quality, fit: dict):
    """Correspondences of one pass's measured blocks, fitted by RANSAC and least squares.

    Returns the new matrix, the moving points (NaN where not measured), the inlier mask and the
    pass's statistics.
    """
    ok = np.all(np.isfinite(shifts), axis=1) & (np.nan_to_num(quality, nan=-1) > fit["min_quality"])
    dst = np.full_like(src, np.nan)
    for i in np.flatnonzero(ok):
        dst[i] = correspondence(matrix, regions[i], shifts[i])[1]
    try:
        new, sub = ransac_affine(src[ok], dst[ok], model=fit["model"],
                                 threshold=fit["threshold"], seed=fit["seed"])  # fmt: skip
    except InputError as exc:
        raise InputError(f"full-resolution refinement: {exc}") from None
    inliers = np.zeros(len(regions), dtype=bool)
    inliers[np.flatnonzero(ok)[sub]] = True
    r = transform_residuals(new, src[inliers], dst[inliers])
    stage = {"pairs": int(ok.sum()), "inliers": int(inliers.sum()),
             "rms": float(np.sqrt(np.mean(r**2)))}  # fmt: skip
    return new, dst, inliers, stage


def _notes(report: RunReport, result: AffineResult, ncc_identity=None) -> None:
    n = result.ndim
    report.notes["affine model"] = f"{result.model}, coarse level {result.level}"
    report.notes["inliers"] = (
        f"{result.n_inliers} of {int(np.isfinite(result.residuals).sum())} measured blocks "
        f"({len(result.inliers)} tried), residual RMS {result.rms:.3f} voxels"
    )
    corners = np.array(np.meshgrid(*[(0, s - 1) for s in result.shape], indexing="ij"))
    moved = np.linalg.norm(apply_affine(result.matrix, corners.reshape(n, -1).T)
                           - corners.reshape(n, -1).T, axis=1)  # fmt: skip
    report.notes["largest displacement"] = f"{moved.max():.1f} voxels (at a corner)"
    if ncc_identity is not None and np.isfinite(ncc_identity).any():
        q = result.quality[result.inliers]
        report.notes["NCC per block"] = (
            f"median {np.nanmedian(ncc_identity):.3f} before, "
            f"{np.nanmedian(q) if q.size else float('nan'):.3f} after the affine"
        )
