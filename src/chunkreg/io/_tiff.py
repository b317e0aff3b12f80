"""TIFF to chunked zarr / OME-Zarr, in bounded memory.

Most raw microscopy arrives as TIFF: a multi-page stack (ImageJ hyperstack, OME-TIFF), a folder
of one-plane files, or a set of mosaic tiles. These functions copy them into zarr v3 one
chunk-aligned slab at a time, so the whole stack is never in memory. ``tifffile`` is imported
lazily (optional extra ``chunkreg[tiff]``); planes in other formats (PNG, JPEG, BMP, ...) are
read with ``imageio`` where it is installed.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from ..errors import InputError
from ._arrays import create_array, resolve_shards
from ._lease import output_scope
from ._locations import check_no_overlap
from ._ome import default_axes
from ._output import open_output_group
from ._space import Space, ome_unit, write_space

__all__ = ["natural_sort", "tiff_to_zarr", "tiles_to_zarr"]

_TIFF_SUFFIXES = (".tif", ".tiff")
# One-plane formats read through imageio; a folder holds planes of one format only.
_PLANE_SUFFIXES = (*_TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_DIGITS = re.compile(r"(\d+)")


def _tifffile():
    try:
        import tifffile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            "reading TIFF needs the optional dependency tifffile: pip install 'chunkreg[tiff]'"
        ) from exc
    return tifffile


def _imageio():
    try:
        import imageio.v3 as iio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            "reading PNG/JPEG/... planes needs the optional dependency imageio: pip install imageio"
        ) from exc
    return iio


def _natural_key(name: str) -> tuple:
    """Sort key that orders the digit runs of ``name`` by value: ``z2`` before ``z10``."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower())
        for part in _DIGITS.split(name)
        if part
    )


def natural_sort(names: Sequence[str]) -> list[str]:
    """Order file names as a person numbers planes: ``0.tif, 1.tif, 2.tif, ..., 10.tif``.

    Runs of digits compare by value, the rest case-insensitively. A warning is issued when the
    order is ambiguous: two names with the same key (``z01.tif`` and ``z1.tif``), or names in
    which more than one number varies (``t1_z2.tif``, ``t2_z1.tif``: which one counts planes?).

    Parameters
    ----------
    names : sequence of str
        File names (or paths: only the last component is compared).

    Returns
    -------
    list of str
        ``names`` in natural order.

    Examples
    --------
    >>> natural_sort(["10.tif", "2.tif", "1.tif"])
    ['1.tif', '2.tif', '10.tif']
    """
    keyed = sorted(names, key=lambda n: (_natural_key(Path(n).name), Path(n).name))
    keys = [_natural_key(Path(n).name) for n in keyed]
    reason = None
    if len(set(keys)) < len(keys):
        twins = next(
            (a, b)
            for a, b, ka, kb in zip(keyed, keyed[1:], keys, keys[1:], strict=False)
            if ka == kb
        )
        reason = f"{Path(twins[0]).name!r} and {Path(twins[1]).name!r} number the same plane"
    else:
        numbers = [[int(d) for d in _DIGITS.findall(Path(n).name)] for n in keyed]
        if len({len(x) for x in numbers}) == 1 and numbers and len(numbers[0]) > 1:
            varying = sum(len({x[i] for x in numbers}) > 1 for i in range(len(numbers[0])))
            if varying > 1:
                reason = (
                    f"more than one number varies between names such as {Path(keyed[0]).name!r}"
                )
    if reason:
        warnings.warn(
            f"plane order is ambiguous: {reason}; ordered by all numbers from left to right. "
            "Pass a list of files in the order you mean.",
            UserWarning,
            stacklevel=2,
        )
    return keyed


