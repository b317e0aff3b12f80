"""``chunkreg flow``: dense optical flow between two zarr volumes, coarse to fine, tile by tile."""

from __future__ import annotations

import argparse

from ._common import (
    add_channel_argument,
    add_cluster_arguments,
    add_input_check_arguments,
    add_shards_argument,
    cluster_options,
    finish,
    int_tuple,
)

__all__ = ["add_parser"]

_ILK_ONLY = ("radius", "gaussian")
_TVL1_ONLY = ("attachment", "tightness", "num_iter")
_DIS_ONLY = ("preset", "patch_size", "patch_stride", "gd_iterations", "variational_iterations")
#: Parameters each method takes.
_METHOD_PARAMS = {
    "ilk": (*_ILK_ONLY, "num_warp", "prefilter", "tol"),
    "tvl1": (*_TVL1_ONLY, "num_warp", "prefilter", "tol"),
    "dis": _DIS_ONLY,
}


def _depth(text: str):
    return "auto" if text == "auto" else int_tuple(text)


def _spacing(text: str):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected S or S,S,...; got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _levels(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto or a number of levels, got {text!r}"
        ) from None


def add_parser(subparsers) -> None:
    """Register the ``flow`` sub-command."""
    parser = subparsers.add_parser(
        "flow",
        help="dense optical flow between two volumes (zarr), tiled on a Dask cluster",
        description=(
            "Compute the displacement field that maps MOVING onto REFERENCE and write it to the "
            "zarr group OUTPUT (array 'flow', shape (ndim, *shape), float32). Coarse to fine: "
            "the flow of a downsampled copy of the whole volume starts each tile's refinement at "
            "the finer levels, so motion larger than the tiles' halo is recovered; neighbouring "
            "tiles are blended without seams. Quality control (NCC per tile before and after, "
            "seam metric) is written beside the flow: see `chunkreg qc OUTPUT`. Running the "
            "same command again resumes an interrupted run."
        ),
    )
    parser.add_argument("reference", metavar="REFERENCE", help="zarr array or OME-Zarr group")
    parser.add_argument("moving", metavar="MOVING", help="zarr array or OME-Zarr group")
    parser.add_argument("output", metavar="OUTPUT", help="output zarr group (created)")
    parser.add_argument(
        "--method", choices=("ilk", "tvl1", "dis"), default="ilk", help="flow kernel"
    )
    parser.add_argument("--level", type=int, help="multiscale level of OME-Zarr inputs (0)")
    add_channel_argument(parser)
    parser.add_argument(
        "--levels",
        type=_levels,
        default="auto",
        metavar="auto|N",
        help="pyramid levels, the input resolution included (default auto: 1 for a volume of "
        "one tile, else enough for the coarsest to fit --coarse-memory; 1 = single level, each "
        "tile with its own pyramid)",
    )
    parser.add_argument(
        "--coarse-memory",
        default="1GiB",
        metavar="BYTES",
        help="memory the in-memory flow of the coarsest level may use (default 1GiB); larger "
        "coarsest levels are tiled",
    )
    parser.add_argument(
        "--tile",
        type=int_tuple,
        metavar="N[,N...]",
        help="tile shape, a multiple of the output chunks (default: chosen from chunks, halo "
        "and memory)",
    )
    parser.add_argument(
        "--depth",
        type=_depth,
        default="auto",
        metavar="auto|N[,N...]",
        help="halo read around each tile, per axis (default: derived from the kernel's "
        "parameters for 2 px of residual motion on refined levels, 4 px on a single level)",
    )
    parser.add_argument(
        "--overlap",
        type=_depth,
        default=None,
        metavar="auto|N[,N...]",
        help="former name of --depth, still accepted",
    )
    parser.add_argument(
        "--spacing",
        type=_spacing,
        metavar="S[,S...]",
        help="voxel size per axis, e.g. 50,4,4 (default: the reference's OME-Zarr scale, else "
        "1); anisotropic voxels make levels halve the fine axes first and windows and halos "
        "per axis; 1 ignores a recorded scale",
    )
    parser.add_argument(
        "--chunks", type=int_tuple, metavar="N[,N...]", help="output chunks (default: input's)"
    )
    add_shards_argument(parser, inherited="the reference's")
    parser.add_argument(
        "--normalize",
        choices=("auto", "none", "percentile"),
        default="auto",
        help="make the inputs' intensities comparable: percentile maps each input's 1st-99th "
        "percentile range to [0, 1]; auto (default) does so when their ranges differ by more "
        "than a factor 4; none never does (integer inputs are always scaled by their dtype's "
        "range, as the in-memory kernels do)",
    )
    add_input_check_arguments(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and estimates; write nothing"
    )
    kern = parser.add_argument_group("kernel parameters (scikit-image names and defaults)")
    kern.add_argument("--radius", type=int, help="iLK: window radius (7)")
    kern.add_argument("--num-warp", type=int, help="warps per pyramid level (iLK 10, TV-L1 5)")
    kern.add_argument("--gaussian", action="store_true", default=None, help="iLK: Gaussian window")
    kern.add_argument(
        "--prefilter", action="store_true", default=None, help="median-filter the flow per warp"
    )
    kern.add_argument("--attachment", type=float, help="TV-L1: data attachment (15)")
    kern.add_argument("--tightness", type=float, help="TV-L1: tightness (0.3)")
    kern.add_argument("--num-iter", type=int, help="TV-L1: iterations per warp (10)")
    kern.add_argument(
        "--tol",
        type=float,
        help="iLK, TV-L1: a level's warps stop once the flow changes less than this (1e-4); "
        "0 runs every warp, as scikit-image",
    )
    kern.add_argument(
        "--preset", choices=("fast", "medium", "fine"), help="DIS: parameter preset (medium)"
    )
    kern.add_argument("--patch-size", type=int, help="DIS: patch width in pixels (preset)")
    kern.add_argument("--patch-stride", type=int, help="DIS: patch grid step (preset)")
    kern.add_argument(
        "--gd-iterations", type=int, help="DIS: Gauss-Newton iterations per patch (preset)"
    )
    kern.add_argument(
        "--variational-iterations", type=int, help="DIS: refinement sweeps per level (preset)"
    )
    add_cluster_arguments(parser)
    parser.set_defaults(func=run)


def _kernel_params(args: argparse.Namespace) -> dict:
    from ..errors import InputError

    names = (*_ILK_ONLY, *_TVL1_ONLY, *_DIS_ONLY, "num_warp", "prefilter", "tol")
    params = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    wrong = [n for n in names if n not in _METHOD_PARAMS[args.method]]
    given = [f"--{n.replace('_', '-')}" for n in wrong if n in params]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise InputError(f"{', '.join(given)} {verb} not apply to --method {args.method}.")
    return params


def run(args: argparse.Namespace) -> int:
    """Plan (and unless ``--dry-run``, run) the flow workflow; return the exit code."""
    from ..volume import plan_flow, run_flow_plan

    plan = plan_flow(
        args.reference,
        args.moving,
        method=args.method,
        level=args.level,
        levels=args.levels,
        tile=args.tile,
        depth=args.depth,
        overlap=args.overlap,
        chunks=args.chunks,
        shards=args.shards,
        coarse_memory=args.coarse_memory,
        normalize=args.normalize,
        allow_sparse=args.allow_sparse,
        spacing=args.spacing,
        channel=args.channel,
        **_kernel_params(args),
    )
    print(plan.describe())
    if args.dry_run:
        print("dry run: nothing written.")
        return 0
    report = run_flow_plan(plan, args.output, **cluster_options(args))
    return finish(report, strict=args.strict)
