"""Apply a displacement field in zarr to a moving volume in zarr, tile by tile.

Each task reads its tile of the field first, which tells it exactly which region of the moving
volume its samples fall in (the tile moved by the field, plus the interpolation support); it
reads only that region, resamples, and writes its tile of the output once, in the moving
volume's dtype and chunking.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import zarr

from .._validation import per_axis
from ..engine import IndexedTasks, ResultSink, StageRunner, add_output_pyramid, workflow_scope
from ..errors import InputError
from ..execution import RunReport
from ..io import (
    ArrayRef,
    ArrayView,
    Space,
    array_ref,
    check_inputs_stored,
    create_array,
    default_axes,
    leading_axes,
    open_array,
    open_output_group,
    output_space,
    read_region,
    read_space,
    recorded_axes,
    require_shard_aligned,
    require_shared_store,
    resolve_shards,
    select_channel,
    write_space,
)
from ..io._flow_layout import open_flow
from ..registration import normalized_cross_correlation
from ..registration._samplers import _MODES, sample_bounds, sample_region
from ..tiling import TileGrid
from ._affine_view import describe_transform, sample_through_affine, warp_transform
from ._qc import qc_regressions, write_qc
from ._shifts_to_flow import default_tile

__all__ = [
    "WarpPlan",
    "check_warp_options",
    "open_flow",
    "plan_warp_volume",
    "sample_bounds",
    "sample_region",
    "warp_volume",
]


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return values >= 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


@dataclass(frozen=True)
class _WarpTile:
    moving: ArrayRef
    flow: ArrayRef | None
    output: ArrayRef
    reference: ArrayRef | None
    tiles: TileGrid
    number: int
    order: int
    mode: str
    cval: float
    affine: tuple | None = None  # reference -> moving voxels, applied after the flow
    n_leading: int = 0  # channel (time) axes in front of the spatial ones, warped alike
    qc_channel: tuple[int, ...] = ()  # the leading index compared with the reference


def _warp_channels(task: _WarpTile, moving, flow, core) -> tuple[np.ndarray, int]:
    """The tile warped, every leading index (channel) by the same transform; bytes read."""
    lead = tuple(moving.shape[: task.n_leading])
    spatial = tuple(moving.shape[task.n_leading :])
    warped = np.empty((*lead, *(s.stop - s.start for s in core)), dtype=moving.dtype)
    nbytes = 0
    if task.affine is not None:  # affine first, then the residual flow (if any)
        for index in np.ndindex(lead):
            view = ArrayView(moving, tuple(enumerate(index))) if index else moving
            values, n = sample_through_affine(
                view, flow, core, task.affine, order=task.order, mode=task.mode, cval=task.cval,
            )  # fmt: skip
            warped[index] = _cast(values, moving.dtype)
            nbytes += n
        return warped, nbytes
    bounds = sample_bounds(flow, core, spatial, task.order)
    region = read_region(moving, (slice(None),) * len(lead) + bounds, "moving")  # read once
    for index in np.ndindex(lead):  # then warp each channel
        values = sample_region(
            region[index],
            [b.start for b in bounds],
            flow,
            [c.start for c in core],
            order=task.order,
            mode=task.mode,
            cval=task.cval,
        )
        warped[index] = _cast(values, moving.dtype)
    return warped, region.nbytes


def _warp_tile(task: _WarpTile) -> dict:
    start = time.perf_counter()
    tile = task.tiles.tile(task.number)
    moving, out = task.moving.open(), task.output.open(mode="r+")
    flow = None if task.flow is None else np.asarray(task.flow.open()[(slice(None), *tile.core)])
    if flow is not None and not np.all(np.isfinite(flow)):
        raise InputError(
            f"flow has NaN or infinite values in tile {tile.core}; is the flow output complete? "
            "(unwritten parts of a chunkreg flow are NaN: run its command again to finish it)"
        )
    warped, nbytes = _warp_channels(task, moving, flow, tile.core)
    everything = (slice(None),) * task.n_leading
    out[everything + tile.core] = warped
    result = {
        "bytes_read": (0 if flow is None else flow.nbytes) + nbytes,
        "bytes_written": warped.nbytes,
    }
    if task.reference is not None:
        values = warped[task.qc_channel]
        ref = read_region(task.reference.open(), tile.core, "reference")
        result["bytes_read"] += ref.nbytes
        if moving.shape == out.shape:
            before = read_region(moving, task.qc_channel + tile.core, "moving")
            result["bytes_read"] += before.nbytes
            result["ncc_before"] = normalized_cross_correlation(ref, before)
        result["ncc_after"] = normalized_cross_correlation(ref, values)
    result["seconds"] = time.perf_counter() - start
    return result


@dataclass(frozen=True)
class WarpPlan:
    """What :func:`warp_volume` would do; ``str(plan)`` describes it."""

    moving: zarr.Array
    flow: zarr.Array | None
    reference: zarr.Array | None
    tiles: TileGrid
    order: int
    mode: str
    cval: float
    shards: tuple[int, ...] | None = None
    affine: np.ndarray | None = None
    #: Names of the moving volume's axes in front of the spatial ones (``c``, ``t``), each
    #: index of which is warped by the same transform.
    leading: tuple[str, ...] = ()
    #: The leading index (channel) compared with the reference for the QC.
    qc_channel: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the output: the leading axes, then the spatial ones."""
        return (*self.moving.shape[: len(self.leading)], *self.tiles.shape)

    def signature(self) -> dict:
        """What determines the output (stored in it for resume)."""
        extra = {} if self.affine is None else {"affine": self.affine.tolist()}
        if self.leading:
            extra["leading"] = {"axes": list(self.leading), "shape": list(self.shape[:len(self.leading)]),
                                "qc_channel": list(self.qc_channel)}  # fmt: skip
        return {
            **extra,
            "moving": str(array_ref(self.moving)),
            "flow": None if self.flow is None else str(array_ref(self.flow)),
            "reference": None if self.reference is None else str(array_ref(self.reference)),
            "shape": self.tiles.shape,
            "dtype": str(self.moving.dtype),
            "chunks": self.moving.chunks,
            "shards": self.shards,
            "tile": self.tiles.tile_shape,
            "order": self.order,
            "mode": self.mode,
            "cval": self.cval,
        }

    def describe(self) -> str:
        """Human-readable plan (``str(plan)``)."""
        return str(self)

    def __str__(self) -> str:
        t = self.tiles
        return "\n".join(
            [
                f"moving {self.moving.shape} ({self.moving.dtype}), chunks {self.moving.chunks}"
                + (f"; output {self.shape}" if self.shape != self.moving.shape else ""),
                *(
                    [
                        f"channels: every index of the leading axes {self.leading} is warped by "
                        "the same transform (tiles are spatial; a task reads and warps all of "
                        "them)"
                    ]
                    if self.leading
                    else []
                ),
                describe_transform(self.affine, self.flow is not None),
                f"tiles: {len(t)} in a grid of {t.grid_shape}, tile {t.tile_shape}, depth 0 "
                "(no fixed halo:",
                "each tile reads its flow tile, then the moving region its samples fall in "
                f"(the tile moved by the flow, plus {self.order // 2 + 2} voxels of spline "
                f"support{' and a prefilter margin' if self.order > 1 else ''}))",
                f"order {self.order}, mode {self.mode}"
                + ("; QC against the reference" if self.reference is not None else ""),
            ]
        )


