"""Reads and writes of local zarr arrays done in the calling thread, chunk by chunk.

zarr 3 sends every synchronous request through its event loop, and on the way each chunk's
file read and each compressor call hop to a thread pool and back. For small chunks that
machinery costs far more than the work: reading and decoding a 64² float32 chunk takes about
0.1 ms of CPU, through ``array[region]`` 1.3-1.9 ms (on two busy cores the threads also
fight over the interpreter lock); writing a 128² chunk 0.7 ms against 4 ms.

For an array of a local store (:class:`zarr.storage.LocalStore`), in zarr format 3, with a
regular chunk grid, no sharding and codecs that all have synchronous implementations,
:func:`read` and :func:`write` do what zarr's own selection code does, with zarr's own parts:
its indexer, its codecs (their synchronous halves, ``SupportsSyncCodec``, which its
asynchronous pipeline runs too), its chunk merge and its rule for chunks that hold only the fill value,
and the local store's file functions (atomic replace). The bytes written are therefore those
zarr writes. For any other array :func:`direct` returns None and callers use zarr.

This relies on zarr internals (checked here for the installed 3.x); when they are missing,
:func:`direct` returns None for every array and everything goes through zarr as before.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = ["DirectArray", "direct", "read", "write"]

try:  # zarr internals used here; without them nothing goes the direct way
    from zarr.abc.codec import SupportsSyncCodec
    from zarr.codecs.sharding import ShardingCodec
    from zarr.core.buffer import cpu
    from zarr.core.buffer.core import default_buffer_prototype
    from zarr.core.chunk_grids import RegularChunkGrid
    from zarr.core.codec_pipeline import BatchedCodecPipeline, fill_value_or_default
    from zarr.core.indexing import BasicIndexer
    from zarr.storage._local import _get, _put

    _AVAILABLE = True
except ImportError:  # pragma: no cover - another zarr layout
    _AVAILABLE = False

#: Arrays whose direct accessor was worked out (by id, with the array to check identity).
_KNOWN: dict[int, tuple[Any, DirectArray | None]] = {}
_KNOWN_MAX = 256
_LOCK = threading.Lock()


@dataclass(frozen=True)
class DirectArray:
    """How to read and write the chunks of one local array without zarr's event loop."""

    prefix: str  # the array's folder (store root and path) with a trailing separator
    metadata: Any
    spec: Any  # ArraySpec of every chunk (regular grid)
    pipeline: Any  # BatchedCodecPipeline: its codecs and its chunk merge
    specs: tuple  # the spec each codec sees: (array-array..., array-bytes, bytes-bytes...)
    dtype: np.dtype
    writable: bool

    def _path(self, coords) -> Path:
        return Path(self.prefix + self.metadata.encode_chunk_key(coords))

    def decode(self, coords):
        """Chunk ``coords`` as zarr's NDBuffer (chunk-shaped), or None when not stored."""
        try:
            data = _get(self._path(coords), self.spec.prototype, None)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        p = self.pipeline
        n_aa = len(p.array_array_codecs)
        for k, codec in reversed(list(enumerate(p.bytes_bytes_codecs))):
            data = codec._decode_sync(data, self.specs[n_aa + 1 + k])
        data = p.array_bytes_codec._decode_sync(data, self.specs[n_aa])
        for k, codec in reversed(list(enumerate(p.array_array_codecs))):
            data = codec._decode_sync(data, self.specs[k])
        return data

    def encode(self, chunk):
        """zarr's bytes of the chunk-shaped NDBuffer ``chunk``."""
        p = self.pipeline
        n_aa = len(p.array_array_codecs)
        for k, codec in enumerate(p.array_array_codecs):
            chunk = codec._encode_sync(chunk, self.specs[k])
        data = p.array_bytes_codec._encode_sync(chunk, self.specs[n_aa])
        for k, codec in enumerate(p.bytes_bytes_codecs):
            data = codec._encode_sync(data, self.specs[n_aa + 1 + k])
        return data

    def read(self, selection: tuple[slice, ...]) -> np.ndarray:
        """``array[selection]``."""
        indexer = BasicIndexer(selection, self.metadata.shape, self.metadata.chunk_grid)
        out = np.empty(indexer.shape, dtype=self.dtype, order=self.spec.order)
        for coords, chunk_selection, out_selection, _ in indexer:
            chunk = self.decode(coords)
            if chunk is None:
                out[out_selection] = fill_value_or_default(self.spec)
            else:
                out[out_selection] = chunk.as_numpy_array()[chunk_selection]
        return out

    def write(self, selection: tuple[slice, ...], values: np.ndarray) -> None:
        """``array[selection] = values`` (``values`` of the selection's shape)."""
        dtype = self.dtype
        if values.dtype.name != dtype.name:
            values = values.astype(dtype=dtype, order="A")  # as zarr converts
        prototype = self.spec.prototype
        buffer = prototype.nd_buffer.from_ndarray_like(values)
        indexer = BasicIndexer(selection, self.metadata.shape, self.metadata.chunk_grid)
        fill = fill_value_or_default(self.spec)
        for coords, chunk_selection, out_selection, complete in indexer:
            existing = None if complete else self.decode(coords)
            merged = self.pipeline._merge_chunk_array(
                existing, buffer, out_selection, self.spec, chunk_selection, complete, ()
            )
            path = self._path(coords)
            if not self.spec.config.write_empty_chunks and _all_fill(merged, fill):
                if path.is_dir():  # as LocalStore.delete
                    raise IsADirectoryError(path)
                path.unlink(missing_ok=True)
            else:
                _put(path, self.encode(merged))


