"""Physical space of an image: axis names, voxel size, offset and units, read and written once.

Every workflow reads its input's :class:`Space` with :func:`read_space` and records its output's
with :func:`write_space`, so scale, translation and units travel from an OME-Zarr (or converted
TIFF) input to every image output. Computations stay in voxels; the space only labels them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
import zarr.storage

from ._ome import _multiscales, default_axes, write_ome_multiscale_metadata

__all__ = ["Space", "output_space", "read_space", "recorded_space", "write_space"]

NON_SPATIAL = ("t", "c", "component")

# Unit spellings found in ImageJ and OME-TIFF headers, to OME-Zarr (UDUNITS-2) names.
_UNIT_ALIASES = {
    "nm": "nanometer",
    "nanometer": "nanometer",
    "nanometers": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",
    "\u03bcm": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometer": "micrometer",
    "micrometers": "micrometer",
    "mm": "millimeter",
    "millimeter": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "meter": "meter",
    "a": "angstrom",
    "å": "angstrom",
    "angstrom": "angstrom",
    "s": "second",
    "sec": "second",
    "second": "second",
    "ms": "millisecond",
    "millisecond": "millisecond",
    "min": "minute",
    "minute": "minute",
    "h": "hour",
    "hour": "hour",
}


def ome_unit(unit: str | None) -> str | None:
    """OME-Zarr name of a unit as headers spell it (``"µm"`` -> ``"micrometer"``), or None."""
    if not unit:
        return None
    return _UNIT_ALIASES.get(str(unit).strip().lower().replace("\\u00b5", "µ"))


@dataclasses.dataclass(frozen=True)
class Space:
    """Where an image's voxels lie: ``position = translation + scale * index`` per axis.

    Attributes
    ----------
    axes : tuple of str
        Axis names (``t``, ``c``, ``z``, ``y``, ``x``, ...).
    scale : tuple of float
        Voxel size per axis (1 where unknown).
    translation : tuple of float
        Position of voxel 0's centre per axis.
    units : dict
        Unit per axis name (e.g. ``{"x": "nanometer"}``); axes without one are absent.
    """

    axes: tuple[str, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    units: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def voxels(cls, axes: Sequence[str]) -> Space:
        """The space of an image without physical metadata: unit voxels at the origin."""
        axes = tuple(axes)
        return cls(axes, (1.0,) * len(axes), (0.0,) * len(axes), {})

    @property
    def ndim(self) -> int:
        return len(self.axes)

    def renamed(self, axes: Sequence[str]) -> Space:
        """The same space with other axis names (units follow their axes by position)."""
        axes = tuple(axes)
        if len(axes) != self.ndim:
            raise ValueError(f"{len(axes)} axis names for a {self.ndim}-D space")
        units = {a: self.units[b] for a, b in zip(axes, self.axes, strict=True) if b in self.units}
        return Space(axes, self.scale, self.translation, units)

    def last(self, n: int) -> Space:
        """The space of the last ``n`` axes (e.g. the spatial axes of a time series)."""
        axes = self.axes[len(self.axes) - n :]
        return Space(
            axes,
            self.scale[len(self.axes) - n :],
            self.translation[len(self.axes) - n :],
            {a: u for a, u in self.units.items() if a in axes},
        )

    def with_leading(self, axes: Sequence[str], scale: Sequence[float] | None = None) -> Space:
        """This space with axes put in front (scale 1 unless given, translation 0)."""
        axes = tuple(axes)
        scale = (1.0,) * len(axes) if scale is None else tuple(float(s) for s in scale)
        return Space((*axes, *self.axes), (*scale, *self.scale),
                     ((0.0,) * len(axes)) + self.translation, dict(self.units))  # fmt: skip

    def shifted(self, offset: Sequence[float]) -> Space:
        """This space with the origin moved by ``offset`` voxels per axis."""
        translation = tuple(
            t + s * float(o) for t, s, o in zip(self.translation, self.scale, offset, strict=True)
        )
        return dataclasses.replace(self, translation=translation)

    def downsampled(self, factors: Sequence[int]) -> Space:
        """The space of a level whose voxel is the mean of ``factors`` voxels per axis.

        The coarse voxel's centre lies at the mean of the fine centres it covers, half a coarse
        voxel minus half a fine voxel beyond the fine origin.
        """
        factors = tuple(int(f) for f in factors)
        scale = tuple(s * f for s, f in zip(self.scale, factors, strict=True))
        translation = tuple(
            t + (f - 1) / 2 * s
            for t, s, f in zip(self.translation, self.scale, factors, strict=True)
        )
        return dataclasses.replace(self, scale=scale, translation=translation)

    def to_attrs(self) -> dict:
        """JSON form, for an output's attributes (read back with :meth:`from_attrs`)."""
        return {"axes": list(self.axes), "scale": list(self.scale),
                "translation": list(self.translation), "units": dict(self.units)}  # fmt: skip

    @classmethod
    def from_attrs(cls, attrs: dict) -> Space:
        """The space :meth:`to_attrs` recorded."""
        return cls(tuple(attrs["axes"]), tuple(float(s) for s in attrs["scale"]),
                   tuple(float(t) for t in attrs["translation"]), dict(attrs.get("units", {})))  # fmt: skip

    def voxel_size(self) -> dict:
        """Voxel size per spatial axis: ``{axis: [size, unit or None]}`` (for attributes)."""
        return {
            a: [s, self.units.get(a)]
            for a, s in zip(self.axes, self.scale, strict=True)
            if a not in NON_SPATIAL
        }