def check_warp_options(*, order: int = 1, mode: str = "edge", cval: float = 0.0) -> None:
    """Validate :func:`warp_volume`'s options without opening anything.

    A workflow that computes a flow and then warps by it calls this first, so a bad option
    fails before the flow is computed.

    Raises
    ------
    InputError
        If ``order`` is not an integer from 0 to 5, ``mode`` is unknown or ``cval`` is not a
        number.
    """
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or not 0 <= order <= 5:
        raise InputError(f"order must be an integer from 0 to 5, got {order!r}.")
    if mode not in _MODES:
        raise InputError(f"mode must be one of {sorted(_MODES)}, got {mode!r}.")
    if isinstance(cval, bool) or not isinstance(cval, numbers.Real):
        raise InputError(f"cval must be a number, got {cval!r}.")


def plan_warp_volume(
    moving,
    flow,
    *,
    order: int = 1,
    tile=None,
    mode: str = "edge",
    cval: float = 0.0,
    reference=None,
    allow_sparse: bool = False,
    shards="auto",
    affine=None,
    channel: int | None = None,
) -> WarpPlan:
    """Validate the inputs of :func:`warp_volume` and plan the run, writing nothing.

    Parameters
    ----------
    moving, flow, order, tile, mode, cval, reference, allow_sparse, shards, affine, channel
        As for :func:`warp_volume`.

    Returns
    -------
    WarpPlan

    Raises
    ------
    InputError
        Missing or non-zarr inputs, a flow not shaped ``(ndim, *moving.shape)`` or not
        floating point, a reference of another shape, a bad ``order``/``mode``, or a tile
        that is not a multiple of the moving volume's chunks (shards).
    """
    mov = open_array(moving, name="moving")
    fl = None if flow is None else open_flow(flow)
    if mov.dtype.kind not in "biuf":
        raise InputError(f"moving must be numeric, got dtype {mov.dtype}.")
    ref = None if reference is None else open_array(reference, name="reference")
    if fl is not None and (fl.ndim < 2 or fl.shape[0] != fl.ndim - 1):
        raise InputError(
            f"flow must have shape (ndim, *moving.shape), one component per spatial axis; got "
            f"{fl.shape} for moving {mov.shape}: give the flow computed for this volume."
        )
    spatial = _spatial_ndim(mov, fl, ref)
    lead = leading_axes(mov, spatial)
    n = len(lead)
    qc_channel = ()
    if ref is not None:
        ref = select_channel(ref, channel, spatial_ndim=spatial, name="reference")
    if n:  # one spatial image of the moving volume for the checks: its first channel
        if channel is not None and "c" in lead:
            axis = lead.index("c")
            if not 0 <= channel < mov.shape[axis] or isinstance(channel, bool):
                raise InputError(
                    f"channel {channel!r} is out of range: moving has {mov.shape[axis]} "
                    f"channel(s) along axis {axis}; give 0..{mov.shape[axis] - 1}."
                )
            qc_channel = tuple(int(channel) if a == "c" else 0 for a in lead)
        else:
            qc_channel = (0,) * n
        spatial_mov = ArrayView(mov, tuple((a, 0) for a in range(n)))
    else:
        spatial_mov = mov
    matrix, shape = warp_transform(spatial_mov, fl, ref, affine)
    if fl is not None and fl.shape != (spatial, *shape):
        raise InputError(
            f"flow must have shape (ndim, *moving.shape) = {(spatial, *shape)}, got "
            f"{fl.shape}; give the flow computed for this volume"
            + (f" (moving has the leading axes {lead} in front)." if n else ".")
        )
    if fl is not None and fl.dtype.kind != "f":
        raise InputError(f"flow must be floating point, got dtype {fl.dtype}.")
    if ref is not None and ref.shape != shape:
        raise InputError(
            f"reference and moving must have the same shape, got {ref.shape} and {shape}."
        )
    check_warp_options(order=order, mode=mode, cval=cval)
    full = (*mov.shape[:n], *shape)
    if isinstance(shards, str) and shards == "auto":
        shards = mov.shards
    else:
        shards = resolve_shards(shards, chunks=mov.chunks, shape=full, name="shards")
    align = (shards or mov.chunks)[n:]  # tiles are spatial: all channels of a region
    tile = default_tile(shape, align, target=2**21) if tile is None else tile
    tile = per_axis(tile, spatial, "tile", minimum=1)
    require_shard_aligned(tile, shape, None if shards is None else shards[n:])
    tiles = TileGrid(shape, tile, (0,) * spatial, align)
    inputs = {"moving": mov, **({} if fl is None else {"flow": fl}),
              **({} if ref is None else {"reference": ref})}  # fmt: skip
    check_inputs_stored(inputs, allow_sparse)
    return WarpPlan(mov, fl, ref, tiles, int(order), mode, float(cval), shards, matrix, lead,
                    qc_channel)  # fmt: skip


