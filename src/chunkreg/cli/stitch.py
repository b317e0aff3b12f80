"""``chunkreg stitch``: place overlapping tiles and fuse them into one zarr mosaic."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    add_channel_argument,
    add_cluster_arguments,
    add_input_check_arguments,
    add_pyramid_argument,
    add_shards_argument,
    cluster_options,
    finish,
    int_tuple,
)

__all__ = ["add_parser", "sidecar_paths"]


def _float_tuple(text: str) -> tuple[float, ...] | float:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X or X,X,...; got {text!r}") from None
    return values[0] if len(values) == 1 else values


def sidecar_paths(output) -> dict[str, Path]:
    """Files written next to ``output``: solved positions (JSON, CSV) and the link table."""
    output = Path(output)
    stem = output.name[: -len(".zarr")] if output.name.endswith(".zarr") else output.name
    return {
        "positions_json": output.with_name(f"{stem}.positions.json"),
        "positions_csv": output.with_name(f"{stem}.positions.csv"),
        "links_csv": output.with_name(f"{stem}.links.csv"),
    }


def add_parser(subparsers) -> None:
    """Register the ``stitch`` sub-command."""
    p = subparsers.add_parser(
        "stitch",
        help="place overlapping tiles (pairwise phase correlation, global least squares) and fuse them",
        description=(
            "Register every pair of side-by-side tiles on their overlap, solve the tile positions "
            "globally, and fuse the tiles into one OME-Zarr mosaic at OUTPUT. The solved "
            "positions (OUTPUT-stem.positions.json/.csv) and the link table with quality, "
            "residuals and dropped links (OUTPUT-stem.links.csv) are written next to OUTPUT. "
            "A positions file is itself a layout: pass it with --fuse-only to fuse again."
        ),
    )
    p.add_argument(
        "layout",
        help="layout file (.json or .csv): tile names/paths and nominal positions in pixels, "
        "or a regular grid",
    )
    p.add_argument("output", help="output zarr group for the mosaic (also names the side files)")
    p.add_argument(
        "--tiles",
        metavar="GROUP",
        help="zarr group holding the tiles under the layout's names (default: the layout's paths)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--register-only",
        action="store_true",
        help="solve and write positions and link table, do not fuse",
    )
    mode.add_argument(
        "--fuse-only",
        action="store_true",
        help="fuse at the positions in LAYOUT (e.g. a positions file from --register-only)",
    )
    p.add_argument(
        "--blend",
        choices=("linear", "cosine", "max", "first"),
        default="linear",
        help="how overlapping tiles are combined: linear or cosine ramps, the maximum, or the "
        "first tile in layout order (default: linear)",
    )
    p.add_argument(
        "--subpixel",
        action="store_true",
        help="subpixel offsets and placement by interpolation (default: whole pixels)",
    )
    p.add_argument(
        "--upsample-factor",
        type=int,
        metavar="N",
        help="pairwise precision 1/N px (default 1, or 10 with --subpixel)",
    )
    p.add_argument(
        "--stage-error",
        type=_float_tuple,
        metavar="PX",
        help="largest error of a nominal relative position, px (per axis: Z,Y,X); "
        "default 10%% of the tile shape",
    )
    p.add_argument(
        "--downsample",
        type=int,
        default=1,
        metavar="N",
        help="block-average overlaps by N for the correlation search (default 1)",
    )
    p.add_argument(
        "--min-quality",
        type=float,
        default=0.5,
        metavar="Q",
        help="drop links whose normalised cross-correlation is below Q (default 0.5)",
    )
    p.add_argument(
        "--max-residual",
        type=float,
        default=2.5,
        metavar="PX",
        help="drop links whose residual exceeds PX pixels and --max-relative-residual times "
        "the mean (default 2.5)",
    )
    p.add_argument(
        "--max-relative-residual",
        type=float,
        default=3.0,
        metavar="R",
        help="drop a link only if its residual is also R times the mean residual (default: 3)",
    )
    p.add_argument(
        "--chunks",
        type=int_tuple,
        metavar="N[,N...]",
        help="output chunk shape (default 1024 in 2-D, 128 in 3-D)",
    )
    add_shards_argument(p, inherited=None)
    add_channel_argument(p, what="register the tiles on")
    add_input_check_arguments(p)
    add_pyramid_argument(p)
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``chunkreg stitch`` with parsed arguments."""
    from ..io import check_side_files, record_side_files
    from ..stitching import stitch

    paths = sidecar_paths(args.output)
    if not args.fuse_only:  # before anything runs: existing tables are not replaced silently
        check_side_files(list(paths.values()), output=args.output, overwrite=args.overwrite,
                         inputs={"tiles": args.tiles, "layout": args.layout})  # fmt: skip
    result = stitch(
        args.tiles,
        args.layout,
        None if args.register_only else args.output,
        register=not args.fuse_only,
        fuse=not args.register_only,
        blend=args.blend,
        subpixel=args.subpixel,
        upsample_factor=args.upsample_factor,
        stage_error=args.stage_error,
        downsample=args.downsample,
        min_quality=args.min_quality,
        max_residual=args.max_residual,
        max_relative_residual=args.max_relative_residual,
        chunks=args.chunks,
        shards=args.shards,
        allow_sparse=args.allow_sparse,
        channel=args.channel,
        pyramid=args.pyramid,
        **cluster_options(args),
    )
    if not args.fuse_only:
        if not args.register_only:
            record_side_files(args.output, list(paths.values()))
        result.write_positions(paths["positions_json"])
        result.write_positions(paths["positions_csv"])
        result.write_links(paths["links_csv"])
        print(result.summary())
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return finish(list(result.reports.values()), strict=args.strict)