def _plane_props(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a one-plane file from its header, without decoding the pixels."""
    if path.lower().endswith(_TIFF_SUFFIXES):
        with _tifffile().TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    props = _imageio().improps(path)
    return tuple(props.shape), np.dtype(props.dtype)


def _read_plane(path: str) -> np.ndarray:
    if path.lower().endswith(_TIFF_SUFFIXES):
        return _tifffile().imread(path)
    return np.asarray(_imageio().imread(path))


def _default_chunks(
    shape: Sequence[int],
    itemsize: int,
    target_bytes: int = 8 * 2**20,
    axes: Sequence[str] | None = None,
) -> tuple[int, ...]:
    """Chunks of about ``target_bytes`` (at most): planes of up to that size whole (larger ones
    cut into squares), one plane deep in a series of 2-D planes (``t``/``c`` then two spatial
    axes); near-cubic over the last three axes of a volume."""
    ndim = len(shape)
    side = max(64, int(math.sqrt(target_bytes / itemsize)))
    if ndim <= 2:
        return tuple(min(n, side) for n in shape)
    if axes is not None and sum(a not in ("t", "c") for a in axes) == 2:
        return (1,) * (ndim - 2) + tuple(min(n, side) for n in shape[-2:])
    # 3-D and more: near-cubic spatial chunks over the last three axes, 1 along the others.
    side = max(32, round((target_bytes / itemsize) ** (1 / 3)))
    lead = (1,) * (ndim - 3)
    return lead + tuple(min(n, side) for n in shape[-3:])


def _folder_planes(folder: Path) -> list[str]:
    """The plane files of ``folder`` in natural order (one format, hidden files ignored)."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _PLANE_SUFFIXES
    ]
    if not files:
        raise InputError(
            f"no image planes ({', '.join(_PLANE_SUFFIXES)}) in folder {os.fspath(folder)!r}."
        )
    suffixes = {".tif" if p.suffix.lower() == ".tiff" else p.suffix.lower() for p in files}
    if len(suffixes) > 1:
        raise InputError(
            f"folder {os.fspath(folder)!r} mixes plane formats {sorted(suffixes)}; "
            "keep one format per folder or pass a list of files."
        )
    return natural_sort([str(p) for p in files])


class _Source:
    """A stack of 2-D planes from one multi-page TIFF or from one file per plane."""

    def __init__(self, source) -> None:
        self.files: list[str] | None = None
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            source = _folder_planes(Path(source))
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not Path(path).exists():
                raise InputError(f"TIFF {path!r} does not exist.")
            self.tif = _tifffile().TiffFile(path)
            series = self.tif.series[0]
            self.shape = tuple(series.shape)
            self.dtype = np.dtype(series.dtype)
            self.axes = series.axes
        else:
            self.files = [os.fspath(p) for p in source]
            missing = [f for f in self.files if not Path(f).exists()]
            if missing:
                raise InputError(f"TIFF files do not exist: {missing[:5]}")
            shape, dtype = _plane_props(self.files[0])
            if len(shape) != 2:
                raise InputError(
                    f"expected one 2-D plane per file, {self.files[0]!r} has shape {shape}."
                )
            # Headers only: a mismatched plane is refused before anything is written.
            for f in self.files[1:]:
                other = _plane_props(f)
                if other != (shape, dtype):
                    raise InputError(
                        f"plane {f!r} is {other[0]} {other[1]}, the first plane {shape} {dtype}: "
                        "every plane must match."
                    )
            self.tif = None
            self.shape = (len(self.files), *shape)
            self.dtype = dtype
            self.axes = "ZYX"
        if len(self.shape) < 2:
            raise InputError(f"TIFF data must be at least 2-D, got shape {self.shape}.")

    def read_planes(self, index: Sequence[int]) -> np.ndarray:
        """Read the planes with flat (C-order) numbers ``index`` as an (n, Y, X) array."""
        if self.files is not None:
            return np.stack([_read_plane(self.files[i]) for i in index])
        if len(self.shape) == 2:
            return self.tif.asarray()[np.newaxis]
        return self.tif.asarray(key=list(index)).reshape(len(index), *self.shape[-2:])

    def close(self) -> None:
        if self.tif is not None:
            self.tif.close()


def _ome_tiff_sizes(xml: str) -> tuple[dict, dict]:
    """Voxel size and unit per axis from an OME-TIFF's ``Pixels`` element."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    sizes, units = {}, {}
    if pixels is None:
        return sizes, units
    for axis, key in (("x", "PhysicalSizeX"), ("y", "PhysicalSizeY"), ("z", "PhysicalSizeZ"),
                      ("t", "TimeIncrement")):  # fmt: skip
        if pixels.get(key):
            sizes[axis] = float(pixels.get(key))
            default = "s" if axis == "t" else "µm"  # the OME schema's defaults
            units[axis] = ome_unit(pixels.get(f"{key}Unit", default))
    return sizes, units


def _imagej_sizes(tif) -> tuple[dict, dict]:
    """Voxel size and unit per axis from ImageJ's header and the X/YResolution tags."""
    meta = tif.imagej_metadata or {}
    sizes, units = {}, {}
    unit = ome_unit(meta.get("unit"))
    page = tif.pages[0]
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        value = page.tags.get(tag)
        if value is not None:
            num, den = value.value
            if num and (num, den) != (1, 1):
                sizes[axis], units[axis] = den / num, unit
    if meta.get("spacing"):
        sizes["z"], units["z"] = float(meta["spacing"]), unit
    if meta.get("finterval"):
        sizes["t"], units["t"] = float(meta["finterval"]), ome_unit(meta.get("tunit", "s"))
    return sizes, units


