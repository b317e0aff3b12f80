"""``chunkreg warp``: apply a displacement field to a zarr volume, tile by tile."""

from __future__ import annotations

import argparse

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


def add_parser(subparsers) -> None:
    """Register the ``warp`` sub-command."""
    parser = subparsers.add_parser(
        "warp",
        help="apply a displacement field to a volume",
        description="Resample MOVING at x + FLOW(x), tile by tile, into the OME-Zarr image "
        "OUTPUT (level 0 in MOVING's dtype and chunking). FLOW is a (ndim, *shape) zarr array "
        "or the output of `chunkreg blocks --flow` / `chunkreg flow`. Running again resumes.",
    )
    parser.add_argument("moving", help="moving zarr array (or OME-Zarr group)")
    parser.add_argument(
        "flow",
        help="displacement field: zarr array or flow output group ('none': the affine alone)",
    )
    parser.add_argument("output", help="output zarr group (OME-Zarr image)")
    parser.add_argument(
        "--order", type=int, default=1, metavar="N", help="spline order 0-5 (default 1, linear)"
    )
    parser.add_argument(
        "--tile",
        type=int_tuple,
        metavar="N[,N..]",
        help="output region per task, a multiple of the chunks (default ~2 M voxels)",
    )
    parser.add_argument(
        "--mode",
        choices=["edge", "constant"],
        default="edge",
        help="outside the volume: repeat the edge voxel, or write 0 (default edge)",
    )
    parser.add_argument(
        "--reference",
        metavar="REFERENCE",
        help="record per-tile NCC to this volume before/after warping (see `chunkreg qc`)",
    )
    add_shards_argument(parser, inherited="MOVING's")
    parser.add_argument(
        "--affine",
        metavar="AFFINE",
        help="a global affine (output of `chunkreg register`'s affine step) applied after the "
        "flow; a flow computed after an affine already records it",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    add_channel_argument(parser, what="compare with --reference (QC)")
    add_input_check_arguments(parser)
    add_pyramid_argument(parser)
    add_cluster_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; return the exit code."""
    from ..volume._warp_volume import plan_warp_volume, warp_volume

    params = {
        "order": args.order,
        "tile": args.tile,
        "mode": args.mode,
        "reference": args.reference,
        "affine": args.affine,
        "allow_sparse": args.allow_sparse,
        "shards": args.shards,
        "channel": args.channel,
    }
    flow = None if args.flow.lower() == "none" else args.flow
    if args.dry_run:
        print(plan_warp_volume(args.moving, flow, **params))
        return 0
    return finish(
        warp_volume(
            args.moving,
            flow,
            args.output,
            **params,
            pyramid=args.pyramid,
            **cluster_options(args),
        ),
        strict=args.strict,
    )
