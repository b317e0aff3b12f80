"""``make demo``: chunkreg's main jobs on generated data, on an embedded LocalCluster.

Generates a textured 3-D volume pair with a known smooth deformation and a drifting time
series, then runs dense flow + warping and drift correction on a two-worker LocalCluster,
prints errors against the known truth with time and throughput, and writes PNG figures. The
inputs are OME-Zarr images with a voxel size in micrometres (and a frame interval), which every
image output carries, each with its display pyramid.

Run it with ``python -m chunkreg.demo [--output DIR]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

from .execution import open_client
from .io import Space, create_array, multiscale_dataset_paths, open_array, read_space, write_space
from .testing import apply_flow, smooth_displacement, textured_image

__all__ = ["main"]

UM = "micrometer"
#: Physical spaces of the generated inputs (carried to every output, with pyramids).
VOLUME_SPACE = Space(("z", "y", "x"), (1.0, 0.5, 0.5), (0.0, 0.0, 0.0), {"z": UM, "y": UM, "x": UM})
SERIES_SPACE = Space(("t", "y", "x"), (0.1, 0.4, 0.4), (0.0, 0.0, 0.0),
                     {"t": "second", "y": UM, "x": UM})  # fmt: skip


def _write_image(path: Path, data: np.ndarray, chunks, space: Space) -> None:
    """Write ``data`` as level 0 of an OME-Zarr image in ``space``."""
    group = zarr.open_group(path, mode="w")
    create_array(group, name="0", shape=data.shape, dtype=data.dtype, chunks=chunks,
                 dimension_names=space.axes)[:] = data  # fmt: skip
    write_space(group, ["0"], space)


def describe_image(path: Path) -> str:
    """One line on an OME-Zarr image output: its levels and voxel size (validated if possible)."""
    group = zarr.open_group(path, mode="r")
    levels = multiscale_dataset_paths(group.attrs.asdict())
    space = read_space(open_array(path))
    size = ", ".join(
        f"{axis} {step:g}" + (f" {space.units[axis]}" if space.units.get(axis) else "")
        for axis, step in zip(space.axes, space.scale, strict=True)
    )
    shapes = ", ".join("x".join(map(str, group[p].shape)) for p in levels)
    try:
        from ome_zarr_models.v05.image import Image
    except ImportError:
        checked = ""
    else:
        Image.from_zarr(group)  # raises if the metadata is not valid OME-Zarr 0.5
        checked = ", valid OME-Zarr 0.5"
    return f"{path.name}: {len(levels)} levels ({shapes}), voxel {size}{checked}"


def make_volume_pair(folder: Path, shape=(64, 160, 160), amplitude=3.0, seed=0):
    """Write reference.zarr and moving.zarr (moving = reference deformed by a known flow)."""
    reference = textured_image(shape, seed=seed, sigma=1.5)
    truth = smooth_displacement(shape, amplitude=amplitude, seed=seed + 1)
    moving = apply_flow(reference, -truth)
    rng = np.random.default_rng(seed + 2)
    chunks = (32, 64, 64)
    for name, data in (("reference", reference), ("moving", moving)):
        noisy = data + rng.normal(0, 0.01, data.shape).astype(np.float32)
        _write_image(folder / f"{name}.zarr", noisy.astype(np.float32), chunks, VOLUME_SPACE)
    return reference, moving, truth


def make_drifting_series(folder: Path, n_frames=60, shape=(192, 192), max_drift=12.0, seed=0):
    """Write series.zarr: one field of view drifting by a known random walk (uint16, noisy)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.8, size=(n_frames, 2))
    steps[0] = 0
    drift = np.cumsum(steps, axis=0)
    drift *= min(1.0, max_drift / max(np.abs(drift).max(), 1e-9))
    scene = textured_image(
        (shape[0] + 64, shape[1] + 64), seed=seed + 5, sigma=2.0, dtype=np.float64
    )
    spectrum = np.fft.fftn(scene)
    frames = np.empty((n_frames, *shape), dtype=np.uint16)
    for t, d in enumerate(drift):
        shifted = np.fft.ifftn(ndimage.fourier_shift(spectrum, d)).real[32:-32, 32:-32]
        noisy = 1000 + 3000 * shifted + rng.normal(0, 30, shape)
        frames[t] = np.clip(noisy, 0, 65535).astype(np.uint16)
    _write_image(folder / "series.zarr", frames, (1, *shape), SERIES_SPACE)
    # Frame t shows the scene moved by drift[t]; registering it onto frame 0 needs the
    # opposite shift, relative to frame 0.
    return frames, -(drift - drift[0])


def _endpoint_error(flow: np.ndarray, truth: np.ndarray, margin: int = 4) -> float:
    inner = (slice(None), *(slice(margin, n - margin) for n in truth.shape[1:]))
    return float(np.sqrt(((flow[inner] - truth[inner]) ** 2).sum(axis=0)).mean())


