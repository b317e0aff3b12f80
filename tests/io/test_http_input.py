"""http(s):// inputs: read-only OME-Zarr served by a web server that the test starts."""

import functools
import http.server
import threading

import numpy as np
import pytest
import zarr

from chunkreg.io import Space, create_array, open_array, read_space, write_space
from chunkreg.volume import blockwise_shifts


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """``tmp_path`` served over HTTP on 127.0.0.1; yields its URL."""
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_ome_zarr_over_http_is_read_with_its_level_and_space(tmp_path, served):
    rng = np.random.default_rng(0)
    data = rng.random((64, 64)).astype(np.float32)
    space = Space(("y", "x"), (0.5, 0.5), (3.0, 4.0), {"y": "micrometer", "x": "micrometer"})
    for name, image in (("ref", data), ("mov", np.roll(data, (3, -2), axis=(0, 1)))):
        group = zarr.open_group(str(tmp_path / f"{name}.ome.zarr"), mode="w")
        create_array(group, name="0", shape=image.shape, dtype=image.dtype, chunks=(32, 32),
                     dimension_names=space.axes)[...] = image  # fmt: skip
        write_space(group, ["0"], space, factors=[(1, 1)])
    ref = open_array(f"{served}/ref.ome.zarr")
    np.testing.assert_array_equal(ref[...], data)
    assert read_space(ref) == space
    assert read_space(open_array(f"{served}/ref.ome.zarr/0")) == space  # a level by its path
    # a workflow reads both inputs over HTTP and writes locally
    result = blockwise_shifts(f"{served}/ref.ome.zarr", f"{served}/mov.ome.zarr",
                              tmp_path / "blocks.zarr", block=(64, 64), scheduler="synchronous",
                              progress=False)  # fmt: skip
    np.testing.assert_allclose(result.shifts.reshape(-1, 2)[0], [-3.0, 2.0], atol=0.01)
