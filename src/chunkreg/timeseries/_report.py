"""The result of a time-series registration: tables, summary, CSV and drift plot."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np

from ..execution import RunReport

__all__ = ["TimeseriesResult", "plot_drift"]


def axis_names(ndim: int) -> tuple[str, ...]:
    """Spatial axis names used in tables: ``y, x`` or ``z, y, x`` (``axis0..`` beyond)."""
    if ndim <= 3:
        return ("z", "y", "x")[3 - ndim :]
    return tuple(f"axis{i}" for i in range(ndim))


@dataclass
class TimeseriesResult:
    """What :func:`chunkreg.register_timeseries` measured and wrote.

    Attributes
    ----------
    shifts : ndarray, shape (T, ndim)
        Shift registering each frame onto the reference (``ndimage.shift(frame, shift)``
        ≈ reference); for ``reference="previous"``, the accumulated drift against the anchor
        frame (the first frame with a usable link).
    error, phasediff : ndarray, shape (T,)
        From the phase correlation of each frame (for ``"previous"``: of its link to the
        frame before; NaN for the first frame).
    quality_before, quality_after : ndarray, shape (T,)
        Normalised cross-correlation with the reference (for ``"previous"``: with the
        previous frame) before and after correction, over the pixels that hold data.
    low_quality : ndarray of bool, shape (T,)
        Frames whose own estimate was rejected; their shifts are interpolated from the
        neighbouring frames in time.
    min_quality : float
        The quality threshold that was applied.
    output : str
        Where the zarr group was written.
    csv_path : str or None
        The CSV of shifts, if written.
    reports : dict
        :class:`chunkreg.execution.RunReport` of each pass: ``"register"`` and ``"fixup"``
        (fixed reference), ``"estimate"`` and ``"apply"`` (``"previous"``).
    notes : dict
        Extra facts (e.g. link residuals and unbridged gaps for ``"previous"``).
    warnings : list of str
        Where registration against a fixed reference made frames less similar to it (the
        median quality lower after than before, or frames that got worse); empty otherwise.
    report : RunReport
        Every pass's tasks in one report (as every workflow returns): batches that failed are
        listed, not raised (``report.raise_if_failed()``); the other frames are written, and
        running again completes the series. The CSV and summary attributes are written once
        every frame is done.
    """

    shifts: np.ndarray
    error: np.ndarray
    phasediff: np.ndarray
    quality_before: np.ndarray
    quality_after: np.ndarray
    low_quality: np.ndarray
    min_quality: float
    output: str
    csv_path: str | None = None
    reports: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    report: RunReport | None = None

    @property
    def max_drift(self) -> float:
        """Largest Euclidean shift of any frame, in pixels."""
        if self.shifts.size == 0:
            return 0.0
        return float(np.max(np.linalg.norm(self.shifts, axis=1)))

    def summary(self) -> str:
        """A few lines for people: drift range, quality, flagged frames."""
        n = len(self.shifts)
        names = axis_names(self.shifts.shape[1])
        lines = [f"{n} frames registered; output {self.output}"]
        if n:
            lo, hi = self.shifts.min(axis=0), self.shifts.max(axis=0)
            ranges = ", ".join(
                f"{a} {lo_:+.2f}..{hi_:+.2f}" for a, lo_, hi_ in zip(names, lo, hi, strict=True)
            )
            frame = int(np.argmax(np.linalg.norm(self.shifts, axis=1)))
            lines.append(f"max drift {self.max_drift:.2f} px (frame {frame}); range {ranges}")
            with np.errstate(all="ignore"):
                qb = (
                    np.nanmedian(self.quality_before)
                    if np.isfinite(self.quality_before).any()
                    else np.nan
                )
                qa = (
                    np.nanmedian(self.quality_after)
                    if np.isfinite(self.quality_after).any()
                    else np.nan
                )
            lines.append(f"median quality (NCC) before {qb:.3f}, after {qa:.3f}")
        flagged = np.flatnonzero(self.low_quality)
        shown = ", ".join(str(i) for i in flagged[:20]) + (" ..." if flagged.size > 20 else "")
        lines.append(
            f"{flagged.size} frame(s) with low quality (< {self.min_quality:.3f})"
            + (f": {shown}" if flagged.size else "")
        )
        lines += [f"{key}: {value}" for key, value in self.notes.items()]
        if self.csv_path:
            lines.append(f"shifts table: {self.csv_path}")
        if self.warnings:
            lines.append("WARNING, quality control:")
            lines += [f"  {w}" for w in self.warnings]
        return "\n".join(lines)


def write_csv(path: str | os.PathLike, result: TimeseriesResult) -> None:
    """Write one row per frame: shifts, error, phasediff, quality, low-quality flag."""
    names = axis_names(result.shifts.shape[1])
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        header = ["frame", *(f"shift_{a}" for a in names), "error", "phasediff"]
        writer.writerow([*header, "quality_before", "quality_after", "low_quality"])
        for t in range(len(result.shifts)):
            values = [*result.shifts[t], result.error[t], result.phasediff[t]]
            values += [result.quality_before[t], result.quality_after[t]]
            writer.writerow([t, *(f"{v:.6g}" for v in values), int(result.low_quality[t])])


def plot_drift(result: TimeseriesResult, path: str | os.PathLike) -> None:
    """Save a PNG of the drift per axis and the quality per frame (needs matplotlib).

    Parameters
    ----------
    result : TimeseriesResult
    path : str or os.PathLike
        Output image file.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - optional dependency
        from ..errors import InputError

        raise InputError("the drift plot needs matplotlib: pip install 'chunkreg[plot]'") from exc
    t = np.arange(len(result.shifts))
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    for c, name in enumerate(axis_names(result.shifts.shape[1])):
        ax1.plot(t, result.shifts[:, c], label=name)
    ax1.set_ylabel("shift (px)")
    ax1.legend(loc="best")
    ax2.plot(t, result.quality_before, color="0.6", label="before")
    ax2.plot(t, result.quality_after, label="after")
    flagged = np.flatnonzero(result.low_quality)
    if flagged.size:
        ax2.plot(flagged, np.nan_to_num(result.quality_after[flagged]), "rx", label="low quality")
    ax2.set_xlabel("frame")
    ax2.set_ylabel("NCC")
    ax2.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
