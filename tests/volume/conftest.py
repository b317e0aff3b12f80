"""Fixtures for the volume workflows: small zarr volume pairs and a 2-worker LocalCluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr

from chunkreg.testing import apply_flow, smooth_displacement, textured_image

# Ragged on purpose: neither shape is a multiple of its chunks.
SHAPE_2D, CHUNKS_2D, TILE_2D = (192, 160), (40, 48), (80, 96)
SHAPE_3D, CHUNKS_3D, TILE_3D = (48, 40, 36), (16, 16, 16), (32, 32, 16)


@dataclass(frozen=True)
class Pair:
    reference: str
    moving: str
    ref: np.ndarray
    mov: np.ndarray
    truth: np.ndarray
    chunks: tuple
    tile: tuple


def make_pair(directory: Path, shape, chunks, tile, *, amplitude=1.5, seed=0) -> Pair:
    """A textured reference and a moving image displaced by a smooth known flow, in zarr."""
    ref = textured_image(shape, seed=seed, sigma=2.0)
    truth = smooth_displacement(shape, amplitude=amplitude, seed=seed + 1)
    mov = apply_flow(ref, -truth)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in (("reference", ref), ("moving", mov)):
        path = directory / f"{name}.zarr"
        zarr.create_array(str(path), data=data, chunks=chunks)
        paths.append(str(path))
    return Pair(paths[0], paths[1], ref, mov, truth, tuple(chunks), tuple(tile))


@pytest.fixture(scope="session")
def pair2d(tmp_path_factory) -> Pair:
    return make_pair(tmp_path_factory.mktemp("pair2d"), SHAPE_2D, CHUNKS_2D, TILE_2D)


@pytest.fixture(scope="session")
def pair3d(tmp_path_factory) -> Pair:
    return make_pair(tmp_path_factory.mktemp("pair3d"), SHAPE_3D, CHUNKS_3D, TILE_3D, seed=3)


@pytest.fixture(scope="session")
def cluster_client():
    """A real LocalCluster: 2 worker processes, one thread each, on 127.0.0.1."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="2GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
