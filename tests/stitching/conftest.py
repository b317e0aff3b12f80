"""Synthetic mosaics with known tile positions, written as zarr tiles."""

import numpy as np
import pytest
import zarr
from stitching_helpers import Mosaic, cut_tile

from chunkreg.stitching import regular_grid
from chunkreg.testing import textured_image


@pytest.fixture
def make_mosaic(tmp_path):
    """Build a mosaic: grid, tile shape, overlap, jitter (px), integer or subpixel truth."""

    def make(
        grid=(6, 6),
        tile_shape=(96, 96),
        overlap=0.125,
        jitter=1.2,
        *,
        subpixel=False,
        seed=0,
        noise=0.005,
        dtype=np.uint16,
        name="tiles.zarr",
    ):
        rng = np.random.default_rng(seed)
        layout = regular_grid(grid, tile_shape, overlap=overlap, names=None)
        layout = layout.__class__(
            tuple(f"tile_{k:03d}" for k in range(len(layout))), layout.positions
        )
        margin = int(np.ceil(jitter)) + 16
        extent = layout.positions.max(axis=0) + np.asarray(tile_shape) + 2 * margin
        source = textured_image(tuple(int(v) for v in np.ceil(extent)), seed=seed, sigma=2.0)
        source = (1000 + 10000 * source).astype(np.float64)
        if subpixel:
            offsets = rng.uniform(-jitter, jitter, layout.positions.shape)
        else:
            offsets = rng.integers(-int(jitter), int(jitter) + 1, layout.positions.shape)
        truth = layout.positions + margin + offsets
        if not subpixel:
            truth = np.round(truth)  # integer tiles are cut at whole pixels
        group = zarr.open_group(tmp_path / name, mode="w")
        tiles = []
        for tile_name, pos in zip(layout.names, truth, strict=True):
            tile = cut_tile(source, pos, tile_shape, subpixel=subpixel)
            tile = tile + noise * 10000 * rng.standard_normal(tile.shape)
            if np.dtype(dtype).kind == "u":
                tile = np.clip(np.rint(tile), 0, np.iinfo(dtype).max)
            tile = tile.astype(dtype)
            tiles.append(tile)
            group.create_array(tile_name, data=tile, chunks=tuple(min(64, n) for n in tile_shape))
        return Mosaic(source, truth, layout, tiles, tmp_path / name)

    return make


@pytest.fixture(autouse=True)
def one_chunk_per_fusion_task(monkeypatch):
    """Small test mosaics would fit in one fusion task; split them per chunk instead."""
    monkeypatch.setattr("chunkreg.stitching._stitch._FUSE_TASK_ELEMENTS", 1)
