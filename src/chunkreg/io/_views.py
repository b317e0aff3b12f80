"""Channels: one channel of a multi-channel zarr array, read as an array of its own.

Microscopy images often carry non-spatial leading axes: channels ``c`` (and time ``t``),
named in the OME-Zarr axes or the zarr ``dimension_names``. A registration runs on one channel
and applies its transform to all of them. :class:`ArrayView` is a zarr array with some axes
fixed at one index (e.g. ``c = 1``): it reads (and writes) like a zarr array of the remaining
axes, and reading a region reads only that channel's chunks. :func:`select_channel` finds an
input's channel axis and returns the view of the channel asked for, or an
:class:`~chunkreg.errors.InputError` before anything is written.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zarr

from ..errors import InputError

__all__ = [
    "ArrayView",
    "base_array",
    "channel_axis",
    "leading_axes",
    "recorded_axes",
    "select_channel",
    "select_channels",
]

#: Axis names that are not space: time, channels (and a flow's components).
_NON_SPATIAL = ("t", "c", "component")


@dataclass(frozen=True)
class _ViewMetadata:
    dimension_names: tuple[str | None, ...] | None


class ArrayView:
    """A zarr array with some axes fixed at one index each, e.g. one channel of ``(c, z, y, x)``.

    Indexing takes one selection per remaining axis (slices, integers, ``...``); the fixed
    axes are read (written) at their index only, so a region of one channel reads only that
    channel's chunks.

    Parameters
    ----------
    base : zarr.Array
        The whole array.
    fixed : sequence of (int, int)
        ``(axis, index)`` pairs: the axes of ``base`` held at one index.
    """

    def __init__(self, base: zarr.Array, fixed) -> None:
        if isinstance(base, ArrayView):  # a view of a view: fix the base's axes directly
            raise TypeError("give the base zarr array, not a view of it")
        self.base = base
        self.fixed = tuple(sorted((int(a), int(i)) for a, i in fixed))
        axes = {a for a, _ in self.fixed}
        self._free = tuple(a for a in range(base.ndim) if a not in axes)

    def _keep(self, values):
        return None if values is None else tuple(values[a] for a in self._free)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._keep(tuple(self.base.shape))

    @property
    def ndim(self) -> int:
        return len(self._free)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def chunks(self) -> tuple[int, ...]:
        return self._keep(tuple(self.base.chunks))

    @property
    def shards(self) -> tuple[int, ...] | None:
        return self._keep(getattr(self.base, "shards", None))

    @property
    def fill_value(self):
        return self.base.fill_value

    @property
    def store(self):
        return self.base.store

    @property
    def path(self) -> str:
        return self.base.path

    @property
    def attrs(self):
        return self.base.attrs

    @property
    def metadata(self) -> _ViewMetadata:
        names = getattr(self.base.metadata, "dimension_names", None)
        return _ViewMetadata(self._keep(tuple(names)) if names is not None else None)

    def selection(self, key) -> tuple:
        """The selection of ``base`` that ``key`` (a selection of this view) stands for."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"{len(key)} indices for a view of {self.ndim} axes")
        key = key + (slice(None),) * (self.ndim - len(key))
        full = [None] * self.base.ndim
        for axis, index in self.fixed:
            full[axis] = index
        for axis, k in zip(self._free, key, strict=True):
            full[axis] = k
        return tuple(full)

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.base[self.selection(key)])

    def __setitem__(self, key, value) -> None:
        self.base[self.selection(key)] = value

    def __array__(self, dtype=None, copy=None):
        values = self[...]
        return values if dtype is None else values.astype(dtype)

    def __repr__(self) -> str:
        where = ", ".join(f"axis {a} = {i}" for a, i in self.fixed)
        return f"<ArrayView of {self.base!r} at {where}>"


def base_array(array):
    """The zarr array a view reads (``array`` itself for a zarr array)."""
    return array.base if isinstance(array, ArrayView) else array


def recorded_axes(array) -> tuple[str, ...] | None:
    """The axis names an array records (OME-Zarr axes of its group, else complete zarr
    ``dimension_names``), or None for a plain array (names only guessed from its ndim)."""
    from ._space import recorded_space

    if isinstance(array, ArrayView):
        names = recorded_axes(array.base)
        return None if names is None else tuple(names[a] for a in array._free)
    space = recorded_space(array)
    return None if space is None else space.axes


def _check_index(channel, name: str) -> int:
    if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or channel < 0:
        raise InputError(f"channel must be an integer >= 0, got {channel!r} (for {name}).")
    return int(channel)


def channel_axis(array, *, spatial_ndim: int | None = None) -> int | None:
    """The channel axis of an array, or None.

    An axis named ``c`` in the recorded axes (OME-Zarr axes, zarr ``dimension_names``); for a
    plain array (no recorded names) with exactly one axis more than ``spatial_ndim``, the
    first axis.
    """
    names = recorded_axes(array)
    if names is not None:
        return names.index("c") if "c" in names else None
    if spatial_ndim is not None and array.ndim == spatial_ndim + 1:
        return 0
    return None