def _spatial_ndim(moving, flow, reference) -> int:
    """Spatial axes of the warp: the flow's components, else the reference's (channel axis
    aside), else the moving volume's recorded spatial axes, else all of its axes."""
    if flow is not None:
        return int(flow.shape[0])
    for array in (reference, moving):
        names = None if array is None else recorded_axes(array)
        if names is not None:
            return sum(a not in ("t", "c", "component") for a in names)
    return reference.ndim if reference is not None else moving.ndim


def _output_space(plan: WarpPlan):
    """The warped image's space (None: not recorded) and axis names.

    It lies on the reference's grid: the reference's space, else the flow's (compute_flow
    records the reference's there), else the moving image's; leading channel (time) axes
    keep the moving image's.
    """
    mov, n = plan.moving, len(plan.leading)
    if not n:
        if mov.ndim > 4 and recorded_axes(mov) is None:  # no names to record: no OME metadata
            return None, getattr(mov.metadata, "dimension_names", None)
        space = output_space(mov, plan.reference, plan.flow, mov)
        return space, space.axes
    spatial_mov = ArrayView(mov, tuple((a, 0) for a in range(n)))
    space = output_space(spatial_mov, plan.reference, plan.flow, spatial_mov)
    names = (recorded_axes(mov) or (None,) * mov.ndim)[n:]
    axes = (*plan.leading, *(names if all(names) else default_axes(plan.tiles.ndim)))
    own = read_space(mov)
    space = Space(axes, own.scale[:n] + space.scale, own.translation[:n] + space.translation,
                  {**{a: u for a, u in own.units.items() if a in plan.leading},
                   **{a: space.units[b] for a, b in zip(axes[n:], space.axes, strict=True)
                      if b in space.units}})  # fmt: skip
    return space, axes


