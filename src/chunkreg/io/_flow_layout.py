"""How a displacement field is stored: the ``flow`` array of an output group and its attributes.

Flow outputs (:func:`chunkreg.compute_flow`, :func:`chunkreg.shifts_to_flow`) hold the field as
array :data:`FLOW_ARRAY`, shaped ``(ndim, *shape)``, float32, chunked ``(1, *chunks)``; a field
computed after an initial affine records the matrix in attribute :data:`INITIAL_AFFINE_ATTR`.
"""

from __future__ import annotations

import os

import numpy as np
import zarr

from ._arrays import open_array

__all__ = ["FLOW_ARRAY", "INITIAL_AFFINE_ATTR", "open_flow", "recorded_affine"]

#: Name of the flow array inside the output group.
FLOW_ARRAY = "flow"


def open_flow(source) -> zarr.Array:
    """Open a displacement field: an array, or an output group holding an array ``flow``."""
    if isinstance(source, (str, os.PathLike)):
        try:
            node = zarr.open(os.fspath(source), mode="r")
        except (FileNotFoundError, zarr.errors.NodeTypeValidationError, KeyError, ValueError):
            node = None
        if isinstance(node, zarr.Group) and FLOW_ARRAY in node:
            return node[FLOW_ARRAY]
    if isinstance(source, zarr.Group) and FLOW_ARRAY in source:
        return source[FLOW_ARRAY]
    return open_array(source, name="flow")


#: Attribute of a flow array computed after an initial affine: the matrix (reference to
#: moving voxels) that the flow's residual displacements follow.
INITIAL_AFFINE_ATTR = "initial_affine"


def recorded_affine(flow) -> np.ndarray | None:
    """The initial affine a flow array (or blocks output) records it was computed after."""
    from ..registration._affine import as_matrix

    value = flow.attrs.get(INITIAL_AFFINE_ATTR)
    return None if value is None else as_matrix(value)
