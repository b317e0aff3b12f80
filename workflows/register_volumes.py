"""Register a moving volume onto a reference volume (both zarr) and warp it.

Dense optical flow (iLK or TV-L1, tiled) or blockwise rigid registration (a shift per block,
interpolated into a smooth flow), then the moving volume warped by the flow. Every stage is
resumable: run the same command again after an interruption.

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
from chunkreg.volume import check_warp_options

METHODS = ("ilk", "tvl1", "dis", "blockwise")


def run(config: dict) -> int:
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
    if "registered" in out:  # refuse a bad warp option before the flow is computed
        check_warp_options(order=out.get("order", 1))
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
