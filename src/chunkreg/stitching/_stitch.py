"""The stitching workflow: pairwise registration and fusion as cluster tasks, solve in between."""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .._validation import per_axis
from ..engine import StageRunner, add_output_pyramid, output_location, workflow_scope
from ..engine._parts import StageParts
from ..errors import InputError
from ..io import (
    ArrayRef,
    CompletionRecord,
    Space,
    array_ref,
    check_no_overlap,
    create_array,
    open_output_group,
    read_space,
    require_chunks,
    require_shared_store,
    resolve_shards,
    write_space,
)
from ._fuse import BLEND_MODES, interpolation_depth
from ._layout import Layout, _read_spec, overlapping_pairs, read_layout, refuse_coincident_tiles
from ._pairwise import pair_regions
from ._result import StitchResult
from ._solve import solve_positions, unlinked_message
from ._tasks import FuseTask, PairTask, fuse_task, pair_task
from ._tiles import resolve_tiles

__all__ = ["StitchPlan", "plan_stitch", "stitch"]

_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}
_DEFAULT_CHUNKS = {2: 1024, 3: 128}
# pixels of both regions per pairwise task: enough work to amortise the task overhead
_PAIR_TASK_PIXELS = 8 * 2**20
# output elements per fusion task (whole chunks; each written once by one task)
_FUSE_TASK_ELEMENTS = 4 * 2**20


@dataclass(frozen=True)
class StitchPlan:
    """What :func:`stitch` would do: the tiles, the pairs it registers, the mosaic's layout."""

    layout: Layout
    refs: tuple
    shapes: np.ndarray
    dtype: np.dtype
    pairs: np.ndarray  # tiles of each nominally overlapping pair
    stage_error: np.ndarray  # search radius per axis around the nominal offsets
    fixed: int | None
    chunks: tuple[int, ...]
    options: dict
    channels: tuple[int, int] | None = None  # (axis, count) of multi-channel tiles
    registration_refs: tuple = ()  # the tiles as registered (one channel of multi-channel ones)

    @property
    def nominal(self) -> np.ndarray:
        """The layout's positions."""
        return np.asarray(self.layout.positions)

    @property
    def upsample_factor(self) -> int:
        return self.options["upsample_factor"]

    @property
    def depth(self) -> int:
        """Pixels of context each side a fused chunk reads beyond the tiles it covers."""
        return interpolation_depth(self.options["order"]) if self.options["subpixel"] else 0

    def signature(self) -> dict:
        """What determines the run's result, before positions are solved."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.nominal, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.shapes, dtype=np.int64).tobytes())
        digest.update("\0".join(self.layout.names).encode())
        return {
            "tiles": [str(r) for r in self.refs],
            "dtype": str(self.dtype),
            "chunks": list(self.chunks),
            "layout_sha256": digest.hexdigest(),
            **self.options,
        }

    def describe(self) -> str:
        """Human-readable plan."""
        o, n = self.options, len(self.layout)
        steps = [s for s in ("register", "fuse") if o[s]]
        return "\n".join(
            [
                f"tiles: {n} of {self.layout.ndim}-D {self.dtype}, shapes "
                f"{sorted({tuple(int(v) for v in s) for s in self.shapes})}",
                f"steps: {', then '.join(steps)}",
                f"pairs: {len(self.pairs)} nominally overlapping, searched within "
                f"{[float(e) for e in self.stage_error]} px of the nominal offsets"
                + (f", on {o['downsample']}x block means" if o["downsample"] > 1 else ""),
                f"fusion: {o['blend']} blend, chunks {self.chunks}, depth {self.depth}"
                + (f" (order-{o['order']} subpixel placement)" if o["subpixel"] else ""),
            ]
        )

    __str__ = describe


def plan_stitch(
    tiles,
    layout,
    *,
    register: bool = True,
    fuse: bool = True,
    blend: str = "linear",
    subpixel: bool = False,
    upsample_factor: int | None = None,
    stage_error=None,
    downsample: int = 1,
    fixed_tile: str | None = None,
    chunks=None,
    shards=None,
    order: int = 3,
    allow_sparse: bool = False,
    channel: int | None = None,
) -> StitchPlan:
    """Check the inputs of :func:`stitch` and plan the run; nothing is read but the tiles'
    metadata (and their chunk listings), nothing is written.

    Parameters
    ----------
    tiles, layout, register, fuse, blend, subpixel, upsample_factor, stage_error, downsample, \
