"""OME-Zarr (NGFF) multiscale metadata: read both 0.4 and 0.5 layouts, write 0.5."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import zarr
from zarr.core.sync import sync

__all__ = ["default_axes", "multiscale_dataset_paths", "write_ome_multiscale_metadata"]

OME_VERSION = "0.5"

_DEFAULT_AXIS_NAMES = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x"), 4: ("t", "z", "y", "x")}


def default_axes(ndim: int, names: Sequence[str | None] | None = None) -> tuple[str, ...]:
    """Axis names of an image: ``names`` where every axis has one, else the last of t, z, y, x.

    Parameters
    ----------
    ndim : int
        Number of axes (1 to 4 without ``names``).
    names : sequence of str or None, optional
        Names already known, e.g. an input array's ``dimension_names``.

    Returns
    -------
    tuple of str
    """
    if names is not None and len(names) == ndim and all(names):
        return tuple(names)
    if ndim not in _DEFAULT_AXIS_NAMES:
        raise ValueError(f"give axis names for a {ndim}-D image")
    return _DEFAULT_AXIS_NAMES[ndim]


def _require_dimension_names(array: zarr.Array, axes: tuple[str, ...]) -> None:
    """OME-Zarr 0.5 requires each level's zarr ``dimension_names`` to be the axis names.

    Arrays created without them (plain zarr inputs, levels made elsewhere) get them recorded in
    their metadata; names that contradict ``axes`` are an error.
    """
    found = array.metadata.dimension_names
    if found is not None and tuple(found) == axes:
        return
    if found is not None and any(found):
        raise ValueError(
            f"level array {array.path!r} has dimension_names {tuple(found)}, but the image axes "
            f"are {axes}"
        )
    # zarr has no public call to change an array's metadata in place: save the replaced
    # metadata document through the array's own writer.
    metadata = dataclasses.replace(array.metadata, dimension_names=axes)
    sync(array._async_array._save_metadata(metadata))


def _multiscales(attrs: dict) -> list:
    if isinstance(attrs.get("ome"), dict) and "multiscales" in attrs["ome"]:
        return attrs["ome"]["multiscales"]  # NGFF 0.5 (zarr v3)
    return attrs.get("multiscales", [])  # NGFF <= 0.4


def multiscale_dataset_paths(attrs: dict) -> list[str]:
    """Return the dataset paths of the first multiscale image, finest first ([] if none).

    Parameters
    ----------
    attrs : dict
        Group attributes, NGFF 0.4 (``multiscales``) or 0.5 (``ome.multiscales``).

    Returns
    -------
    list of str
    """
    ms = _multiscales(attrs)
    if not ms:
        return []
    return [d["path"] for d in ms[0].get("datasets", [])]


def _axis(name: str, unit: str | None) -> dict:
    if name == "t":
        kind = "time"
    elif name in ("c", "component"):
        kind = "channel"
    else:
        kind = "space"
    axis = {"name": name, "type": kind}
    if unit and kind != "channel":
        axis["unit"] = unit
    return axis


def write_ome_multiscale_metadata(
    group: zarr.Group,
    *,
    paths: Sequence[str],
    axes: Sequence[str] | None = None,
    scales: Sequence[Sequence[float]] | None = None,
    translations: Sequence[Sequence[float]] | None = None,
    units: dict[str, str] | None = None,
    name: str | None = None,
) -> None:
    """Write NGFF 0.5 ``multiscales`` metadata so napari and neuroglancer open ``group``.

    Parameters
    ----------
    group : zarr.Group
        Group holding the level arrays.
    paths : sequence of str
        Level array paths inside ``group``, finest first.
    axes : sequence of str, optional
        Axis names, e.g. ``("t", "y", "x")``; defaults to the last ``ndim`` of ``t, z, y, x``.
        They are also the level arrays' zarr ``dimension_names`` (recorded where missing).
    scales : sequence of sequence of float, optional
        Per-level voxel size per axis; default 1 at level 0 and 2**level for spatial axes.
    translations : sequence of sequence of float, optional
        Per-level offset per axis; omitted when None.
    units : dict, optional
        Unit per axis name (e.g. ``{"x": "micrometer"}``).
    name : str, optional
        Image name.
    """
    first = group[paths[0]]
    ndim = first.ndim
    axes = default_axes(ndim) if axes is None else tuple(axes)
    if len(axes) != ndim:
        raise ValueError(f"{len(axes)} axis names for a {ndim}-D image")
    for path in paths:
        _require_dimension_names(group[path], axes)
    units = units or {}
    datasets = []
    for level, path in enumerate(paths):
        if scales is None:
            scale = [1.0 if a in ("t", "c", "component") else float(2**level) for a in axes]
        else:
            scale = [float(s) for s in scales[level]]
        transforms = [{"type": "scale", "scale": scale}]
        if translations is not None:
            transforms.append(
                {"type": "translation", "translation": [float(t) for t in translations[level]]}
            )
        datasets.append({"path": path, "coordinateTransformations": transforms})
    multiscale = {
        "axes": [_axis(a, units.get(a)) for a in axes],
        "datasets": datasets,
    }
    if name:
        multiscale["name"] = name
    ome = dict(group.attrs.get("ome", {}))
    ome.update({"version": OME_VERSION, "multiscales": [multiscale]})
    group.attrs["ome"] = ome
