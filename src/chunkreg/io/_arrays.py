"""Opening input arrays read-only and creating outputs, by reference.

Tasks on a cluster must open the arrays themselves (reading only their region), so the
workflows pass around :class:`ArrayRef` values — a store location plus a path inside it — rather
than array objects. ``ArrayRef.open()`` works on any worker that can reach the store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
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
    "require_shard_aligned",
    "require_url_support",
    "resolve_shards",
    "url_store",
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
    index : tuple of (int, int)
        ``(axis, index)`` pairs of axes held at one index (one channel of a multi-channel
        array): :meth:`open` then returns an :class:`~chunkreg.io.ArrayView`.
    """

    store: Any
    path: str = ""
    index: tuple[tuple[int, int], ...] = ()

    def open(self, mode: str = "r"):
        """Open the array (a view of it with ``index``); read-only unless ``mode`` says otherwise."""
        array = zarr.open_array(self.store, path=self.path, mode=mode)
        if not self.index:
            return array
        from ._views import ArrayView

        return ArrayView(array, self.index)

    def __str__(self) -> str:
        if isinstance(self.store, str):
            root = self.store
        elif isinstance(self.store, zarr.storage.FsspecStore):  # the URL: s3://bucket/a.zarr
            protocol = self.store.fs.protocol
            scheme = protocol[0] if isinstance(protocol, (tuple, list)) else protocol
            root = f"{scheme}://{self.store.path.lstrip('/')}"
        else:
            root = type(self.store).__name__
        where = f"{root}/{self.path}".rstrip("/")
        if self.index:  # e.g. "a.zarr/0[axis 0 = 1]": the signature tells channels apart
            where += "[" + ", ".join(f"axis {a} = {i}" for a, i in self.index) + "]"
        return where


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
        With the fixed ``index`` of an :class:`~chunkreg.io.ArrayView`.
    """
    return ArrayRef(_store_root(array.store), array.path, tuple(getattr(array, "fixed", ())))


def _is_url(source: str) -> bool:
    return "://" in source


def url_schemes(values: Iterable) -> set[str]:
    """The fsspec URL schemes (``s3``, ``gs``, ...) among ``values``; Dask scheduler addresses
    (``tcp://``, ``tls://``) are not stores and are left out."""
    return {
        v.split("://", 1)[0].lower()
        for v in values
        if isinstance(v, str) and _is_url(v) and not v.startswith(("tcp://", "tls://"))
    }


@contextlib.contextmanager
def storage_defaults(schemes: Iterable[str], options: Mapping) -> Iterator[None]:
    """Make ``options`` the fsspec defaults of the URL ``schemes`` while the block runs.

    They go into ``fsspec.config.conf``, so every URL of those schemes opened meanwhile (inputs
    and outputs) gets them; the stores pickle with them, so workers open the same way. Options
    set there before are kept underneath and restored afterwards.
    """
    schemes, options = set(schemes), dict(options)
    if not options or not schemes:
        yield
        return
    import fsspec.config

    saved = {scheme: fsspec.config.conf.get(scheme) for scheme in schemes}
    for scheme in schemes:
        fsspec.config.conf[scheme] = {**(saved[scheme] or {}), **options}
    try:
        yield
    finally:
        for scheme, old in saved.items():
            if old is None:
                fsspec.config.conf.pop(scheme, None)
            else:
                fsspec.config.conf[scheme] = old


#: The package that gives fsspec each URL scheme (what to ``pip install`` when it is missing).
_SCHEME_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "http": "aiohttp",
    "https": "aiohttp",
}


#: Exception classes (by name: the packages are optional) that mean "no or bad credentials"
#: for an object store: botocore (s3fs), google-auth (gcsfs), azure-identity (adlfs).
_CREDENTIAL_ERRORS = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "DefaultCredentialsError",
        "ClientAuthenticationError",
        "CredentialUnavailableError",
    }
)


