import json

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from chunkreg.errors import IncompatibleOutputError, InputError
from chunkreg.io import (
    ArrayRef,
    CompletionRecord,
    array_ref,
    create_array,
    multiscale_dataset_paths,
    open_array,
    open_output_group,
    write_ome_multiscale_metadata,
)


@pytest.fixture
def volume(tmp_path):
    data = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    arr = create_array(tmp_path / "vol.zarr", shape=data.shape, dtype=data.dtype, chunks=(4, 4, 4))
    arr[:] = data
    return tmp_path / "vol.zarr", data


def test_open_array_path_is_read_only(volume):
    path, data = volume
    arr = open_array(path, name="reference")
    assert_array_equal(arr[:], data)
    with pytest.raises(Exception, match=r"(?i)read.only"):
        arr[0, 0, 0] = 1
    assert_array_equal(open_array(path)[:], data)


def test_array_ref_round_trip(volume):
    path, data = volume
    ref = array_ref(open_array(path))
    assert isinstance(ref, ArrayRef)
    assert_array_equal(ref.open()[1:3], data[1:3])
    assert_array_equal(open_array(ref)[:], data)


def test_open_array_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_array(tmp_path / "nope.zarr", name="moving")
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(InputError, match="not a zarr"):
        open_array(tmp_path / "file.txt")
    zarr.open_group(tmp_path / "g.zarr", mode="w").create_array("a", shape=(2,), dtype="u1")
    with pytest.raises(InputError, match="without OME-Zarr"):
        open_array(tmp_path / "g.zarr")
    with pytest.raises(InputError, match="numpy array"):
        open_array(np.zeros(3))


def test_ome_multiscale_open_levels(tmp_path):
    group = zarr.open_group(tmp_path / "ms.zarr", mode="w")
    for level, shape in enumerate([(8, 8), (4, 4)]):
        create_array(group, name=str(level), shape=shape, dtype="u2", chunks=(4, 4))[:] = level + 1
    write_ome_multiscale_metadata(
        group, paths=["0", "1"], units={"x": "micrometer", "y": "micrometer"}
    )
    meta = group.attrs["ome"]
    assert meta["version"] == "0.5"
    assert [a["name"] for a in meta["multiscales"][0]["axes"]] == ["y", "x"]
    assert meta["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] == [
        2.0,
        2.0,
    ]
    assert multiscale_dataset_paths(dict(group.attrs)) == ["0", "1"]
    assert open_array(tmp_path / "ms.zarr").shape == (8, 8)
    assert open_array(tmp_path / "ms.zarr", level=1)[0, 0] == 2
    with pytest.raises(InputError, match="out of range"):
        open_array(tmp_path / "ms.zarr", level=2)


def test_multiscale_paths_ngff_04():
    attrs = {"multiscales": [{"datasets": [{"path": "s0"}, {"path": "s1"}]}]}
    assert multiscale_dataset_paths(attrs) == ["s0", "s1"]


def test_output_group_signature(tmp_path):
    out = tmp_path / "out.zarr"
    sig = {"shape": (4, 5), "dtype": np.dtype("float32"), "radius": np.int64(7)}
    g = open_output_group(out, signature=sig, kind="flow")
    g.create_array("data", shape=(2,), dtype="u1")[:] = 5
    # same signature: resumed, data kept
    g2 = open_output_group(out, signature=sig, kind="flow")
    assert_array_equal(g2["data"][:], [5, 5])
    # different signature: refused, untouched
    with pytest.raises(IncompatibleOutputError, match="radius: existing 7, requested 9"):
        open_output_group(out, signature={**sig, "radius": 9}, kind="flow")
    assert_array_equal(zarr.open_group(out, mode="r")["data"][:], [5, 5])
    # overwrite: fresh
    g3 = open_output_group(out, signature={**sig, "radius": 9}, kind="flow", overwrite=True)
    assert "data" not in g3
    stored = json.loads((out / "zarr.json").read_text())["attributes"]["chunkreg"]["signature"]
    assert stored["radius"] == 9 and stored["workflow"] == "flow"


def test_output_group_refuses_foreign(tmp_path):
    (tmp_path / "notzarr").mkdir()
    (tmp_path / "notzarr" / "keep.txt").write_text("precious")
    with pytest.raises(IncompatibleOutputError, match="not a zarr store"):
        open_output_group(tmp_path / "notzarr", signature={}, overwrite=True)
    assert (tmp_path / "notzarr" / "keep.txt").read_text() == "precious"
    zarr.open_group(tmp_path / "foreign.zarr", mode="w")
    with pytest.raises(IncompatibleOutputError, match="not written by chunkreg"):
        open_output_group(tmp_path / "foreign.zarr", signature={})


def test_completion_record(tmp_path):
    g = open_output_group(tmp_path / "o.zarr", signature={})
    rec = CompletionRecord(g, "tiles", 10_000)
    assert rec.done_indices().size == 0 and not rec.complete
    rec.mark_done(3)
    rec.mark_done_many([9999, 4096, 3, 0])
    again = CompletionRecord(zarr.open_group(tmp_path / "o.zarr", mode="a"), "tiles", 10_000)
    assert_array_equal(again.done_indices(), [0, 3, 4096, 9999])
    assert again.is_done(4096) and not again.is_done(4095)
    with pytest.raises(IndexError):
        again.mark_done(10_000)
    with pytest.raises(IncompatibleOutputError, match="10000 tasks"):
        CompletionRecord(g, "tiles", 12)
    empty = CompletionRecord(g, "none", 0)
    assert empty.complete


def test_output_group_refuses_existing_array(tmp_path):
    create_array(tmp_path / "a.zarr", shape=(3,), dtype="u1", chunks=(3,))[:] = 7
    for overwrite in (False, True):
        with pytest.raises(IncompatibleOutputError, match="is a zarr array"):
            open_output_group(tmp_path / "a.zarr", signature={}, overwrite=overwrite)
    assert_array_equal(open_array(tmp_path / "a.zarr")[:], [7, 7, 7])


def test_array_ref_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    create_array("rel.zarr", shape=(2,), dtype="u1", chunks=(2,))
    ref = array_ref(open_array("rel.zarr"))
    assert ref.store == str(tmp_path / "rel.zarr")
