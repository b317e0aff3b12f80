"""The lazy dask-array API: right shape and chunks, same values as the in-memory kernel."""

import dask
import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose

import chunkreg
import chunkreg.dask as cdask
from chunkreg.errors import InputError
from chunkreg.testing import apply_flow, smooth_displacement, textured_image


@pytest.fixture(scope="module")
def images():
    shape = (150, 130)  # ragged against the chunks below
    ref = textured_image(shape, seed=5)
    mov = apply_flow(ref, -smooth_displacement(shape, amplitude=1.5, seed=6))
    return ref, mov


def local_diff(reference, moving, radius=2):
    from scipy import ndimage

    d = ndimage.uniform_filter(
        np.asarray(reference, np.float64) - moving, size=2 * radius + 1, mode="mirror"
    )
    return np.stack([d * (a + 1) for a in range(reference.ndim)])


@pytest.mark.parametrize("depth", [2, (3, 2)])
def test_overlap_map_blocks_trim_reproduces_a_local_kernel(images, depth):
    ref, mov = images
    r = da.from_array(ref, chunks=(40, 48))
    m = da.from_array(mov, chunks=(64, 30))  # rechunked like the reference
    flow = cdask._lazy_flow(r, m, local_diff, depth, np.float32, {"radius": 2})
    assert flow.shape == (2, 150, 130) and flow.dtype == np.float32
    assert flow.chunks == ((2,), (40, 40, 40, 30), (48, 48, 34))
    with dask.config.set(scheduler="sync"):
        got = flow.compute()
    assert got.shape == (2, 150, 130)
    assert_allclose(got, local_diff(ref, mov), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("lazy", "kernel", "params"),
    [
        (cdask.optical_flow_ilk, chunkreg.optical_flow_ilk, {"radius": 5}),
        (cdask.optical_flow_tvl1, chunkreg.optical_flow_tvl1, {"num_iter": 5}),
    ],
    ids=["ilk", "tvl1"],
)
def test_blocks_match_the_untiled_kernel(images, lazy, kernel, params):
    ref, mov = images
    flow = lazy(da.from_array(ref, chunks=(64, 64)), mov, **params)  # depth="auto"
    assert flow.shape == (2, 150, 130) and flow.chunks[0] == (2,)
    with dask.config.set(scheduler="sync"):
        got = flow.compute()
    diff = np.abs(got - kernel(ref, mov, **params))
    assert np.median(diff) < 0.01 and np.percentile(diff, 99) < 0.1


def test_3d_shape_and_chunks():
    ref = da.zeros((40, 36, 30), chunks=(20, 20, 20), dtype=np.uint16)
    flow = cdask.optical_flow_ilk(ref, ref, depth=4, radius=1)
    assert flow.shape == (3, 40, 36, 30)
    assert flow.chunks == ((3,), (20, 20), (20, 16), (20, 10))
    flow = cdask.optical_flow_tvl1(ref, ref, depth=(4, 4, 0))
    assert flow.shape == (3, 40, 36, 30) and flow.dtype == np.float32


def test_auto_depth_and_small_chunks_are_merged():
    ref = da.zeros((100, 100), chunks=(10, 10))
    flow = cdask.optical_flow_ilk(ref, ref)  # depth 20 > chunk 10: dask merges chunks
    assert flow.shape == (2, 100, 100)
    assert all(c >= 20 for c in flow.chunks[1][:-1])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cdask.optical_flow_ilk(np.zeros((8, 8)), np.zeros((8, 9))), "same shape"),
        (lambda: cdask.optical_flow_ilk(np.zeros(8), np.zeros(8)), "2-D or 3-D"),
        (
            lambda: cdask.optical_flow_ilk(np.zeros((8, 8), complex), np.zeros((8, 8))),
            "real numeric dtype",
        ),
        (lambda: cdask.optical_flow_ilk(np.zeros((8, 8)), np.zeros((8, 8)), depth="x"), "depth"),
        (lambda: cdask.optical_flow_ilk(np.zeros((8, 8)), np.zeros((8, 8)), radius=0), "radius"),
        (lambda: cdask.optical_flow_tvl1(np.zeros((8, 8)), np.zeros((8, 8)), tol=-1), "tol"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_map_overlap_matches_dask_and_resumes(tmp_path):
    """The same values as dask's own map_overlap (boundary none, trim), from zarr; a second
    call reuses the staged input and recomputes nothing; a changed input is refused."""
    from scipy import ndimage

    from chunkreg.errors import InputChangedError

    rng = np.random.default_rng(8)
    image = da.from_array(rng.random((70, 90)), chunks=(20, 30))
    other = rng.random((70, 90))  # numpy: staged too

    def diff(a, b):
        return np.stack([ndimage.maximum_filter(a, 5), a - b])

    out = tmp_path / "out.zarr"
    got = cdask.map_overlap(diff, image, other, depth=2, output=out, scheduler="synchronous")
    want = da.map_overlap(lambda a, b: diff(a, b)[0], image, da.from_array(other, (20, 30)),
                          depth=2, boundary="none", dtype=float)  # fmt: skip
    assert got.shape == (2, 70, 90) and got.chunks[1:] == image.chunks
    assert_allclose(got[0].compute(), want.compute(), rtol=0, atol=0)
    assert_allclose(got[1].compute(), image.compute() - other, rtol=0, atol=0)
    mtime = (tmp_path / "out.zarr.inputs" / "0" / "zarr.json").stat().st_mtime_ns
    again = cdask.map_overlap(diff, image, other, depth=2, output=out, scheduler="synchronous")
    assert (tmp_path / "out.zarr.inputs" / "0" / "zarr.json").stat().st_mtime_ns == mtime
    assert_allclose(again.compute(), got.compute(), rtol=0, atol=0)
    with pytest.raises(InputChangedError, match="changed since this output was started"):
        cdask.map_overlap(diff, image + 1, other, depth=2, output=out, scheduler="synchronous")
    shifted = cdask.map_overlap(diff, image + 1, other, depth=2, output=out,
                                scheduler="synchronous", overwrite=True)  # fmt: skip
    assert_allclose(shifted[1].compute(), image.compute() + 1 - other, rtol=0, atol=0)
