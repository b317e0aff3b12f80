"""Checking an input's stored chunks: missing ones at plan time, unreadable ones at read time.

Zarr reads a chunk that is not in the store as the array's fill value, so a deleted chunk file
silently becomes a block of zeros. :func:`require_chunks` compares the store's listing with the
array's chunk grid (its shard grid for sharded arrays, whose files are shards) before a run
starts. Zarr also leaves out, by design, chunks that hold only the fill value (blank padding),
so a missing file counts as lost only where the stored data around it runs on into it. :func:`read_region` turns a decoding error deep inside zarr into a message naming the
input and the chunk that cannot be read.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import zarr
from zarr.core.sync import sync

from ..errors import InputError

__all__ = ["check_inputs_stored", "missing_chunks", "read_region", "require_chunks"]

#: Missing chunks named in a message (the rest are counted).
_NAMED = 5
#: Missing chunks whose neighbours are examined (spread over the grid), to bound the reads.
_EXAMINED = 32
#: Axis names along which neighbouring chunks hold other images, not more of the same space.
_NOT_SPACE = frozenset({"t", "c", "component", "channel", "time"})


def _where(array: zarr.Array) -> str:
    from ._arrays import array_ref

    return str(array_ref(array))


async def _list(store, prefix: str) -> list[str]:
    return [key async for key in store.list_prefix(prefix)]


def _grid(array: zarr.Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(file shape, file grid shape): shards for a sharded array, else chunks."""
    file_shape = tuple(getattr(array, "shards", None) or array.chunks)
    grid = tuple(math.ceil(n / c) for n, c in zip(array.shape, file_shape, strict=True))
    return file_shape, grid


def _missing_indices(array: zarr.Array) -> list[tuple[int, ...]]:
    """Grid indices of the chunk (shard) files the store does not hold, in grid order."""
    prefix = f"{array.path}/" if array.path else ""
    stored = {key[len(prefix) :] for key in sync(_list(array.store, prefix))}
    _, grid = _grid(array)
    encode = array.metadata.encode_chunk_key
    return [
        index
        for index in itertools.product(*(range(g) for g in grid))
        if encode(index) not in stored
    ]


def missing_chunks(array: zarr.Array) -> list[str]:
    """Keys (inside the array) of the chunk files (shard files) the store does not hold.

    Parameters
    ----------
    array : zarr.Array

    Returns
    -------
    list of str
        Sorted in grid order; empty when every chunk of the grid is stored.
    """
    encode = array.metadata.encode_chunk_key
    return [encode(index) for index in _missing_indices(array)]


def _is_fill(values: np.ndarray, fill) -> np.ndarray:
    if fill is None:
        return np.zeros(values.shape, bool)
    fill = np.asarray(fill, dtype=values.dtype)
    if values.dtype.kind in "fc" and np.isnan(fill):
        return np.isnan(values)
    return values == fill


def _looks_lost(array: zarr.Array, index: tuple[int, ...], missing: set) -> bool:
    """Whether stored data runs right up to the missing file ``index`` from a neighbour.

    Zarr omits a chunk that holds only the fill value; blank regions are wider than a voxel,
    so the neighbouring chunk's face that touches such a chunk is mostly fill value too. A
    stored neighbour whose touching face is mostly data means data ran on: the file was lost.
    """
    file_shape, grid = _grid(array)
    names = array.metadata.dimension_names or (None,) * array.ndim
    for axis in range(array.ndim):
        if file_shape[axis] == 1 or names[axis] in _NOT_SPACE:
            continue  # the neighbour is another frame, component or channel, not more space
        for step in (-1, 1):
            neighbour = list(index)
            neighbour[axis] += step
            if not 0 <= neighbour[axis] < grid[axis] or tuple(neighbour) in missing:
                continue
            face = [
                slice(i * f, min((i + 1) * f, n))
                for i, f, n in zip(index, file_shape, array.shape, strict=True)
            ]
            edge = index[axis] * file_shape[axis] - 1 if step < 0 else face[axis].stop
            face[axis] = slice(edge, edge + 1)
            values = np.asarray(array[tuple(face)])
            if _is_fill(values, array.fill_value).mean() < 0.5:
                return True
    return False