def _tiff_space(src: _Source, axes: tuple[str, ...]) -> Space:
    """The physical space a TIFF records (OME-TIFF PhysicalSize, else ImageJ), else voxels."""
    sizes, units = {}, {}
    if src.tif is not None:
        try:
            if src.tif.is_ome and src.tif.ome_metadata:
                sizes, units = _ome_tiff_sizes(src.tif.ome_metadata)
            elif src.tif.is_imagej:
                sizes, units = _imagej_sizes(src.tif)
        except (ValueError, TypeError, KeyError, ZeroDivisionError) as exc:
            warnings.warn(f"TIFF physical sizes not read ({exc}); voxels of size 1 recorded",
                          stacklevel=3)  # fmt: skip
            sizes, units = {}, {}
    scale = tuple(float(sizes.get(a, 1.0)) for a in axes)
    kept = {a: units[a] for a in axes if a in sizes and units.get(a)}
    return Space(axes, scale, (0.0,) * len(axes), kept)


def _copy(src: _Source, dst: zarr.Array) -> None:
    """Copy ``src`` into ``dst`` one chunk-aligned slab of planes at a time."""
    shape, chunks = src.shape, dst.shards or dst.chunks  # whole shards: each written once
    if len(shape) == 2:
        dst[...] = src.read_planes([0])[0]
        return
    lead_shape = shape[:-2]
    lead_chunks = chunks[:-2]
    ranges = [range(0, n, c) for n, c in zip(lead_shape, lead_chunks, strict=True)]
    for starts in itertools.product(*ranges):
        box = tuple(
            slice(a, min(a + c, n)) for a, c, n in zip(starts, lead_chunks, lead_shape, strict=True)
        )
        planes = [
            int(np.ravel_multi_index(idx, lead_shape))
            for idx in itertools.product(*(range(s.start, s.stop) for s in box))
        ]
        block = src.read_planes(planes).reshape(*(s.stop - s.start for s in box), *shape[-2:])
        dst[box] = block


def _image_axes(axes, tiff_axes: str, shape) -> tuple[str, ...]:
    """OME axis names: given, else the TIFF's when all are known, else the last of t, z, y, x."""
    if axes is not None:
        axes = tuple(axes)
        if len(axes) != len(shape) or len(set(axes)) != len(axes):
            raise InputError(
                f"axes {axes} must name each of the {len(shape)} axes of the data {shape} once."
            )
        return axes
    # TIFF axis codes: I (image sequence) is taken as z; Q (unknown) is not guessed, but the
    # one leading axis of a plain stack of planes (tifffile's "QYX") is taken as time.
    codes = tiff_axes.lower().replace("i", "z").replace("s", "c")
    if len(codes) == len(shape) and set(codes) <= set("tczyx"):
        return tuple(codes)
    if codes == "qyx":
        return ("t", "y", "x")
    try:
        return default_axes(len(shape))
    except ValueError:
        raise InputError(
            f"cannot guess the axis names of {len(shape)}-D data {shape}: pass axes=."
        ) from None


