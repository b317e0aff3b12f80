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
from typing import Literal

import chunkreg
from chunkreg._scripts import (
    RUN_KEYS,
    SHARDS,
    TILE,
    check_tables,
    cluster_table,
    options,
    script_main,
    section,
)
from chunkreg.execution import client_from_config
from chunkreg.io import check_side_files
from chunkreg.timeseries import PiecewiseOptions

TABLES = ("input", "registration", "piecewise", "output", "cluster")

#: Parameters of register_timeseries the script passes itself, and where they come from.
SET_HERE = {
    "stack": "[input] stack",
    "output": "[output] path",
    "csv_path": "[output] csv",
    "piecewise": "the [piecewise] table",
    "overwrite": "[output] overwrite",
    **RUN_KEYS,
}
#: Types of the parameters whose signature does not say.
TYPES = {
    "reference": Literal["first", "mean", "previous"] | int,
    "strides": list[int],
    "roi": list[list[int]],
    "min_quality": Literal["auto"] | float,
    "chunks": TILE,
    "shards": SHARDS,
}


def _tables(config: dict) -> dict:
    """Every table of the config, checked before anything runs."""
    check_tables(config, TABLES)
    piecewise = options(config, "piecewise", PiecewiseOptions, extra={"enabled": bool})
    return {
        "input": section(config, "input", required=["stack"], types={"stack": str}),
        "registration": options(
            config, "registration", chunkreg.register_timeseries, skip=("mask",),
            reserved=SET_HERE, types=TYPES,
        ),
        "piecewise": piecewise,
        "output": section(
            config, "output", required=["path"],
            types={"path": str, "overwrite": bool, "csv": str | Literal[False],
                   "plot": str},
        ),
        "cluster": cluster_table(config),
    }  # fmt: skip


def run(config: dict) -> int:
    tables = _tables(config)
    inputs, options_, out = tables["input"], tables["registration"], tables["output"]
    piecewise = tables["piecewise"]
    if "roi" in options_:
        options_["roi"] = [tuple(r) for r in options_["roi"]]
    if piecewise.pop("enabled", False):
        options_["piecewise"] = piecewise
    if out.get("plot"):  # a side file too: refused before anything runs unless overwrite
        check_side_files([out["plot"]], output=out["path"], overwrite=out.get("overwrite", False),
                         inputs={"stack": inputs["stack"]})  # fmt: skip
    with client_from_config(tables["cluster"]) as client:
        result = chunkreg.register_timeseries(
            inputs["stack"],
            out["path"],
            csv_path=out.get("csv"),
            client=client,
            overwrite=out.get("overwrite", False),
            **options_,
        )
    print(result.summary())
    if out.get("plot"):
        from chunkreg.io import record_side_files
        from chunkreg.timeseries import plot_drift

        record_side_files(out["path"], [out["plot"]])
        plot_drift(result, out["plot"])
        print(f"drift plot: {out['plot']}")
    return 0 if all(r.ok for r in result.reports.values()) else 1


if __name__ == "__main__":
    sys.exit(script_main(run, __doc__.splitlines()[0]))