def warp_volume(
    moving,
    flow,
    output,
    *,
    order: int = 1,
    tile=None,
    mode: str = "edge",
    cval: float = 0.0,
    reference=None,
    allow_sparse: bool = False,
    shards="auto",
    affine=None,
    channel: int | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    pyramid: bool | int = True,
) -> RunReport:
    """Warp a zarr volume by a zarr displacement field, tile by tile, on a cluster.

    The output at ``x`` is the moving volume sampled at ``x + flow(x)`` (the convention of
    :func:`chunkreg.warp` and of every chunkreg flow: if the flow registers moving onto a
    reference, the output approximates the reference). Each task reads its tile of the flow,
    then only the region of the moving volume its samples need (the tile moved by the
    displacement, plus the interpolation support), so large displacements cost no extra
    halo elsewhere. The result is identical to warping the whole volume in memory.

    Parameters
    ----------
    moving : zarr.Array, ArrayRef, str or os.PathLike
        Volume to warp (OME-Zarr multiscale groups open at level 0). It may have up to two
        leading non-spatial axes in front of the flow's spatial ones, e.g. ``(c, z, y, x)`` or
        ``(t, c, z, y, x)``: named ``c``/``t`` in its OME-Zarr axes or zarr
        ``dimension_names``, else (a plain array) the axes beyond the flow's number of
        components, taken as ``c`` (one) or ``t, c`` (two). Every channel (and time point)
        is warped by the same transform; the output has the same leading axes (OME axes
        types ``channel``/``time``, their scale kept). Tiles stay spatial: a task reads its
        region of every channel once and warps each.
    flow : zarr.Array, ArrayRef, str or os.PathLike
        Field of shape ``(ndim, *moving.shape)``, or an output group holding one as ``flow``
        (what :func:`shifts_to_flow` writes).
    output : str, os.PathLike or zarr store
        Output group: an OME-Zarr image whose level ``"0"`` is the warped volume, in the
        moving volume's dtype, chunks and shards (integers are rounded and clipped).
    order : int
        Spline interpolation order, 0 to 5 (1: linear).
    tile : int or tuple of int, optional
        Output region per task, a multiple of the moving chunks (shards); default about two
        million voxels.
    shards : "auto", None, int or tuple of int
        Shard shape of the output, a multiple of the moving chunks; ``"auto"`` (default)
        keeps the moving volume's, None writes one file per chunk. Tiles are whole shards.
    mode : {"edge", "constant"}
        Samples outside the volume repeat the edge voxel, or take ``cval``.
    cval : float
        Fill value for ``mode="constant"``.
    reference : zarr.Array, str or os.PathLike, optional
        If given, the output's ``qc`` group records per tile the NCC between reference and
        moving before and after warping. The output lies in its physical space (scale,
        translation, units), else in the flow's (which :func:`compute_flow` takes from its
        reference), else in the moving volume's. With a multi-channel moving volume, the
        QC compares the reference with the output's channel ``channel`` (a multi-channel
        reference is read at that channel too).
    allow_sparse : bool
        Accept inputs whose stores lack some chunk files (zarr reads those as the fill value);
        by default a missing chunk that stored data runs on into is refused before anything runs, naming it.
    channel : int, optional
        For a multi-channel moving volume: the channel the QC compares with ``reference``
        (default 0); the warp itself applies to every channel.
    client, scheduler, n_workers, overwrite, progress :
        As for :func:`blockwise_shifts`.
    pyramid : bool or int
        Add display pyramid levels ``"1"``, ``"2"``, ... (block means, see
        :func:`chunkreg.volume.build_output_pyramid`); an int caps their number, False: none.

    Returns
    -------
    RunReport
        Failed tiles are listed, not raised (``report.raise_if_failed()``); running again
        resumes.

    Raises
    ------
    InputError
        Bad input (see :func:`plan_warp_volume`); nothing is written.
    IncompatibleOutputError
        ``output`` exists from a different run.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> from chunkreg.testing import textured_image
    >>> moving = zarr.create_array("mov.zarr", data=textured_image((64, 64)), chunks=(32, 32),
    ...                            overwrite=True)
    >>> flow = zarr.create_array("flow.zarr", shape=(2, 64, 64), dtype="float32",
    ...                          chunks=(1, 32, 32), fill_value=np.nan, overwrite=True)
    >>> flow[0], flow[1] = 0.0, 2.0  # sample two voxels to the right
    >>> report = warp_volume("mov.zarr", "flow.zarr", "warped.zarr", scheduler="synchronous",
    ...                      progress=False, overwrite=True)
    >>> warped = zarr.open_array("warped.zarr/0")
    >>> bool(np.allclose(warped[:, :60], moving[:, 2:62]))
    True
    """
    plan = plan_warp_volume(
        moving, flow, order=order, tile=tile, mode=mode, cval=cval, reference=reference,
        allow_sparse=allow_sparse,
        shards=shards,
        affine=affine,
        channel=channel,
    )  # fmt: skip
    mov, tiles = plan.moving, plan.tiles
    # the output's lease is held until everything is written
    with workflow_scope(client, scheduler=scheduler, n_workers=n_workers) as c:
        group = open_output_group(
            output, signature=plan.signature(), overwrite=overwrite, kind="warp",
            inputs={"moving": plan.moving, "flow": plan.flow, "reference": plan.reference},
        )  # fmt: skip
        require_shared_store(group, c)
        # the warped image lies on the reference's grid: its space, else the flow's
        # (compute_flow records the reference's there), else the moving image's
        space, axes = _output_space(plan)
        if "0" not in group:
            create_array(
                group,
                name="0",
                shape=plan.shape,
                dtype=mov.dtype,
                chunks=mov.chunks,
                shards=plan.shards,
                fill_value=mov.fill_value,
                dimension_names=axes,
            )
            if space is not None:
                write_space(group, ["0"], space, name="warped")
        sink = ResultSink(
            group,
            "tiles",
            n_tasks=len(tiles),
            n_items=len(tiles),
            fields={"ncc_before": ((), "float64"), "ncc_after": ((), "float64")},
        )
        refs = {
            "moving": array_ref(mov),
            "flow": None if plan.flow is None else array_ref(plan.flow),
            "output": array_ref(group["0"]),
            "reference": None if plan.reference is None else array_ref(plan.reference),
        }
        affine = None if plan.affine is None else tuple(map(tuple, plan.affine.tolist()))
        make = partial(_WarpTile, **refs, tiles=tiles, order=plan.order, mode=plan.mode,
                       cval=plan.cval, affine=affine, n_leading=len(plan.leading),
                       qc_channel=plan.qc_channel)  # fmt: skip
        runner = StageRunner(c, label="tiles", progress=progress)
        ok = runner.run("tiles", _warp_tile, IndexedTasks(len(tiles), lambda i: make(number=i)),
                        sink=sink, describe=lambda t: f"tile {t.tiles.tile(t.number).core}")  # fmt: skip
        if ok and pyramid and space is not None:  # display levels, once the image is done
            add_output_pyramid(runner, group, "0", space, levels=pyramid, name="warped")
        report = runner.finish()
    if plan.reference is not None:
        before = sink.values["ncc_before"].reshape(tiles.grid_shape)
        after = sink.values["ncc_after"].reshape(tiles.grid_shape)
        write_qc(
            group, label="tiles", tile_shape=tiles.tile_shape, ncc_before=before, ncc_after=after
        )
        if np.isfinite(after).any():
            first = f"{np.nanmedian(before):.3f}" if np.isfinite(before).any() else "n/a"
            report.notes["NCC to reference"] = (
                f"median {first} before, {np.nanmedian(after):.3f} after"
            )
        report.warnings += qc_regressions(before, after, label="tile")
    return report
