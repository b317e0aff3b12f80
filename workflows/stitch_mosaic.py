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
from chunkreg._scripts import script_main, section
from chunkreg.execution import client_from_config
from chunkreg.stitching import regular_grid

_OPTIONS = (
    "blend",
    "subpixel",
    "upsample_factor",
    "downsample",
    "min_quality",
    "max_residual",
    "max_relative_residual",
    "fixed_tile",
    "chunks",
    "register",
    "fuse",
)


def run(config: dict) -> int:
    tiles = section(config, "tiles", allowed=["group"]).get("group")
    layout_cfg = section(
        config,
        "layout",
        allowed=["file", "grid", "tile_shape", "overlap", "order", "snake", "names"],
    )
    options = section(config, "stitch", allowed=_OPTIONS)
    out = section(
        config, "output", required=["mosaic"], allowed=["positions", "links", "overwrite"]
    )
    if "file" in layout_cfg:
        layout = layout_cfg["file"]
    elif "grid" in layout_cfg:
        grid = {k: layout_cfg[k] for k in ("overlap", "order", "snake", "names") if k in layout_cfg}
        layout = regular_grid(layout_cfg["grid"], layout_cfg["tile_shape"], **grid)
    else:
        print(
            "error: [layout] needs file = 'layout.json' or grid = [rows, cols] with tile_shape",
            file=sys.stderr,
        )
        return 2
    with client_from_config(config.get("cluster")) as client:
        result = chunkreg.stitch(
            tiles,
            layout,
            out["mosaic"],
            client=client,
            overwrite=out.get("overwrite", False),
            **options,
        )
    print(result.summary())
    stem = Path(out["mosaic"]).name.removesuffix(".zarr")
    positions = out.get("positions", f"{stem}.positions.json")
    links = out.get("links", f"{stem}.links.csv")
    result.write_positions(positions)
    result.write_positions(Path(positions).with_suffix(".csv"))
    result.write_links(links)
    print(f"positions: {positions}; links: {links}")
    return 0


if __name__ == "__main__":
    sys.exit(script_main(run, __doc__.splitlines()[0]))