def select_channel(array, channel=None, *, spatial_ndim: int | None = None,
                   name: str = "input", required: bool = False):  # fmt: skip
    """One channel of ``array`` as an array of its own, or ``array`` if it has no channels.

    Parameters
    ----------
    array : zarr.Array
        An input.
    channel : int, optional
        Index along the channel axis. None: channel 0 of an axis named ``c`` (a plain array,
        whose first axis is taken for channels only when ``spatial_ndim`` says so, needs it).
    spatial_ndim : int, optional
        Number of spatial axes the caller expects (2 or 3), if known.
    name : str
        What the caller calls the input (in messages).
    required : bool
        Refuse ``channel`` for an array without a channel axis (otherwise it is returned as it
        is: a single-channel image).

    Returns
    -------
    zarr.Array or ArrayView

    Raises
    ------
    InputError
        ``channel`` is not an index of the channel axis, is required for a plain array, or
        is given (with ``required``) for an array whose channel axis cannot be found.
    """
    if channel is not None:
        channel = _check_index(channel, name)
    axis = channel_axis(array, spatial_ndim=spatial_ndim)
    if axis is None:
        if channel is not None and required:
            names = recorded_axes(array)
            raise InputError(
                f"channel={channel} given, but {name} (shape {tuple(array.shape)}, axes "
                f"{names or 'not named'}) has no channel axis: name it 'c' in its OME-Zarr "
                "axes or zarr dimension_names, or leave channel out."
            )
        return array
    n = int(array.shape[axis])
    if channel is None:
        if recorded_axes(array) is None:
            raise InputError(
                f"{name} has shape {tuple(array.shape)}: one axis more than its "
                f"{spatial_ndim} spatial axes, taken for channels; give channel= (--channel) "
                "to say which channel to register on."
            )
        channel = 0
    if channel >= n:
        raise InputError(
            f"channel {channel} is out of range: {name} has {n} channel(s) along axis {axis} "
            f"(shape {tuple(array.shape)}); give 0..{n - 1}."
        )
    return ArrayView(base_array(array), ((axis, channel),))


def _spatial_count(array) -> int | None:
    names = recorded_axes(array)
    return None if names is None else sum(a not in _NON_SPATIAL for a in names)


def select_channels(arrays: Mapping[str, object], channel=None) -> dict:
    """:func:`select_channel` for several inputs of a registration (reference and moving).

    The number of spatial axes is that of inputs with recorded axis names; else, plain
    arrays of one ndim are taken as channels first only when ``channel`` is given, and
    arrays of different ndims as channels first where they have one axis more than the
    smallest.

    Returns
    -------
    dict
        ``{name: array or ArrayView}``, in the order given.

    Raises
    ------
    InputError
        As :func:`select_channel`; also when ``channel`` is given but no input has a
        channel axis.
    """
    counts = [c for c in map(_spatial_count, arrays.values()) if c is not None]
    ndims = sorted({a.ndim for a in arrays.values()})
    if counts:
        spatial = min(counts)
    elif channel is None or len(ndims) > 1:
        spatial = ndims[0]
    else:
        spatial = ndims[0] - 1
    if channel is None:  # a plain array with an extra axis: channels, or the wrong input
        extra = [n for n, a in arrays.items() if recorded_axes(a) is None and a.ndim == spatial + 1]
        if extra:
            shapes = " and ".join(str(tuple(a.shape)) for a in arrays.values())
            raise InputError(
                f"{' and '.join(arrays)} must have the same number of axes, got shapes {shapes}; "
                f"if the extra first axis of {extra[0]} holds channels, give channel= "
                "(--channel) to say which channel to register on."
            )
    out = {name: select_channel(a, channel, spatial_ndim=spatial, name=name)
           for name, a in arrays.items()}  # fmt: skip
    if channel is not None and not any(isinstance(v, ArrayView) for v in out.values()):
        names = {n: recorded_axes(a) or "not named" for n, a in arrays.items()}
        raise InputError(
            f"channel={channel} given, but no input has a channel axis (axes: {names}); name "
            "it 'c' in the OME-Zarr axes or zarr dimension_names, or leave channel out."
        )
    return out


def leading_axes(array, spatial_ndim: int) -> tuple[str, ...]:
    """Names of the axes of ``array`` in front of its ``spatial_ndim`` spatial axes.

    Recorded names (``c``, ``t``) where the array has them; for a plain array ``c`` for one
    leading axis and ``t, c`` for two.

    Raises
    ------
    InputError
        If the array has fewer axes than ``spatial_ndim``, more than two leading axes, or
        recorded leading names that are spatial.
    """
    extra = array.ndim - spatial_ndim
    if extra < 0 or extra > 2:
        raise InputError(
            f"an array of shape {tuple(array.shape)} cannot hold {spatial_ndim}-D images with "
            "at most two leading axes (t, c)."
        )
    names = recorded_axes(array)
    if names is None:
        return ("c",) if extra == 1 else ("t", "c")[2 - extra :]
    lead = names[:extra]
    if any(a not in _NON_SPATIAL for a in lead):
        raise InputError(
            f"the array's axes are {names}: its first {extra} axes {lead} are not channels or "
            f"time, so it does not hold {spatial_ndim}-D images behind t/c axes."
        )
    return tuple(lead)
