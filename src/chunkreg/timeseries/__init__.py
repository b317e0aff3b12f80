"""Drift and motion correction of time series (rigid and piecewise-rigid), out of core.

:func:`register_timeseries` registers every frame of a zarr time series to a reference
(or to the frame before), writes the shifts, per-frame quality and the corrected stack to a
zarr group, and resumes when interrupted. The per-frame kernels are pure numpy/scipy;
:func:`estimate_bidiphase` and :func:`correct_bidiphase` handle the line offset of
resonant-scanner movies.
"""

from ._bidiphase import correct_bidiphase, estimate_bidiphase
from ._piecewise import PatchGrid, PiecewiseOptions
from ._register import TimeseriesPlan, plan_timeseries, register_timeseries
from ._report import TimeseriesResult, plot_drift

__all__ = [
    "PatchGrid",
    "PiecewiseOptions",
    "TimeseriesPlan",
    "TimeseriesResult",
    "correct_bidiphase",
    "estimate_bidiphase",
    "plan_timeseries",
    "plot_drift",
    "register_timeseries",
]
