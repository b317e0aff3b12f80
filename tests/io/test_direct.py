"""Direct chunk I/O (``chunkreg.io._direct``) writes zarr's bytes and reads zarr's values."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

import chunkreg
from chunkreg.errors import InputError
from chunkreg.io import _batch, _direct
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import compute_flow

SYNC = {"scheduler": "synchronous", "progress": False}

SELECTIONS = [
    (slice(0, 1), slice(0, 32), slice(0, 32)),  # one whole chunk
    (slice(0, 2), slice(32, 100), slice(64, 77)),  # whole chunks, edge chunks cut short
    (slice(1, 2), slice(5, 50), slice(3, 70)),  # partial chunks: merged with what is stored
    (slice(None), slice(96, None), slice(None)),  # open slices
]
CODECS = [
    ("f4", "auto", np.nan),
    ("f4", None, np.nan),
    ("u2", "auto", 0),
    ("f8", [zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec()], 0.0),
    ("i4", [zarr.codecs.GzipCodec()], 7),
    ("f4", [zarr.codecs.BloscCodec()], np.nan),
]


def _files(root) -> dict[str, bytes]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _pair(tmp_path, dtype, compressors, fill):
    kw = {"shape": (2, 100, 77), "dtype": dtype, "chunks": (1, 32, 32),
          "compressors": compressors, "fill_value": fill}  # fmt: skip
    return zarr.create_array(tmp_path / "zarr.zarr", **kw), zarr.create_array(
        tmp_path / "direct.zarr", **kw
    )


@pytest.mark.parametrize(("dtype", "compressors", "fill"), CODECS)
def test_writes_the_bytes_zarr_writes_and_reads_its_values(tmp_path, dtype, compressors, fill):
    by_zarr, by_us = _pair(tmp_path, dtype, compressors, fill)
    assert _direct.direct(by_us) is not None
    rng = np.random.default_rng(0)
    for selection in SELECTIONS:
        shape = by_zarr[selection].shape
        values = (rng.random(shape) * 100).astype(dtype)
        by_zarr[selection] = values
        assert _direct.write(by_us, selection, values)
    assert _files(tmp_path / "zarr.zarr") == _files(tmp_path / "direct.zarr")
    for selection in [*SELECTIONS, (slice(1, 2), slice(17, 93), slice(5, 6))]:
        ours = _direct.read(by_us, selection)
        assert ours.dtype == by_zarr.dtype
        np.testing.assert_array_equal(ours, by_zarr[selection])


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_chunks_of_fill_value_are_not_stored_as_zarr_decides(tmp_path, fill):
    by_zarr, by_us = _pair(tmp_path, "f4", "auto", fill)
    block = (slice(0, 1), slice(0, 32), slice(0, 32))
    cases = [
        np.full((1, 32, 32), fill, "f4"),  # only the fill value: not stored (deleted)
        np.full((1, 32, 32), -0.0, "f4"),  # -0.0 is not the fill 0.0 to zarr: stored
        np.concatenate([np.full((1, 32, 31), fill, "f4"), np.ones((1, 32, 1), "f4")], axis=2),
    ]
    for values in cases:
        by_zarr[block] = values
        assert _direct.write(by_us, block, values)
        assert _files(tmp_path / "zarr.zarr") == _files(tmp_path / "direct.zarr")
    # writing the fill value over a stored chunk deletes it, as zarr does
    by_zarr[block] = cases[0]
    assert _direct.write(by_us, block, cases[0])
    assert _files(tmp_path / "zarr.zarr") == _files(tmp_path / "direct.zarr")
    assert not any(k.startswith("c") for k in _files(tmp_path / "direct.zarr"))


def test_arrays_it_cannot_do_are_left_to_zarr(tmp_path):
    plain = zarr.create_array(tmp_path / "a.zarr", shape=(64, 64), dtype="f4", chunks=(16, 16))
    sharded = zarr.create_array(tmp_path / "s.zarr", shape=(64, 64), dtype="f4", chunks=(16, 16),
                                shards=(32, 32))  # fmt: skip
    memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), dtype="f4")
    v2 = zarr.create_array(tmp_path / "v2.zarr", shape=(8,), dtype="f4", zarr_format=2)
    for array in (sharded, memory, v2):
        assert _direct.direct(array) is None
        assert _direct.read(array, (slice(0, 1),) * array.ndim) is None
    read_only = zarr.open_array(tmp_path / "a.zarr", mode="r")
    assert not _direct.write(read_only, (slice(0, 16), slice(0, 16)), np.ones((16, 16), "f4"))
    # selections other than step-1 slices inside the array
    ones = np.ones((16, 16), "f4")
    assert _direct.read(plain, (slice(0, 16, 2), slice(0, 16))) is None
    assert _direct.read(plain, (3, slice(0, 16))) is None
    assert not _direct.write(plain, (slice(60, 76), slice(0, 16)), ones)  # past the end
    assert not _direct.write(plain, (slice(0, 16), slice(0, 8)), ones)  # shape mismatch
    assert not any(k.startswith("c") for k in _files(tmp_path / "a.zarr"))  # nothing written


def test_batched_requests_mix_direct_and_zarr_arrays_in_order(tmp_path):
    data = np.arange(64 * 64, dtype="f4").reshape(64, 64)
    local = zarr.create_array(tmp_path / "a.zarr", data=data, chunks=(16, 16))
    memory = zarr.create_array(zarr.storage.MemoryStore(), data=data * 2, chunks=(16, 16))
    requests = [(local, (slice(3, 40), slice(0, 64))), (memory, (slice(0, 5), slice(7, 9))),
                (local, (slice(60, 64), slice(1, 2)))]  # fmt: skip
    got = _batch.read_many(requests)
    for (array, selection), values in zip(requests, got, strict=True):
        np.testing.assert_array_equal(values, array[selection])
    out_local = zarr.create_array(tmp_path / "o.zarr", shape=(64, 64), dtype="f4", chunks=(16, 16))
    out_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(64, 64), dtype="f4",
                                   chunks=(16, 16))  # fmt: skip
    _batch.write_many([(out_local, (slice(0, 16), slice(0, 64)), data[:16]),
                       (out_memory, (slice(16, 32), slice(0, 64)), data[16:32])])  # fmt: skip
    np.testing.assert_array_equal(out_local[:16], data[:16])
    np.testing.assert_array_equal(out_memory[16:32], data[16:32])


def test_a_corrupt_chunk_is_named_as_before(tmp_path):
    data = np.random.default_rng(0).random((64, 64)).astype("f4")
    array = zarr.create_array(tmp_path / "a.zarr", data=data, chunks=(32, 32))
    (tmp_path / "a.zarr" / "c" / "1" / "0").write_bytes(b"not zstd")
    with pytest.raises(InputError, match=r"input .* chunk c/1/0 cannot be read"):
        _batch.read_many([(array, (slice(0, 64), slice(0, 10))), (array, (slice(0, 1),) * 2)])


def _tree(root: Path) -> dict[str, bytes]:
    """Every file of a run's output with its bytes (result, metadata, completion records)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _count_direct_io(monkeypatch) -> list[str]:
    """Record each chunk read and write that goes the direct way."""
    calls: list[str] = []
    for name in ("read", "write"):
        original = getattr(_direct.DirectArray, name)

        def spy(self, *args, _original=original, _name=name):
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(_direct.DirectArray, name, spy)
    return calls


