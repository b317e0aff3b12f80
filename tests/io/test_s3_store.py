"""Inputs and outputs on S3: a real S3-compatible server (moto) on 127.0.0.1, resume included."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from scipy import ndimage

from chunkreg.errors import TaskFailedError
from chunkreg.execution import open_client
from chunkreg.io import open_array, url_store
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import compute_flow

pytest.importorskip("s3fs", reason="the S3 tests need s3fs (pip install s3fs)")
moto_server = pytest.importorskip("moto.server", reason="the S3 tests need moto[server]")

SHAPE, CHUNKS, SHARDS, TILE = (96, 80), (16, 20), (32, 40), (32, 40)


def _flow_kernel(reference, moving, *, marker=""):
    """Local mean difference (a stand-in kernel); fails on one tile while ``marker`` exists."""
    if marker and Path(marker).exists() and tuple(reference.shape) == (40, 44):
        raise RuntimeError("bucket outage")
    diff = ndimage.uniform_filter(np.asarray(reference, np.float64) - moving, size=5)
    return np.stack([diff, 2 * diff]).astype(np.float32)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """Storage options of a bucket on a moto S3 server listening on 127.0.0.1 only."""
    mp = pytest.MonkeyPatch()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        mp.setenv(key, "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    import s3fs

    s3fs.S3FileSystem(**options).mkdir("bucket")
    yield options
    server.stop()
    mp.undo()


@pytest.fixture(scope="module")
def pair(s3):
    ref = textured_image(SHAPE, seed=2, sigma=2.0)
    mov = apply_flow(ref, -smooth_displacement(SHAPE, amplitude=1.5, seed=3))
    for name, data in (("ref", ref), ("mov", mov)):
        zarr.create_array(f"s3://bucket/{name}.zarr", data=data, chunks=CHUNKS, shards=SHARDS,
                          storage_options=s3)  # fmt: skip
    return ref, mov


@pytest.mark.cluster
def test_flow_from_and_to_s3_resumes_after_a_failure(s3, pair, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(**s3)
    ref = open_array("s3://bucket/ref.zarr", storage_options=s3, name="reference")
    mov = open_array("s3://bucket/mov.zarr", storage_options=s3, name="moving")
    marker = tmp_path / "outage"
    kwargs = {"method": _flow_kernel, "levels": 1, "overlap": 4, "tile": TILE, "progress": False}
    local = tmp_path / "local.zarr"
    compute_flow(*(zarr.create_array(tmp_path / f"{n}.zarr", data=d, chunks=CHUNKS)
                   for n, d in (("r", pair[0]), ("m", pair[1]))),
                 local, scheduler="synchronous", **kwargs)  # fmt: skip
    expected = zarr.open_array(str(local), path="flow")[...]
    assert np.isfinite(expected).all()
    out = url_store("s3://bucket/flow.zarr", storage_options=s3)
    marker.touch()
    with open_client(n_workers=1, memory_limit=None) as client:
        # workers in another process read the inputs from and write the output to the bucket
        report = compute_flow(ref, mov, out, client=client, marker=str(marker), **kwargs)
        assert report.n_failed == 2  # the two tiles of the middle row
        with pytest.raises(TaskFailedError):
            report.raise_if_failed()
        marker.unlink()
        report = compute_flow(ref, mov, out, client=client, marker=str(marker), **kwargs)
    assert report.n_failed == 0
    assert report.n_skipped == 4  # the finished tiles were not redone
    flow = zarr.open_array("s3://bucket/flow.zarr", path="flow", storage_options=s3)
    assert flow.shards == (2, *SHARDS)  # the inputs' shards, kept
    assert_array_equal(flow[...], expected)
    files = fs.find("bucket/flow.zarr/flow/c")
    assert len(files) == 3 * 2  # one object per shard


def test_cli_with_storage_options(s3, pair, tmp_path, capsys):
    import fsspec.config

    from chunkreg.cli import main

    argv = ["drift", "s3://bucket/movie.zarr", "s3://bucket/drift.zarr", "--scheduler",
            "synchronous", "--no-progress", "--shards", "4,48,40"]  # fmt: skip
    options = [f"--storage-option={k}={v}" for k, v in s3.items()]
    frames = np.stack([np.roll(pair[0], t, axis=1) for t in range(8)]).astype(np.float32)
    zarr.create_array("s3://bucket/movie.zarr", data=frames[:, :48, :40], chunks=(1, 48, 40),
                      storage_options=s3)  # fmt: skip
    assert main([*argv, *options]) == 0, capsys.readouterr().err
    assert "s3" not in fsspec.config.conf  # restored after the command
    corrected = zarr.open_array("s3://bucket/drift.zarr", path="corrected", storage_options=s3)
    assert corrected.shards == (4, 48, 40)
    shifts = zarr.open_array("s3://bucket/drift.zarr", path="shifts", storage_options=s3)[...]
    assert_array_equal(np.round(shifts[:, 1]), -np.arange(8))  # frame t is rolled by t along x


def test_references_name_the_bucket(s3, pair):
    from chunkreg.io import array_ref

    ref = open_array("s3://bucket/ref.zarr", storage_options=s3)
    assert str(array_ref(ref)) == "s3://bucket/ref.zarr"
    assert_array_equal(array_ref(ref).open()[...], pair[0])


def _script(name):
    """A workflow script as a module (its ``run`` and docstring)."""
    import importlib.util

    path = Path(__file__).parents[2] / "workflows" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"workflow_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_storage_options_table(s3, pair, tmp_path, capsys):
    import fsspec.config

    from chunkreg._scripts import script_main

    frames = np.stack([np.roll(pair[0], -t, axis=0) for t in range(6)]).astype(np.float32)
    zarr.create_array("s3://bucket/script-movie.zarr", data=frames[:, :48, :40],
                      chunks=(1, 48, 40), storage_options=s3)  # fmt: skip
    options = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in s3.items())
    config = tmp_path / "c.toml"
    config.write_text(f"""
[input]
stack = "s3://bucket/script-movie.zarr"
[registration]
upsample_factor = 10
apply = false
[output]
path = "s3://bucket/script-drift.zarr"
csv = false
[cluster]
kind = "synchronous"
[storage_options]
{options}
""")
    module = _script("correct_timeseries")
    assert script_main(module.run, "t", argv=[str(config)]) == 0, capsys.readouterr().err
    assert "s3" not in fsspec.config.conf  # restored after the run
    shifts = zarr.open_array("s3://bucket/script-drift.zarr", path="shifts", storage_options=s3)
    assert_array_equal(np.round(shifts[...][:, 0]), np.arange(6))  # frame t rolled by -t
