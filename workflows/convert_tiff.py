"""Convert a TIFF stack, a folder of TIFF planes, or a set of mosaic tiles to zarr.

Usage::

    python workflows/convert_tiff.py convert_tiff.toml

See ``convert_tiff.example.toml`` for every option. Needs ``pip install 'chunkreg[tiff]'``.
"""

from __future__ import annotations

import glob
import sys
from typing import Literal

from chunkreg._scripts import check_tables, function_types, script_main, section
from chunkreg.errors import InputError
from chunkreg.io import tiff_to_zarr, tiles_to_zarr

TABLES = ("convert", "stack", "tiles")


def _tables(config: dict) -> dict:
    """Every table of the config, checked before anything runs."""
    check_tables(config, TABLES)
    types = function_types(tiff_to_zarr, skip=("source", "ome"))
    types["kind"] = Literal["stack", "tiles"]
    return {
        "convert": section(config, "convert", required=["kind", "output"], types=types),
        "stack": section(config, "stack", types={"path": str}),
        "tiles": section(config, "tiles", types={"pattern": str}),
    }


def run(config: dict) -> int:
    tables = _tables(config)
    mode = tables["convert"]
    kind = mode["kind"]
    options = {"chunks": mode.get("chunks"), "overwrite": mode.get("overwrite", False)}
    if kind == "stack":
        if "path" not in tables["stack"]:
            raise InputError("config table [stack] needs ['path'].")
        src = tables["stack"]
        array = tiff_to_zarr(src["path"], mode["output"], axes=mode.get("axes"), **options)
        print(
            f"wrote {mode['output']}: shape {array.shape}, dtype {array.dtype}, chunks {array.chunks}"
        )
    else:
        if "pattern" not in tables["tiles"]:
            raise InputError("config table [tiles] needs ['pattern'].")
        pattern = tables["tiles"]["pattern"]
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise InputError(f"no files match [tiles] pattern {pattern!r}.")
        group = tiles_to_zarr(paths, mode["output"], **options)
        print(f"wrote {mode['output']}: {len(list(group.array_keys()))} tiles")
    return 0


if __name__ == "__main__":
    sys.exit(script_main(run, __doc__.splitlines()[0]))
