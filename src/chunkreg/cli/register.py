"""``chunkreg register``: the whole pipeline (affine, local registration, warp) in one command."""

from __future__ import annotations

import argparse
import os
import sys

from ._common import (
    add_channel_argument,
    add_cluster_arguments,
    add_pyramid_argument,
    add_shards_argument,
    cluster_options,
    int_tuple,
)


def add_parser(subparsers) -> None:
    """Register the ``register`` sub-command."""
    parser = subparsers.add_parser(
        "register",
        help="global affine, then blocks or dense flow, then warp",
        description="Register MOVING onto REFERENCE: estimate the global affine on a coarse "
        "level, then the local motion left after it (dense flow, or one shift per block), "
        "then warp MOVING by both. Outputs go to OUTDIR (affine.zarr, flow.zarr, blocks.zarr, "
        "registered.zarr). Every step resumes: run the same command again after an "
        "interruption. A summary with the QC of each step is printed.",
    )
    parser.add_argument("reference", help="reference zarr array (or OME-Zarr group)")
    parser.add_argument("moving", help="moving zarr array (or OME-Zarr group)")
    parser.add_argument("outdir", help="directory for the outputs (created if missing)")
    parser.add_argument(
        "--steps",
        default="affine,flow,warp",
        metavar="S[,S..]",
        help="steps to run, from affine, blocks, flow, warp (default affine,flow,warp; "
        "blocks and flow are alternatives)",
    )
    parser.add_argument(
        "--model",
        choices=["affine", "similarity", "rigid", "translation"],
        default="affine",
        help="degrees of freedom of the global transform (default affine)",
    )
    parser.add_argument(
        "--level", default="auto", metavar="L", help="pyramid level of the coarse affine estimate"
    )
    parser.add_argument(
        "--method",
        choices=["ilk", "tvl1", "dis"],
        default="ilk",
        help="dense flow kernel (default ilk)",
    )
    parser.add_argument(
        "--tile", type=int_tuple, metavar="N[,N..]", help="flow tile shape (default: automatic)"
    )
    parser.add_argument(
        "--block", type=int_tuple, metavar="N[,N..]", help="block shape of the blocks step"
    )
    parser.add_argument(
        "--order", type=int, default=1, metavar="N", help="spline order of the warp (default 1)"
    )
    add_shards_argument(parser, inherited="the inputs'", what="flow and registered output")
    add_pyramid_argument(parser)
    add_channel_argument(parser)
    add_cluster_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; return the exit code."""
    from ..execution import open_client
    from ..volume import register_volumes

    opts = cluster_options(args)
    level = args.level if args.level == "auto" else int(args.level)
    outputs = {
        name: os.path.join(args.outdir, f"{name}.zarr")
        for name in ("affine", "blocks", "flow", "registered")
    }
    flow = {
        "method": args.method,
        "shards": args.shards,
        **({"tile": args.tile} if args.tile else {}),
    }
    blocks = {"block": args.block} if args.block else {}
    os.makedirs(args.outdir, exist_ok=True)
    with open_client(None, scheduler=opts["scheduler"], n_workers=opts["n_workers"]) as client:
        result = register_volumes(
            args.reference, args.moving, outputs,
            steps=[s.strip() for s in args.steps.split(",") if s.strip()],
            affine={"model": args.model, "level": level}, blocks=blocks, flow=flow,
            warp={"order": args.order, "shards": args.shards, "pyramid": args.pyramid}, channel=args.channel, client=client,
            overwrite=opts["overwrite"], progress=opts["progress"],
        )  # fmt: skip
    print(result.summary())
    if result.affine is not None:
        print(result.affine.describe())
    if not result.ok:
        print("chunkreg: some tasks failed (listed above); run the same command again to retry "
              "them.", file=sys.stderr)  # fmt: skip
        return 1
    return 0