def _figures(
    folder: Path, reference, moving, registered, flow, truth, series_shifts, true_shifts
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    z = reference.shape[0] // 2
    # 1. Flow field: colour (direction as hue, magnitude as value) and quiver, estimate vs truth.
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    for ax, field, title in zip(
        axes, (flow, truth), ("estimated flow (y, x)", "true flow (y, x)"), strict=True
    ):
        v, u = field[1, z], field[2, z]
        magnitude = np.hypot(u, v)
        hsv = np.stack(
            [
                (np.arctan2(v, u) + np.pi) / (2 * np.pi),
                np.ones_like(u),
                np.clip(magnitude / max(magnitude.max(), 1e-9), 0, 1),
            ],
            axis=-1,
        )
        ax.imshow(matplotlib.colors.hsv_to_rgb(hsv))
        step = max(1, reference.shape[1] // 16)
        yy, xx = np.mgrid[0 : v.shape[0] : step, 0 : v.shape[1] : step]
        ax.quiver(xx, yy, u[::step, ::step], v[::step, ::step], color="white", angles="xy")
        ax.set_title(f"{title}, slice z={z}")
        ax.set_axis_off()
    written.append(folder / "flow.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    # 2. Before/after overlays: reference in magenta, moving/registered in green.
    def overlay(a, b):
        a = (a - a.min()) / max(np.ptp(a), 1e-9)
        b = (b - b.min()) / max(np.ptp(b), 1e-9)
        return np.stack([a, b, a], axis=-1)

    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    axes[0].imshow(overlay(reference[z], moving[z]))
    axes[0].set_title("before: reference (magenta) vs moving (green)")
    axes[1].imshow(overlay(reference[z], registered[z]))
    axes[1].set_title("after: reference vs registered")
    for ax in axes:
        ax.set_axis_off()
    written.append(folder / "overlay.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    # 3. Drift plot.
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    t = np.arange(len(true_shifts))
    for axis, name in enumerate("yx"):
        ax.plot(
            t,
            true_shifts[:, axis],
            "k-",
            lw=3,
            alpha=0.3,
            label="truth" if axis == 0 else None,
        )
        ax.plot(t, series_shifts[:, axis], ".-", label=f"measured {name}")
    ax.set_xlabel("frame")
    ax.set_ylabel("correction shift (px)")
    ax.legend()
    ax.set_title("drift correction of the time series")
    written.append(folder / "drift.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    return written


def main(argv=None) -> int:
    """Run the demo; return an exit code."""
    from . import compute_flow, register_timeseries, warp_volume

    parser = argparse.ArgumentParser(
        prog="python -m chunkreg.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--output", default="demo-output", help="folder for data, results and figures"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="workers of the embedded LocalCluster"
    )
    args = parser.parse_args(argv)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    start = time.perf_counter()

    print(
        "generating a 3-D volume pair with a known smooth deformation and a drifting time series ..."
    )
    reference, moving, truth = make_volume_pair(folder)
    frames, true_shifts = make_drifting_series(folder)

    with open_client(n_workers=args.workers) as client:
        print(f"LocalCluster with {len(client.nthreads())} workers on 127.0.0.1")
        t0 = time.perf_counter()
        flow_report = compute_flow(
            folder / "reference.zarr",
            folder / "moving.zarr",
            folder / "flow.zarr",
            method="ilk",
            tile=(64, 64, 64),
            client=client,
            overwrite=True,
        )
        t_flow = time.perf_counter() - t0
        flow = zarr.open_group(folder / "flow.zarr", mode="r")["flow"][:]
        t0 = time.perf_counter()
        warp_report = warp_volume(
            folder / "moving.zarr",
            folder / "flow.zarr",
            folder / "registered.zarr",
            client=client,
            overwrite=True,
        )
        t_warp = time.perf_counter() - t0
        registered = zarr.open_group(folder / "registered.zarr", mode="r")["0"][:]
        t0 = time.perf_counter()
        series = register_timeseries(
            folder / "series.zarr",
            folder / "series-registered.zarr",
            reference="first",
            upsample_factor=20,
            client=client,
            overwrite=True,
        )
        t_series = time.perf_counter() - t0

    voxels = reference.size
    epe = _endpoint_error(flow, truth)
    epe0 = _endpoint_error(np.zeros_like(truth), truth)
    mae_before = float(np.abs(moving - reference).mean())
    mae_after = float(np.abs(registered - reference).mean())
    shifts = np.asarray(series.shifts)
    shift_error = np.abs(shifts - true_shifts).max()
    lines += [
        f"dense flow (iLK, coarse to fine over {flow_report.notes.get('levels', '?')} levels, "
        f"{flow_report.notes.get('tiles', '?')} tiles): {voxels / t_flow / 1e6:.2f} Mvoxel/s, "
        f"{t_flow:.1f} s; mean endpoint error {epe:.3f} px (no registration: {epe0:.3f} px)",
        f"warp: {warp_report.n_done} tiles, {t_warp:.1f} s; mean |registered - reference| "
        f"{mae_after:.4f} vs {mae_before:.4f} before ({100 * (1 - mae_after / mae_before):.0f}% lower)",
        f"drift correction: {len(frames)} frames of {frames.shape[1]}x{frames.shape[2]} in {t_series:.1f} s "
        f"({len(frames) / t_series:.0f} frames/s); max drift {np.abs(true_shifts).max():.2f} px, "
        f"max error {shift_error:.3f} px",
    ]
    figures = _figures(folder, reference, moving, registered, flow, truth, shifts, true_shifts)
    print()
    print("chunkreg demo summary")
    print("=====================")
    for line in lines:
        print("  " + line)
    for name in ("flow.zarr", "registered.zarr", "series-registered.zarr"):
        print("  " + describe_image(folder / name))
    print(f"  figures: {', '.join(str(p) for p in figures)}")
    print(f"  total time {time.perf_counter() - start:.1f} s; outputs in {folder}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
