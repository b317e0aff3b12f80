"""URL schemes whose package is missing, and in-memory stores on a cluster: refused up front."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import zarr

from chunkreg.cli import main
from chunkreg.errors import InputError
from chunkreg.execution import open_client
from chunkreg.io import open_array, open_output_group
from chunkreg.testing import textured_image
from chunkreg.volume import compute_flow


def _known_filesystems() -> dict:
    """fsspec's cache of imported filesystem classes (``fsspec.registry`` is a read-only view)."""
    return importlib.import_module("fsspec.registry")._registry


@pytest.fixture
def no_s3fs(monkeypatch):
    """Make this Python look like one without s3fs installed."""
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs raises ImportError
    for scheme in ("s3", "s3a"):
        monkeypatch.delitem(_known_filesystems(), scheme, raising=False)


def test_s3_without_s3fs_is_one_line(no_s3fs, tmp_path):
    with pytest.raises(InputError) as info:
        open_array("s3://bucket/ref.zarr", name="reference")
    assert str(info.value) == "reference: opening s3:// URLs needs s3fs: pip install s3fs"
    with pytest.raises(InputError) as info:
        open_output_group("s3://bucket/out.zarr", signature={})
    assert str(info.value) == "output: opening s3:// URLs needs s3fs: pip install s3fs"


def test_gs_and_unknown_scheme(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    monkeypatch.delitem(_known_filesystems(), "gs", raising=False)
    with pytest.raises(
        InputError, match=r"^moving: opening gs:// URLs needs gcsfs: pip install gcsfs$"
    ):
        open_array("gs://bucket/mov.zarr", name="moving")
    with pytest.raises(InputError, match="URL scheme 'nosuch', which fsspec does not know"):
        open_array("nosuch://x/y.zarr")


def test_cli_s3_without_s3fs_exits_2(no_s3fs, tmp_path, capsys):
    out = tmp_path / "flow.zarr"
    code = main(
        [
            "flow",
            "s3://bucket/ref.zarr",
            "s3://bucket/mov.zarr",
            str(out),
            "--scheduler",
            "synchronous",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "chunkreg: error: reference: opening s3:// URLs needs s3fs: pip install s3fs"
    assert not out.exists()


def _memory_pair():
    ref = textured_image((32, 32), seed=0).astype(np.float32)
    store = zarr.storage.MemoryStore()
    root = zarr.open_group(store, mode="w")
    root.create_array("ref", data=ref, chunks=(16, 16))
    root.create_array("mov", data=np.roll(ref, 1, axis=0), chunks=(16, 16))
    return root["ref"], root["mov"]


@pytest.mark.cluster
def test_memory_input_refused_on_a_cluster(tmp_path):
    ref, mov = _memory_pair()
    out = tmp_path / "flow.zarr"
    with open_client(n_workers=1, memory_limit=None) as client:
        with pytest.raises(InputError) as info:
            compute_flow(ref, mov, out, client=client, progress=False)
        assert "the input reference is an in-memory zarr store" in str(info.value)
        assert "workers of a cluster cannot see" in str(info.value)
        assert not out.exists()  # refused before anything was written
        local_ref = zarr.create_array(tmp_path / "ref.zarr", data=ref[...], chunks=(16, 16))
        local_mov = zarr.create_array(tmp_path / "mov.zarr", data=mov[...], chunks=(16, 16))
        with pytest.raises(InputError, match=r"^the output is an in-memory zarr store"):
            compute_flow(local_ref, local_mov, "memory://flow.zarr", client=client, progress=False)


def test_memory_input_fine_synchronously(tmp_path):
    ref, mov = _memory_pair()
    out = tmp_path / "flow.zarr"
    report = compute_flow(ref, mov, out, scheduler="synchronous", progress=False)
    assert report.n_failed == 0
    flow = zarr.open_array(out, path="flow")[...]
    # moving is ref rolled by +1 along axis 0: the flow there is about +1 (away from the edges)
    assert abs(float(np.median(flow[0, 8:24, 8:24])) - 1.0) < 0.2


def test_storage_option_needs_a_url(tmp_path, capsys):
    code = main(["drift", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"),
                 "--storage-option", "anon=true", "--scheduler", "synchronous"])  # fmt: skip
    assert code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("--storage-option applies to URL inputs or outputs (s3://...); none given.")
    )


def test_http_output_is_refused(tmp_path):
    with pytest.raises(InputError) as info:
        open_output_group("https://example.org/out.zarr", signature={})
    assert str(info.value) == (
        "output 'https://example.org/out.zarr': http(s):// stores are read-only; write the "
        "output to a path or a bucket (s3://, gs://...)."
    )


def test_s3_without_credentials_is_one_line(monkeypatch, tmp_path, capsys):
    """s3fs installed but no credentials anywhere: one line naming what to set, exit 2, and
    nothing written (botocore signs before it connects: the closed port is never reached)."""
    pytest.importorskip("s3fs")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    out = tmp_path / "out.zarr"
    code = main(["flow", "s3://bucket/ref.zarr", "s3://bucket/mov.zarr", str(out), "--no-progress",
                 "--storage-option", "endpoint_url=http://127.0.0.1:9"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no credentials (Unable to locate credentials)" in err and "anon=true" in err
    assert not out.exists()
