"""Stitch overlapping mosaic tiles: pairwise registration, global optimisation, fusion.

Tiles are zarr arrays (arrays of one group, or paths in the layout file); nominal positions
come from a JSON/CSV layout file or a regular grid described in the config. Writes the fused
OME-Zarr mosaic, the solved positions (JSON and CSV) and the link table (quality, residuals,
dropped links). Fusion is resumable.

Usage::

    python workflows/stitch_mosaic.py stitch_mosaic.toml

See ``stitch_mosaic.example.toml`` for every option.
"""

from __future__ import annotations

import sys
from pathlib import Path

import chunkreg
from chunkreg._scripts import (
    RUN_KEYS,
    TILE,
    check_tables,
    cluster_table,
    function_types,
    options,
    script_main,
    section,
)
from chunkreg.errors import InputError
from chunkreg.execution import client_from_config
from chunkreg.io import check_side_files, record_side_files
from chunkreg.stitching import regular_grid

TABLES = ("tiles", "layout", "stitch", "output", "cluster")

#: Parameters of stitch the script passes itself, and where they come from.
SET_HERE = {
    "tiles": "[tiles] group",
    "layout": "the [layout] table",
    "output": "[output] mosaic",
    "overwrite": "[output] overwrite",
    **RUN_KEYS,
}
#: Types of the parameters whose signature does not say.
TYPES = {
    "stage_error": float | list[float],
    "chunks": TILE,
    "blend_width": float | list[float],
}


def _tables(config: dict) -> dict:
    """Every table of the config, checked before anything runs."""
    check_tables(config, TABLES)
    grid = function_types(regular_grid)
    layout = {"file": str, "grid": grid.pop("grid_shape"), **grid}
    return {
        "tiles": section(config, "tiles", types={"group": str}),
        "layout": section(config, "layout", types=layout),
        "stitch": options(config, "stitch", chunkreg.stitch, reserved=SET_HERE, types=TYPES),
        "output": section(
            config, "output", required=["mosaic"],
            types={"mosaic": str, "positions": str, "links": str, "overwrite": bool},
        ),
        "cluster": cluster_table(config),
    }  # fmt: skip


def run(config: dict) -> int:
    tables = _tables(config)
    tiles, layout_cfg, out = tables["tiles"].get("group"), tables["layout"], tables["output"]
    if "file" in layout_cfg:
        layout = layout_cfg["file"]
    elif "grid" in layout_cfg and "tile_shape" in layout_cfg:
        grid = {k: layout_cfg[k] for k in ("overlap", "order", "snake", "names") if k in layout_cfg}
        layout = regular_grid(layout_cfg["grid"], layout_cfg["tile_shape"], **grid)
    else:
        raise InputError(
            "config [layout] needs file = 'layout.json', or grid = [rows, cols] with tile_shape."
        )
    stem = Path(out["mosaic"]).name.removesuffix(".zarr")
    positions = out.get("positions", f"{stem}.positions.json")
    links = out.get("links", f"{stem}.links.csv")
    side = [positions, Path(positions).with_suffix(".csv"), links]
    overwrite = out.get("overwrite", False)
    inputs = {"tiles": tiles, "layout": layout_cfg.get("file")}
    check_side_files(side, output=out["mosaic"], overwrite=overwrite, inputs=inputs)
    with client_from_config(tables["cluster"]) as client:
        result = chunkreg.stitch(
            tiles,
            layout,
            out["mosaic"],
            client=client,
            overwrite=overwrite,
            **tables["stitch"],
        )
    print(result.summary())
    if Path(out["mosaic"]).exists():
        record_side_files(out["mosaic"], side)
    result.write_positions(positions)
    result.write_positions(side[1])
    result.write_links(links)
    print(f"positions: {positions}; links: {links}")
    return 0


if __name__ == "__main__":
    sys.exit(script_main(run, __doc__.splitlines()[0]))