def _all_fill(chunk, fill) -> bool:
    """``chunk.all_equal(fill)``, zarr's test for a chunk it does not store, answered from the
    first element when that one differs already (the test is slow on a whole chunk)."""
    first = chunk.as_numpy_array().reshape(-1)[:1]
    if first.size and not type(chunk).from_numpy_array(first).all_equal(fill):
        return False
    return chunk.all_equal(fill)


def _make(array) -> DirectArray | None:
    if not _AVAILABLE or not isinstance(array, zarr.Array):
        return None
    store = array.store
    if type(store) is not zarr.storage.LocalStore or not getattr(store, "_is_open", False):
        return None
    async_array = array._async_array
    metadata = async_array.metadata
    if metadata.zarr_format != 3 or not isinstance(metadata.chunk_grid, RegularChunkGrid):
        return None
    pipeline = async_array.codec_pipeline
    if type(pipeline) is not BatchedCodecPipeline:
        return None
    codecs = [*pipeline.array_array_codecs, pipeline.array_bytes_codec,
              *pipeline.bytes_bytes_codecs]  # fmt: skip
    if any(isinstance(c, ShardingCodec) or not isinstance(c, SupportsSyncCodec) for c in codecs):
        return None
    if pipeline.supports_partial_decode or pipeline.supports_partial_encode:
        return None
    dtype = np.dtype(metadata.data_type.to_native_dtype())
    if dtype.kind not in "biufc":
        return None
    prototype = default_buffer_prototype()
    if prototype.buffer is not cpu.Buffer or prototype.nd_buffer is not cpu.NDBuffer:
        return None
    spec = metadata.get_chunk_spec((0,) * metadata.ndim, async_array.config, prototype)
    specs = []
    current = spec
    for codec in codecs:  # as the pipeline resolves them
        specs.append(current)
        current = codec.resolve_metadata(current)
    folder = Path(store.root) / async_array.store_path.path  # as the store joins its keys
    return DirectArray(
        prefix=os.path.join(os.fspath(folder), ""),
        metadata=metadata,
        spec=spec,
        pipeline=pipeline,
        specs=tuple(specs),
        dtype=dtype,
        writable=not store.read_only,
    )


def direct(array) -> DirectArray | None:
    """The direct accessor of ``array``, or None where zarr must do the work."""
    key = id(array)
    with _LOCK:
        known = _KNOWN.get(key)
    if known is not None and known[0] is array:
        return known[1]
    try:
        made = _make(array)
    except Exception:  # anything unexpected in zarr's internals: let zarr do it
        made = None
    with _LOCK:
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.clear()
        _KNOWN[key] = (array, made)
    return made


def _bounded(selection, shape) -> tuple[slice, ...] | None:
    """``selection`` as bounded slices inside ``shape``, or None unless it is a tuple of one
    step-1 slice per axis (``slice(None)`` included) that stays inside the array."""
    if not isinstance(selection, tuple) or len(selection) != len(shape):
        return None
    out = []
    for s, n in zip(selection, shape, strict=True):
        if not isinstance(s, slice) or s.step not in (None, 1):
            return None
        start = 0 if s.start is None else s.start
        stop = n if s.stop is None else s.stop
        if not isinstance(start, (int, np.integer)) or not isinstance(stop, (int, np.integer)):
            return None
        if not 0 <= start <= stop <= n:
            return None
        out.append(slice(int(start), int(stop)))
    return tuple(out)


def read(array, selection) -> np.ndarray | None:
    """``array[selection]`` read in this thread, or None when this array (or selection: not a
    tuple of step-1 slices inside the array) must go through zarr."""
    accessor = direct(array)
    if accessor is None:
        return None
    selection = _bounded(selection, accessor.metadata.shape)
    return None if selection is None else accessor.read(selection)


def write(array, selection, values) -> bool:
    """``array[selection] = values`` written in this thread; False (nothing written) when it
    must go through zarr instead."""
    accessor = direct(array)
    if accessor is None or not accessor.writable or not isinstance(values, np.ndarray):
        return False
    selection = _bounded(selection, accessor.metadata.shape)
    if selection is None or values.shape != tuple(s.stop - s.start for s in selection):
        return False
    accessor.write(selection, values)
    return True
