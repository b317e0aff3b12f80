"""Opening input arrays read-only and creating outputs, by reference.

Tasks on a cluster must open the arrays themselves (reading only their region), so the
workflows pass around :class:`ArrayRef` values — a store location plus a path inside it — rather
than array objects. ``ArrayRef.open()`` works on any worker that can reach the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.errors
import zarr.storage

from ..errors import InputError
from ._ome import multiscale_dataset_paths

__all__ = [
    "CHECKSUM",
    "FIELD_COMPRESSORS",
    "ArrayRef",
    "array_ref",
    "create_array",
    "open_array",
    "output_codecs",
]

#: Compression of the float32 fields chunkreg writes (flows): LZ4 in Blosc after byte
#: shuffling. On flow fields it writes about twice as fast as zarr's default Zstandard and
#: stores them a little smaller (shuffling groups the exponent bytes, which repeat).
FIELD_COMPRESSORS = (zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
#: Zarr's default compression of numeric arrays (what ``compressors="auto"`` means).
DEFAULT_COMPRESSORS = (zarr.codecs.ZstdCodec(level=0, checksum=False),)
#: Appended to every output's codecs: a CRC32C checksum of each stored chunk, so that a later
#: read of a corrupted chunk fails instead of returning wrong values.
CHECKSUM = zarr.codecs.Crc32cCodec()


def output_codecs(compressors="auto") -> tuple:
    """The bytes codecs of an output: ``compressors`` (``"auto"``: zarr's default, None:
    none), then the CRC32C checksum."""
    if isinstance(compressors, str) and compressors == "auto":
        compressors = DEFAULT_COMPRESSORS
    compressors = () if compressors is None else tuple(compressors)
    if any(isinstance(c, zarr.codecs.Crc32cCodec) for c in compressors):
        return compressors
    return (*compressors, CHECKSUM)


@dataclass(frozen=True)
class ArrayRef:
    """A picklable handle on a zarr array: where it lives, not its data.

    Parameters
    ----------
    store : str or zarr store
        A filesystem path or URL understood by :func:`zarr.open_array`, or a store object.
    path : str
        Path of the array inside the store ("" for the root).
    """

    store: Any
    path: str = ""

    def open(self, mode: str = "r") -> zarr.Array:
        """Open the array; read-only unless ``mode`` says otherwise."""
        return zarr.open_array(self.store, path=self.path, mode=mode)

    def __str__(self) -> str:
        root = self.store if isinstance(self.store, str) else type(self.store).__name__
        return f"{root}/{self.path}".rstrip("/")


def _store_root(store: Any) -> Any:
    """Return a picklable description of ``store``: its root path for local stores."""
    if isinstance(store, zarr.storage.LocalStore):
        # absolute, so workers started in another directory find it too
        return str(Path(store.root).resolve())
    return store


def array_ref(array: zarr.Array) -> ArrayRef:
    """Return an :class:`ArrayRef` pointing at an open zarr array.

    Parameters
    ----------
    array : zarr.Array
        An open array; local stores are referenced by absolute path.

    Returns
    -------
    ArrayRef
    """
    return ArrayRef(_store_root(array.store), array.path)


def _is_url(source: str) -> bool:
    return "://" in source


def open_array(source, *, level: int | None = None, name: str = "array") -> zarr.Array:
    """Open an existing zarr array read-only.

    Parameters
    ----------
    source : zarr.Array, ArrayRef, str or os.PathLike
        An open array (returned unchanged), a reference, a path/URL of a zarr array, or a path of
        an OME-Zarr multiscale group (its level ``level`` is opened, 0 by default).
    level : int, optional
        Multiscale level to open when ``source`` is an OME-Zarr group.
    name : str
        What the caller calls this input, used in error messages (e.g. ``"reference"``).

    Returns
    -------
    zarr.Array

    Raises
    ------
    InputError
        If the path does not exist, is not a zarr array or multiscale group, or the level is
        out of range.
    """
    if isinstance(source, zarr.Array):
        if level is not None:
            raise InputError(f"{name}: level={level} applies to multiscale groups, not arrays.")
        return source
    if isinstance(source, ArrayRef):
        return source.open()
    if isinstance(source, np.ndarray):
        raise InputError(
            f"{name} is a numpy array; this workflow reads from zarr so it can run out of core. "
            "Save it first, e.g. zarr.create_array('in.zarr', data=array), or use the in-memory "
            "kernels in chunkreg.registration."
        )
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(
            f"{name} must be a zarr array or a path to one, got {type(source).__name__}."
        )
    source = os.fspath(source)
    if not _is_url(source) and not Path(source).exists():
        raise InputError(f"{name}: {source!r} does not exist.")
    try:
        node = zarr.open(source, mode="r")
    except (zarr.errors.NodeTypeValidationError, FileNotFoundError, KeyError, ValueError) as exc:
        raise InputError(f"{name}: {source!r} is not a zarr array or group ({exc}).") from exc
    if isinstance(node, zarr.Array):
        if level is not None:
            raise InputError(
                f"{name}: level={level} given but {source!r} is an array, not a multiscale group."
            )
        return node
    paths = multiscale_dataset_paths(node.attrs.asdict())
    if not paths:
        raise InputError(
            f"{name}: {source!r} is a zarr group without OME-Zarr multiscales metadata; "
            f"name one of its arrays instead (e.g. {source}/<array>). Members: "
            f"{sorted(node.array_keys())[:10]}."
        )
    level = 0 if level is None else level
    if not 0 <= level < len(paths):
        raise InputError(
            f"{name}: level {level} out of range; {source!r} has levels 0..{len(paths) - 1}."
        )
    return node[paths[level]]


def create_array(
    store,
    *,
    name: str | None = None,
    shape,
    dtype,
    chunks,
    shards=None,
    fill_value=0,
    attributes: dict | None = None,
    dimension_names=None,
    compressors="auto",
    overwrite: bool = False,
) -> zarr.Array:
    """Create a zarr v3 array (thin wrapper fixing chunkreg's defaults).

    Parameters
    ----------
    store : str, os.PathLike, zarr store or zarr.Group
        Where to create it. With a group, ``name`` is the member name.
    name : str, optional
        Member name inside ``store``.
    shape, dtype, chunks : array geometry.
    shards : tuple of int, optional
        Shard shape (a multiple of ``chunks``); tiles should then align to shards.
    fill_value : scalar
        Value of chunks never written.
    attributes : dict, optional
        JSON attributes.
    dimension_names : sequence of str, optional
        Axis names stored in the array metadata.
    compressors : "auto", None or sequence of codecs
        As :func:`zarr.create_array`: ``"auto"`` is zarr's default, ``None`` no compression;
        :data:`FIELD_COMPRESSORS` suits float32 flow fields. A CRC32C checksum codec is always
        appended, so reading a corrupted chunk raises instead of returning wrong values.
    overwrite : bool
        Replace an existing array.

    Notes
    -----
    Every chunk is stored, also one holding only the fill value, so that a chunk missing
    from the store later means it was lost (see :func:`chunkreg.io.require_chunks`).
    """
    kwargs = {
        "shape": tuple(int(s) for s in shape),
        "dtype": np.dtype(dtype),
        "chunks": tuple(int(c) for c in chunks),
        "shards": None if shards is None else tuple(int(s) for s in shards),
        "fill_value": fill_value,
        "attributes": attributes or {},
        "dimension_names": dimension_names,
        "compressors": output_codecs(compressors),
        "overwrite": overwrite,
        "config": {"write_empty_chunks": True},
    }
    if isinstance(store, zarr.Group):
        return store.create_array(name, **kwargs)
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    return zarr.create_array(store, name=name, **kwargs)
