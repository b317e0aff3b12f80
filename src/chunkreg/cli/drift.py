"""``chunkreg drift``: drift and motion correction of a time series."""

from __future__ import annotations

import argparse
import sys

from ._common import (
    EXIT_QC_WARNING,
    add_channel_argument,
    add_cluster_arguments,
    add_input_check_arguments,
    add_pyramid_argument,
    add_shards_argument,
    cluster_options,
    int_tuple,
)

__all__ = ["add_parser"]


def _reference(text: str):
    if text in ("first", "mean", "previous"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected first, mean, previous or a frame index; got {text!r}"
        ) from None


def _bidiphase(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto or an offset in pixels; got {text!r}"
        ) from None


def add_parser(subparsers) -> None:
    """Register the ``drift`` sub-command."""
    parser = subparsers.add_parser(
        "drift",
        help="measure and correct drift/motion of a time series (zarr), frame by frame",
        description=(
            "Register every frame of the time series STACK (zarr array or OME-Zarr group, time "
            "first unless --time-axis) to a reference by subpixel phase correlation, optionally "
            "piecewise-rigidly, and write shifts, per-frame quality and the corrected stack to "
            "the zarr group OUTPUT, plus OUTPUT_shifts.csv. Running the same command again "
            "resumes an interrupted run."
        ),
    )
    parser.add_argument("stack", metavar="STACK", help="zarr array or OME-Zarr group")
    parser.add_argument("output", metavar="OUTPUT", help="output zarr group (created)")
    parser.add_argument(
        "--reference",
        type=_reference,
        default="first",
        metavar="first|mean|previous|INDEX",
        help="register against frame 0 (default), the aligned mean of the first frames, the "
        "previous frame (drift accumulated), or frame INDEX",
    )
    parser.add_argument(
        "--upsample", type=int, default=10, metavar="N", help="subpixel precision 1/N px (10)"
    )
    parser.add_argument("--time-axis", type=int, default=0, metavar="AXIS", help="time axis (0)")
    parser.add_argument(
        "--mean-frames", type=int, default=20, metavar="N", help="frames averaged for 'mean'"
    )
    parser.add_argument(
        "--strides",
        type=int_tuple,
        metavar="1,S,...",
        help="link strides for 'previous', e.g. 1,10,100 (default 1)",
    )
    parser.add_argument(
        "--normalization",
        choices=("none", "phase"),
        default="none",
        help="cross-power spectrum normalisation (none: plain cross-correlation)",
    )
    parser.add_argument(
        "--bidiphase",
        type=_bidiphase,
        metavar="auto|PX",
        help="correct the line offset of resonant-scanner frames: odd lines displaced by PX "
        "pixels along the last axis, or auto to measure it (default: no correction)",
    )
    pw = parser.add_argument_group("piecewise-rigid correction")
    pw.add_argument("--piecewise", action="store_true", help="correct patch by patch")
    pw.add_argument("--patch", type=int, default=128, metavar="N", help="patch size (128)")
    pw.add_argument("--overlap", type=int, default=32, metavar="N", help="patch overlap (32)")
    pw.add_argument(
        "--max-deviation",
        type=float,
        default=3.0,
        metavar="PX",
        help="patch shifts further than this from their neighbours' median are replaced (3)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--no-apply", dest="apply", action="store_false", help="shifts only")
    out.add_argument(
        "--min-quality",
        default="auto",
        metavar="NCC|auto",
        help="frames below this NCC are flagged and their shifts interpolated (auto: half the "
        "median)",
    )
    out.add_argument(
        "--batch", type=int, metavar="N", help="frames per task (rounded up to whole shards)"
    )
    add_shards_argument(out, inherited="the stack's (when time is its first axis)")
    out.add_argument("--plot", metavar="PNG", help="also save a drift plot (needs matplotlib)")
    add_channel_argument(parser, what="measure the drift on")
    add_input_check_arguments(parser)
    add_pyramid_argument(parser)
    add_cluster_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the workflow and print its summary (exit code 0; flagged frames are reported)."""
    from ..errors import InputError
    from ..timeseries import plot_drift, register_timeseries

    piecewise = None
    if args.piecewise:
        piecewise = {
            "patch": args.patch,
            "overlap": args.overlap,
            "max_deviation": args.max_deviation,
        }
    strides = args.strides
    if isinstance(strides, int):
        strides = (strides,)
    min_quality = args.min_quality
    if min_quality != "auto":
        try:
            min_quality = float(min_quality)
        except ValueError:
            raise InputError(
                f"--min-quality must be a number or 'auto', got {min_quality!r}."
            ) from None
    if args.plot:  # a side file: not replaced silently, and never an input
        from ..io import check_side_files

        check_side_files([args.plot], output=args.output, overwrite=args.overwrite,
                         inputs={"stack": args.stack})  # fmt: skip
    result = register_timeseries(
        args.stack,
        args.output,
        reference=args.reference,
        upsample_factor=args.upsample,
        normalization=None if args.normalization == "none" else "phase",
        piecewise=piecewise,
        time_axis=args.time_axis,
        channel=args.channel,
        n_reference_frames=args.mean_frames,
        strides=strides,
        apply=args.apply,
        min_quality=min_quality,
        bidiphase=args.bidiphase,
        batch_size=args.batch,
        shards=args.shards,
        allow_sparse=args.allow_sparse,
        pyramid=args.pyramid,
        **cluster_options(args),
    )
    print(result.summary())
    for report in result.reports.values():
        print(report.summary())
    if args.plot:
        from ..io import record_side_files

        record_side_files(args.output, [args.plot])
        plot_drift(result, args.plot)
        print(f"drift plot: {args.plot}")
    for warning in result.warnings:
        print(f"chunkreg: warning: {warning}", file=sys.stderr)
    if result.low_quality.any():
        print(
            "chunkreg: some frames have low quality (listed above); their shifts were "
            "interpolated from the neighbouring frames.",
            file=sys.stderr,
        )
    return EXIT_QC_WARNING if args.strict and result.warnings else 0