def credentials_problem(exc: BaseException) -> str | None:
    """A one-line message if ``exc`` (or an exception it was raised from) is a store's
    missing-credentials error, else None.

    Parameters
    ----------
    exc : BaseException
        An exception raised while opening, reading or writing a store.

    Returns
    -------
    str or None
        What went wrong and how to pass credentials, for the command line.

    Examples
    --------
    >>> class NoCredentialsError(Exception): ...
    >>> try:
    ...     try:
    ...         raise NoCredentialsError("Unable to locate credentials")
    ...     except NoCredentialsError as inner:
    ...         raise OSError("read failed") from inner
    ... except OSError as exc:
    ...     print(credentials_problem(exc)[:47])
    the object store refused access: no credentials
    >>> credentials_problem(ValueError("x")) is None
    True
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in _CREDENTIAL_ERRORS:
            return (
                f"the object store refused access: no credentials ({exc}). Set the store's "
                "usual credentials (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a "
                "profile for s3://), or pass them with --storage-option (e.g. key=..., "
                "secret=..., or anon=true for a public bucket)."
            )
        exc = exc.__cause__ or exc.__context__
    return None


def require_url_support(url: str, *, name: str = "store") -> None:
    """Refuse a URL whose scheme this Python cannot open, naming the package to install.

    Parameters
    ----------
    url : str
        A store location; local paths (no ``://``) pass.
    name : str
        What the caller calls it, used in the message (e.g. ``"output"``).

    Raises
    ------
    InputError
        If fsspec, or the fsspec implementation of the URL's scheme, is not installed, or
        the scheme is unknown.
    """
    if not _is_url(url):
        return
    scheme = url.split("://", 1)[0].lower()
    if scheme == "file":
        return
    package = _SCHEME_PACKAGES.get(scheme)
    try:
        import fsspec
    except ImportError:
        extra = f" {package}" if package else ""
        raise InputError(
            f"{name}: opening {scheme}:// URLs needs fsspec: pip install fsspec{extra}"
        ) from None
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        hint = package or f"the fsspec implementation of {scheme}://"
        raise InputError(
            f"{name}: opening {scheme}:// URLs needs {hint}: pip install {hint}"
        ) from None
    except ValueError:
        raise InputError(
            f"{name}: {url!r} has the URL scheme {scheme!r}, which fsspec does not know; "
            "give a local path or an s3://, gs://, http(s):// URL."
        ) from None


def url_store(url: str, *, storage_options: dict | None = None, read_only: bool = False):
    """A zarr store on a URL (``s3://``, ``gs://``, ``http(s)://``...) through fsspec.

    Pass it as a workflow's ``output`` (or open inputs with :func:`open_array` and its
    ``storage_options``) to reach stores that need options: credentials, an S3
    ``endpoint_url``, ``anon=True``. The store pickles with its options, so workers open it
    the same way.

    Parameters
    ----------
    url : str
        Location of the zarr group or array.
    storage_options : dict, optional
        Options of the fsspec filesystem (e.g. ``{"endpoint_url": "http://127.0.0.1:9000"}``).
    read_only : bool
        Open read-only (``http(s)://`` stores can only be read).

    Returns
    -------
    zarr.storage.FsspecStore

    Raises
    ------
    InputError
        If ``url`` is not a URL, or its scheme needs a package that is not installed.
    """
    if not _is_url(url):
        raise InputError(f"{url!r} is not a URL; give a local path directly instead.")
    require_url_support(url, name="store")
    return zarr.storage.FsspecStore.from_url(
        url, storage_options=storage_options or None, read_only=read_only
    )


def open_array(
    source,
    *,
    level: int | None = None,
    name: str = "array",
    storage_options: dict | None = None,
) -> zarr.Array:
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
    storage_options : dict, optional
        Options of the fsspec filesystem of a URL ``source`` (e.g. ``{"anon": True}`` or
        ``{"endpoint_url": "http://127.0.0.1:9000"}`` for S3), passed to zarr's
        ``FsspecStore``.

    Returns
    -------
    zarr.Array

    Raises
    ------
    InputError
        If the path does not exist, is not a zarr array or multiscale group, the level is
        out of range, or the URL's scheme needs a package that is not installed.
    """
    from ._views import ArrayView

    if isinstance(source, (zarr.Array, ArrayView)):
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
    if storage_options and not _is_url(source):
        raise InputError(f"{name}: storage_options apply to URLs, not the local path {source!r}.")
    require_url_support(source, name=name)
    try:
        node = zarr.open(source, mode="r", storage_options=storage_options or None)
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


def _nearest(value: int, step: int) -> str:
    """The multiples of ``step`` next to ``value``, as advice."""
    below, above = (value // step) * step, (value // step + 1) * step
    return f"{below} or {above}" if below else str(above)


def resolve_shards(shards, *, chunks, shape, like=None, name: str = "shards"):
    """The shard shape of an output: inherited from an input by default, checked, clipped.

    Parameters
    ----------
    shards : "auto", None, "none", int or sequence of int
        ``"auto"``: the shards of ``like`` when it is sharded and its shards are a multiple of
        ``chunks`` (else unsharded); None or ``"none"``: unsharded; an int (every axis) or one value per axis:
        the shard shape in elements, a whole multiple of ``chunks``.
    chunks, shape : sequence of int
        The output's chunk shape and shape.
    like : zarr.Array, optional
        The input whose sharding ``"auto"`` keeps.
    name : str
        What the caller calls the parameter, used in messages (``"--shards"``).

    Returns
    -------
    tuple of int or None
        The shard shape (never larger than the chunks that cover ``shape``), or None when
        the output is not sharded (also when one shard would hold a single chunk).

    Raises
    ------
    InputError
        If a shard is not a whole multiple of the chunks.
    """
    chunks = tuple(int(c) for c in chunks)
    shape = tuple(int(n) for n in shape)
    ndim = len(chunks)
    if isinstance(shards, str) and shards == "none":
        shards = None
    if isinstance(shards, str):
        if shards != "auto":
            raise InputError(
                f"{name} must be 'auto', None ('none') or a shard shape, got {shards!r}."
            )
        inherited = getattr(like, "shards", None) if like is not None else None
        if inherited is None or len(inherited) != ndim:
            return None
        if any(s % c for s, c in zip(inherited, chunks, strict=True)):
            return None  # the input's shards do not fit these chunks: unsharded
        shards = inherited
    if shards is None:
        return None
    from .._validation import per_axis

    shards = per_axis(shards, ndim, name, minimum=1)
    for axis, (s, c) in enumerate(zip(shards, chunks, strict=True)):
        if s % c:
            raise InputError(
                f"{name} must be a whole multiple of the chunks along every axis; axis {axis} "
                f"has shard {s} for chunk {c}: use {_nearest(s, c)}."
            )
    # a shard beyond the array's extent holds nothing more: clip it to the covering chunks
    clipped = tuple(min(s, -(-n // c) * c) for s, c, n in zip(shards, chunks, shape, strict=True))
    return None if clipped == chunks else clipped


def require_shard_aligned(tile, shape, shards, *, what: str = "tile") -> None:
    """Refuse a task region that is not a whole number of shards (one shard, one writer).

    Parameters
    ----------
    tile : sequence of int
        Region one task writes (a core, a batch of frames).
    shape : sequence of int
        The output's shape; a tile that covers an axis entirely passes along it.
    shards : sequence of int or None
        The output's shard shape; None passes.
    what : str
        What the region is called in the message (``"tile"``, ``"batch"``).

    Raises
    ------
    InputError
        Naming the axis and the nearest aligned sizes.
    """
    if shards is None:
        return
    for axis, (t, s, n) in enumerate(zip(tile, shards, shape, strict=True)):
        if t < n and t % s:
            raise InputError(
                f"{what} must be a whole number of shards along axis {axis} so that each shard "
                f"is written by one task (resume and write-once depend on it): got {t} for "
                f"shard {s}; use {_nearest(t, s)}, or other shards (shards=/--shards)."
            )
