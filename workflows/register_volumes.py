"""Register a moving volume onto a reference volume (both zarr) and warp it.

Dense optical flow (iLK, TV-L1 or DIS, tiled) or blockwise rigid registration (a shift per block,
interpolated into a smooth flow), then the moving volume warped by the flow. Every stage is
resumable: run the same command again after an interruption.

Usage::

    python workflows/register_volumes.py register_volumes.toml

See ``register_volumes.example.toml`` for every option.
"""

from __future__ import annotations

import sys
from typing import Literal

import chunkreg
from chunkreg._scripts import (
    OVERLAP,
    RUN_KEYS,
    TILE,
    check_tables,
    cluster_table,
    function_types,
    options,
    script_main,
    section,
)
from chunkreg.cli._common import finish
from chunkreg.errors import InputError
from chunkreg.execution import client_from_config
from chunkreg.volume import check_warp_options

METHODS = ("ilk", "tvl1", "dis", "blockwise")
KERNELS = {
    "ilk": chunkreg.optical_flow_ilk,
    "tvl1": chunkreg.optical_flow_tvl1,
    "dis": chunkreg.optical_flow_dis,
}
TABLES = ("input", "registration", "output", "cluster", *METHODS)

#: Keys the script passes to the workflow functions itself, and where they come from.
SET_HERE = {
    "reference": "[input] reference",
    "moving": "[input] moving",
    "output": "[output]",
    "level": "[input] level",
    "method": "[registration] method",
    "tile": "[registration] tile",
    "overlap": "[registration] overlap",
    "overwrite": "[output] overwrite",
    **RUN_KEYS,
}


def _tables(config: dict) -> dict:
    """Every table of the config, checked before anything runs."""
    check_tables(config, TABLES)
    reg = section(
        config, "registration", required=["method"],
        types={"method": Literal[METHODS], "tile": TILE, "overlap": OVERLAP},
    )  # fmt: skip
    method = reg["method"]
    blockwise = method == "blockwise"
    tables = {
        "input": section(
            config, "input", required=["reference", "moving"],
            types={"reference": str, "moving": str, "level": int},
        ),
        "registration": reg,
        "output": section(
            config, "output", required=["flow"],
            types={"flow": str, "blocks": str, "registered": str, "overwrite": bool,
                   "order": function_types(chunkreg.warp_volume)["order"]},
        ),
        "cluster": cluster_table(config),
    }  # fmt: skip
    for name, kernel in KERNELS.items():  # every table is checked, used or not
        tables[name] = options(
            config, name, kernel, skip=("reference_image", "moving_image", "dtype"),
            reserved=SET_HERE,
        )  # fmt: skip
    tables["blockwise"] = options(
        config, "blockwise", chunkreg.blockwise_shifts,
        required=["block"] if blockwise else (),
        reserved={k: v for k, v in SET_HERE.items() if k not in ("overlap", "tile")},
        types={"block": TILE, "overlap": TILE, "max_deviation": float | Literal[False]},
    )  # fmt: skip
    if blockwise and "blocks" not in tables["output"]:
        raise InputError("config [output] blocks = 'PATH.zarr' is needed for method = 'blockwise'.")
    return tables


def run(config: dict) -> int:
    tables = _tables(config)
    inputs, reg, out = tables["input"], tables["registration"], tables["output"]
    method = reg["method"]
    reports = []
    if "registered" in out:  # refuse a bad warp option before the flow is computed
        check_warp_options(order=out.get("order", 1))
    with client_from_config(tables["cluster"]) as client:
        common = {"client": client, "overwrite": out.get("overwrite", False)}
        if method == "blockwise":
            params = tables["blockwise"]
            if params.get("max_deviation") is False:  # TOML has no None
                params["max_deviation"] = None
            blocks = chunkreg.blockwise_shifts(
                inputs["reference"], inputs["moving"], out["blocks"], **params, **common
            )
            reports.append(blocks.report)
            print(f"blocks: {int(blocks.reliable.sum())} of {blocks.reliable.size} reliable")
            reports.append(chunkreg.shifts_to_flow(out["blocks"], out["flow"], **common))
        else:
            tiling = {k: reg[k] for k in ("tile", "overlap") if k in reg}
            reports.append(
                chunkreg.compute_flow(
                    inputs["reference"],
                    inputs["moving"],
                    out["flow"],
                    method=method,
                    level=inputs.get("level"),
                    **tiling,
                    **tables[method],
                    **common,
                )
            )
        if "registered" in out and all(r.ok for r in reports):
            reports.append(
                chunkreg.warp_volume(
                    inputs["moving"],
                    out["flow"],
                    out["registered"],
                    order=out.get("order", 1),
                    reference=inputs["reference"],
                    **common,
                )
            )
    return finish(reports)


if __name__ == "__main__":
    sys.exit(script_main(run, __doc__.splitlines()[0]))
