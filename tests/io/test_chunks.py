"""Missing chunk files found from the store listing; undecodable chunks named on read; output
arrays checksummed and dense."""

import os

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from chunkreg.errors import InputError
from chunkreg.io import (
    check_inputs_stored,
    create_array,
    missing_chunks,
    output_codecs,
    read_region,
    require_chunks,
)


def _array(path, shards=None, **kwargs):
    data = np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) + 1
    return zarr.create_array(str(path), data=data, chunks=(8, 10), shards=shards, **kwargs), data


def test_complete_arrays_have_no_missing_chunks(tmp_path):
    array, _ = _array(tmp_path / "a.zarr")
    assert missing_chunks(array) == []
    require_chunks(array, "reference")  # passes


def test_missing_chunks_are_listed_in_grid_order(tmp_path):
    array, _ = _array(tmp_path / "a.zarr")
    for key in ("c/2/1", "c/0/1"):
        os.remove(tmp_path / "a.zarr" / key)
    assert missing_chunks(array) == ["c/0/1", "c/2/1"]
    with pytest.raises(InputError, match=r"^moving .*a\.zarr: 2 of 6 chunk files are missing "
                                         r"from the store, and the data around some of "
                                         r"them runs on into them \(c/0/1, c/2/1\)"):  # fmt: skip
        require_chunks(array, "moving")
    check_inputs_stored({"moving": array}, allow_sparse=True)  # accepted when asked


def test_arrays_inside_groups_and_shards(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    inner = group.create_array("sub/x", shape=(16, 16), chunks=(4, 4), shards=(8, 8), dtype="f4")
    inner[:] = 1
    assert missing_chunks(inner) == []
    os.remove(tmp_path / "g.zarr" / "sub" / "x" / "c" / "1" / "0")
    assert missing_chunks(inner) == ["c/1/0"]  # shard files, not inner chunks
    with pytest.raises(InputError, match=r"1 of 4 shard files are missing"):
        require_chunks(inner, "stack")


def test_blank_regions_zarr_did_not_store_pass(tmp_path):
    """Zero padding: zarr stores no all-fill chunk, and the data beside it ends in fill values."""
    data = np.zeros((24, 30), np.uint16)
    data[2:14, 3:17] = np.arange(12 * 14).reshape(12, 14) + 100  # tissue, then blank padding
    array = zarr.create_array(str(tmp_path / "p.zarr"), data=data, chunks=(8, 10))
    assert missing_chunks(array) == ["c/0/2", "c/1/2", "c/2/0", "c/2/1", "c/2/2"]
    require_chunks(array, "moving")  # passes: nothing was lost
    os.remove(tmp_path / "p.zarr" / "c" / "0" / "1")  # a chunk of the tissue is lost
    with pytest.raises(
        InputError, match=r"6 of 9 chunk files .* some of them runs on into them \(c/0/1\)"
    ):
        require_chunks(array, "moving")


def test_an_array_never_written_passes(tmp_path):
    array = zarr.create_array(str(tmp_path / "e.zarr"), shape=(16, 16), chunks=(8, 8), dtype="f4")
    assert len(missing_chunks(array)) == 4
    require_chunks(array, "flow")  # all fill value on purpose, not a lost file


def test_many_missing_chunks_are_counted_not_all_named(tmp_path):
    array = zarr.create_array(str(tmp_path / "m.zarr"), shape=(8, 160), chunks=(8, 8), dtype="u1")
    array[:] = 1
    for k in range(1, 20, 2):
        os.remove(tmp_path / "m.zarr" / "c" / "0" / str(k))
    with pytest.raises(
        InputError, match=r"10 of 20 .*\(c/0/1, c/0/3, c/0/5, c/0/7, c/0/9 and 5 more\)"
    ):
        require_chunks(array, "reference")


def test_only_missing_files_beside_data_are_named(tmp_path):
    array = zarr.create_array(str(tmp_path / "m.zarr"), shape=(8, 80), chunks=(8, 8), dtype="u1")
    array[:] = 1
    for k in range(1, 9):  # a run of lost files: only its ends touch stored data
        os.remove(tmp_path / "m.zarr" / "c" / "0" / str(k))
    with pytest.raises(InputError, match=r"8 of 10 .* runs on into them \(c/0/1, c/0/8\)"):
        require_chunks(array, "reference")


def test_allow_sparse_must_be_a_bool(tmp_path):
    array, _ = _array(tmp_path / "a.zarr")
    with pytest.raises(InputError, match="allow_sparse must be True or False, got 1"):
        check_inputs_stored({"reference": array}, 1)


def test_read_region_reads_and_names_an_undecodable_chunk(tmp_path):
    array, data = _array(tmp_path / "a.zarr")
    region = (slice(3, 20), slice(5, 20))
    assert_array_equal(read_region(array, region, "reference"), data[region])
    path = tmp_path / "a.zarr" / "c" / "1" / "1"
    path.write_bytes(path.read_bytes()[:5])
    with pytest.raises(InputError, match=r"^reference .*a\.zarr: chunk c/1/1 cannot be read "
                                         r"\(RuntimeError: .*\); the stored file is corrupt"):  # fmt: skip
        read_region(array, region, "reference")
    assert_array_equal(read_region(array, (slice(0, 8), slice(0, 20)), "reference"), data[:8])


def test_outputs_are_checksummed_and_store_every_chunk(tmp_path):
    out = create_array(tmp_path / "o.zarr", shape=(8, 8), dtype="f4", chunks=(4, 4))
    out[:] = 0  # all fill value: still stored, so a missing chunk later means a lost file
    assert missing_chunks(out) == []
    names = [type(c).__name__ for c in out.metadata.codecs]
    assert names == ["BytesCodec", "ZstdCodec", "Crc32cCodec"]
    assert [type(c).__name__ for c in output_codecs(None)] == ["Crc32cCodec"]
    path = tmp_path / "o.zarr" / "c" / "0" / "1"
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Stored and computed checksum do not match"):
        zarr.open_array(str(tmp_path / "o.zarr"), mode="r")[...]
