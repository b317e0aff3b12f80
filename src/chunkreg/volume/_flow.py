"""The ``flow`` workflow: dense optical flow over zarr volumes, coarse to fine, resumable.

Stages, each a set of write-once tasks with its own completion record:

1. the image pyramid of both inputs, level by level (unless the inputs carry one);
2. the coarsest level's flow: over the whole level in one task when it fits the memory budget,
   else tile by tile;
3. each finer level: tiles refine the upsampled flow of the level above (scratch blocks), then
   blend tasks stitch them seam-free into the level's flow; at level 0 the blend tasks also
   measure the quality control.

A second run skips what is recorded complete; any task may run twice and writes the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import numpy as np

from .._version import __version__
from ..engine import (
    IndexedTasks,
    ResultSink,
    StageRunner,
    output_location,
    output_note,
    workflow_scope,
)
from ..engine._blend import BlendJob, BlendTask, blend_tile, create_scratch, group_ref
from ..execution import RunReport
from ..io import (
    FIELD_COMPRESSORS,
    CompletionRecord,
    create_array,
    open_output_group,
    read_space,
    require_shared_store,
    write_space,
)
from ..io._flow_layout import FLOW_ARRAY
from ._flow_tasks import LevelJob, TileTask, WholeTask, flow_tile, whole_level
from ._intensity import IDENTITY
from ._memory import check_worker_memory
from ._planning import TASK_MEMORY_BUDGET, FlowPlan, plan_flow
from ._pyramid import create_pyramid_level, downsample_tile, pyramid_tasks
from ._qc import combine_seam_sums, qc_regressions, write_qc

__all__ = ["FLOW_ARRAY", "compute_flow", "run_flow_plan"]

_RECORD = "tiles"
_SCRATCH = "_scratch"
_PIECES = "pieces"


def flow_path(level: int) -> str:
    """Path of a level's flow inside the output group."""
    return FLOW_ARRAY if level == 0 else f"coarse/{level}"


def _flow_space(plan: FlowPlan):
    """The flow's space: the reference's spatial axes behind a component axis ``c``."""
    return read_space(plan.reference.open()).last(plan.ndim).with_leading(("c",))


def _flow_attributes(plan: FlowPlan, level: int) -> dict:
    lp = plan.levels[level]
    space = _flow_space(plan)
    axes = space.axes
    factors = " x ".join(map(str, lp.voxel_factors))
    unit = "voxel" if level == 0 else f"voxel of level {level} ({factors} input voxels)"
    return {
        "description": (
            "dense displacement field: flow[:, p] is the displacement (in pixels of this "
            "level's grid, one component per spatial axis, in axis order) at which the "
            "moving image matches the reference at p; warp(moving, flow) ~ reference"
        ),
        "axes": list(axes),
        "units": {"values": unit},
        "voxel_size": space.voxel_size(),
        # the voxel size the levels, windows and halos followed, when anisotropic
        **({} if lp.spacing is None else {"spacing": list(lp.spacing)}),
        "method": plan.method_name,
        "params": plan.params,
        "level": level,
        "levels": len(plan.levels),
        "mode": lp.mode,
        "tile": list(lp.grid.tile_shape),
        "depth": list(lp.grid.depth),
        "band": list(lp.band),
        "depth_rule": lp.depth_rule,
        "reference": str(plan.reference),
        "moving": str(plan.moving),
        "chunkreg_version": __version__,
        **_affine_attributes(plan, level),
    }


def _affine_attributes(plan: FlowPlan, level: int) -> dict:
    """A flow computed after an initial affine records it: its displacements are the residual."""
    if plan.initial_affine is None:
        return {}
    from ..io._flow_layout import INITIAL_AFFINE_ATTR
    from ..registration._affine import level_matrix

    matrix = np.asarray(plan.initial_affine)
    return {
        INITIAL_AFFINE_ATTR: (
            level_matrix(matrix, plan.levels[level].voxel_factors) if level else matrix
        ).tolist(),
        "composition": "residual after the initial affine: the moving volume matches the "
        "reference at p where initial_affine @ (p + flow[:, p]); warp_volume applies both",
    }


