"""Tile layouts: nominal tile positions from a file or a regular grid (pure, no I/O of pixels).

A layout names each tile and gives the position of its first pixel (index 0 along every
axis) in mosaic pixel coordinates, in array axis order (``z, y, x`` for 3-D, ``y, x`` for
2-D). Positions may be fractional.
"""

from __future__ import annotations

import csv
import itertools
import json
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError

__all__ = [
    "Layout",
    "overlapping_pairs",
    "read_layout",
    "regular_grid",
    "write_layout",
]

_AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}
_ORDERS = ("row-major", "column-major")


@dataclass(frozen=True)
class Layout:
    """Nominal placement of the tiles of a mosaic.

    Parameters
    ----------
    names : sequence of str
        Unique tile names, in acquisition order.
    positions : array_like, shape (n_tiles, ndim)
        Mosaic coordinates (pixels, array axis order) of each tile's first pixel.
    paths : sequence of str or None, optional
        Where each tile is stored (zarr array path or, relative to ``base_dir``, a path);
        ``None`` entries mean "look the name up in the tiles container".
    base_dir : str, optional
        Directory that relative ``paths`` are resolved against (the layout file's folder).
    """

    names: tuple[str, ...]
    positions: np.ndarray
    paths: tuple[str | None, ...] | None = None
    base_dir: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        pos = np.array(self.positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] not in (2, 3):
            raise InputError(
                f"layout positions must have shape (n_tiles, 2) or (n_tiles, 3), got {pos.shape}."
            )
        if len(names) != pos.shape[0]:
            raise InputError(
                f"layout has {len(names)} tile names but {pos.shape[0]} positions; "
                "give one position per tile."
            )
        if len(names) == 0:
            raise InputError("layout has no tiles.")
        if not np.isfinite(pos).all():
            bad = [names[i] for i in np.flatnonzero(~np.isfinite(pos).all(axis=1))[:5]]
            raise InputError(f"layout positions must be finite; tiles {bad} are not.")
        dupes = (
            sorted({n for n in names if names.count(n) > 1}) if len(set(names)) < len(names) else []
        )
        if dupes:
            raise InputError(f"layout tile names must be unique; repeated: {dupes[:5]}.")
        paths = None
        if self.paths is not None:
            paths = tuple(None if p is None else str(p) for p in self.paths)
            if len(paths) != len(names):
                raise InputError(
                    f"layout has {len(names)} tiles but {len(paths)} paths; give one per tile."
                )
        pos.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "paths", paths)

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return int(self.positions.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def with_positions(self, positions) -> Layout:
        """Return a copy of this layout with other positions (same tiles and paths)."""
        return Layout(self.names, positions, self.paths, self.base_dir)


def regular_grid(
    grid_shape: Sequence[int],
    tile_shape: Sequence[int],
    *,
    overlap: float | Sequence[float] = 0.1,
    order: str = "row-major",
    snake: bool = False,
    names: Sequence[str] | None = None,
) -> Layout:
    """Nominal positions of tiles acquired on a regular grid.

    Parameters
    ----------
    grid_shape : sequence of int
        Number of tiles along each axis: ``(rows, columns)`` or ``(planes, rows, columns)``.
    tile_shape : sequence of int
        Shape of one tile, same axis order.
    overlap : float or sequence of float
        Fraction of a tile shared with its neighbour along each axis, in [0, 1).
    order : {"row-major", "column-major"}
        Acquisition order: "row-major" acquires a whole row (columns changing fastest) before
        the next; "column-major" a whole column (rows changing fastest). Planes always change
        slowest.
    snake : bool
        If true, every other row (or column) is acquired in reverse (serpentine scan).
    names : sequence of str, optional
        Tile names in acquisition order; default ``"0"``, ``"1"``, ...

    Returns
    -------
    Layout
        Tiles in acquisition order; tile ``k`` has position ``index * tile_shape * (1 - overlap)``.

    Examples
    --------
    >>> lay = regular_grid((2, 3), (100, 100), overlap=0.1, snake=True)
    >>> lay.positions[:4].tolist()
    [[0.0, 0.0], [0.0, 90.0], [0.0, 180.0], [90.0, 180.0]]
    """
    grid = _int_tuple(grid_shape, "grid_shape", minimum=1)
    ndim = len(grid)
    if ndim not in (2, 3):
        raise InputError(f"grid_shape must have 2 or 3 entries, got {grid}.")
    tshape = _int_tuple(tile_shape, "tile_shape", minimum=1)
    if len(tshape) != ndim:
        raise InputError(f"tile_shape {tshape} must have as many axes as grid_shape {grid}.")
    ov = (
        np.broadcast_to(np.asarray(overlap, dtype=np.float64), (ndim,))
        if np.ndim(overlap) == 0
        else np.asarray(overlap, dtype=np.float64)
    )
    if ov.shape != (ndim,) or not ((ov >= 0) & (ov < 1)).all():
        raise InputError(
            f"overlap must be one fraction in [0, 1) or one per axis, got {overlap!r}."
        )
    if order not in _ORDERS:
        raise InputError(f"order must be one of {_ORDERS}, got {order!r}.")
    rows, cols = grid[-2], grid[-1]
    index = []
    for plane in range(grid[0] if ndim == 3 else 1):
        outer, inner = (rows, cols) if order == "row-major" else (cols, rows)
        for o in range(outer):
            seq = range(inner - 1, -1, -1) if snake and o % 2 else range(inner)
            for i in seq:
                r, c = (o, i) if order == "row-major" else (i, o)
                index.append((plane, r, c) if ndim == 3 else (r, c))
    index = np.array(index, dtype=np.float64)
    positions = index * np.asarray(tshape) * (1.0 - ov)
    if names is None:
        names = [str(k) for k in range(len(index))]
    elif len(names) != len(index):
        raise InputError(f"names has {len(names)} entries but the grid has {len(index)} tiles.")
    return Layout(tuple(names), positions)


def overlapping_pairs(positions, shapes, *, adjacent: bool = False) -> np.ndarray:
    """Pairs of tiles whose boxes overlap (by more than zero pixels along every axis).

    Parameters
    ----------
    positions : array_like, shape (n_tiles, ndim)
        First-pixel coordinates of each tile.
    shapes : array_like, shape (n_tiles, ndim) or (ndim,)
        Tile shapes.
    adjacent : bool
        Keep only side-by-side neighbours: pairs whose overlap spans at least half of the
        smaller tile along all axes but one. Diagonal neighbours of a grid, which share only
        a corner (or, in 3-D, an edge), are left out: their small overlaps give unreliable
        offsets.

    Returns
    -------
    ndarray of int, shape (n_pairs, 2)
        Pairs ``(i, j)`` with ``i < j``, sorted lexicographically.

    Notes
    -----
    Candidates come from a k-d tree on tile centres (Chebyshev distance, each axis scaled by
    the largest tile extent), then the exact box test: O(n log n) for n tiles.

    Examples
    --------
    >>> overlapping_pairs([[0, 0], [0, 90], [90, 90], [500, 0]], (100, 100)).tolist()
    [[0, 1], [0, 2], [1, 2]]
    >>> overlapping_pairs([[0, 0], [0, 90], [90, 90]], (100, 100), adjacent=True).tolist()
    [[0, 1], [1, 2]]
    """
    pos = np.asarray(positions, dtype=np.float64)
    shp = np.broadcast_to(np.asarray(shapes, dtype=np.float64), pos.shape)
    if len(pos) < 2:
        return np.empty((0, 2), dtype=np.int64)
    scale = shp.max(axis=0)
    centres = (pos + shp / 2) / scale
    pairs = cKDTree(centres).query_pairs(1.0, p=np.inf, output_type="ndarray")
    if len(pairs) == 0:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.sort(pairs, axis=1)
    i, j = pairs[:, 0], pairs[:, 1]
    lo = np.maximum(pos[i], pos[j])
    hi = np.minimum(pos[i] + shp[i], pos[j] + shp[j])
    extent = hi - lo
    keep = (extent > 0).all(axis=1)
    if adjacent:
        wide = extent >= 0.5 * np.minimum(shp[i], shp[j])
        keep &= wide.sum(axis=1) >= pos.shape[1] - 1
    pairs = pairs[keep]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order].astype(np.int64)


