"""Where inputs and outputs live, so that no output can be written over an input.

A *location* is a store (the local filesystem, an fsspec URL scheme and host, or one in-memory
store object) plus a path inside it. Local paths are resolved (``..`` and symbolic links), so
two spellings of the same directory compare equal. An output is refused when it equals,
contains or lies inside any input, before anything is written, whether or not ``overwrite``
is given: deleting or writing the output would destroy that input.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr
import zarr.storage

from ..errors import InputError

__all__ = ["Location", "check_no_overlap", "flatten_inputs", "locate"]


@dataclass(frozen=True)
class Location:
    """A store and a path inside it.

    Parameters
    ----------
    store : str
        ``"file"`` for the local filesystem, ``"<scheme>://<host>"`` for a URL, or an
        identifier of one store object (``"MemoryStore@0x..."``).
    parts : tuple of str
        Path components inside the store, from its root.
    """

    store: str
    parts: tuple[str, ...]

    def __str__(self) -> str:
        path = "/".join(self.parts)
        if self.store == "file":
            return "/" + path
        return f"{self.store}/{path}".rstrip("/")

    def contains(self, other: Location) -> bool:
        """Whether ``other`` is this location or lies inside it."""
        return self.store == other.store and other.parts[: len(self.parts)] == self.parts

    def overlaps(self, other: Location) -> bool:
        """Whether writing one may touch the other (equal, or one inside the other)."""
        return self.contains(other) or other.contains(self)

    @property
    def local_path(self) -> Path | None:
        """The filesystem path of a local location, else None."""
        return Path("/", *self.parts) if self.store == "file" else None


def _local(path: str | os.PathLike) -> Location:
    resolved = Path(path).expanduser().resolve(strict=False)
    return Location("file", resolved.parts[1:])


def _url(url: str) -> Location:
    scheme, rest = url.split("://", 1)
    if scheme == "file":
        return _local(rest)
    host, _, path = rest.partition("/")
    parts = tuple(p for p in posixpath.normpath("/" + path).split("/") if p)
    return Location(f"{scheme.lower()}://{host}", parts)


def _split(path: str) -> tuple[str, ...]:
    return tuple(p for p in posixpath.normpath("/" + (path or "")).split("/") if p)


def _store_location(store: Any, path: str = "") -> Location | None:
    if isinstance(store, zarr.storage.LocalStore):
        return _local(Path(store.root, path))
    if isinstance(store, zarr.storage.FsspecStore):
        protocol = store.fs.protocol
        scheme = protocol[0] if isinstance(protocol, (tuple, list)) else protocol
        if scheme in ("file", "local"):
            return _local(Path(store.path, path))
        full = _split(posixpath.join(store.path, path))
        return Location(f"{scheme}://", full)
    if isinstance(store, zarr.storage.MemoryStore):
        return Location(f"MemoryStore@{id(store._store_dict):#x}", _split(path))
    if isinstance(store, zarr.storage.StorePath):
        return _store_location(store.store, posixpath.join(store.path, path))
    wrapped = getattr(store, "_store", None)  # WrapperStore, LoggingStore
    if wrapped is not None and wrapped is not store:
        return _store_location(wrapped, path)
    return Location(f"{type(store).__name__}@{id(store):#x}", _split(path))


def locate(obj: Any, *, store_root: bool = False) -> Location | None:
    """Return where ``obj`` lives, or None for things that are not stored (numpy arrays).

    Parameters
    ----------
    obj : str, os.PathLike, zarr.Array, zarr.Group, ArrayRef or zarr store
        A path or URL of a zarr node or file, an open zarr node, or a store.
    store_root : bool
        For open nodes and references: the root of their store (what the user opened, e.g.
        an OME-Zarr group whose level 0 the node is) rather than the node itself.

    Returns
    -------
    Location or None
    """
    from ._arrays import ArrayRef
    from ._views import ArrayView

    if isinstance(obj, ArrayView):  # one channel lives where its array does
        obj = obj.base
    if isinstance(obj, (zarr.Array, zarr.Group)):
        return _store_location(obj.store, "" if store_root else obj.path)
    if isinstance(obj, ArrayRef):
        base = locate(obj.store)
        if base is None or store_root:
            return base
        return Location(base.store, base.parts + _split(obj.path))
    if isinstance(obj, os.PathLike):
        obj = os.fspath(obj)
    if isinstance(obj, str):
        return _url(obj) if "://" in obj else _local(obj)
    if isinstance(obj, zarr.abc.store.Store):
        return _store_location(obj)
    return None


def flatten_inputs(inputs: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """Yield ``(name, input)`` pairs, a list of inputs as ``name[i]``, skipping None."""
    for name, value in inputs.items():
        if isinstance(value, (list, tuple)) and not isinstance(value, str):
            for i, item in enumerate(value):
                yield f"{name}[{i}]", item
        elif value is not None:
            yield name, value


def _name(value: Any, where: Location) -> str:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else str(where)


def check_no_overlap(
    output: Any, inputs: Mapping[str, Any], *, what: str = "output"
) -> Location | None:
    """Refuse an output that equals, contains or lies inside one of the inputs.

    Parameters
    ----------
    output : str, os.PathLike, zarr store or zarr node
        Where the run will write.
    inputs : mapping
        ``{name: input}``; each input as :func:`locate` accepts, or a list of them (tiles).
        None values are skipped. An open array counts as the whole store it was opened from
        (an OME-Zarr group, a group given by path), which no output may enter either.
    what : str
        What the output is called in the message (e.g. ``"side file"``).

    Returns
    -------
    Location or None
        The output's location.

    Raises
    ------
    InputError
        Naming the input and how the two overlap. Nothing has been written.
    """
    out = locate(output)
    if out is None:
        return None
    for name, value in flatten_inputs(inputs):
        where = locate(value, store_root=True)
        if where is None or not where.overlaps(out):
            continue
        if where == out:
            how = "is the same location as"
        elif out.contains(where):
            how = "contains"
        else:
            how = "lies inside"
        raise InputError(
            f"{what} {_name(output, out)!r} {how} the input {name} {_name(value, where)!r}; "
            "writing it would destroy that input (also with --overwrite). Choose a path outside "
            "every input."
        )
    return out