def _flow_inputs(plan: FlowPlan) -> dict:
    """The arrays a flow run reads: both inputs and any pyramid levels they carry."""
    moving = getattr(plan.moving, "source", plan.moving)  # seen through an initial affine
    inputs = {"reference": plan.reference, "moving": moving}
    for lp in plan.levels[1:]:
        if lp.reference is not None:
            inputs[f"reference level {lp.level}"] = lp.reference
            inputs[f"moving level {lp.level}"] = lp.moving
    return inputs


def _prepare_output(plan: FlowPlan, output, overwrite: bool):
    group = open_output_group(output, signature=plan.signature(), overwrite=overwrite, kind="flow",
                              inputs=_flow_inputs(plan))  # fmt: skip
    space = _flow_space(plan)
    axes = space.axes
    for lp in plan.levels:
        path = flow_path(lp.level)
        if path not in group:
            create_array(
                group,
                name=path,
                shape=(plan.ndim, *lp.shape),
                dtype=np.float32,
                chunks=(1, *lp.chunks) if lp.level else plan.chunks,
                shards=None if lp.level else plan.shards,
                fill_value=np.nan,
                dimension_names=axes,
                attributes=_flow_attributes(plan, lp.level),
                compressors=FIELD_COMPRESSORS,
            )
    if "ome" not in group.attrs:  # also when a run died between creating the array and this
        write_space(group, [FLOW_ARRAY], space, name="flow")
    return group


def plan_tasks(plan: FlowPlan) -> int:
    """Number of tasks of every stage of a plan."""
    from ._planning import pyramid_tile

    total = 0
    for lp in plan.levels:
        if lp.level and lp.reference is None:
            tile = pyramid_tile(lp.shape, lp.chunks)
            total += 2 * math.prod(math.ceil(n / t) for n, t in zip(lp.shape, tile, strict=True))
        total += 1 if lp.mode == "whole" else 2 * len(lp.grid)
    return total