# --------------------------------------------------------------------------- files


def read_layout(path, *, tile_shape: Sequence[int] | None = None) -> Layout:
    """Read a layout from a JSON or CSV file.

    Parameters
    ----------
    path : str or path-like
        ``*.json`` or ``*.csv``. JSON holds either explicit positions::

            {"axes": ["y", "x"],
             "tiles": [{"name": "t0", "path": "tiles.zarr/t0", "position": [0, 0]}, ...]}

        or a regular grid (see :func:`regular_grid`)::

            {"grid": {"shape": [5, 5], "overlap": 0.1, "order": "column-major",
                      "snake": false, "tile_shape": [183, 245]},
             "tiles": [{"name": "p01", "path": "tiles/p01.zarr"}, ...]}

        A CSV file has a header with a ``name`` column, an optional ``path`` column and one
        column per axis named ``y, x`` or ``z, y, x``. Relative paths are resolved against the
        file's directory.
    tile_shape : sequence of int, optional
        Tile shape for a grid file that does not state ``tile_shape``.

    Returns
    -------
    Layout
    """
    spec = _read_spec(path)
    if spec.get("grid") is not None:
        return _grid_from_spec(spec, tile_shape)
    return Layout(spec["names"], spec["positions"], spec["paths"], spec["base_dir"])


