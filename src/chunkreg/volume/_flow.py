"""The ``flow`` workflow: dense optical flow over zarr volumes, tile by tile, resumable.

Each task reads its tile's region (core plus halo) from both inputs, runs the in-memory kernel,
and writes the core of the flow into output chunks it alone owns; the client records the tile
complete afterwards. A second run skips recorded tiles; any tile may run twice and writes the
same bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .._validation import check_finite
from ..errors import InputError
from ..execution import RunReport, open_client, run_tasks
from ..io import (
    ArrayRef,
    CompletionRecord,
    create_array,
    open_output_group,
    require_shared_store,
    write_ome_multiscale_metadata,
)
from ._methods import kernel
from ._planning import FlowPlan, plan_flow

__all__ = ["FLOW_ARRAY", "compute_flow"]

#: Name of the flow array inside the output group.
FLOW_ARRAY = "flow"
_RECORD = "tiles"
_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


@dataclass(frozen=True)
class _Job:
    """What every tile task of one run shares (small and picklable)."""

    output: ArrayRef
    plan: FlowPlan


@dataclass(frozen=True)
class _TileTask:
    job: _Job
    number: int

    def __str__(self) -> str:
        tile = self.job.plan.grid.tile(self.number)
        region = ", ".join(f"{s.start}:{s.stop}" for s in tile.core)
        return f"tile {tile.index} core [{region}]"


class _TileTasks(Sequence):
    """The tasks of a run, made on demand (a run may have millions of tiles)."""

    def __init__(self, job: _Job) -> None:
        self.job = job

    def __len__(self) -> int:
        return len(self.job.plan.grid)

    def __getitem__(self, number):
        if isinstance(number, slice):
            return [self[i] for i in range(*number.indices(len(self)))]
        if not 0 <= number < len(self):
            raise IndexError(number)
        return _TileTask(self.job, number)


def _flow_tile(task: _TileTask) -> dict:
    """Compute and write one tile's flow (runs on a worker)."""
    plan = task.job.plan
    tile = plan.grid.tile(task.number)
    t0 = time.perf_counter()
    ref_array = plan.reference.open()
    mov_array = plan.moving.open()
    ref = np.asarray(ref_array[tile.read], dtype=np.float32)
    mov = np.asarray(mov_array[tile.read], dtype=np.float32)
    check_finite(ref, f"reference in {task}")
    check_finite(mov, f"moving in {task}")
    t1 = time.perf_counter()
    flow = kernel(plan.method)(ref, mov, **plan.params)
    expected = (plan.ndim, *tile.read_shape)
    if np.shape(flow) != expected:
        raise ValueError(f"the kernel returned shape {np.shape(flow)}, expected {expected}")
    core = np.ascontiguousarray(flow[(slice(None), *tile.core_in_read)], dtype=np.float32)
    t2 = time.perf_counter()
    out = task.job.output.open(mode="r+")
    out[(slice(None), *tile.core)] = core
    t3 = time.perf_counter()
    return {
        "bytes_read": 2 * ref.size * plan.input_dtype.itemsize,
        "bytes_written": core.nbytes,
        "seconds": t2 - t1,
        "read_seconds": t1 - t0,
        "write_seconds": t3 - t2,
    }


def _output_ref(group, path: str) -> ArrayRef:
    store = group.store
    root = getattr(store, "root", None)
    if root is not None:
        return ArrayRef(os.path.abspath(root), f"{group.path}/{path}".strip("/"))
    return ArrayRef(store, f"{group.path}/{path}".strip("/"))


def _prepare_output(plan: FlowPlan, output, overwrite: bool):
    group = open_output_group(output, signature=plan.signature(), overwrite=overwrite, kind="flow")
    axes = ("c", *_AXES[plan.ndim])
    if FLOW_ARRAY not in group:
        create_array(
            group,
            name=FLOW_ARRAY,
            shape=(plan.ndim, *plan.shape),
            dtype=np.float32,
            chunks=plan.chunks,
            fill_value=np.nan,
            dimension_names=axes,
            attributes={
                "description": (
                    "dense displacement field: flow[:, p] is the displacement (in pixels of the "
                    "input grid, one component per spatial axis, in axis order) at which the "
                    "moving image matches the reference at p; warp(moving, flow) ~ reference"
                ),
                "axes": list(axes),
                "units": {"values": "pixel"},
                "method": plan.method_name,
                "params": plan.params,
                "tile": list(plan.grid.tile_shape),
                "depth": list(plan.grid.depth),
                "depth_rule": plan.depth_rule,
                "reference": str(plan.reference),
                "moving": str(plan.moving),
                "chunkreg_version": __version__,
            },
        )
    if "ome" not in group.attrs:  # also when a run died between creating the array and this
        write_ome_multiscale_metadata(group, paths=[FLOW_ARRAY], axes=axes, name="flow")
    return group


