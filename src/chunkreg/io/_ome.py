"""OME-Zarr (NGFF) multiscale metadata: read both 0.4 and 0.5 layouts, write 0.5."""

from __future__ import annotations

from collections.abc import Sequence

import zarr

__all__ = ["multiscale_dataset_paths", "write_ome_multiscale_metadata"]

OME_VERSION = "0.5"

_DEFAULT_AXIS_NAMES = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x"), 4: ("t", "z", "y", "x")}


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
    if axes is None:
        if ndim not in _DEFAULT_AXIS_NAMES:
            raise ValueError(f"give axis names for a {ndim}-D image")
        axes = _DEFAULT_AXIS_NAMES[ndim]
    if len(axes) != ndim:
        raise ValueError(f"{len(axes)} axis names for a {ndim}-D image")
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
