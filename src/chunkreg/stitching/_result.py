"""What a stitching run found: positions, the link table, dropped links, run reports."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..execution import RunReport
from ._layout import Layout, write_layout

__all__ = ["StitchResult"]


@dataclass(frozen=True)
class StitchResult:
    """Result of :func:`chunkreg.stitch`.

    Attributes
    ----------
    layout : Layout
        The tiles at their solved positions (the nominal ones if registration was skipped),
        in the coordinate frame of the input layout; :meth:`write_positions` saves it in a
        form :func:`read_layout` (and ``chunkreg stitch --fuse-only``) reads back.
    nominal_positions : ndarray, shape (n_tiles, ndim)
        The input layout's positions.
    pairs : ndarray of int, shape (n_links, 2)
        Tiles of each link (nominally overlapping pair).
    offsets : ndarray, shape (n_links, ndim)
        Measured ``position_j - position_i`` (NaN where nothing was measured).
    quality : ndarray, shape (n_links,)
        Normalised cross-correlation of the overlap at the measured offset.
    residual : ndarray, shape (n_links,)
        Distance (pixels) between the measured offset and the solved positions' offset.
    kept : ndarray of bool, shape (n_links,)
        Links used by the global solution.
    drop_reason : ndarray of str, shape (n_links,)
        ``""`` for kept links, else "no estimate", "quality" or "residual".
    unlinked : tuple of str
        Tiles placed at their nominal positions relative to their neighbours.
    origin : ndarray of int, shape (ndim,), optional
        Layout coordinates of the fused output's first pixel (None without fusion).
    output : str, optional
        The fused output group (its level ``"0"`` is the mosaic).
    reports : dict
        :class:`chunkreg.execution.RunReport` per stage ("pairs", "fusion", "pyramid").
    report : RunReport, optional
        All stages' tasks in one report: failed pair registrations or fusion chunks are
        listed there, not raised (``report.raise_if_failed()``); the other chunks are written,
        and running again completes the mosaic. Fusion does not start while a pair failed.
    """

    layout: Layout
    nominal_positions: np.ndarray
    pairs: np.ndarray
    offsets: np.ndarray
    quality: np.ndarray
    residual: np.ndarray
    kept: np.ndarray
    drop_reason: np.ndarray
    unlinked: tuple[str, ...] = ()
    origin: np.ndarray | None = None
    output: str | None = None
    reports: dict = field(default_factory=dict)
    report: RunReport | None = None

    @property
    def positions(self) -> np.ndarray:
        """Solved first-pixel position of each tile, shape (n_tiles, ndim)."""
        return self.layout.positions

    @property
    def names(self) -> tuple[str, ...]:
        """Tile names in layout order."""
        return self.layout.names

    def links_table(self) -> list[dict]:
        """One row per link: tiles, nominal and measured offsets, quality, residual, status."""
        axes = ("z", "y", "x")[-self.layout.ndim :]
        nominal = self.nominal_positions
        rows = []
        for k, (i, j) in enumerate(self.pairs):
            row = {"tile_a": self.names[i], "tile_b": self.names[j]}
            for a, ax in enumerate(axes):
                row[f"nominal_{ax}"] = float(nominal[j, a] - nominal[i, a])
            for a, ax in enumerate(axes):
                row[f"offset_{ax}"] = float(self.offsets[k, a])
            row["quality"] = float(self.quality[k])
            row["residual"] = float(self.residual[k])
            row["kept"] = bool(self.kept[k])
            row["drop_reason"] = str(self.drop_reason[k])
            rows.append(row)
        return rows

    @property
    def dropped_links(self) -> list[dict]:
        """Rows of :meth:`links_table` for the links left out of the solution."""
        return [row for row in self.links_table() if not row["kept"]]

    def write_positions(self, path) -> None:
        """Write the solved layout to ``path`` (``.json`` or ``.csv``)."""
        write_layout(self.layout, path)

    def write_links(self, path) -> None:
        """Write :meth:`links_table` as CSV (the QC table)."""
        rows = self.links_table()
        axes = ("z", "y", "x")[-self.layout.ndim :]
        header = ["tile_a", "tile_b", *(f"nominal_{a}" for a in axes)]
        header += [*(f"offset_{a}" for a in axes), "quality", "residual", "kept", "drop_reason"]
        with open(Path(path), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)

    def summary(self) -> str:
        """A few lines on links, drops and placement."""
        n_links = len(self.pairs)
        lines = [f"{len(self.names)} tiles, {n_links} overlapping pairs"]
        if n_links:
            kept = self.residual[self.kept]
            lines.append(
                f"{int(self.kept.sum())} links kept"
                + (
                    f", residual mean {kept.mean():.2f} px, max {kept.max():.2f} px"
                    if kept.size
                    else ""
                )
            )
            for reason in ("no estimate", "quality", "residual"):
                count = int((self.drop_reason == reason).sum())
                if count:
                    lines.append(f"{count} links dropped ({reason})")
        if self.unlinked:
            lines.append(
                f"{len(self.unlinked)} tiles placed at nominal positions: {', '.join(self.unlinked[:10])}"
            )
        return "\n".join(lines)