def compute_flow(
    reference,
    moving,
    output,
    *,
    method="ilk",
    level: int | None = None,
    tile=None,
    overlap="auto",
    chunks=None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **kernel_params,
) -> RunReport:
    """Dense optical flow between two zarr volumes, computed tile by tile on a Dask cluster.

    The volume is cut into tiles aligned to the output chunks; each task reads its tile plus a
    halo (``overlap``) from both inputs, runs :func:`chunkreg.optical_flow_ilk` or
    :func:`chunkreg.optical_flow_tvl1` on it, and writes the flow of the tile's core (the halo is
    cropped). Completed tiles are recorded in the output, so running the same call again resumes
    an interrupted run; the result is the same as an uninterrupted run's.

    Parameters
    ----------
    reference, moving : zarr.Array, str or os.PathLike
        2-D or 3-D arrays of the same shape and a real numeric dtype: zarr arrays, paths/URLs of
        zarr arrays, or paths of OME-Zarr multiscale groups. Opened read-only.
    output : str, os.PathLike or zarr store
        Where to write the output group (see Notes). Must be reachable from every worker.
    method : {"ilk", "tvl1"} or callable
        The flow kernel. A callable ``f(reference, moving, **kernel_params)`` returning a flow of
        shape ``(ndim, *shape)`` may be given with an explicit ``overlap``.
    level : int, optional
        Multiscale level to read when the inputs are OME-Zarr groups (default 0).
    tile : int or tuple of int, optional
        Tile (core) shape, a multiple of the output chunks along every axis it divides.
        Default: see :func:`chunkreg.volume.default_tile` (about 128-256 per axis in 3-D,
        1024 in 2-D, within 1 GiB per task).
    overlap : "auto", int or tuple of int
        Halo (``depth``) read around each tile, per axis. ``"auto"`` derives it from the
        kernel's parameters (:func:`chunkreg.volume.flow_depth`) for motions up to 4 px; give
        more for larger motion.
    chunks : int or tuple of int, optional
        Spatial chunk shape of the output (default: the reference's chunks). The flow array is
        chunked ``(1, *chunks)``.
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
        Draw a progress line on stderr.
    **kernel_params
        Parameters of the kernel: ``radius``, ``num_warp``, ``gaussian``, ``prefilter`` (iLK);
        ``attachment``, ``tightness``, ``num_warp``, ``num_iter``, ``tol``, ``prefilter``
        (TV-L1). Defaults as in scikit-image.

    Returns
    -------
    RunReport
        Tiles done / skipped (complete from an earlier run) / failed, bytes, wall time; the
        halo and tiles chosen are in ``report.notes``. Failed tiles are listed, not raised:
        call ``report.raise_if_failed()``.

    Raises
    ------
    InputError
        Unusable inputs or parameters (nothing is written).
    IncompatibleOutputError
        ``output`` exists from a different run (it is left untouched).

    Notes
    -----
    The output is a zarr group holding the array ``"flow"`` of shape ``(ndim, *shape)``,
    float32, whose attributes hold the method, parameters, tile, halo and axes; OME-Zarr
    multiscale metadata (axes ``c, [z,] y, x``) so viewers open it; the run signature; and the
    completion record ``_completion/tiles``. Tiles never computed read as NaN.

    The tiled flow equals the whole-volume flow where the motion is well inside the halo; per
    tile, the kernel's image pyramid sees only the tile, so motion larger than the halo is not
    recovered near tile borders (issue 5's coarse-to-fine mode addresses that).

    References
    ----------
    .. [1] Le Besnerais, G., & Champagnat, F. (2005). Dense optical flow by iterative local
       window registration. IEEE ICIP 2005. :DOI:`10.1109/ICIP.2005.1529706`
    .. [2] Zach, C., Pock, T., & Bischof, H. (2007). A duality based approach for realtime
       TV-L1 optical flow. DAGM 2007. :DOI:`10.1007/978-3-540-74936-3_22`

    Examples
    --------
    >>> report = chunkreg.compute_flow("ref.zarr", "mov.zarr", "flow.zarr", radius=5)  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    plan = plan_flow(
        reference,
        moving,
        method=method,
        level=level,
        tile=tile,
        overlap=overlap,
        chunks=chunks,
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
    """Execute a :class:`FlowPlan` (see :func:`compute_flow`)."""
    if isinstance(output, Path):
        output = os.fspath(output)
    if client is not None and scheduler is not None:
        raise InputError("give either client or scheduler, not both.")
    if n_workers is not None and (isinstance(n_workers, bool) or int(n_workers) < 1):
        raise InputError(f"n_workers must be >= 1, got {n_workers!r}.")
    group = _prepare_output(plan, output, overwrite)  # before a cluster starts: fail fast
    record = CompletionRecord(group, _RECORD, len(plan.grid))
    job = _Job(_output_ref(group, FLOW_ARRAY), plan)
    with open_client(client, scheduler=scheduler, n_workers=n_workers) as c:
        require_shared_store(group, c)
        report = run_tasks(
            _flow_tile,
            _TileTasks(job),
            client=c,
            label="tiles",
            record=record,
            progress=progress,
            describe=str,
        )
    report.notes.update(
        {
            "output": f"{output}/{FLOW_ARRAY}" if isinstance(output, str) else FLOW_ARRAY,
            "tiles": f"{len(plan.grid)} of {plan.grid.tile_shape}",
            "halo (depth)": f"{plan.grid.depth} ({plan.depth_rule})",
        }
    )
    return report
