"""Benchmark: the global affine step's time against the dense flow's, on the same generated pair.

Generates a float32 3-D reference in zarr (64³ chunks; a non-periodic texture, each 128³ block
from its own seed) and a moving volume related to it by a known affine (7-degree rotation about
two axes, 2 % scale, a little shear, a shift), written tile by tile by ``warp_volume`` (bounded
memory). Then, side by side on one LocalCluster (the same workers for both):

* ``estimate_affine`` (defaults): wall time, the error of its matrix at the volume's corners;
* ``compute_flow`` (iLK defaults, coarse to fine) of the residual after that affine (the
  pipeline's flow step): wall time.

Target (the affine pre-alignment issue): at 1 GiB the affine step takes at most 10 % of the
dense flow's time. ``--flow-seconds`` skips the flow and uses a time measured elsewhere (e.g.
by bench_tiled_flow.py with the same size and worker count). Generated data are deleted.

Usage::

    python benchmarks/bench_affine.py                 # 1 GiB, 2 workers (slow: the flow)
    python benchmarks/bench_affine.py --quick         # 32 MiB, a quick check
    python benchmarks/bench_affine.py --workers 1     # one single-threaded worker
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from bench_tiled_flow import parse_size, volume_shape

import chunkreg
from chunkreg.execution import open_client
from chunkreg.registration import apply_affine, invert_affine, rotation_matrix
from chunkreg.testing import textured_image

CHUNK = 64
BLOCK = 128


def truth_matrix(shape) -> np.ndarray:
    """Reference -> moving voxels: rotation about the centre, scale, shear, shift."""
    linear = rotation_matrix(np.radians([7.0, 0.0, 5.0])) @ np.diag([1.02, 1.02, 1.0])
    linear[1, 2] += 0.01
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = centre - linear @ centre + [3.0, -5.0, 4.0]
    return m


def generate(directory: Path, shape, client) -> tuple[str, str, np.ndarray]:
    """The reference block by block; the moving one warped from it by the inverse affine."""
    ref_path = str(directory / "reference.zarr")
    ref = zarr.create_array(ref_path, shape=shape, chunks=(CHUNK,) * 3, dtype="float32")
    for i, corner in enumerate(np.ndindex(*(n // BLOCK for n in shape))):
        region = tuple(slice(c * BLOCK, (c + 1) * BLOCK) for c in corner)
        ref[region] = textured_image((BLOCK,) * 3, seed=i, sigma=2.0)
    truth = truth_matrix(shape)
    moving = directory / "moving"
    # moving(truth @ x) = reference(x): the reference warped by the inverse transform
    chunkreg.warp_volume(ref_path, None, moving, affine=invert_affine(truth), order=1,
                         client=client, progress=False).raise_if_failed()  # fmt: skip
    return ref_path, str(moving / "0"), truth


def corner_error(estimate, truth, shape) -> float:
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape], indexing="ij")).reshape(3, -1).T
    return float(np.linalg.norm(apply_affine(estimate, corners) - apply_affine(truth, corners),
                                axis=1).max())  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="volume size, e.g. 256MiB or 1GiB (default 1GiB)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="32 MiB instead of --size")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    parser.add_argument("--flow-seconds", type=float, default=None,
                        help="dense flow time measured elsewhere (skips the flow run)")  # fmt: skip
    parser.add_argument("--dir", default=None, help="where to generate data (default: tmp)")
    args = parser.parse_args(argv)
    size = parse_size("32MiB") if args.quick else args.size
    shape = volume_shape(size)
    directory = Path(tempfile.mkdtemp(prefix="bench_affine_", dir=args.dir))
    try:
        with open_client(n_workers=args.workers) as client:
            t0 = time.perf_counter()
            ref, mov, truth = generate(directory, shape, client)
            print(f"volume {shape} float32 ({4 * np.prod(shape) / 2**20:.0f} MiB), "
                  f"{args.workers} worker(s); generated in {time.perf_counter() - t0:.1f} s")  # fmt: skip
            t0 = time.perf_counter()
            affine = chunkreg.estimate_affine(ref, mov, directory / "affine.zarr", client=client,
                                              progress=False)  # fmt: skip
            affine_seconds = time.perf_counter() - t0
            error = corner_error(affine.matrix, truth, shape)
            print(f"affine: {affine_seconds:.1f} s, level {affine.level}, {affine.n_inliers} "
                  f"inliers, corner error {error:.3f} voxels")  # fmt: skip
            if args.flow_seconds is None:
                t0 = time.perf_counter()
                report = chunkreg.compute_flow(ref, mov, directory / "flow.zarr",
                                               initial_affine=affine, client=client,
                                               progress=False)  # fmt: skip
                report.raise_if_failed()
                flow_seconds = time.perf_counter() - t0
                print(f"dense flow after the affine: {flow_seconds:.1f} s "
                      f"({report.notes.get('NCC per tile', '')})")  # fmt: skip
            else:
                flow_seconds = args.flow_seconds
                print(f"dense flow: {flow_seconds:.1f} s (given)")
        ratio = affine_seconds / flow_seconds
        print(f"affine / flow = {100 * ratio:.1f} % (target <= 10 % at 1 GiB)")
        return 0 if error < 0.3 else 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
