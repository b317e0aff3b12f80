"""A task's reads and writes sent to zarr together, in one event-loop call.

Every synchronous zarr call (``array[region]``, ``array[region] = values``) is a round trip to
zarr's event-loop thread. A task with small tiles makes many of them: its inputs' regions, its
scratch pieces, its neighbours' pieces. :func:`read_many` and :func:`write_many` hand all of a
task's requests to the loop at once (``asyncio.gather`` over zarr's asynchronous arrays), so
they cost one round trip and their chunks are fetched and decoded concurrently.

Requests to arrays on a local disk skip the event loop altogether: :mod:`chunkreg.io._direct`
reads and writes their chunks in the calling thread with zarr's own codecs (the same bytes),
which on small chunks costs a fraction of a round trip through zarr's threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import zarr
from zarr.core.sync import sync

from . import _direct
from ._chunks import read_region

__all__ = ["ChunkCache", "chunk_cache", "read_many", "write_many"]


def _async(array: zarr.Array):
    return array._async_array  # zarr 3's asynchronous twin of a synchronous array


async def _gather_reads(requests):
    return await asyncio.gather(*(_async(a).getitem(sel) for a, sel in requests))


async def _gather_writes(requests):
    await asyncio.gather(*(_async(a).setitem(sel, values) for a, sel, values in requests))


def read_many(requests: Sequence[tuple[zarr.Array, tuple]], name: str = "input") -> list:
    """``[array[selection] for array, selection in requests]``, read together.

    Parameters
    ----------
    requests : sequence of (zarr.Array, tuple of slice)
        Bounded, step-1 basic selections.
    name : str
        What the caller calls the arrays, for the message naming a chunk that cannot be
        decoded (see :func:`chunkreg.io.read_region`).

    Returns
    -------
    list of ndarray
        In the order of ``requests``.

    Raises
    ------
    InputError
        If a chunk cannot be decoded (corrupt or truncated file), naming it.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> a = zarr.create_array(zarr.storage.MemoryStore(), data=np.arange(12).reshape(3, 4))
    >>> [v.tolist() for v in read_many([(a, (slice(0, 1), slice(0, 4))), (a, (slice(2, 3), slice(1, 3)))])]
    [[[0, 1, 2, 3]], [[9, 10]]]
    """
    if not requests:
        return []
    try:
        out = [_direct.read(array, selection) for array, selection in requests]
        rest = [k for k, v in enumerate(out) if v is None]  # not local: through zarr
        if len(rest) == 1:
            array, selection = requests[rest[0]]
            out[rest[0]] = read_region(array, selection, name)
        elif rest:
            values = sync(_gather_reads([requests[k] for k in rest]))
            for k, v in zip(rest, values, strict=True):
                out[k] = np.asarray(v)
        return out
    except Exception:  # name the chunk that cannot be decoded, one request at a time
        return [read_region(array, selection, name) for array, selection in requests]


def write_many(requests: Sequence[tuple[zarr.Array, tuple, np.ndarray]]) -> None:
    """``array[selection] = values`` for every request, written together.

    Parameters
    ----------
    requests : sequence of (zarr.Array, tuple of slice, ndarray)
        Selections that do not overlap (each should cover whole chunks of a write-once output).

    Examples
    --------
    >>> import numpy as np, zarr
    >>> a = zarr.create_array(zarr.storage.MemoryStore(), shape=(2, 4), dtype="i4", chunks=(1, 4))
    >>> write_many([(a, (slice(0, 1),), np.ones((1, 4), "i4")), (a, (slice(1, 2),), np.zeros((1, 4), "i4"))])
    >>> a[:].tolist()
    [[1, 1, 1, 1], [0, 0, 0, 0]]
    """
    rest = [r for r in requests if not _direct.write(*r)]  # the local ones are written here
    if len(rest) == 1:
        array, selection, values = rest[0]
        array[selection] = values
    elif rest:
        sync(_gather_writes(rest))


class ChunkCache:
    """Decoded chunks of read-only inputs, most recently used kept, up to ``max_bytes``.

    Neighbouring tiles read each other's halo: with small tiles most of a tile's chunks were
    decoded already by the tile before it. :meth:`read` serves regions from the cached chunks
    and fetches the missing ones together (:func:`read_many`). Keys include ``token`` (one per
    run), so a later run never sees an earlier run's chunks of an input since rewritten.
    """

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        from collections import OrderedDict

        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._chunks: OrderedDict = OrderedDict()

    def _put(self, key, values: np.ndarray) -> None:
        self._chunks[key] = values
        self.nbytes += values.nbytes
        while self.nbytes > self.max_bytes and len(self._chunks) > 1:
            _, old = self._chunks.popitem(last=False)
            self.nbytes -= old.nbytes

    def read(self, token, requests: Sequence[tuple[zarr.Array, tuple]], name: str = "input"):
        """``[array[region] for array, region in requests]`` through the cache.

        Parameters
        ----------
        token : hashable
            Identifies the run (and so the inputs' content).
        requests : sequence of (zarr.Array, tuple of slice)
            Step-1 regions (one slice per axis) of arrays that do not change while ``token``
            lasts.
        name : str
            As for :func:`read_many`.
        """
        import itertools

        plans, missing, wanted = [], [], {}
        for array, region in requests:
            chunks, shape = array.chunks, array.shape
            region = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region, shape, strict=True))
            name_of = _identity(array)
            ranges = [
                range(s.start // c, (s.stop - 1) // c + 1)
                for s, c in zip(region, chunks, strict=True)
            ]
            indices = list(itertools.product(*ranges))
            for index in indices:
                key = (token, name_of, index)
                if key in self._chunks:
                    self._chunks.move_to_end(key)
                elif key not in wanted:
                    where = tuple(
                        slice(i * c, min((i + 1) * c, n))
                        for i, c, n in zip(index, chunks, shape, strict=True)
                    )
                    wanted[key] = len(missing)
                    missing.append((array, where))
            plans.append((array, region, name_of, indices))
        fetched = read_many(missing, name)
        out = []
        for array, region, name_of, indices in plans:
            values = np.empty(tuple(s.stop - s.start for s in region), dtype=array.dtype)
            for index in indices:
                key = (token, name_of, index)
                chunk = fetched[wanted[key]] if key in wanted else self._chunks[key]
                starts = [i * c for i, c in zip(index, array.chunks, strict=True)]
                src = tuple(
                    slice(max(s.start, a) - a, min(s.stop, a + n) - a)
                    for s, a, n in zip(region, starts, chunk.shape, strict=True)
                )
                dst = tuple(
                    slice(max(s.start, a) - s.start, min(s.stop, a + n) - s.start)
                    for s, a, n in zip(region, starts, chunk.shape, strict=True)
                )
                values[dst] = chunk[src]
            out.append(values)
        for key, j in wanted.items():
            self._put(key, fetched[j])
        return out


def _identity(array) -> tuple:
    """What names an array's chunks in a cache: its store, path and (for a view of one
    channel) its fixed axes; the same for every copy of the array a task unpickles."""
    return (str(array.store), array.path, getattr(array, "fixed", ()))


_CACHES: dict = {}


def chunk_cache(token) -> ChunkCache:
    """This process's cache of run ``token`` (the caches of earlier runs are dropped)."""
    if token not in _CACHES:
        _CACHES.clear()
        _CACHES[token] = ChunkCache()
    return _CACHES[token]