def _read_spec(path) -> dict:
    """Parse a layout file into names, paths and either positions or a grid description."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"layout file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    base_dir = str(path.resolve().parent)
    if suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read layout file {str(path)!r} as JSON: {exc}") from exc
        return _spec_from_json(doc, path, base_dir)
    if suffix == ".csv":
        return _spec_from_csv(path, base_dir)
    raise InputError(f"layout file must end in .json or .csv, got {str(path)!r}.")


def _spec_from_json(doc, path, base_dir) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("tiles"), list):
        raise InputError(f"layout file {str(path)!r} must be a JSON object with a 'tiles' list.")
    names, paths, positions = [], [], []
    for k, entry in enumerate(doc["tiles"]):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or ("name" not in entry and "path" not in entry):
            raise InputError(
                f"tile {k} of {str(path)!r} must be an object with a 'name' or 'path', got {entry!r}."
            )
        names.append(str(entry.get("name", entry.get("path"))))
        paths.append(entry.get("path"))
        positions.append(entry.get("position"))
    spec = {"names": names, "paths": paths if any(p is not None for p in paths) else None}
    spec["base_dir"] = base_dir
    if "grid" in doc:
        spec["grid"] = doc["grid"]
        return spec
    missing = [names[k] for k, p in enumerate(positions) if p is None]
    if missing:
        raise InputError(
            f"layout file {str(path)!r} gives no 'position' for tiles {missing[:5]}; give one per "
            "tile or describe a regular 'grid'."
        )
    spec["positions"] = _positions_array(positions, path)
    return spec


def _spec_from_csv(path, base_dir) -> dict:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read layout file {str(path)!r} as CSV: {exc}") from exc
    if not rows:
        raise InputError(f"layout file {str(path)!r} has no tile rows.")
    header = list(rows[0])
    axes = ("z", "y", "x") if "z" in header else ("y", "x")
    need = ["name", *axes]
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(
            f"layout file {str(path)!r} lacks columns {missing}; it needs 'name', optionally "
            "'path', and 'y', 'x' (or 'z', 'y', 'x')."
        )
    names = [r["name"] for r in rows]
    paths = [r.get("path") or None for r in rows] if "path" in header else None
    try:
        positions = [[float(r[a]) for a in axes] for r in rows]
    except (TypeError, ValueError) as exc:
        raise InputError(f"layout file {str(path)!r} has a non-numeric position: {exc}") from exc
    return {"names": names, "paths": paths, "positions": np.array(positions), "base_dir": base_dir}


def _positions_array(positions, path) -> np.ndarray:
    try:
        arr = np.array(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"layout file {str(path)!r}: every position must be a list of 2 or 3 numbers ({exc})."
        ) from exc
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise InputError(
            f"layout file {str(path)!r}: every position must be a list of 2 or 3 numbers, got "
            f"an array of shape {arr.shape}."
        )
    return arr


def _grid_from_spec(spec: dict, tile_shape) -> Layout:
    grid = spec["grid"]
    if not isinstance(grid, dict) or "shape" not in grid:
        raise InputError("a layout 'grid' must be an object with at least a 'shape'.")
    shape = grid.get("tile_shape", tile_shape)
    if shape is None:
        raise InputError(
            "the layout grid gives no 'tile_shape'; add it to the file or pass tile_shape."
        )
    lay = regular_grid(
        grid["shape"],
        shape,
        overlap=grid.get("overlap", 0.1),
        order=grid.get("order", "row-major"),
        snake=bool(grid.get("snake", False)),
        names=spec["names"],
    )
    return Layout(lay.names, lay.positions, spec["paths"], spec["base_dir"])


def refuse_coincident_tiles(layout: Layout, tolerance: float = 0.5) -> None:
    """Refuse a layout that puts two tiles at the same position (within ``tolerance`` pixels
    along every axis): one of them would be misplaced and leave a hole in the mosaic.

    Raises
    ------
    InputError
        Naming the first such pair and how many there are.
    """
    pos = np.asarray(layout.positions)
    order = np.lexsort(pos.T[::-1])
    coincident = []
    for a, b in itertools.pairwise(order):
        if np.all(np.abs(pos[a] - pos[b]) < tolerance):
            coincident.append((min(a, b), max(a, b)))
    if not coincident:
        return
    a, b = coincident[0]
    where = ", ".join(f"{v:g}" for v in pos[a])
    more = f" ({len(coincident)} such pairs)" if len(coincident) > 1 else ""
    raise InputError(
        f"tiles {layout.names[a]!r} and {layout.names[b]!r} are at the same position "
        f"({where}) in the layout{more}; each tile must have its own place: remove the "
        "duplicate entry or correct its position."
    )


def write_layout(layout: Layout, path) -> None:
    """Write ``layout`` as JSON or CSV (by suffix); :func:`read_layout` reads it back.

    Relative tile paths are written as given; absolute ones stay absolute.

    Parameters
    ----------
    layout : Layout
        Tile names (or paths) and positions.
    path : str or os.PathLike
        Output file; ``.json`` or ``.csv``.
    """
    path = Path(path)
    axes = _AXIS_NAMES[layout.ndim]
    paths = layout.paths or (None,) * len(layout)
    if layout.base_dir is not None:
        paths = tuple(
            None if p is None else _relocate(p, layout.base_dir, path.resolve().parent)
            for p in paths
        )
    suffix = path.suffix.lower()
    if suffix == ".json":
        tiles = []
        for name, p, pos in zip(layout.names, paths, layout.positions, strict=True):
            entry = {"name": name, "position": [float(v) for v in pos]}
            if p is not None:
                entry["path"] = p
            tiles.append(entry)
        path.write_text(json.dumps({"axes": list(axes), "tiles": tiles}, indent=1) + "\n")
    elif suffix == ".csv":
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            has_paths = any(p is not None for p in paths)
            writer.writerow(["name", *(["path"] if has_paths else []), *axes])
            for name, p, pos in zip(layout.names, paths, layout.positions, strict=True):
                extra = [p or ""] if has_paths else []
                writer.writerow([name, *extra, *(repr(float(v)) for v in pos)])
    else:
        raise InputError(f"layout file must end in .json or .csv, got {str(path)!r}.")


def _relocate(p: str, base_dir: str, new_dir: Path) -> str:
    """Express a path relative to ``base_dir`` as one relative to ``new_dir`` (if local)."""
    if "://" in p or os.path.isabs(p):
        return p
    absolute = os.path.normpath(os.path.join(base_dir, p))
    try:
        return os.path.relpath(absolute, new_dir)
    except ValueError:  # different drives on Windows
        return absolute


def _int_tuple(value, name: str, *, minimum: int) -> tuple[int, ...]:
    try:
        values = tuple(value)
    except TypeError:
        raise InputError(f"{name} must be a sequence of integers, got {value!r}.") from None
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
            raise InputError(f"{name} entries must be integers >= {minimum}, got {value!r}.")
    return tuple(int(v) for v in values)
