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

import numpy as np

from ..errors import InputError
from ..io._qc import read_qc, write_qc
from ..registration._quality import combine_seam_sums, qc_regressions
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