def require_chunks(array: zarr.Array, name: str) -> None:
    """Raise :class:`InputError` naming the chunk files of ``array`` missing from its store.

    Zarr does not store chunks that hold only the fill value, so a missing file is not lost
    by itself. It counts as lost where a stored neighbouring chunk's face that touches it is
    mostly data (under half fill value): data ran on into it, where a blank region leaves
    mostly fill values on the faces around it. Only spatial neighbours count: not along axes
    named t or c, nor along axes one sample per chunk (frames, flow components), where the
    neighbour is another image. An array of which no chunk is stored was never written and
    passes. Up to 32 missing files, spread over the grid, are examined this way.

    Parameters
    ----------
    array : zarr.Array
        An input.
    name : str
        What the caller calls it ("reference", "moving", ...).
    """
    from ._views import base_array

    array = base_array(array)  # one channel: its array's files (all channels) are checked
    if math.prod(array.shape) == 0:
        return
    missing = _missing_indices(array)
    _, grid = _grid(array)
    total = math.prod(grid)
    if not missing or len(missing) == total:  # complete, or never written: all fill value
        return
    examined = missing[:: max(1, math.ceil(len(missing) / _EXAMINED))]
    absent = set(missing)
    encode = array.metadata.encode_chunk_key
    lost = [encode(i) for i in examined if _looks_lost(array, i, absent)]
    if not lost:
        return  # blank regions zarr chose not to store
    kind = "shard" if getattr(array, "shards", None) else "chunk"
    named = ", ".join(lost[:_NAMED]) + (
        f" and {len(lost) - _NAMED} more" if len(lost) > _NAMED else ""
    )
    raise InputError(
        f"{name} {_where(array)}: {len(missing)} of {total} {kind} files are missing from the "
        f"store, and the data around some of them runs on into them ({named}): they were most likely lost, "
        f"and zarr would read them as the fill value {array.fill_value!r}. Restore them, or "
        "pass allow_sparse=True (--allow-sparse) if the input is deliberately sparse."
    )


def _chunk_regions(array: zarr.Array, region: tuple[slice, ...]):
    """(key, slices) of every chunk (inner chunk) that ``region`` touches."""
    chunks = tuple(array.chunks)
    file_shape, _ = _grid(array)
    ranges = [
        range(s.start // c, max(s.start // c, (s.stop - 1) // c) + 1)
        for s, c in zip(region, chunks, strict=True)
    ]
    encode = array.metadata.encode_chunk_key
    for index in itertools.product(*ranges):
        slices = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, chunks, array.shape, strict=True)
        )
        file_index = tuple(s.start // f for s, f in zip(slices, file_shape, strict=True))
        yield encode(file_index), slices


def read_region(array: zarr.Array, region, name: str) -> np.ndarray:
    """``array[region]``, with a decoding failure reported as the input's chunk that failed.

    Parameters
    ----------
    array : zarr.Array
        An input array.
    region : tuple of slice
        Bounded, step-1 slices.
    name : str
        What the caller calls the input ("reference", "moving", "frames", ...).

    Returns
    -------
    ndarray

    Raises
    ------
    InputError
        If a chunk of ``array`` that ``region`` needs cannot be decoded (corrupt or truncated
        file), naming the array and that chunk's key.
    """
    region = tuple(region)
    try:
        return array[region]
    except InputError:
        raise
    except Exception:  # a codec's error type depends on the codec
        from ._views import ArrayView

        if isinstance(array, ArrayView):  # look for the chunk in the whole array
            base = array.selection(region)
            array = array.base
            region = tuple(slice(k, k + 1) if isinstance(k, int) else k for k in base)
        for key, slices in _chunk_regions(array, region):
            try:
                array[slices]
            except Exception as inner:
                raise InputError(
                    f"{name} {_where(array)}: chunk {key} cannot be read "
                    f"({type(inner).__name__}: {inner}); the stored file is corrupt or "
                    "truncated: restore it (or rewrite the input)."
                ) from inner
        raise


def check_inputs_stored(inputs: dict, allow_sparse: bool) -> None:
    """:func:`require_chunks` for each ``{name: array}`` unless ``allow_sparse``.

    Raises
    ------
    InputError
        If ``allow_sparse`` is not a bool, or an input lacks chunk files.
    """
    if not isinstance(allow_sparse, bool):
        raise InputError(f"allow_sparse must be True or False, got {allow_sparse!r}.")
    if allow_sparse:
        return
    for name, array in inputs.items():
        require_chunks(array, name)
