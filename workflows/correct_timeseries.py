"""Measure and correct the drift and motion of a time series stored in zarr.

Rigid (subpixel phase correlation per frame) or piecewise rigid (a shift per patch, smoothed
into a dense field). Writes shifts, quality per frame, a CSV of shifts and the corrected
stack into one zarr group; optionally a PNG drift plot. Resumable.

Usage::

    python workflows/correct_timeseries.py correct_timeseries.toml

See ``correct_timeseries.example.toml`` for every option.
"""

from __future__ import annotations

import sys

import chunkreg
from chunkreg._scripts import script_main, section
from chunkreg.execution import client_from_config

_OPTIONS = (
    "reference",
    "upsample_factor",
    "normalization",
    "n_reference_frames",
    "strides",
    "roi",
    "time_axis",
    "apply",
    "batch_size",
)


def run(config: dict) -> int:
    inputs = section(config, "input", required=["stack"])
    options = section(config, "registration", allowed=_OPTIONS)
    piecewise = section(
        config,
        "piecewise",
        allowed=["enabled", "patch", "overlap", "max_deviation", "smooth", "upsample_factor"],
    )
    out = section(config, "output", required=["path"], allowed=["overwrite", "csv", "plot"])
    if "roi" in options:
        options["roi"] = [tuple(r) for r in options["roi"]]
    if piecewise.pop("enabled", False):
        options["piecewise"] = piecewise
    with client_from_config(config.get("cluster")) as client:
        result = chunkreg.register_timeseries(
            inputs["stack"],
            out["path"],
            csv_path=out.get("csv"),
            client=client,
            overwrite=out.get("overwrite", False),
            **options,
        )
    print(result.summary())
    if out.get("plot"):
        from chunkreg.timeseries import plot_drift

        plot_drift(result, out["plot"])
        print(f"drift plot: {out['plot']}")
    return 0 if all(r.ok for r in result.reports.values()) else 1


if __name__ == "__main__":
    sys.exit(script_main(run, __doc__.splitlines()[0]))
