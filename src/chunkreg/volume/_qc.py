"""Quality control written beside every registration result, and read back for a summary.

Each registration output holds a small ``qc`` group:

- ``qc/ncc_before``, ``qc/ncc_after`` (``grid_shape``, float32): normalised cross-correlation
  between reference and moving per tile or block, before and after registration (NaN where not
  measured);
- optional extra per-tile arrays (e.g. ``qc/reliable`` for blockwise shifts,
  ``qc/disagreement`` for the flow: how much overlapping tiles' flows differ where they are
  blended, in voxels);
- attributes: ``label`` ("blocks", "tiles"), ``tile_shape``, ``seam_metric``.

The **seam metric** compares the flow's change across tile borders with its change just
inside the tiles on either side: at every border voxel pair ``(b - 1, b)`` along every axis, the
norm of the difference of the two displacement vectors, against the mean of the same norm for
the neighbouring pairs ``(b - 2, b - 1)`` and ``(b, b + 1)``, summed over all borders. Comparing
with the immediate neighbours (rather than a tile's average) makes any smooth field score about
1 wherever its gradient happens to peak; a field that jumps at tile borders scores well above 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from ..errors import InputError
from ..tiling._seams import _tile_shape, seam_sums

__all__ = [
    "combine_seam_sums",
    "plot_qc",
    "qc_regressions",
    "read_qc",
    "seam_metric",
    "seam_sums",
    "summarise_qc",
    "write_qc",
]

QC_GROUP = "qc"
#: A tile (block) whose NCC after registration is lower than before by more than this is a
#: regression.
REGRESSION_MARGIN = 0.05


def qc_regressions(
    ncc_before, ncc_after, *, skip=None, label: str = "tile", margin: float = REGRESSION_MARGIN
) -> list[str]:
    """Warnings where registration made the quality control worse.

    Parameters
    ----------
    ncc_before, ncc_after : array_like
        NCC with the reference per tile (or block), before and after registration; NaN for
        tiles not measured.
    skip : array_like of bool, optional
        Tiles to leave out (e.g. those without texture).
    label : str
        What a grid cell is called in the messages.
    margin : float
        A cell regresses when its NCC drops by more than this.

    Returns
    -------
    list of str
        Empty when nothing got worse: otherwise one line for a lower median NCC after than
        before, and one naming the cells whose NCC dropped by more than ``margin``.

    Examples
    --------
    >>> qc_regressions([0.9, 0.8, 0.7], [0.95, 0.85, 0.4])
    ['1 of 3 tiles got worse by more than 0.05 in NCC (largest drop 0.300, tile 2)']
    """
    before = np.asarray(ncc_before, dtype=np.float64).ravel()
    after = np.asarray(ncc_after, dtype=np.float64).ravel()
    keep = np.isfinite(before) & np.isfinite(after)
    if skip is not None:
        keep &= ~np.asarray(skip, dtype=bool).ravel()
    if not keep.any():
        return []
    out = []
    median_before, median_after = np.median(before[keep]), np.median(after[keep])
    if median_after < median_before:
        out.append(
            f"registration made the images less similar: median NCC per {label} "
            f"{median_before:.3f} before, {median_after:.3f} after"
        )
    drop = np.where(keep, before - after, -np.inf)
    worse = np.flatnonzero(drop > margin)
    if worse.size:
        worst = int(np.argmax(drop))
        out.append(
            f"{worse.size} of {int(keep.sum())} {label}s got worse by more than {margin:g} in "
            f"NCC (largest drop {drop[worst]:.3f}, {label} {worst})"
        )
    return out


def combine_seam_sums(sums: np.ndarray, *, floor: float = 1e-3) -> float:
    """Seam metric from :func:`seam_sums` totals.

    Parameters
    ----------
    sums : ndarray, shape (3, ndim)
        Totals of :func:`seam_sums` over the regions of a field.
    floor : float
        Differences this small (in voxels) count as no change: ``floor`` is added per border
        pair to both sides of the ratio, so a (nearly) constant field scores 1 rather than an
        arbitrary ratio of rounding errors.

    Returns
    -------
    float
        ``(sum of border differences + floor * n) / (sum of neighbouring differences +
        floor * n)`` over the ``n`` border pairs: about 1 for a smooth field, above 1.1 when the
        field jumps at tile borders. NaN when no pair crosses a border (a single tile).
    """
    sums = np.asarray(sums, dtype=np.float64)
    n = sums[2].sum()
    if n == 0:
        return float("nan")
    return float((sums[0].sum() + floor * n) / (sums[1].sum() + floor * n))


def seam_metric(flow: np.ndarray, grid) -> float:
    """Flow change across tile borders relative to inside tiles (about 1: no seams).

    Parameters
    ----------
    flow : ndarray, shape (ndim, *shape)
        Displacement field in memory (or one large region of it).
    grid : TileGrid or sequence of int
        The tile grid (or tile shape) that produced the flow; tiles start at multiples of the
        tile shape.

    Returns
    -------
    float
        See :func:`combine_seam_sums`. Values above about 1.1 mean visible seams.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:64, :64].astype(np.float32)
    >>> smooth = np.stack([0.05 * y, 0.02 * x])
    >>> round(seam_metric(smooth, (16, 16)), 3)
    1.0
    >>> stepped = smooth + np.stack([(y // 16) * 0.5, 0 * x])
    >>> seam_metric(stepped, (16, 16)) > 2
    True
    """
    flow = np.asarray(flow)
    return combine_seam_sums(seam_sums(flow, _tile_shape(grid, flow.ndim - 1)))


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


def summarise_qc(output, *, worst: int = 10) -> str:
    """Human-readable quality summary of an output, worst tiles first.

    Parameters
    ----------
    output : zarr.Group, str or os.PathLike
        A chunkreg registration output.
    worst : int
        How many of the worst cells (lowest NCC after registration) to list.

    Returns
    -------
    str
    """
    qc = read_qc(output)
    attrs = qc["attrs"]
    label = attrs.get("label", "tiles")
    lines = [f"quality control of {output!s}"]
    before, after = qc.get("ncc_before"), qc.get("ncc_after")
    if after is not None:
        grid_shape = after.shape
        measured = np.isfinite(after)
        lines.append(
            f"{label}: {after.size} in a grid of {tuple(grid_shape)} of "
            f"{tuple(attrs.get('tile_shape', ()))} voxels, {int(measured.sum())} measured"
        )
        if measured.any():
            a = after[measured]
            lines.append(f"NCC after registration: median {np.median(a):.3f}, min {a.min():.3f}")
            if before is not None:
                b = before[measured]
                ok = np.isfinite(b)
                if ok.any():
                    lines.append(
                        f"NCC before registration: median {np.median(b[ok]):.3f}, "
                        f"min {b[ok].min():.3f}; improved in {int((a[ok] > b[ok]).sum())} of "
                        f"{int(ok.sum())} {label}"
                    )
        if "reliable" in qc:
            reliable = qc["reliable"].astype(bool)
            lines.append(
                f"reliable {label}: {int(reliable.sum())} of {reliable.size} "
                "(the others were filled from their neighbours)"
            )
        spread = qc.get("disagreement")
        if spread is not None and np.isfinite(spread).any():
            lines.append(
                f"disagreement of overlapping {label} (flow in the blend bands): median "
                f"{np.nanmedian(spread):.3f}, max {np.nanmax(spread):.3f} voxels"
            )
        order = np.argsort(np.where(measured, after, np.inf), axis=None, kind="stable")
        if worst > 0 and order.size:
            lines.append(f"worst {label} (lowest NCC after):")
            for flat in order[:worst]:
                index = np.unravel_index(flat, grid_shape)
                row = f"  {tuple(int(i) for i in index)}: after {after[index]:.3f}"
                if before is not None:
                    row += f", before {before[index]:.3f}"
                if "reliable" in qc:
                    row += ", reliable" if qc["reliable"][index] else ", unreliable (filled)"
                if spread is not None and np.isfinite(spread[index]):
                    row += f", disagreement {spread[index]:.3f} voxels"
                lines.append(row)
    seam = attrs.get("seam_metric")
    if seam is not None:
        verdict = "no seams" if seam <= 1.1 else "SEAMS: the flow jumps at tile borders"
        lines.append(f"seam metric: {seam:.3f} ({verdict}; 1 = smooth, > 1.1 = seams)")
    return "\n".join(lines)


def plot_qc(output, path) -> None:
    """Save a PNG figure of an output's QC: NCC maps before/after and their scatter.

    Three-dimensional grids are shown by their middle slice along the first axis. Needs
    matplotlib (the ``plot`` extra).

    Parameters
    ----------
    output : str, os.PathLike or zarr.Group
        A registration output holding a ``qc`` group.
    path : str or os.PathLike
        Where to write the PNG.
    """
    qc = read_qc(output)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is installed in tests
        raise InputError("plotting needs matplotlib: pip install 'chunkreg[plot]'.") from exc
    maps = [(name, qc[name]) for name in ("ncc_before", "ncc_after") if name in qc]
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(4 * (len(maps) + 1), 3.6), squeeze=False)
    axes = axes[0]
    for ax, (name, grid) in zip(axes[:-1], maps, strict=True):
        while grid.ndim > 2:
            grid = grid[grid.shape[0] // 2]
        image = ax.imshow(np.atleast_2d(grid), vmin=-1, vmax=1, cmap="viridis")
        ax.set_title(name.replace("_", " "))
        fig.colorbar(image, ax=ax, shrink=0.8)
    ax = axes[-1]
    if "ncc_before" in qc and "ncc_after" in qc:
        ax.scatter(qc["ncc_before"].ravel(), qc["ncc_after"].ravel(), s=8)
        ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8)
        ax.set_xlabel("NCC before")
        ax.set_ylabel("NCC after")
    seam = qc["attrs"].get("seam_metric")
    ax.set_title("per tile" + (f"; seam metric {seam:.2f}" if seam is not None else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