fixed_tile, chunks, shards, order, allow_sparse, channel
        As for :func:`stitch`.

    Returns
    -------
    StitchPlan

    Raises
    ------
    InputError
        As :func:`stitch` would, before anything is written.
    """
    if not (register or fuse):
        raise InputError("nothing to do: register and fuse are both false.")
    if blend not in BLEND_MODES:
        raise InputError(f"blend must be one of {BLEND_MODES}, got {blend!r}.")
    if not (isinstance(downsample, int) and downsample >= 1):
        raise InputError(f"downsample must be an integer >= 1, got {downsample!r}.")
    if upsample_factor is None:
        upsample_factor = 10 if subpixel else 1
    if not (isinstance(upsample_factor, int) and upsample_factor >= 1):
        raise InputError(f"upsample_factor must be an integer >= 1, got {upsample_factor!r}.")
    if not 0 <= order <= 5:
        raise InputError(f"order must be in 0..5, got {order}.")

    layout = _as_layout(layout, tiles)
    refuse_coincident_tiles(layout)
    refs, shapes, dtype, channels = resolve_tiles(tiles, layout)
    reg_refs = _registration_channel(refs, channels, channel)
    if not isinstance(allow_sparse, bool):
        raise InputError(f"allow_sparse must be True or False, got {allow_sparse!r}.")
    if not allow_sparse:
        for name, ref in zip(layout.names, refs, strict=True):
            require_chunks(ref.open(), f"tile {name!r}")
    ndim = layout.ndim
    nominal = np.asarray(layout.positions)
    fixed = None if fixed_tile is None else _tile_index(layout, fixed_tile)
    error = _stage_error(stage_error, shapes)
    pairs = overlapping_pairs(nominal, shapes, adjacent=True)
    if register and len(pairs) == 0:
        raise InputError(
            f"no two of the {len(layout)} tiles overlap side by side at their nominal positions, "
            "so there is nothing to register; check the layout's units (pixels) and overlap, or "
            "pass register=False (--fuse-only) to place them as given."
        )
    out_chunks = _output_chunks(chunks, ndim)
    # shards checked before anything runs (the mosaic's shape is known only later)
    if shards is not None and not isinstance(shards, str):
        resolve_shards(shards, chunks=out_chunks, shape=per_axis(shards, ndim, "shards"))

    options = {
        "register": bool(register), "fuse": bool(fuse), "blend": blend,
        "subpixel": bool(subpixel), "upsample_factor": upsample_factor,
        "downsample": downsample, "order": int(order),
    }  # fmt: skip
    if channels is not None:
        options["channel"] = 0 if channel is None else int(channel)
    return StitchPlan(layout, tuple(refs), np.asarray(shapes), np.dtype(dtype), pairs, error,
                      fixed, tuple(out_chunks), options, channels, tuple(reg_refs))  # fmt: skip


def stitch(
    tiles,
    layout,
    output=None,
    *,
    register: bool = True,
    fuse: bool = True,
    blend: str = "linear",
    subpixel: bool = False,
    upsample_factor: int | None = None,
    stage_error=None,
    downsample: int = 1,
    min_quality: float = 0.5,
    max_residual: float = 2.5,
    max_relative_residual: float = 3.0,
    fixed_tile: str | None = None,
    chunks=None,
    shards=None,
    blend_width=None,
    order: int = 3,
    allow_sparse: bool = False,
    channel: int | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    pyramid: bool | int = True,
) -> StitchResult:
    """Place overlapping tiles precisely and fuse them into one zarr mosaic.

    Parameters
    ----------
    tiles : None, str, os.PathLike, zarr.Group, mapping or sequence
        The tile arrays: a zarr group (or its path) whose arrays the layout names, a mapping
        name -> array or path, a list with one zarr array or path per layout entry, or
        ``None`` to take the paths given in the layout file.
    layout : Layout, str or os.PathLike
        Nominal positions: a :class:`Layout` (see :func:`regular_grid`) or a JSON/CSV layout
        file (see :func:`read_layout`).
    output : str or os.PathLike, optional
        Zarr group for the fused mosaic (OME-Zarr, level ``"0"``); needed when ``fuse``.
    register : bool
        Measure pairwise offsets and solve positions; if false, fuse at the layout positions.
    fuse : bool
        Write the mosaic; if false, only positions and link table are returned.
    blend : {"linear", "cosine", "max", "first"}
        How overlapping tiles are combined (see :func:`fuse_block`).
    subpixel : bool
        Place tiles at fractional positions by spline interpolation (order ``order``) instead
        of rounding positions to whole pixels.
    upsample_factor : int, optional
        Pairwise precision ``1 / upsample_factor`` px; default 1 (10 when ``subpixel``).
    stage_error : float or sequence of float, optional
        Largest error of a nominal relative position per axis, in pixels; default 10% of the
        median tile shape. Bounds the search and sets the margin read around overlaps.
    downsample : int
        Block-average the overlap regions by this factor for the peak search (faster on
        large overlaps); the offset is then refined at full resolution.
    min_quality : float
        Links whose normalised cross-correlation is lower are not used.
    max_residual, max_relative_residual : float
        A link whose residual exceeds ``max_residual`` pixels and ``max_relative_residual``
        times the mean residual is dropped and the positions solved again.
    fixed_tile : str, optional
        Name of a tile held at its nominal position; default: the nominal centroid is kept.
    chunks : int or sequence of int, optional
        Output chunk shape; default 1024 (2-D) or 128 (3-D) per axis. Each fusion task
        writes a block of whole chunks (about 4 M pixels) exactly once.
    shards : int or sequence of int, optional
        Shard shape of the fused image, a multiple of ``chunks`` (one file per shard instead
        of per chunk); each fusion task then writes whole shards. Default: unsharded.
    blend_width : float or sequence of float, optional
        Length of the blending ramps from each tile border; default half the tile.
    order : int
        Spline order for ``subpixel`` placement.
    allow_sparse : bool
        Accept tiles whose stores lack some chunk files (zarr reads those as the fill value);
        by default a missing chunk that stored data runs on into is refused before anything runs, naming the tile and chunk.
    channel : int, optional
        For multi-channel tiles (one axis more than the layout's positions: the axis named
        ``c`` in their OME-Zarr axes or zarr ``dimension_names``, else the first): the channel
        the pairs are registered on (default 0; the pairwise tasks read only that channel).
        Every channel is fused at the same positions into a mosaic ``(c, *space)``, chunked
        one channel per chunk. Refused for single-channel tiles, or out of range.
    client : distributed.Client, optional
        Run on this client (left open).
    scheduler : str, optional
        Scheduler address, or "synchronous" to run in this process.
    n_workers : int, optional
        Workers of the embedded local cluster (default one per core).
    overwrite : bool
        Replace an existing output instead of resuming it.
    progress : bool
        Draw progress lines.
    pyramid : bool or int
        Add display pyramid levels ``"1"``, ``"2"``, ... of the mosaic (block means, see
        :func:`chunkreg.volume.build_output_pyramid`); an int caps their number, False: none.

    Returns
    -------
    StitchResult
        Positions, link table (quality, residual, dropped links), run reports. Failed pair
        registrations or fusion chunks are listed in ``result.report``, not raised; the
        other chunks are written, and running again completes the mosaic (fusion waits
        until every pair is registered).

    Raises
    ------
    InputError
        Missing tiles, tiles differing in ndim or dtype, no overlapping tiles, bad options
        (raised before anything is written).
    IncompatibleOutputError
        ``output`` exists from a different run and ``overwrite`` is false.

    Warns
    -----
    UserWarning
        When tiles have no reliable link and are placed at nominal positions.

    References
    ----------
    .. [1] J. Chalfoun et al., "MIST: Accurate and Scalable Microscopy Image Stitching Tool
       with Stage Modeling and Error Minimization", Sci. Rep. 7, 4988 (2017).
       doi:10.1038/s41598-017-04567-y
    .. [2] S. Preibisch, S. Saalfeld, P. Tomancak, "Globally optimal stitching of tiled 3D
       microscopic image acquisitions", Bioinformatics 25, 1463 (2009).
       doi:10.1093/bioinformatics/btp184

    Examples
    --------
    >>> import zarr
    >>> from chunkreg.testing import textured_image
    >>> from chunkreg.stitching import regular_grid
    >>> image = textured_image((171, 171), seed=0)
    >>> group = zarr.open_group("tiles.zarr", mode="w")
    >>> layout = regular_grid((2, 2), (90, 90), overlap=0.1)
    >>> for name, (y, x) in zip(layout.names, layout.positions.astype(int)):
    ...     _ = group.create_array(name, data=image[y : y + 90, x : x + 90])
    >>> result = stitch(group, layout, "mosaic.zarr", scheduler="synchronous", progress=False)
    >>> result.positions.round(2).tolist()
    [[0.0, 0.0], [0.0, 81.0], [81.0, 0.0], [81.0, 81.0]]
    """
    if fuse and output is None:
        raise InputError("give an output path for the fused mosaic (or fuse=False).")
    plan = plan_stitch(
        tiles, layout, register=register, fuse=fuse, blend=blend, subpixel=subpixel,
        upsample_factor=upsample_factor, stage_error=stage_error, downsample=downsample,
        fixed_tile=fixed_tile, chunks=chunks, shards=shards, order=order,
        allow_sparse=allow_sparse, channel=channel,
    )  # fmt: skip
    layout, refs, shapes, dtype = plan.layout, plan.refs, plan.shapes, plan.dtype
    ndim, nominal, fixed, error = layout.ndim, plan.nominal, plan.fixed, plan.stage_error
    pairs, out_chunks, upsample_factor = plan.pairs, plan.chunks, plan.upsample_factor
    channels, reg_refs = plan.channels, plan.registration_refs
    if output is not None:  # before the pairs are registered
        check_no_overlap(output, {"tiles": refs, "tile group": tiles})

    with workflow_scope(client, scheduler=scheduler, n_workers=n_workers) as c:
        runner = StageParts(c, label="tasks", progress=progress)
        if register:
            offsets, quality = _register_pairs(
                runner, reg_refs, shapes, nominal, pairs, error, upsample_factor, downsample
            )
        if register and not runner.report.ok:  # no solution from part of the pairs
            positions, unlinked = nominal.copy(), ()
            n = len(pairs)
            links = (np.full(n, np.nan), np.zeros(n, dtype=bool), np.full(n, "no estimate"))
        elif register:
            solution = solve_positions(
                pairs,
                offsets,
                quality,
                nominal,
                min_quality=min_quality,
                max_residual=max_residual,
                max_relative_residual=max_relative_residual,
                fixed_tile=fixed,
                warn=False,
            )
            positions = solution.positions
            unlinked = tuple(layout.names[i] for i in solution.unlinked)
            if unlinked:
                warnings.warn(unlinked_message(solution.unlinked, layout.names), stacklevel=2)
            links = (solution.residuals, solution.kept, solution.drop_reason)
        else:
            positions = nominal.copy()
            pairs = np.empty((0, 2), dtype=np.int64)
            offsets, quality = np.empty((0, ndim)), np.empty(0)
            links = (np.empty(0), np.empty(0, dtype=bool), np.empty(0, dtype=str))
            unlinked = ()
        origin = None
        if fuse and not runner.report.ok:  # positions from missing pairs would differ on a rerun
            runner.stop(["fusion"])
        elif fuse:
            origin = _fuse(
                runner, refs, shapes, dtype, layout.names, positions, output, out_chunks,
                shards=shards, blend=blend, subpixel=subpixel, blend_width=blend_width,
                order=order, overwrite=overwrite, pyramid=pyramid, channels=channels,
            )  # fmt: skip
        report = runner.finish()
    return StitchResult(
        layout=layout.with_positions(positions),
        nominal_positions=nominal,
        pairs=pairs,
        offsets=offsets,
        quality=quality,
        residual=links[0],
        kept=links[1],
        drop_reason=links[2],
        unlinked=unlinked,
        origin=origin,
        output=None if output is None else output_location(output),
        reports=runner.parts,
        report=report,
    )


def _registration_channel(refs, channels, channel) -> list:
    """The tiles as registered: at channel ``channel`` (default 0) of multi-channel tiles."""
    if channels is None:
        if channel is not None:
            raise InputError(
                f"channel={channel} given, but the tiles have no channel axis (they have as many "
                "axes as the layout's positions)."
            )
        return list(refs)
    axis, count = channels
    channel = 0 if channel is None else channel
    if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or channel < 0:
        raise InputError(f"channel must be an integer >= 0, got {channel!r}.")
    if channel >= count:
        raise InputError(
            f"channel {channel} is out of range: the tiles have {count} channel(s) along axis "
            f"{axis}; give 0..{count - 1}."
        )
    return [_at(ref, axis, int(channel)) for ref in refs]


def _at(ref, axis: int, index: int):
    """``ref`` read at one index of one axis (one channel)."""
    return ArrayRef(ref.store, ref.path, ((axis, index),))


def _as_layout(layout, tiles) -> Layout:
    if isinstance(layout, Layout):
        return layout
    if not isinstance(layout, (str, os.PathLike)):
        raise InputError(
            "layout must be a Layout or the path of a JSON/CSV layout file, got "
            f"{type(layout).__name__}."
        )
    spec = _read_spec(layout)
    grid = spec.get("grid")
    shape = grid.get("shape") if isinstance(grid, dict) else None
    if isinstance(shape, list) and len(shape) in (2, 3) and "tile_shape" not in grid:
        # a grid file without tile_shape: take it from the first tile
        paths = spec["paths"]
        probe = Layout(
            spec["names"][:1], np.zeros((1, len(shape))), paths and paths[:1], spec["base_dir"]
        )
        first = tiles[:1] if isinstance(tiles, (list, tuple)) else tiles
        tile_shape = resolve_tiles(first, probe)[1][0]
        return read_layout(layout, tile_shape=tuple(int(v) for v in tile_shape))
    return read_layout(layout)


def _tile_index(layout: Layout, name) -> int:
    if name in layout.names:
        return layout.names.index(name)
    raise InputError(f"fixed_tile {name!r} is not a tile of the layout.")


def _stage_error(stage_error, shapes) -> np.ndarray:
    if stage_error is None:
        return 0.1 * np.median(shapes, axis=0)
    values = per_axis(stage_error, shapes.shape[1], "stage_error", kind=numbers.Real, minimum=0)
    return np.asarray(values, dtype=np.float64)


def _output_chunks(chunks, ndim) -> tuple[int, ...]:
    if chunks is None:
        return (_DEFAULT_CHUNKS[ndim],) * ndim
    return per_axis(chunks, ndim, "chunks", minimum=1)


def _register_pairs(runner, refs, shapes, nominal, pairs, error, upsample_factor, downsample):
    regions = [pair_regions(nominal[i], shapes[i], nominal[j], shapes[j], error) for i, j in pairs]
    tasks, batch, pixels = [], [], 0
    for k, reg in enumerate(regions):
        batch.append(k)
        pixels += sum(
            math.prod(s.stop - s.start for s in sl) for sl in (reg.slices_a, reg.slices_b)
        )
        if pixels >= _PAIR_TASK_PIXELS or k == len(regions) - 1:
            tasks.append(
                PairTask(
                    indices=tuple(batch),
                    refs=tuple((refs[pairs[m, 0]], refs[pairs[m, 1]]) for m in batch),
                    regions=tuple(regions[m] for m in batch),
                    stage_error=tuple(float(e) for e in error),
                    upsample_factor=upsample_factor,
                    downsample=downsample,
                )
            )
            batch, pixels = [], 0
    ndim = nominal.shape[1]
    offsets = np.full((len(pairs), ndim), np.nan)
    quality = np.zeros(len(pairs))

    def collect(_, result):
        idx = list(result["indices"])
        offsets[idx] = result["offsets"]
        quality[idx] = result["qualities"]

    runner.run("pairs", pair_task, tasks, describe=PairTask.describe, on_result=collect)
    return offsets, quality


def _fuse(runner, refs, shapes, dtype, names, positions, output, chunks, *, blend, subpixel,
          blend_width, order, overwrite, pyramid=True, shards=None, channels=None):  # fmt: skip
    ndim = positions.shape[1]
    placed = positions if subpixel else np.round(positions)
    if subpixel:
        origin = np.floor(placed.min(axis=0) + 1e-9).astype(np.int64)
        stop = np.floor(placed + shapes - 1 + 1e-9).max(axis=0).astype(np.int64) + 1
    else:
        origin = placed.min(axis=0).astype(np.int64)
        stop = (placed + shapes).max(axis=0).astype(np.int64)
    local = placed - origin
    shape = tuple(int(v) for v in stop - origin)
    chunks = tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))
    shards = resolve_shards(shards, chunks=chunks, shape=shape)
    width = (
        None
        if blend_width is None
        else tuple(float(w) for w in np.broadcast_to(blend_width, (ndim,)))
    )
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(local, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(shapes, dtype=np.int64).tobytes())
    digest.update("\0".join(names).encode())
    signature = {
        "shape": shape,
        "dtype": str(dtype),
        "chunks": chunks,
        **({"shards": shards} if shards else {}),
        "blend": blend,
        "blend_width": width,
        "subpixel": bool(subpixel),
        "order": int(order) if subpixel else None,
        "tiles_and_positions_sha256": digest.hexdigest(),
    }
    lead = () if channels is None else (channels[1],)  # a leading channel axis, one per chunk
    if channels is not None:
        signature["channels"] = {"axis": channels[0], "count": channels[1]}
    group = open_output_group(output, signature=signature, overwrite=overwrite, kind="stitch",
                              inputs={"tiles": list(refs)})  # fmt: skip
    require_shared_store(group, runner.client)
    axes = _AXES[ndim]
    ones = (1,) * len(lead)
    if "0" not in group:
        create_array(group, name="0", shape=(*lead, *shape), dtype=dtype,
                     chunks=(*ones, *chunks), shards=shards and (*ones, *shards),
                     dimension_names=("c",) * len(lead) + axes)  # fmt: skip
    # (re)written on every run: a run killed before this point left none
    # the tiles' voxel size and units; the origin (in voxels of the layout) in physical units
    space = read_space(refs[0].open()).last(ndim).renamed(axes)
    space = Space(axes, space.scale, (0.0,) * ndim, space.units).shifted(origin.tolist())
    if lead:
        space = space.with_leading(("c",))
    write_space(group, ["0"], space, name="mosaic")
    group.attrs["stitch"] = {
        "tiles": list(names),
        "positions": local.tolist(),
        "origin": origin.tolist(),
    }
    out_ref = array_ref(group["0"])
    # tasks are whole shards, so that each shard has one writer
    if channels is None:
        tasks = _fuse_tasks(out_ref, shape, shards or chunks, local, shapes, refs, blend, width,
                            order)  # fmt: skip
    else:  # every channel at the same positions, each task one block of one channel
        tasks = [
            task
            for k in range(channels[1])
            for task in _fuse_tasks(_at(out_ref, 0, k), shape, shards or chunks, local, shapes,
                                    [_at(r, channels[0], k) for r in refs], blend, width, order)
        ]  # fmt: skip
    record = CompletionRecord(group, "fusion", len(tasks))
    ok = runner.run("fusion", fuse_task, tasks, record=record, label="chunks",
                    describe=FuseTask.describe)  # fmt: skip
    if ok and pyramid:  # display levels of the mosaic
        levels = StageRunner(runner.client, label="pyramid regions", progress=runner.progress)
        add_output_pyramid(levels, group, "0", space, levels=pyramid, name="mosaic")
        runner.add("pyramid", levels)
    return origin


def _task_block(chunks, shape) -> np.ndarray:
    """Chunk-aligned task block: whole chunks, grown round the axes to ~4 M elements."""
    chunks = np.asarray(chunks)
    block = chunks.copy()
    while np.prod(block) < _FUSE_TASK_ELEMENTS and (block < shape).any():
        for axis in range(len(block)):
            if block[axis] < shape[axis] and np.prod(block) < _FUSE_TASK_ELEMENTS:
                block[axis] += chunks[axis]
    return block


def _fuse_tasks(out_ref, shape, chunks, positions, shapes, refs, blend, width, order):
    """One task per chunk-aligned block that any tile covers, with the tiles that touch it."""
    shape = np.asarray(shape)
    chunks = _task_block(chunks, shape)
    grid = -(-shape // chunks)
    touching = defaultdict(list)
    for t, (pos, tshape) in enumerate(zip(positions, shapes, strict=True)):
        first = np.ceil(pos - 1e-9).astype(np.int64)
        last = np.floor(pos + tshape - 1 + 1e-9).astype(np.int64)
        lo = np.clip(first // chunks, 0, grid - 1)
        hi = np.clip(last // chunks, 0, grid - 1)
        for index in np.ndindex(*(hi - lo + 1)):
            touching[tuple(int(v) for v in lo + index)].append(t)
    tasks = []
    for index in sorted(touching):
        start = np.asarray(index) * chunks
        block = np.minimum(chunks, shape - start)
        members = touching[index]
        tasks.append(
            FuseTask(
                output=out_ref,
                start=tuple(int(v) for v in start),
                shape=tuple(int(v) for v in block),
                tiles=tuple(refs[t] for t in members),
                positions=tuple(tuple(float(v) for v in positions[t]) for t in members),
                tile_shapes=tuple(tuple(int(v) for v in shapes[t]) for t in members),
                blend=blend,
                blend_width=width,
                order=order,
            )
        )
    return tasks
