"""Register a moving volume onto a reference volume (both zarr) and warp it.

Dense optical flow (iLK or TV-L1, tiled) or blockwise rigid registration (a shift per block,
interpolated into a smooth flow), then the moving volume warped by the flow. With a
``[pipeline]`` section, ``steps`` (``affine``, ``blocks``, ``flow``, ``warp``) run the whole
pipeline instead: the global affine first, the local step on what is left, and the warp by
both, with a summary of each step's QC. Every stage is resumable: run the same command again
after an interruption.

Usage::

    python workflows/register_volumes.py register_volumes.toml

See ``register_volumes.example.toml`` for every option.
"""

from __future__ import annotations

import sys

import chunkreg
from chunkreg._scripts import script_main, section
from chunkreg.cli._common import finish
from chunkreg.execution import client_from_config

METHODS = ("ilk", "tvl1", "blockwise")


def run_pipeline(config: dict) -> int:
    from chunkreg.volume._affine_pipeline import register_volumes

    inputs = section(config, "input", required=["reference", "moving"], allowed=[])
    pipe = section(config, "pipeline", required=["steps"], allowed=[])
    out = section(
        config, "output", required=[],
        allowed=["affine", "blocks", "flow", "registered", "overwrite", "order"],
    )  # fmt: skip
    reg = dict(config.get("registration", {}))
    method = reg.pop("method", "ilk")
    flow = {"method": method, **{k: reg[k] for k in ("tile", "overlap") if k in reg},
            **config.get(method, {})}  # fmt: skip
    blocks = dict(config.get("blockwise", {}))
    if blocks.get("max_deviation") is False:  # TOML has no None
        blocks["max_deviation"] = None
    outputs = {k: out[k] for k in ("affine", "blocks", "flow", "registered") if k in out}
    with client_from_config(config.get("cluster")) as client:
        result = register_volumes(
            inputs["reference"], inputs["moving"], outputs, steps=pipe["steps"],
            affine=dict(config.get("affine", {})), blocks=blocks, flow=flow,
            warp={"order": out.get("order", 1)}, client=client,
            overwrite=out.get("overwrite", False),
        )  # fmt: skip
    print(result.summary())
    if result.affine is not None:
        print(result.affine.describe())
    return 0 if result.ok else 1


def run(config: dict) -> int:
    if "pipeline" in config:
        return run_pipeline(config)
    inputs = section(config, "input", required=["reference", "moving"], allowed=["level"])
    reg = section(config, "registration", required=["method"], allowed=["tile", "overlap"])
    out = section(
        config, "output", required=["flow"], allowed=["blocks", "registered", "overwrite", "order"]
    )
    method = reg["method"]
    if method not in METHODS:
        print(
            f"error: [registration] method must be one of {METHODS}, got {method!r}",
            file=sys.stderr,
        )
        return 2
    overwrite = out.get("overwrite", False)
    reports = []
    with client_from_config(config.get("cluster")) as client:
        common = {"client": client, "overwrite": overwrite}
        if method == "blockwise":
            params = section(
                config,
                "blockwise",
                required=["block"],
                allowed=[
                    "overlap", "upsample_factor", "min_quality", "min_std", "max_deviation",
                    "normalization",
                ],
            )  # fmt: skip
            if params.get("max_deviation") is False:  # TOML has no None
                params["max_deviation"] = None
            if "blocks" not in out:
                print(
                    "error: method 'blockwise' needs [output] blocks = 'PATH.zarr'", file=sys.stderr
                )
                return 2
            blocks = chunkreg.blockwise_shifts(
                inputs["reference"], inputs["moving"], out["blocks"], **params, **common
            )
            reports.append(blocks.report)
            print(f"blocks: {int(blocks.reliable.sum())} of {blocks.reliable.size} reliable")
            reports.append(chunkreg.shifts_to_flow(out["blocks"], out["flow"], **common))
        else:
            params = dict(config.get(method, {}))
            tiling = {k: reg[k] for k in ("tile", "overlap") if k in reg}
            reports.append(
                chunkreg.compute_flow(
                    inputs["reference"],
                    inputs["moving"],
                    out["flow"],
                    method=method,
                    level=inputs.get("level"),
                    **tiling,
                    **params,
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
