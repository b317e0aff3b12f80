"""Register a moving volume onto a reference volume (both zarr) and warp it.

Dense optical flow (iLK, TV-L1 or DIS, tiled) or blockwise rigid registration (a shift per block,
interpolated into a smooth flow), then the moving volume warped by the flow. With a
``[pipeline]`` table, ``steps`` (``affine``, ``blocks``, ``flow``, ``warp``) run the whole
pipeline instead: the global affine first, the local step on what is left, and the warp by
both, with a summary of each step's QC. Every stage is resumable: run the same command again
after an interruption.

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
TABLES = ("input", "registration", "output", "cluster", "affine", *METHODS)
#: The steps of a ``[pipeline]`` and the tables it reads.
STEPS = ("affine", "blocks", "flow", "warp")
PIPELINE_TABLES = ("pipeline", *TABLES)
#: [registration] keys passed on to compute_flow.
FLOW_KEYS = ("tile", "overlap", "spacing")
#: A voxel size: one for every axis, or one per axis.
SPACING = float | list[float]

#: Keys the script passes to the workflow functions itself, and where they come from.
SET_HERE = {
    "reference": "[input] reference",
    "moving": "[input] moving",
    "output": "[output]",
    "level": "[input] level",
    "channel": "[input] channel",
    "method": "[registration] method",
    "tile": "[registration] tile",
    "overlap": "[registration] overlap",
    "spacing": "[registration] spacing",
    "overwrite": "[output] overwrite",
    "initial_affine": "[pipeline] (the affine step's output)",
    **RUN_KEYS,
}


def _tables(config: dict) -> dict:
    """Every table of the config, checked before anything runs."""
    check_tables(config, TABLES)
    reg = section(
        config, "registration", required=["method"],
        types={"method": Literal[METHODS], "tile": TILE, "overlap": OVERLAP, "spacing": SPACING},
    )  # fmt: skip
    method = reg["method"]
    blockwise = method == "blockwise"
    tables = {
        "input": section(
            config, "input", required=["reference", "moving"],
            types={"reference": str, "moving": str, "level": int,
                   "channel": function_types(chunkreg.compute_flow)["channel"]},
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
            config, name, kernel, skip=("reference_image", "moving_image", "dtype", "spacing"),
            reserved=SET_HERE,
        )  # fmt: skip
    tables["blockwise"] = options(
        config, "blockwise", chunkreg.blockwise_shifts,
        required=["block"] if blockwise else (),
        reserved={k: v for k, v in SET_HERE.items() if k not in ("overlap", "tile")},
        types={"block": TILE, "overlap": TILE, "max_deviation": float | Literal[False]},
    )  # fmt: skip
    if blockwise and "spacing" in reg:
        raise InputError(
            "config [registration] spacing applies to the flow methods (ilk, tvl1, dis), not to "
            "method = 'blockwise'; remove it."
        )
    if blockwise and "blocks" not in tables["output"]:
        raise InputError("config [output] blocks = 'PATH.zarr' is needed for method = 'blockwise'.")
    return tables


def _pipeline_tables(config: dict) -> dict:
    """The tables of a ``[pipeline]`` config, checked before anything runs."""
    check_tables(config, PIPELINE_TABLES)
    tables = {
        "input": section(config, "input", required=["reference", "moving"],
                         types={"reference": str, "moving": str,
                                "channel": function_types(chunkreg.compute_flow)["channel"]}),
        "pipeline": section(config, "pipeline", required=["steps"],
                            types={"steps": list[Literal[STEPS]]}),
        "registration": section(config, "registration",
                                types={"method": Literal[("ilk", "tvl1", "dis")], "tile": TILE,
                                       "overlap": OVERLAP, "spacing": SPACING}),
        "output": section(config, "output",
                          types={"affine": str, "blocks": str, "flow": str, "registered": str,
                                 "overwrite": bool,
                                 "order": function_types(chunkreg.warp_volume)["order"]}),
        "cluster": cluster_table(config),
        "affine": options(config, "affine", chunkreg.estimate_affine,
                          skip=("reference", "moving", "output", "overwrite"),
                          reserved={**RUN_KEYS, "channel": "[input] channel"},
                          types={"level": int | Literal["auto"], "block": TILE,
                                 "fine_block": TILE}),
        "blockwise": options(config, "blockwise", chunkreg.blockwise_shifts,
                             reserved={k: v for k, v in SET_HERE.items()
                                       if k not in ("overlap", "tile")},
                             types={"block": TILE, "overlap": TILE,
                                    "max_deviation": float | Literal[False]}),
    }  # fmt: skip
    for name, kernel in KERNELS.items():
        tables[name] = options(config, name, kernel,
                               skip=("reference_image", "moving_image", "dtype", "spacing"),
                               reserved=SET_HERE)  # fmt: skip
    return tables


def run_pipeline(config: dict) -> int:
    """The whole pipeline: global affine, local step (blocks or flow), warp."""
    from chunkreg.volume import register_volumes

    tables = _pipeline_tables(config)
    out, reg = tables["output"], tables["registration"]
    method = reg.get("method", "ilk")
    flow = {"method": method, **{k: reg[k] for k in FLOW_KEYS if k in reg},
            **tables[method]}  # fmt: skip
    blocks = dict(tables["blockwise"])
    if blocks.get("max_deviation") is False:  # TOML has no None
        blocks["max_deviation"] = None
    outputs = {k: out[k] for k in ("affine", "blocks", "flow", "registered") if k in out}
    with client_from_config(tables["cluster"]) as client:
        result = register_volumes(
            tables["input"]["reference"], tables["input"]["moving"], outputs,
            steps=tables["pipeline"]["steps"], affine=tables["affine"], blocks=blocks, flow=flow,
            warp={"order": out.get("order", 1)}, channel=tables["input"].get("channel"),
            client=client, overwrite=out.get("overwrite", False),
        )  # fmt: skip
    print(result.summary())
    if result.affine is not None:
        print(result.affine.describe())
    return 0 if result.ok else 1


def run(config: dict) -> int:
    if "pipeline" in config:
        return run_pipeline(config)
    tables = _tables(config)
    inputs, reg, out = tables["input"], tables["registration"], tables["output"]
    method = reg["method"]
    reports = []
    if "registered" in out:  # refuse a bad warp option before the flow is computed
        check_warp_options(order=out.get("order", 1))
    channel = {"channel": inputs["channel"]} if "channel" in inputs else {}
    with client_from_config(tables["cluster"]) as client:
        common = {"client": client, "overwrite": out.get("overwrite", False)}
        if method == "blockwise":
            params = tables["blockwise"]
            if params.get("max_deviation") is False:  # TOML has no None
                params["max_deviation"] = None
            blocks = chunkreg.blockwise_shifts(
                inputs["reference"],
                inputs["moving"],
                out["blocks"],
                **params,
                **channel,
                **common,
            )
            reports.append(blocks.report)
            print(f"blocks: {int(blocks.reliable.sum())} of {blocks.reliable.size} reliable")
            reports.append(chunkreg.shifts_to_flow(out["blocks"], out["flow"], **common))
        else:
            tiling = {k: reg[k] for k in FLOW_KEYS if k in reg}
            reports.append(
                chunkreg.compute_flow(
                    inputs["reference"],
                    inputs["moving"],
                    out["flow"],
                    method=method,
                    level=inputs.get("level"),
                    **channel,
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
                    **channel,
                    **common,
                )
            )
    return finish(reports)


if __name__ == "__main__":
    sys.exit(script_main(run, __doc__.splitlines()[0]))