def _axis_names(array: zarr.Array) -> tuple[str, ...]:
    names = getattr(array.metadata, "dimension_names", None)
    try:
        return default_axes(array.ndim, names)
    except ValueError:
        return tuple(f"dim_{i}" for i in range(array.ndim))


def _compose(transforms, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scale, translation = np.ones(ndim), np.zeros(ndim)
    for t in transforms or []:
        if t.get("type") == "scale" and "scale" in t:
            s = np.asarray(t["scale"], dtype=float)
            scale, translation = scale * s, translation * s
        elif t.get("type") == "translation" and "translation" in t:
            translation = translation + np.asarray(t["translation"], dtype=float)
    return scale, translation


def _parent_store(store):
    """The store one folder above ``store``'s root and the root's name there, or (None, "")."""
    if isinstance(store, zarr.storage.LocalStore):
        root = Path(store.root)
        return zarr.storage.LocalStore(root.parent, read_only=True), root.name
    if isinstance(store, zarr.storage.FsspecStore):
        parent, _, name = store.path.rstrip("/").rpartition("/")
        if parent and name:
            return zarr.storage.FsspecStore(store.fs, path=parent, read_only=True), name
    return None, ""


def _ome_space(array: zarr.Array) -> Space | None:
    """The space the OME-Zarr group holding ``array`` records for it, or None."""
    path = array.path.strip("/")
    store = array.store
    if not path:
        # opened on its own (``image.ome.zarr/1``): look for the group in the folder above
        store, path = _parent_store(store)
        if store is None:
            return None
    parent, _, key = path.rpartition("/")
    try:
        group = zarr.open_group(store=store, path=parent, mode="r")
        multiscales = _multiscales(group.attrs.asdict())
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError,
            zarr.errors.NodeTypeValidationError):  # fmt: skip
        return None  # no parent group (an array stored on its own): no OME metadata
    for ms in multiscales:
        for dataset in ms.get("datasets", []):
            if str(dataset.get("path")).strip("/") != key:
                continue
            axes_meta = ms.get("axes") or []
            if len(axes_meta) != array.ndim:
                return None
            names = tuple(a["name"] if isinstance(a, dict) else str(a) for a in axes_meta)
            units = {}
            for a in axes_meta:
                unit = a.get("unit") if isinstance(a, dict) else None
                if unit:
                    units[a["name"]] = ome_unit(unit) or unit
            scale, translation = _compose(dataset.get("coordinateTransformations"), array.ndim)
            outer_s, outer_t = _compose(ms.get("coordinateTransformations"), array.ndim)
            return Space(names, tuple((scale * outer_s).tolist()),
                         tuple((translation * outer_s + outer_t).tolist()), units)  # fmt: skip
    return None


def _drop_axes(space: Space, keep: Sequence[int]) -> Space:
    axes = tuple(space.axes[i] for i in keep)
    return Space(axes, tuple(space.scale[i] for i in keep),
                 tuple(space.translation[i] for i in keep),
                 {a: u for a, u in space.units.items() if a in axes})  # fmt: skip