def smooth_plus_tile(a, tile):
    """Smoothed input plus the tile's number: neighbouring tiles disagree, blending matters."""
    return ndimage.gaussian_filter(a, 1.5) + tile.number


def test_an_engine_run_without_zarr_internals_writes_the_same_bytes(tmp_path, monkeypatch):
    """Fall-back when zarr's internals are missing: a blended map_tiles run goes wholly through
    zarr and its output is byte for byte the direct run's."""
    image = np.random.default_rng(7).random((40, 48)).astype(np.float32)
    source = zarr.create_array(tmp_path / "in.zarr", data=image, chunks=(8, 8))
    run = partial(chunkreg.map_tiles, smooth_plus_tile, source, tile=16, depth=6,
                  blend="linear", **SYNC)  # fmt: skip
    calls = _count_direct_io(monkeypatch)
    assert run(tmp_path / "direct.zarr").ok
    assert {"read", "write"} <= set(calls)  # the direct way was taken
    monkeypatch.setattr(_direct, "_AVAILABLE", False)  # as when its imports fail
    monkeypatch.setattr(_direct, "_KNOWN", {})  # forget the arrays worked out already
    calls.clear()
    assert run(tmp_path / "zarr.zarr").ok
    assert calls == []  # everything through zarr
    expected = _tree(tmp_path / "direct.zarr")
    assert any(k.startswith("0/c/") for k in expected) and "_scratch" not in str(expected)
    assert _tree(tmp_path / "zarr.zarr") == expected


def test_a_flow_run_on_arrays_it_cannot_do_writes_the_same_bytes(tmp_path, monkeypatch):
    """Fall-back for an array the direct way does not support: a coarse-to-fine flow run
    (pyramid, tiles, blend) goes wholly through zarr and writes the direct run's bytes."""
    shape = (96, 80)
    reference = textured_image(shape, seed=4, sigma=2.0)
    truth = smooth_displacement(shape, amplitude=1.5, seed=5)
    paths = []
    for name, data in (("reference", reference), ("moving", apply_flow(reference, -truth))):
        zarr.create_array(tmp_path / f"{name}.zarr", data=data, chunks=(16, 16))
        paths.append(str(tmp_path / f"{name}.zarr"))
    run = partial(compute_flow, *paths, method="ilk", tile=(48, 48), levels=2, **SYNC)
    calls = _count_direct_io(monkeypatch)
    assert run(tmp_path / "direct.zarr").ok
    assert {"read", "write"} <= set(calls)
    monkeypatch.setattr(_direct, "_make", lambda array: None)  # as for an unsupported array
    monkeypatch.setattr(_direct, "_KNOWN", {})
    calls.clear()
    assert run(tmp_path / "zarr.zarr").ok
    assert calls == []
    expected = _tree(tmp_path / "direct.zarr")
    assert _tree(tmp_path / "zarr.zarr") == expected
    flow = zarr.open_array(tmp_path / "direct.zarr", path="flow", mode="r")[:]
    inner = (slice(None), slice(8, -8), slice(8, -8))  # the known flow, away from the edges
    assert np.median(np.abs(flow[inner] - truth[inner])) < 0.2
