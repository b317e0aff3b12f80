"""Convert a TIFF stack, a folder of TIFF planes, or a set of mosaic tiles to zarr.

Usage::

    python workflows/convert_tiff.py convert_tiff.toml

See ``convert_tiff.example.toml`` for every option. Needs ``pip install 'chunkreg[tiff]'``.
"""

from __future__ import annotations

import glob
import sys

from chunkreg._scripts import script_main, section
from chunkreg.io import tiff_to_zarr, tiles_to_zarr


def run(config: dict) -> int:
    mode = section(
        config, "convert", required=["kind", "output"], allowed=["chunks", "overwrite", "axes"]
    )
    kind = mode["kind"]
    options = {"chunks": mode.get("chunks"), "overwrite": mode.get("overwrite", False)}
    if kind == "stack":
        src = section(config, "stack", required=["path"])
        array = tiff_to_zarr(src["path"], mode["output"], axes=mode.get("axes"), **options)
        print(
            f"wrote {mode['output']}: shape {array.shape}, dtype {array.dtype}, chunks {array.chunks}"
        )
    elif kind == "tiles":
        src = section(config, "tiles", required=["pattern"])
        paths = sorted(glob.glob(src["pattern"]))
        if not paths:
            print(f"error: no files match {src['pattern']!r}", file=sys.stderr)
            return 2
        group = tiles_to_zarr(paths, mode["output"], **options)
        print(f"wrote {mode['output']}: {len(list(group.array_keys()))} tiles")
    else:
        print(f"error: [convert] kind must be 'stack' or 'tiles', got {kind!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(script_main(run, __doc__.splitlines()[0]))