def _is_view(array) -> bool:
    """Whether ``array`` is a :class:`~chunkreg.io.ArrayView` (one channel of a base array).

    Recognised by its base and free axes rather than by class, so that this module need not
    import the views (which read spaces from here).
    """
    return hasattr(array, "base") and hasattr(array, "_free")


def recorded_space(array) -> Space | None:
    """The space an array records: OME-Zarr metadata of its group, else its complete zarr
    ``dimension_names`` (unit voxels); None for a plain array (axis names only guessed).

    A :class:`~chunkreg.io.ArrayView` (one channel) records its base's space without the fixed
    axes.
    """
    if _is_view(array):
        found = recorded_space(array.base)
        return None if found is None else _drop_axes(found, array._free)
    found = _ome_space(array)
    if found is not None:
        return found
    names = getattr(array.metadata, "dimension_names", None)
    if names is not None and len(names) == array.ndim and all(names):
        return Space.voxels(names)
    return None


def read_space(array: zarr.Array) -> Space:
    """The physical space of an input array: from the OME-Zarr group holding it, if any.

    Parameters
    ----------
    array : zarr.Array or ArrayView
        An input, e.g. from :func:`chunkreg.io.open_array`. When it is a level of an OME-Zarr
        multiscale group (NGFF 0.4 or 0.5), that level's own scale and translation (composed with
        the image-wide ones) and the axes' names and units are returned. A view of one channel
        has its base's space without the channel axis.

    Returns
    -------
    Space
        Unit voxels at the origin, with the array's dimension names (or t, z, y, x), for arrays
        outside an OME-Zarr group.
    """
    found = recorded_space(array) if _is_view(array) else _ome_space(array)
    return Space.voxels(_axis_names(array)) if found is None else found


def write_space(
    group: zarr.Group,
    paths: Sequence[str],
    space: Space,
    *,
    factors: Sequence[Sequence[int]] | None = None,
    name: str | None = None,
) -> None:
    """Record ``space`` as the OME-Zarr 0.5 multiscale metadata of the levels ``paths``.

    Parameters
    ----------
    group : zarr.Group
        The output group holding the levels.
    paths : sequence of str
        Level paths, finest first; level 0 lies in ``space``.
    space : Space
        The space of level 0 (axis names must match its dimension names).
    factors : sequence of sequence of int, optional
        Per level, how many level-0 voxels per axis one of its voxels averages (level 0: ones);
        default: one level.
    name : str, optional
        Image name.
    """
    if factors is None:
        factors = [(1,) * space.ndim] * len(paths)
    levels = [space.downsampled(f) for f in factors]
    write_ome_multiscale_metadata(
        group,
        paths=paths,
        axes=space.axes,
        scales=[lv.scale for lv in levels],
        translations=[lv.translation for lv in levels],
        units=space.units,
        name=name,
    )


def _is_physical(space: Space) -> bool:
    return bool(space.units) or any(s != 1.0 for s in space.scale) or any(space.translation)


def output_space(axes_of: zarr.Array, *sources: zarr.Array | None) -> Space:
    """The space of an output with ``axes_of``'s axes, placed where the first of ``sources`` is.

    The trailing axes take the scale, translation and units of the spatial axes of the first
    source that carries physical metadata (units, a scale other than 1 or a translation); leading axes the source
    lacks (``t``, ``c``) keep ``axes_of``'s. Without any, ``axes_of``'s own space is returned.

    Parameters
    ----------
    axes_of : zarr.Array
        The input whose axis names (and number of axes) the output has.
    *sources : zarr.Array or None
        Inputs in order of preference; None entries are skipped.

    Returns
    -------
    Space
    """
    own = read_space(axes_of)
    for source in sources:
        if source is None:
            continue
        found = read_space(source)
        if not _is_physical(found):
            continue
        n = min(sum(a not in NON_SPATIAL for a in found.axes), own.ndim)
        found = found.last(n)
        lead = own.ndim - n
        units = {a: u for a, u in own.units.items() if a in own.axes[:lead]}
        for a, b in zip(own.axes[lead:], found.axes, strict=True):
            if b in found.units:
                units[a] = found.units[b]
        return Space(own.axes, own.scale[:lead] + found.scale,
                     own.translation[:lead] + found.translation, units)  # fmt: skip
    return own