@output_scope()
def tiff_to_zarr(
    source,
    output,
    *,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | int | None = None,
    ome: bool = True,
    axes: Sequence[str] | None = None,
    overwrite: bool = False,
    pyramid: bool | int = True,
) -> zarr.Array:
    """Convert a TIFF stack to a chunked zarr v3 array (OME-Zarr image by default).

    Parameters
    ----------
    source : str, os.PathLike or sequence of paths
        A (multi-page) TIFF file, a folder of single-plane images (TIFF, or PNG/JPEG/... with
        ``imageio`` installed) in natural order (``2.tif`` before ``10.tif``, see
        :func:`natural_sort`), or a list of single-plane image paths in order.
    output : str or os.PathLike
        Path of the zarr output. With ``ome=True`` it is an OME-Zarr group holding the image as
        array ``"0"``; otherwise a plain array.
    chunks : sequence of int, optional
        Chunk shape. Default: at most about 8 MiB per chunk; a series of planes (``t`` or
        ``c`` before two spatial axes, as a plain stack is) one plane deep, ``(1, Y, X)`` for
        planes up to 8 MiB (2048² ``uint16``), larger ones cut into squares of that size; a
        volume (three spatial axes) in near-cubic chunks over its last three axes.
    shards : int or sequence of int, optional
        Shard shape, a multiple of ``chunks`` (one file per shard instead of per chunk; e.g.
        ``(100, 512, 512)`` for a series of 512² frames chunked ``(1, 512, 512)``). Default
        unsharded. Planes are copied one shard-deep slab at a time.
    ome : bool
        Write an OME-Zarr (NGFF 0.5) multiscale group rather than a bare array.
    axes : sequence of str, optional
        OME axis names (e.g. ``("z", "y", "x")`` for a z-stack); default from the TIFF's axes
        when they are all known (T, C, Z, Y, X; ImageJ's and OME-TIFF's metadata; a folder or
        list of planes is z, y, x); a plain stack of planes without metadata (tifffile's
        generic leading axis) is labelled t, y, x, a series; anything else the last axes of
        t, z, y, x.
    overwrite : bool
        Replace an existing output.
    pyramid : bool or int
        With ``ome``, add display pyramid levels ``"1"``, ``"2"``, ... (block means of the fine
        spatial axes, see :func:`chunkreg.volume.build_output_pyramid`); an int caps their
        number, False: none. The voxel size recorded is the TIFF's (OME-TIFF ``PhysicalSize``,
        else ImageJ's spacing, resolution and unit).

    Returns
    -------
    zarr.Array
        The written array (level 0 of the OME-Zarr group when ``ome``).

    Notes
    -----
    Memory use is one slab of planes as deep as the chunks along the non-plane axes.
    """
    src = _Source(source)
    try:
        shape, dtype = src.shape, src.dtype
        if ome:
            axes = _image_axes(axes, src.axes, shape)
        if chunks is None:
            try:
                named = axes if ome else _image_axes(axes, src.axes, shape)
            except InputError:
                named = None  # a bare array of unnamed axes: chunked as a volume
            chunks = _default_chunks(shape, dtype.itemsize, axes=named)
        chunks = tuple(chunks)
        if len(chunks) != len(shape):
            raise InputError(
                f"chunks {chunks} must have one entry per axis of the TIFF data {shape}."
            )
        shards = resolve_shards(shards, chunks=chunks, shape=shape)
        if ome:
            signature = {"source": "tiff", "shape": shape, "dtype": dtype.name, "chunks": chunks,
                         **({"shards": shards} if shards else {})}  # fmt: skip
            group = open_output_group(output, signature=signature, overwrite=overwrite, kind="tiff",
                                      inputs={"source": source})  # fmt: skip
            array = create_array(
                group,
                name="0",
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                shards=shards,
                overwrite=True,
                dimension_names=axes,
            )
        else:
            check_no_overlap(output, {"source": source})
            array = create_array(
                output, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                overwrite=overwrite,
            )  # fmt: skip
        _copy(src, array)
        if ome:
            space = _tiff_space(src, axes)
            write_space(group, ["0"], space)
            if pyramid:  # display levels, built here (no cluster: conversion runs in-process)
                from ..execution import SYNCHRONOUS
                from ..volume._pyramid import build_output_pyramid

                build_output_pyramid(group, "0", space, client=SYNCHRONOUS, levels=pyramid,
                                     progress=False).raise_if_failed()  # fmt: skip
        return array
    finally:
        src.close()


@output_scope()
def tiles_to_zarr(
    paths: Sequence,
    output,
    *,
    names: Sequence[str] | None = None,
    chunks=None,
    overwrite: bool = False,
) -> zarr.Group:
    """Copy a set of mosaic tiles (one TIFF each) into arrays of one zarr group.

    Parameters
    ----------
    paths : sequence of path
        One TIFF per tile.
    output : str or os.PathLike
        Zarr group to create.
    names : sequence of str, optional
        Array name per tile; default the file stems.
    chunks : sequence of int, optional
        Chunk shape of every tile array; default whole tiles up to about 8 MiB.
    overwrite : bool
        Replace an existing output.

    Returns
    -------
    zarr.Group
    """
    paths = [os.fspath(p) for p in paths]
    names = list(names) if names is not None else [Path(p).stem for p in paths]
    if len(names) != len(paths) or len(set(names)) != len(names):
        raise InputError("names must be unique, one per tile path.")
    sources = [_Source(p) for p in paths]
    try:
        if len({len(s.shape) for s in sources}) != 1 or len({s.dtype for s in sources}) != 1:
            raise InputError("tiles must share ndim and dtype.")
        if Path(output).exists() and not overwrite:
            raise InputError(
                f"output {os.fspath(output)!r} exists; pass overwrite=True to replace it."
            )
        signature = {
            "source": "tiff tiles",
            "names": names,
            "shapes": [s.shape for s in sources],
            "dtype": sources[0].dtype.name,
            "chunks": None if chunks is None else list(chunks),
        }
        group = open_output_group(output, signature=signature, overwrite=overwrite,
                                  kind="tiff tiles", inputs={"tiles": paths})  # fmt: skip
        for name, src in zip(names, sources, strict=True):
            c = (
                tuple(chunks)
                if chunks is not None
                else _default_chunks(src.shape, src.dtype.itemsize)
            )
            array = create_array(group, name=name, shape=src.shape, dtype=src.dtype, chunks=c)
            _copy(src, array)
        return group
    finally:
        for s in sources:
            s.close()
