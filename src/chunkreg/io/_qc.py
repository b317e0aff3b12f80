"""The ``qc`` group beside every registration result: written once, read back for summaries.

See :mod:`chunkreg.volume._qc` for what it holds and how the numbers are computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from ..errors import InputError

__all__ = ["QC_GROUP", "read_qc", "write_qc"]

QC_GROUP = "qc"


def write_qc(
    group: zarr.Group,
    *,
    label: str,
    tile_shape: Sequence[int],
    ncc_before: np.ndarray | None = None,
    ncc_after: np.ndarray | None = None,
    seam: float | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> zarr.Group:
    """Write (or replace) the ``qc`` group of a registration output.

    Parameters
    ----------
    group : zarr.Group
        The output group (writable).
    label : str
        What the grid cells are: "blocks", "tiles"...
    tile_shape : sequence of int
        Shape of one grid cell in voxels.
    ncc_before, ncc_after : ndarray, shape grid_shape, optional
        NCC between reference and moving per cell, before and after registration.
    seam : float, optional
        Seam metric of the output flow (:func:`seam_metric`).
    extra : dict of ndarray, optional
        More per-cell arrays (e.g. ``{"reliable": mask}``), shaped like the NCC grids.

    Returns
    -------
    zarr.Group
        The ``qc`` group.
    """
    qc = group.require_group(QC_GROUP)
    arrays = {"ncc_before": ncc_before, "ncc_after": ncc_after, **(extra or {})}
    for name, values in arrays.items():
        if values is None:
            continue
        values = np.asarray(values)
        if values.dtype.kind == "f":
            values = values.astype(np.float32)
        qc.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype,
            chunks=tuple(max(1, n) for n in values.shape),
            overwrite=True,
            fill_value=np.nan if values.dtype.kind == "f" else 0,
        )[...] = values
    qc.attrs.update(
        {
            "label": label,
            "tile_shape": [int(t) for t in tile_shape],
            "seam_metric": None if seam is None or not np.isfinite(seam) else float(seam),
        }
    )
    return qc


def _open_group(output) -> zarr.Group:
    if isinstance(output, zarr.Group):
        return output
    try:
        node = zarr.open(output, mode="r")
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError, KeyError) as exc:
        raise InputError(f"{output!s} is not a chunkreg output group ({exc}).") from exc
    if not isinstance(node, zarr.Group):
        raise InputError(f"{output!s} is a zarr array, not a chunkreg output group.")
    return node


def read_qc(output) -> dict:
    """Read the ``qc`` group of an output: its arrays (as numpy) and attributes.

    Parameters
    ----------
    output : str, os.PathLike or zarr.Group
        A registration output (flow, blocks or warp).

    Returns
    -------
    dict
        Array name -> ndarray, plus ``"attrs"``.

    Raises
    ------
    InputError
        If ``output`` has no ``qc`` group (it was not written by a chunkreg registration).
    """
    group = _open_group(output)
    if QC_GROUP not in group:
        raise InputError(
            f"{output!s} has no quality-control group '{QC_GROUP}'; give the output of "
            "`chunkreg blocks`, `chunkreg warp --reference ...` or `chunkreg flow`."
        )
    qc = group[QC_GROUP]
    out = {name: qc[name][...] for name in qc.array_keys()}
    out["attrs"] = qc.attrs.asdict()
    return out