class _Run:
    """Runs the stages of one plan in order, collecting one report."""

    def __init__(self, plan: FlowPlan, group, client, progress: bool) -> None:
        self.plan, self.group, self.client, self.progress = plan, group, client, progress
        self.runner = StageRunner(client, n_tasks=plan_tasks(plan), progress=progress)
        self.report = self.runner.report
        self.stages = self.runner.lines
        self.sink: ResultSink | None = None

    def stage(self, name: str, func, tasks, *, record=None, label="tiles", **kw) -> bool:
        """Run one stage; fold its report in. Returns True if every task succeeded."""
        return self.runner.run(name, func, tasks, record=record, label=label, **kw)

    # -- stages ------------------------------------------------------------------------------

    def sources(self, level: int):
        lp = self.plan.levels[level]
        if lp.reference is not None:
            return lp.reference, lp.moving
        from ._pyramid import pyramid_path

        return (
            group_ref(self.group, pyramid_path("reference", level)),
            group_ref(self.group, pyramid_path("moving", level)),
        )

    def intensities(self, level: int):
        """How tasks turn level ``level``'s images into kernel intensities: the inputs' (and
        their own multiscale levels') as planned; a pyramid this run built is already so."""
        plan = self.plan
        if plan.levels[level].reference is not None:
            return plan.reference_intensity, plan.moving_intensity
        return IDENTITY, IDENTITY

    def pyramid(self, level: int) -> bool:
        lp = self.plan.levels[level]
        targets, grid = create_pyramid_level(self.group, level, lp.shape, lp.chunks)
        ref, mov = self.sources(level - 1)
        ref_i, mov_i = self.intensities(level - 1)
        tasks = pyramid_tasks({"reference": ref, "moving": mov}, targets, grid,
                             {"reference": ref_i, "moving": mov_i})  # fmt: skip
        record = CompletionRecord(self.group, f"pyramid_{level}", len(tasks))
        return self.stage(f"pyramid level {level}", downsample_tile, tasks, record=record,
                          label=f"pyramid {level}")  # fmt: skip

    def whole(self, level: int) -> bool:
        plan = self.plan
        ref, mov = self.sources(level)
        task = WholeTask(ref, mov, group_ref(self.group, flow_path(level)), plan.method,
                         plan.level_params(level), level, self.intensities(level))  # fmt: skip
        record = CompletionRecord(self.group, f"level_{level}", 1)
        return self.stage(f"level {level} (whole)", whole_level, [task], record=record,
                          label=f"level {level}")  # fmt: skip

    def tiles(self, level: int) -> bool:
        plan, group = self.plan, self.group
        lp = plan.levels[level]
        if self.blend_record(level).complete:  # nothing left to do at this level
            self.report.n_skipped += 2 * len(lp.grid)
            if f"{_SCRATCH}/{level}" in group:  # a run killed before it deleted them
                del group[f"{_SCRATCH}/{level}"]
            return True
        scratch_group = group.require_group(f"{_SCRATCH}/{level}")
        # "pieces": an unfinished output of a version with another scratch layout has its
        # scratch under another name, so its tiles are computed again, not misread
        scratch = create_scratch(scratch_group, _PIECES, lp.grid, lp.band, qc=level == 0)
        ref, mov = self.sources(level)
        coarse = group_ref(group, flow_path(level + 1)) if lp.mode == "refine" else None
        job = LevelJob(ref, mov, coarse, scratch, plan.method, plan.level_params(level), level,
                       self.intensities(level))  # fmt: skip
        record = CompletionRecord(scratch_group, _PIECES, len(lp.grid))
        where = f"level {level} " if len(plan.levels) > 1 else ""
        tasks = IndexedTasks(len(lp.grid), partial(TileTask, job))
        if not self.stage(f"{where}tiles", flow_tile, tasks, record=record,
                          label=f"{where}tiles".strip()):  # fmt: skip
            self.stages.append(f"{where}blend: not run because of the failures above")
            return False
        return self.blend(level, scratch)

    def blend_record(self, level: int):
        if level == 0:
            if self.sink is None:
                n = len(self.plan.grid)
                self.sink = ResultSink(
                    self.group, _RECORD, n_tasks=n, n_items=n,
                    fields={"ncc_before": ((), "float64"), "ncc_after": ((), "float64"),
                            "disagreement": ((), "float64"),
                            "textureless": ((), "float64"),
                            "seam": ((3, self.plan.ndim), "float64")},
                )  # fmt: skip
            return self.sink.record
        return CompletionRecord(self.group, f"blend_{level}", len(self.plan.levels[level].grid))

    def blend(self, level: int, scratch) -> bool:
        group = self.group
        out = group_ref(group, flow_path(level))
        if level == 0:
            job = BlendJob(scratch, out)
            sink = self.sink
            where = "level 0 " if len(self.plan.levels) > 1 else ""
            tasks = IndexedTasks(len(self.plan.grid), partial(BlendTask, job))
            ok = self.stage(f"{where}blend", blend_tile, tasks, label=f"{where}blend".strip(),
                            sink=sink)  # fmt: skip
            complete = sink.record.complete
        else:
            record = self.blend_record(level)
            tasks = [BlendTask(BlendJob(scratch, out), i) for i in range(len(scratch.grid))]
            ok = self.stage(f"level {level} blend", blend_tile, tasks, record=record,
                            label=f"level {level} blend")  # fmt: skip
            complete = record.complete
        if complete:  # the scratch blocks are no longer needed
            del group[f"{_SCRATCH}/{level}"]
        return ok

    def run(self) -> RunReport:
        plan = self.plan
        steps = [("pyramid", lp.level) for lp in plan.levels if lp.level and lp.reference is None]
        steps += [
            ("whole" if lp.mode == "whole" else "tiles", lp.level) for lp in reversed(plan.levels)
        ]
        for i, (kind, lvl) in enumerate(steps):
            if not getattr(self, kind)(lvl):
                rest = ", ".join(f"{k} {v}" for k, v in steps[i + 1 :])
                if rest:
                    self.stages.append(f"not run because of the failures above: {rest}")
                break
        self.finish()
        return self.report

    def finish(self) -> None:
        plan, report = self.plan, self.report
        self.blend_record(0)
        sink = self.sink
        values = sink.values
        grid_shape = plan.grid.grid_shape
        seam = None
        if sink.record.complete:
            seam = combine_seam_sums(values["seam"].sum(axis=0))
        if np.isfinite(values["ncc_after"]).any() or seam is not None:
            write_qc(
                self.group,
                label="tiles",
                tile_shape=plan.grid.tile_shape,
                ncc_before=values["ncc_before"].reshape(grid_shape),
                ncc_after=values["ncc_after"].reshape(grid_shape),
                seam=seam,
                extra={
                    "disagreement": values["disagreement"].reshape(grid_shape),
                    "textureless": values["textureless"].reshape(grid_shape),
                },
            )
        report.notes.update(
            {
                "tiles": f"{len(plan.grid)} of {plan.grid.tile_shape}",
                "halo (depth)": f"{plan.grid.depth} ({plan.depth_rule})",
                "levels": str(len(plan.levels)),
                "intensities": plan.intensity_note,
            }
        )
        self.runner.finish(min_stages=1)
        after = values["ncc_after"]
        if np.isfinite(after).any():
            report.notes["NCC per tile"] = (
                f"median {np.nanmedian(values['ncc_before']):.3f} before, "
                f"{np.nanmedian(after):.3f} after"
            )
        if seam is not None:
            report.notes["seam metric"] = f"{seam:.3f} (1 = no seams)"
        flat = values["textureless"] == 1
        if flat.any():
            report.notes["tiles without texture"] = (
                f"{int(flat.sum())} of {flat.size} (constant reference or moving image: zero "
                "flow, flagged in qc/textureless)"
            )
        report.warnings += qc_regressions(values["ncc_before"], after, skip=flat, label="tile")
        spread = values["disagreement"]
        if np.isfinite(spread).any():
            report.notes["tile disagreement"] = (
                f"median {np.nanmedian(spread):.3f}, max {np.nanmax(spread):.3f} voxels "
                "(overlapping tiles' flows in the blend bands)"
            )


