"""``map_tiles``: a user's function over zarr arrays larger than memory, tile by tile.

The public face of the tile engine. :func:`plan_map_tiles` validates the inputs and lays out the
tiles (writing nothing); :func:`run_map_tiles` executes a plan: every tile task reads its
tile plus halo (``depth``) of each input, calls the function, and writes its core of the
output (``blend=None``) or its blend region to scratch pieces that a second stage blends
(``blend="linear"``). Completion is recorded per tile, so a rerun resumes; the output is
write-once and byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import zarr

from .._validation import per_axis
from .._version import __version__
from ..errors import InputError
from ..execution import RunReport, run_tasks
from ..io import (
    CompletionRecord,
    array_ref,
    check_inputs_stored,
    create_array,
    open_array,
    open_output_group,
    read_space,
    require_shared_store,
    write_space,
)
from ..tiling import TileGrid
from ..tiling._pieces import cut_pays
from ._blend import create_scratch
from ._map_tasks import (
    BlendMapTask,
    MapJob,
    MapTask,
    blend_map_tile,
    map_tile,
    probe_tile,
    store_result,
)
from ._runs import output_location, output_note, workflow_scope
from ._stages import StageRunner
from ._tasks import IndexedTasks

__all__ = ["MapTilesPlan", "map_tiles", "plan_map_tiles", "run_map_tiles"]

#: Name of the result array inside the output group.
RESULT_ARRAY = "0"
_BLENDS = (None, "linear")
_SCRATCH = "_scratch"
_PIECES = "pieces"
_WHOLE = "regions"
#: Tiles of at most this many elements are the output's chunks (fewer, larger writes).
TILE_CHUNK_ELEMENTS = 2**20
#: Tiles the client tries, in turn, to learn the result's shape before giving up.
_PROBES = 3


def func_identity(func: Callable) -> dict:
    """What names a function in a run's signature: its qualified name and a hash of its
    pickled bytes (cloudpickle: the code of lambdas and closures, the arguments of a
    :func:`functools.partial`; a module-level function pickles by name only)."""
    target = func.func if isinstance(func, partial) else func
    module = getattr(target, "__module__", None) or type(target).__module__
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    try:
        import cloudpickle

        digest = hashlib.sha1(cloudpickle.dumps(func)).hexdigest()
    except Exception:  # unpicklable here: the name alone (a cluster would refuse it anyway)
        digest = None
    return {"name": f"{module}.{name}", "pickle_sha1": digest}


def _accepts_tile(func: Callable) -> bool:
    """Whether ``func`` has a parameter named ``tile`` that can be passed by keyword."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    tile = parameters.get("tile")
    return tile is not None and tile.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


