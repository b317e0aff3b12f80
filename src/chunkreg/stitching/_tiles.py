"""Find and check the zarr arrays a layout names (metadata only, no pixels read)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import zarr

from ..errors import InputError
from ..io import array_ref, open_array
from ._layout import Layout

__all__ = ["resolve_tiles"]


def resolve_tiles(tiles, layout: Layout):
    """Open every tile of ``layout`` read-only and check they can form one mosaic.

    Parameters
    ----------
    tiles : None, str, os.PathLike, zarr.Group, mapping or sequence
        ``None``: the layout's ``paths`` (relative to its file). A group (or path to one):
        arrays looked up by the layout's names, else paths. A mapping: name -> array or path.
        A sequence: one array or path per layout entry, in layout order. In a group a tile
        is looked up by its name first, then by its path.
    layout : Layout

    Returns
    -------
    refs : list of ArrayRef
        Picklable handles, in layout order.
    shapes : ndarray of int, shape (n_tiles, ndim)
        The tiles' spatial shapes.
    dtype : numpy.dtype
        The tiles' common dtype.
    channels : tuple of int or None
        ``(axis, count)`` for multi-channel tiles: one axis more than the layout's, named
        ``c`` in their OME-Zarr axes or zarr ``dimension_names`` (or the first axis of plain
        arrays); None for single-channel tiles.

    Raises
    ------
    InputError
        A tile is missing, or the tiles differ in ndim, dtype or channels from each other or
        the layout.
    """
    n = len(layout)
    arrays: list = [None] * n
    missing: list[str] = []
    if tiles is None:
        if layout.paths is None or any(p is None for p in layout.paths):
            raise InputError(
                "the layout does not give a path for every tile; add a 'path' per tile or pass "
                "the tiles (a zarr group or a list of arrays)."
            )
        for k, p in enumerate(layout.paths):
            full = (
                p
                if ("://" in p or os.path.isabs(p) or layout.base_dir is None)
                else os.path.join(layout.base_dir, p)
            )
            arrays[k] = _open_or_none(full, layout.names[k], missing)
    elif isinstance(tiles, (str, os.PathLike, zarr.Group)):
        group = _open_group(tiles)
        paths = layout.paths or [None] * n
        for k, (name, path) in enumerate(zip(layout.names, paths, strict=True)):
            node = _member(group, name, path)
            if node is None:
                missing.append(name if path is None else f"{name} (path {path})")
            else:
                arrays[k] = node
    elif isinstance(tiles, Mapping):
        for k, name in enumerate(layout.names):
            if name not in tiles:
                missing.append(name)
            else:
                arrays[k] = open_array(tiles[name], name=f"tile {name!r}")
    elif isinstance(tiles, Sequence):
        if len(tiles) != n:
            raise InputError(
                f"{len(tiles)} tiles given for a layout of {n}; give one array per layout entry."
            )
        for k, source in enumerate(tiles):
            arrays[k] = _open_or_none(source, layout.names[k], missing)
    else:
        raise InputError(
            "tiles must be a zarr group (or its path), a mapping name -> array, a list of arrays "
            f"or paths, or None (paths from the layout); got {type(tiles).__name__}."
        )
    if missing:
        listed = ", ".join(repr(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise InputError(
            f"{len(missing)} tile(s) named in the layout were not found: {listed}. Check the "
            "names/paths in the layout file."
        )
    return _check(arrays, layout)


def _member(group: zarr.Group, name: str, path: str | None) -> zarr.Array | None:
    """The tile array ``name`` of ``group``: by its name first (a layout written by chunkreg
    names the tiles as in the group), else by its path inside the group."""
    for key in (name,) if path is None else (name, path):
        try:
            node = group[key]
        except (KeyError, ValueError):
            continue
        if isinstance(node, zarr.Array):
            return node
    return None


def _open_or_none(source, name, missing):
    local = isinstance(source, (str, os.PathLike)) and "://" not in os.fspath(source)
    if local and not os.path.exists(source):
        missing.append(name)
        return None
    return open_array(source, name=f"tile {name!r}")


def _open_group(tiles) -> zarr.Group:
    if isinstance(tiles, zarr.Group):
        return tiles
    path = os.fspath(tiles)
    if "://" not in path and not os.path.exists(path):
        raise InputError(f"tiles: {path!r} does not exist.")
    try:
        node = zarr.open(path, mode="r")
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise InputError(f"tiles: {path!r} is not a zarr group ({exc}).") from exc
    if not isinstance(node, zarr.Group):
        raise InputError(f"tiles: {path!r} is a zarr array; give the group that holds the tiles.")
    return node


def _channels(arrays: list, layout: Layout):
    """``(axis, count)`` of multi-channel tiles (one axis more than the layout), or None."""
    from ..io import channel_axis

    if {a.ndim for a in arrays} != {layout.ndim + 1}:
        return None
    axes = {channel_axis(a, spatial_ndim=layout.ndim) for a in arrays}
    counts = {a.shape[next(iter(axes))] for a in arrays} if len(axes) == 1 else set()
    if None in axes or len(axes) != 1 or len(counts) != 1:
        found = sorted({(str(ax), tuple(a.shape)) for ax, a in zip(
            (channel_axis(a, spatial_ndim=layout.ndim) for a in arrays), arrays, strict=True)})[:5]  # fmt: skip
        raise InputError(
            f"the tiles have one axis more than the layout's {layout.ndim}, but not one channel "
            f"axis ('c', or the first of plain arrays) of one length in all of them: (channel "
            f"axis, shape) {found}."
        )
    return next(iter(axes)), int(next(iter(counts)))


def _check(arrays: list, layout: Layout):
    channels = _channels(arrays, layout)
    ndims = {a.ndim for a in arrays}
    if channels is None and ndims != {layout.ndim}:
        odd = [layout.names[k] for k, a in enumerate(arrays) if a.ndim != layout.ndim][:5]
        raise InputError(
            f"every tile must have {layout.ndim} dimensions like the layout positions; tiles "
            f"{odd} have {sorted(ndims - {layout.ndim})}. Tiles may have one channel axis more "
            "(named 'c', or first); time points must be stitched one at a time."
        )
    dtypes = [np.dtype(a.dtype) for a in arrays]
    if len(set(dtypes)) != 1:
        odd = [(layout.names[k], str(d)) for k, d in enumerate(dtypes) if d != dtypes[0]][:5]
        raise InputError(
            f"all tiles must share one dtype; the first is {dtypes[0]} but {odd} differ. "
            "Convert them to a common dtype first."
        )
    dtype = dtypes[0]
    if dtype.kind not in "iuf":
        raise InputError(f"tiles must be integer or real floating point, got dtype {dtype}.")
    shapes = np.array([a.shape for a in arrays], dtype=np.int64)
    if channels is not None:
        shapes = np.delete(shapes, channels[0], axis=1)
    if (shapes < 1).any():
        raise InputError("tiles must not be empty.")
    return [array_ref(a) for a in arrays], shapes, dtype, channels