def compute_flow(
    reference,
    moving,
    output,
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
    spacing: float | Sequence[float] | None = None,
    channel: int | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    overlap=None,
    **kernel_params,
) -> RunReport:
    """Dense optical flow between two zarr volumes, coarse to fine, tile by tile on a cluster.

    With several ``levels`` (the default for volumes larger than one tile), both volumes are
    first reduced into an image pyramid in zarr (each level half the size of the one below).
    The flow of the coarsest level is computed over the whole level at once — in one task when
    it fits ``coarse_memory``, else tile by tile — so motion of any size that is visible at
    that scale is found. Each finer level is then computed tile by tile: a task reads its tile
    plus a halo (``depth``), upsamples the coarser flow over it, resamples the moving image
    along that flow (reading it wherever the flow points), and runs the kernel for one pyramid
    level to find the small residual motion; so the halo only needs to cover the residual and
    the kernel's window, not the displacement. Neighbouring tiles are blended with smooth
    weights across half the halo on either side of each tile border, which leaves no seams.
    ``levels=1`` computes the flow at full resolution only, each tile running the kernel with
    its own image pyramid (good for motion well inside the halo).

    Completed tasks are recorded in the output, so running the same call again resumes an
    interrupted run; the result is the same as an uninterrupted run's.

    Parameters
    ----------
    reference, moving : zarr.Array, str or os.PathLike
        2-D or 3-D arrays of the same shape and a real numeric dtype: zarr arrays, paths/URLs of
        zarr arrays, or paths of OME-Zarr multiscale groups (whose coarser levels are used as
        the pyramid when each halves the one before). Opened read-only. Either may have a
        channel axis in front (see ``channel``).
    output : str, os.PathLike or zarr store
        Where to write the output group (see Notes). Must be reachable from every worker.
    method : {"ilk", "tvl1"} or callable
        The flow kernel. A callable ``f(reference, moving, **kernel_params)`` returning a flow of
        shape ``(ndim, *shape)`` may be given with an explicit ``depth``.
    level : int, optional
        Multiscale level to register when the inputs are OME-Zarr groups (default 0).
    levels : "auto" or int
        Pyramid levels, the input resolution included. ``"auto"``: 1 when the volume is one
        tile; otherwise enough levels for the coarsest to fit ``coarse_memory`` (at least 2).
    tile : int or tuple of int, optional
        Tile (core) shape, a multiple of the output chunks along every axis it divides; the
        same shape (in each level's voxels) tiles the coarser levels. Default: see
        :func:`chunkreg.volume.default_tile` (about 128-256 per axis in 3-D, 1024 in 2-D).
    depth : "auto", int or tuple of int
        Halo read around each tile, per axis (dask's word). ``"auto"`` derives it from the
        kernel's parameters (:func:`chunkreg.volume.flow_depth`): for 2 voxels of residual
        motion on the refined levels, 4 voxels of motion on a single or tiled coarsest level.
    chunks : int or tuple of int, optional
        Spatial chunk shape of the output (default: the reference's chunks). The flow array is
        chunked ``(1, *chunks)``.
    shards : "auto", None, int or tuple of int
        Spatial shard shape of the output, a multiple of ``chunks`` (each shard is one file
        holding many chunks). ``"auto"`` (default) keeps the reference's shards when they fit
        the chunks, None writes one file per chunk. Tiles are whole shards (the default tile
        is chosen so; a given ``tile`` that is not is refused), so each shard has one writer.
    coarse_memory : int or str
        Bytes (or a string such as ``"4GiB"``) the in-memory flow of the coarsest level may
        use; a coarsest level larger than that is computed tile by tile.
    normalize : {"auto", "none", "percentile"}
        How the two inputs' intensities are made comparable. Tiles always scale integer
        inputs by their dtype's range, as the in-memory kernels do; ``"percentile"`` then maps
        each input's 1st-99th percentile range (from a small sample read at plan time) to
        [0, 1]; ``"auto"`` does so only when the inputs' ranges differ by more than a factor 4
        (e.g. a float reference against a 12-bit camera's ``uint16`` volume); ``"none"`` never
        does, with an :class:`~chunkreg.volume.IntensityWarning` when they differ. The plan
        states what was done.
    allow_sparse : bool
        Accept inputs whose stores lack some chunk files (zarr reads those as the fill
        value). By default a missing chunk that stored data runs on into is refused at plan
        time, naming it: it was most likely lost (see :func:`chunkreg.io.require_chunks`).
    initial_affine : array_like, AffineResult, str or os.PathLike, optional
        A global affine found first (:func:`chunkreg.estimate_affine`: its result, the path of
        its output, or a ``(ndim + 1)`` square matrix from reference to moving voxels). Every
        task reads the moving volume resampled through it (cubic, after the dtype scaling), so the flow is the
        residual motion left after the affine; the moving volume may then have another shape.
        The flow array records the matrix (attribute ``initial_affine``) and
        :func:`chunkreg.warp_volume` applies both, affine after flow. The quality control's
        "before" is then measured after the affine.
    spacing : float or sequence of float, optional
        Voxel size per axis (any one unit). Default: the reference's OME-Zarr scale (or the
        converted TIFF's voxel size) when its axes are spatial and share one unit, else 1.
        When it differs between axes (EM sections of 50 nm imaged at 4 nm: ``(50, 4, 4)``),
        the run is anisotropy-aware: each coarser level halves only the axes whose voxel is
        finer than twice the finest one, until the voxels are near isotropic; iLK's window
        and TV-L1's regularisation cover the same physical extent along every axis; and the
        automatic ``depth`` is per axis and per level (``motion`` counted in voxels of the
        finest axis). The flow stays in voxels of each axis; its attributes record the
        reference's voxel size and unit (``voxel_size``) and the voxel size the run followed
        (``spacing``). Give ``spacing=1`` to ignore a recorded anisotropic scale.
    channel : int, optional
        The channel to register on, for inputs with a channel axis: the axis named ``c`` in
        their OME-Zarr axes or zarr ``dimension_names`` (default channel 0 there), or the
        first axis of a plain array with one axis more than the other input (or of both
        plain inputs of the same ndim), which needs ``channel``. Tasks read only that
        channel. An index out of range, or a ``channel`` for inputs without a channel axis,
        is an :class:`~chunkreg.errors.InputError`. Apply the flow to every channel with
        :func:`chunkreg.warp_volume`.
    client : distributed.Client, optional
        Run on this client (left open).
    scheduler : str, optional
        Address of a running Dask scheduler, or ``"synchronous"`` to run in this process.
    n_workers : int, optional
        Workers of the embedded ``LocalCluster`` started when neither ``client`` nor
        ``scheduler`` is given (default one per core).
    overwrite : bool
        Delete an existing output and start afresh. Without it, an existing output of the same
        run is resumed and one of a different run is refused.
    progress : bool
        Draw a progress line per stage on stderr.
    overlap : "auto", int or tuple of int, optional
        Former name of ``depth``, still accepted (not both).
    **kernel_params
        Parameters of the kernel: ``radius``, ``num_warp``, ``gaussian``, ``prefilter`` (iLK);
        ``attachment``, ``tightness``, ``num_warp``, ``num_iter``, ``tol``, ``prefilter``
        (TV-L1). Defaults as in scikit-image.

    Returns
    -------
    RunReport
        Tasks of every stage done / skipped (complete from an earlier run) / failed, bytes,
        wall time; ``report.notes`` lists the levels, tiles, halo, each stage, the median NCC
        before and after, and the seam metric. Failed tasks are listed, not raised: call
        ``report.raise_if_failed()``.

    Raises
    ------
    InputError
        Unusable inputs or parameters, chunk files missing from an input, or a task's memory
        estimate above the workers' memory limit (nothing is written).
    IncompatibleOutputError
        ``output`` exists from a different run (it is left untouched).

    Notes
    -----
    The output is a zarr group holding the array ``"flow"`` of shape ``(ndim, *shape)``,
    float32, whose attributes hold the method, parameters, levels, tile, halo and axes;
    OME-Zarr multiscale metadata (axes ``c, [z,] y, x``) so viewers open it; the flows of the
    coarser levels (``coarse/<level>``, in that level's voxels); the pyramid levels it built
    (``pyramid/reference/<level>``, ``pyramid/moving/<level>``); the quality control ``qc``
    (per tile NCC before and after registration, the seam metric, and ``textureless``: 1 for
    tiles whose reference or moving image has no usable texture, which get zero flow; see
    ``chunkreg qc``); the run
    signature; and the completion records. Tiles never computed read as NaN.

    References
    ----------
    .. [1] Le Besnerais, G., & Champagnat, F. (2005). Dense optical flow by iterative local
       window registration. IEEE ICIP 2005. :DOI:`10.1109/ICIP.2005.1529706`
    .. [2] Zach, C., Pock, T., & Bischof, H. (2007). A duality based approach for realtime
       TV-L1 optical flow. DAGM 2007. :DOI:`10.1007/978-3-540-74936-3_22`

    Examples
    --------
    A 6-voxel smooth displacement, tiles of 64 with the automatic halo (10 voxels here):

    >>> import zarr
    >>> from chunkreg.testing import apply_flow, smooth_displacement, textured_image
    >>> reference = textured_image((128, 128), seed=0)
    >>> moving = apply_flow(reference, -smooth_displacement((128, 128), amplitude=6, seed=1))
    >>> _ = zarr.create_array("ref.zarr", data=reference, chunks=(32, 32))
    >>> _ = zarr.create_array("mov.zarr", data=moving, chunks=(32, 32))
    >>> report = compute_flow("ref.zarr", "mov.zarr", "flow.zarr", tile=64, radius=3,
    ...                       scheduler="synchronous", progress=False)
    >>> report.ok, report.notes["levels"], report.notes["tiles"]
    (True, '2', '4 of (64, 64)')
    >>> zarr.open_array("flow.zarr", path="flow").shape
    (2, 128, 128)
    """
    plan = plan_flow(
        reference,
        moving,
        method=method,
        level=level,
        levels=levels,
        tile=tile,
        depth=depth,
        chunks=chunks,
        shards=shards,
        coarse_memory=coarse_memory,
        normalize=normalize,
        allow_sparse=allow_sparse,
        initial_affine=initial_affine,
        overlap=overlap,
        spacing=spacing,
        channel=channel,
        **kernel_params,
    )
    return run_flow_plan(
        plan,
        output,
        client=client,
        scheduler=scheduler,
        n_workers=n_workers,
        overwrite=overwrite,
        progress=progress,
    )


def run_flow_plan(
    plan: FlowPlan,
    output,
    *,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunReport:
    """Execute a :class:`FlowPlan` (see :func:`compute_flow`).

    Parameters
    ----------
    plan : FlowPlan
        From :func:`plan_flow`.
    output, client, scheduler, n_workers, overwrite, progress
        As for :func:`compute_flow`.

    Returns
    -------
    RunReport
    """
    output = output_location(output)
    # the output's lease is held until everything is written; the workers' memory is checked
    # before the output is created
    with workflow_scope(client, scheduler=scheduler, n_workers=n_workers) as c:
        check_worker_memory(plan.task_memory, c)
        group = _prepare_output(plan, output, overwrite)
        require_shared_store(group, c)
        report = _Run(plan, group, c, progress).run()
    report.notes["output"] = output_note(output, FLOW_ARRAY)
    return report