@dataclass(frozen=True)
class MapTilesPlan:
    """What :func:`run_map_tiles` would do; :meth:`describe` says it in words.

    Attributes
    ----------
    func : callable
        The function run on every tile.
    inputs : tuple of zarr.Array
        The inputs, opened read-only, all of the same shape.
    grid : TileGrid
        The tiles (``depth``: the halo read around each), aligned to the first input's chunks.
    blend : None or "linear"
        Crop each result to its core, or blend neighbours across ``band`` per axis.
    dtype : numpy.dtype or None
        The output's dtype (None: the function's result's).
    """

    func: Callable
    inputs: tuple[zarr.Array, ...]
    grid: TileGrid
    blend: str | None = None
    dtype: np.dtype | None = None
    pass_tile: bool = False

    @property
    def band(self) -> tuple[int, ...]:
        """Half-width of the blend band across each tile border (``depth // 2``; 0: crop)."""
        if self.blend is None:
            return (0,) * self.grid.ndim
        return tuple(d // 2 for d in self.grid.depth)

    @property
    def chunks(self) -> tuple[int, ...]:
        """The output's chunks along the input axes: one per tile when a tile holds at most
        :data:`TILE_CHUNK_ELEMENTS` elements (each task writes one chunk per component), else
        the first input's."""
        tile = tuple(min(t, n) for t, n in zip(self.grid.tile_shape, self.grid.shape, strict=True))
        if math.prod(tile) <= TILE_CHUNK_ELEMENTS:
            return tile
        return tuple(self.inputs[0].chunks)

    def signature(self) -> dict:
        """Everything that determines the output (stored in it; a resume must match)."""
        return {
            "func": func_identity(self.func),
            "inputs": [str(array_ref(a)) for a in self.inputs],
            "shape": list(self.grid.shape),
            "tile": list(self.grid.tile_shape),
            "depth": list(self.grid.depth),
            "blend": self.blend,
            "dtype": None if self.dtype is None else self.dtype.str,
            "chunks": list(self.chunks),
            "pass_tile": self.pass_tile,
        }

    def describe(self) -> str:
        """The plan in a few lines."""
        g = self.grid
        first = self.inputs[0]
        how = (
            "crop each result to its core"
            if self.blend is None
            else f"linear blend across {[2 * b for b in self.band]} elements centred on each "
            "tile border"
        )
        return "\n".join(
            [
                f"function: {func_identity(self.func)['name']}"
                + (" (gets tile=)" if self.pass_tile else ""),
                f"inputs: {len(self.inputs)} of shape {g.shape} ({first.dtype}, chunks "
                f"{first.chunks}, first)",
                f"tiles: {len(g)} in a grid of {g.grid_shape}, tile {g.tile_shape}, depth "
                f"{g.depth} (halo factor {g.halo_factor:.2f})",
                f"results: {how}",
                "output: array '0' of the result's components and dtype "
                + (f"({self.dtype}) " if self.dtype is not None else "")
                + f"on chunks {self.chunks}, learnt from the first tile",
            ]
        )

    def __str__(self) -> str:
        return self.describe()


def _absolute(array: zarr.Array, mode: str = "r") -> zarr.Array:
    """``array`` itself, or reopened by absolute path when its local store's root is relative
    (the arrays travel to workers, which may run in another folder)."""
    root = getattr(array.store, "root", None)
    if isinstance(array.store, zarr.storage.LocalStore) and not Path(root).is_absolute():
        return zarr.open_array(os.path.abspath(root), path=array.path, mode=mode)
    return array


def _as_list(inputs) -> list:
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InputError("inputs is empty; give at least one array.")
        return list(inputs)
    return [inputs]


def plan_map_tiles(
    func: Callable,
    inputs,
    *,
    tile,
    depth=0,
    blend: str | None = None,
    dtype=None,
    allow_sparse: bool = False,
) -> MapTilesPlan:
    """Validate the arguments of :func:`map_tiles` and lay out its tiles, writing nothing.

    Parameters
    ----------
    func, inputs, tile, depth, blend, dtype, allow_sparse
        As for :func:`map_tiles`.

    Returns
    -------
    MapTilesPlan

    Raises
    ------
    InputError
        Not callable, inputs missing or of different shapes, a tile that is not a multiple of
        the first input's chunks, a bad depth, blend or dtype.
    """
    if not callable(func):
        raise InputError(f"func must be callable, got {type(func).__name__}.")
    arrays = tuple(
        _absolute(open_array(source, name=f"input {i}"))
        for i, source in enumerate(_as_list(inputs))
    )
    shape = arrays[0].shape
    for i, array in enumerate(arrays[1:], 1):
        if array.shape != shape:
            raise InputError(
                f"every input must have the same shape; input 0 has {shape}, input {i} has "
                f"{array.shape}."
            )
    ndim = len(shape)
    if ndim == 0:
        raise InputError("inputs must have at least one axis.")
    if blend not in _BLENDS:
        raise InputError(f"blend must be None or 'linear', got {blend!r}.")
    tile = per_axis(tile, ndim, "tile", minimum=1)
    depth = per_axis(depth, ndim, "depth", minimum=0)
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError as exc:
            raise InputError(f"dtype {dtype!r} is not a numpy dtype ({exc}).") from None
        if blend is not None and dtype.kind not in "iuf":
            raise InputError(f"blend='linear' needs a numeric output dtype, got {dtype}.")
    grid = TileGrid(shape, tile, depth, chunks=tuple(arrays[0].chunks))
    check_inputs_stored({f"input {i}": a for i, a in enumerate(arrays)}, allow_sparse)
    return MapTilesPlan(func, arrays, grid, blend, dtype, _accepts_tile(func))


def _probe(plan: MapTilesPlan, client, token: str) -> tuple[dict | None, list]:
    """Run the function on a first tile (on a worker) to learn its result's shape and dtype;
    a few other tiles are tried if it raises. Returns (``{"number", "lead", "dtype",
    "result"}`` or None, failures)."""
    job = MapJob(plan.func, plan.inputs, plan.grid, plan.pass_tile, token=token)
    n = len(plan.grid)
    candidates = list(dict.fromkeys([0, n // 2, n - 1]))[:_PROBES]
    failures = []
    for number in candidates:
        found: dict = {}
        part = run_tasks(probe_tile, [MapTask(job, number)], client=client, label="first tile",
                         progress=False, describe=str,
                         on_result=lambda _, r, found=found: found.update(r))  # fmt: skip
        if found:
            found.update(number=number, lead=tuple(found["lead"]), dtype=np.dtype(found["dtype"]))
            return found, failures
        failures += [dataclasses.replace(f, index=number) for f in part.failures]
    return None, failures


def _result_space(plan: MapTilesPlan, lead: tuple[int, ...]):
    """The output's space: the first input's, behind a channel axis ``c`` for one component
    axis; None when the result is not image-like (several component axes, too many axes)."""
    space = read_space(plan.inputs[0])
    if len(lead) > 1 or space.ndim + len(lead) > 5 or len(set(space.axes)) != space.ndim:
        return None
    if lead:
        if "c" in space.axes:
            return None
        space = space.with_leading(("c",))
    return space


def _create_output(group: zarr.Group, plan: MapTilesPlan, lead, dtype) -> None:
    space = _result_space(plan, lead)
    create_array(
        group,
        name=RESULT_ARRAY,
        shape=(*lead, *plan.grid.shape),
        dtype=dtype,
        chunks=(*(1 for _ in lead), *plan.chunks),
        fill_value=np.nan if dtype.kind in "fc" else 0,
        dimension_names=None if space is None else space.axes,
        attributes={
            "description": f"map_tiles of {func_identity(plan.func)['name']}",
            "tile": list(plan.grid.tile_shape),
            "depth": list(plan.grid.depth),
            "blend": plan.blend,
            "inputs": [str(array_ref(a)) for a in plan.inputs],
            "chunkreg_version": __version__,
        },
    )


def _scratch_dtype(dtype: np.dtype) -> np.dtype:
    """Blending precision: float64 for float64 results and wide integers, else float32."""
    wide = (dtype.kind == "f" and dtype.itemsize > 4) or (dtype.kind in "iu" and dtype.itemsize > 2)
    return np.dtype(np.float64 if wide else np.float32)


def run_map_tiles(
    plan: MapTilesPlan,
    output,
    *,
    overwrite: bool = False,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    progress: bool = True,
) -> RunReport:
    """Execute a :class:`MapTilesPlan` (see :func:`map_tiles`).

    Parameters
    ----------
    plan : MapTilesPlan
        From :func:`plan_map_tiles`.
    output, overwrite, client, scheduler, n_workers, progress
        As for :func:`map_tiles`.

    Returns
    -------
    RunReport
    """
    output = output_location(output, absolute=True)  # the tasks get its arrays
    grid = plan.grid
    n = len(grid)
    with workflow_scope(client, scheduler=scheduler, n_workers=n_workers) as c:
        group = open_output_group(
            output, signature=plan.signature(), overwrite=overwrite, kind="map_tiles",
            inputs={str(i): a for i, a in enumerate(plan.inputs)},
        )  # fmt: skip
        require_shared_store(group, c)
        runner = StageRunner(c, label="tiles", n_tasks=n if plan.blend is None else 2 * n,
                             progress=progress)  # fmt: skip
        probed = None
        token = uuid.uuid4().hex  # this run's: names its cached input chunks
        if RESULT_ARRAY not in group:
            probed, failures = _probe(plan, c, token)
            if probed is None:  # nothing is known about the result: write nothing more
                report = runner.report
                report.n_failed = len(failures)
                report.failures = failures
                report.notes["stopped"] = (
                    f"the function raised on each of the {len(failures)} tiles tried first, so "
                    "the result's shape is unknown and no tile was written"
                )
                return report
            _create_output(group, plan, probed["lead"], plan.dtype or probed["dtype"])
        out = group[RESULT_ARRAY]
        lead = tuple(out.shape[: out.ndim - grid.ndim])
        space = _result_space(plan, lead)
        if space is not None and "ome" not in group.attrs:  # also after a crash just before
            write_space(group, [RESULT_ARRAY], space, name="map_tiles")
        job = MapJob(plan.func, plan.inputs, grid, plan.pass_tile, lead, out.dtype.str, out,
                     token=token)  # fmt: skip
        if plan.blend is None:
            record = CompletionRecord(group, "tiles", n)
            _store_probed(runner, job, record, probed)
            runner.run("tiles", map_tile, IndexedTasks(n, partial(MapTask, job)), record=record)
        else:
            _blend_stages(runner, group, job, plan, probed)
        if probed is not None:  # its tile was computed here, not skipped
            runner.report.n_skipped -= 1
            runner.report.n_done += 1
        report = runner.finish()
    g = grid
    report.notes.update(
        {
            "tiles": f"{n} of {g.tile_shape}",
            "depth": str(g.depth),
            "blend": "none (cropped to the cores)" if plan.blend is None else
                     f"linear across {tuple(2 * b for b in plan.band)} at each border",
            "result": f"{tuple(out.shape)} {out.dtype}",
        }
    )  # fmt: skip
    report.notes["output"] = output_note(output, RESULT_ARRAY)
    return report


def _store_probed(runner: StageRunner, job: MapJob, record, probed: dict | None) -> None:
    """Store the tile the probe computed, and record it, so no task computes it again."""
    if probed is None:
        return
    number = probed["number"]
    runner.report.add_result({"bytes_read": probed["bytes_read"], "seconds": probed["seconds"],
                              "bytes_written": store_result(job, job.grid.tile(number),
                                                            probed["result"])})  # fmt: skip
    record.mark_done(number)


def _blend_stages(runner: StageRunner, group: zarr.Group, job: MapJob, plan: MapTilesPlan,
                  probed: dict | None) -> None:  # fmt: skip
    n = len(plan.grid)
    blended = CompletionRecord(group, "blend", n)
    if blended.complete:
        runner.skip("tiles", n)
        runner.skip("blend", n)
        if _SCRATCH in group:  # a run killed while deleting them
            del group[_SCRATCH]
        return
    scratch_group = group.require_group(_SCRATCH)
    components = math.prod(job.lead)
    dtype = _scratch_dtype(np.dtype(job.dtype))
    cut = cut_pays(plan.grid, plan.band, components * dtype.itemsize)
    # the layout is in the pieces' name, so a resumed run never misreads another's
    scratch = create_scratch(
        scratch_group, _PIECES if cut else _WHOLE, plan.grid, plan.band, components=components,
        dtype=dtype, kind="linear", nan_is_missing=False, cut=cut,
    )  # fmt: skip
    job = dataclasses.replace(job, scratch=scratch)
    record = CompletionRecord(scratch_group, _PIECES if cut else _WHOLE, n)
    _store_probed(runner, job, record, probed)
    if not runner.run("tiles", map_tile, IndexedTasks(n, partial(MapTask, job)), record=record):
        runner.stop(["blend"])
        return
    # every piece is written now: the blend tasks may keep those they read (by this run's token)
    job = dataclasses.replace(job, scratch=dataclasses.replace(scratch, token=job.token))
    runner.run("blend", blend_map_tile, IndexedTasks(n, partial(BlendMapTask, job)),
               record=blended)  # fmt: skip
    if blended.complete:  # the pieces are no longer needed
        del group[_SCRATCH]


def map_tiles(
    func: Callable,
    inputs,
    output,
    *,
    tile,
    depth=0,
    blend: str | None = None,
    dtype=None,
    overwrite: bool = False,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    progress: bool = True,
    allow_sparse: bool = False,
) -> RunReport:
    """Run ``func`` over zarr arrays larger than memory, tile by tile with a halo.

    Each task reads its tile plus ``depth`` elements on every side (clipped at the array
    edges, no padding) from every input, calls ``func`` on those numpy arrays, and writes its
    core of the result once, into a zarr output it owns whole. Completed tiles are recorded,
    so running the same call again after an interruption (even SIGKILL) computes only the
    missing tiles, and the output is byte for byte the same as an uninterrupted run's.

    Parameters
    ----------
    func : callable
        ``func(*regions) -> array``, or ``func(*regions, tile=tile)`` when it has a parameter
        named ``tile``: one numpy array per input, all of the tile's read region, and then the
        :class:`~chunkreg.tiling.Tile` (``index``, ``number``, ``core`` and ``read`` slices
        in array coordinates, ``core_in_read``). It returns an array over the same region,
        optionally with leading component axes (``(3, *region)`` for a gradient); every tile
        must return the same components and dtype. It is pickled with each task: load large
        things (a model) inside it, cached per worker.
    inputs : zarr.Array, str, os.PathLike or a list of them
        Zarr arrays (or their paths/URLs, OME-Zarr groups at level 0) of the same shape;
        opened read-only. Every axis is tiled (give depth 0 and a tile of 1 for axes such as
        time that the function treats one by one).
    output : str, os.PathLike or zarr store
        The output group: the result is its array ``"0"``, of shape ``(*components, *shape)``,
        chunked by tile (1 along component axes; tiles of more than a million elements: like
        the first input), with OME-Zarr metadata in the
        first input's physical space when the result is image-like (at most one component
        axis, named ``c``). Must be reachable from every worker, and may not overlap an input.
    tile : int or tuple of int
        Core shape per task, a multiple of the first input's chunks along every axis it
        divides, so every task writes whole chunks.
    depth : int, tuple of int or dict
        Halo read around each tile, per axis (a dict ``{axis: depth}`` leaves the others 0),
        as in :func:`dask.array.map_overlap`. With ``blend=None`` a function whose output at a
        point depends on inputs within ``r`` of it gives exactly its whole-array result when
        ``depth >= r``.
    blend : None or "linear"
        None crops each result to its core. ``"linear"`` blends neighbouring tiles' results
        with linear ramps across ``2 * (depth // 2)`` elements centred on every tile border
        (weights that sum to 1: a partition of unity), so every value used lies at least
        ``depth - depth // 2`` from the edge of its tile's region; for functions whose result
        differs from tile to tile (a model, an optimiser) this leaves no seams. It costs a
        second stage and scratch space of the blend regions, deleted at the end.
    dtype : dtype, optional
        The output's dtype; default the result's. Floats into integers are rounded and
        clipped.
    overwrite : bool
        Delete an existing output and start afresh. Without it, an existing output of the
        same call (function, inputs, tile, depth, blend, dtype) is resumed and one of a
        different call is refused.
    client : distributed.Client, optional
        Run on this client (left open).
    scheduler : str, optional
        Address of a running Dask scheduler, or ``"synchronous"`` to run in this process.
    n_workers : int, optional
        Workers of the embedded ``LocalCluster`` started when neither ``client`` nor
        ``scheduler`` is given (default one per core).
    progress : bool
        Draw a progress line per stage on stderr.
    allow_sparse : bool
        Accept inputs whose stores lack chunk files that stored data runs on into (zarr reads
        those as the fill value); by default such a lost chunk is refused before anything runs.

    Returns
    -------
    RunReport
        Tiles done / skipped (complete from an earlier run) / failed. A tile whose function
        raised (after two retries) is listed in ``report.failures`` with its region and
        error, not raised; the other tiles are still written and a rerun computes only the
        missing ones (``report.raise_if_failed()`` raises instead).

    Raises
    ------
    InputError
        Bad arguments (see :func:`plan_map_tiles`); nothing is written.
    IncompatibleOutputError
        ``output`` exists from a different call (it is left untouched).

    Notes
    -----
    The function's result shape and dtype are learnt by running it on the first tile (on a
    worker) before the output is created; the client then stores that tile's result.

    Examples
    --------
    A Gaussian filter (truncated at 4 sigma: support 8) over 32-pixel tiles with an 8-pixel
    halo equals the filter of the whole image:

    >>> import numpy as np, zarr
    >>> from scipy import ndimage
    >>> image = np.random.default_rng(0).random((100, 70), dtype=np.float32)
    >>> _ = zarr.create_array("image.zarr", data=image, chunks=(16, 16), overwrite=True)
    >>> report = map_tiles(lambda a: ndimage.gaussian_filter(a, 2.0), "image.zarr",
    ...                    "smooth.zarr", tile=32, depth=8, scheduler="synchronous",
    ...                    progress=False, overwrite=True)
    >>> report.ok, report.n_done
    (True, 12)
    >>> smooth = zarr.open_array("smooth.zarr", path="0")[:]
    >>> bool(np.allclose(smooth, ndimage.gaussian_filter(image, 2.0), atol=1e-6))
    True
    """
    plan = plan_map_tiles(func, inputs, tile=tile, depth=depth, blend=blend, dtype=dtype,
                          allow_sparse=allow_sparse)  # fmt: skip
    return run_map_tiles(plan, output, overwrite=overwrite, client=client, scheduler=scheduler,
                         n_workers=n_workers, progress=progress)  # fmt: skip
