"""Plan-time intensity handling: the kernels' dtype scaling, robust ranges, normalisation and
the texture threshold."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

from chunkreg.errors import InputError
from chunkreg.registration._coarse_to_fine import prepare_images
from chunkreg.testing import textured_image
from chunkreg.volume import Intensity, IntensityWarning, plan_intensity
from chunkreg.volume._intensity import IDENTITY, sample_percentiles, to_float


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int8", "int16", "int32", "bool", "float64"])
def test_to_float_is_the_kernels_own_scaling(dtype):
    rng = np.random.default_rng(0)
    if dtype == "bool":
        values = rng.random((9, 7)) > 0.5
    elif dtype.startswith(("u", "i")):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, (9, 7), endpoint=True).astype(dtype)
    else:
        values = rng.standard_normal((9, 7))
    expected, _ = prepare_images(values, values, np.float32)
    assert_array_equal(to_float(values), expected)
    assert to_float(values).dtype == np.float32


def test_normalisation_maps_the_percentile_range_to_unit_and_copies():
    values = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    out = Intensity(low=0.5, gain=4.0)(values)
    assert_allclose(out, [-2.0, 0.0, 2.0])
    assert_array_equal(values, [0.0, 0.5, 1.0])  # the input is untouched
    assert IDENTITY(values) is values or np.shares_memory(IDENTITY(values), values)


def test_flat_means_constant_or_below_the_texture_threshold():
    flat = Intensity(texture=0.01)
    assert flat.flat(np.full((4, 4), 3.0, np.float32))
    assert flat.flat(np.array([1.0, 1.001, 1.0, 1.001], np.float32))
    assert not flat.flat(np.array([0.0, 1.0, 0.0, 1.0], np.float32))
    assert not IDENTITY.flat(np.array([0.0, 1e-6], np.float32))  # any variation counts at 0


def _store(path, data):
    return zarr.create_array(str(path), data=data, chunks=(16, 16))


def test_percentiles_come_from_a_sample_of_chunks(tmp_path):
    image = textured_image((64, 64), seed=2)
    low, high = sample_percentiles(_store(tmp_path / "a.zarr", image))
    # 16 chunks of 16²: all of them are sampled here
    assert_allclose((low, high), np.percentile(image, (1, 99)), rtol=1e-6)
    low16, high16 = sample_percentiles(_store(tmp_path / "b.zarr", (image * 4095).astype("u2")))
    assert_allclose((low16, high16), np.array((low, high)) * 4095 / 65535, rtol=2e-3)


def test_auto_normalises_only_when_scales_differ(tmp_path):
    image = textured_image((64, 64), seed=3)
    ref = _store(tmp_path / "r.zarr", image.astype(np.float32))
    same = _store(tmp_path / "s.zarr", (image * 0.8 + 0.05).astype(np.float32))
    camera = _store(tmp_path / "c.zarr", np.round(image * 4095).astype(np.uint16))
    offset = _store(tmp_path / "o.zarr", (image + 5).astype(np.float32))
    r, m, note = plan_intensity(ref, same, "auto")
    assert not r.normalized and not m.normalized and note.startswith("dtype scaling only")
    for moving in (camera, offset):
        r, m, note = plan_intensity(ref, moving, "auto")
        assert r.normalized and m.normalized
        assert note.startswith("normalised (intensity scales differ, normalize='auto')")
        for intensity, array in ((r, ref), (m, moving)):
            low, high = np.percentile(intensity(array[...]), (1, 99))
            assert_allclose((low, high), (0, 1), atol=2e-3)
    with pytest.warns(IntensityWarning, match="normalize='none' leaves them so"):
        r, m, note = plan_intensity(ref, camera, "none")
    assert not m.normalized and note.startswith("not normalised")
    r, m, _ = plan_intensity(ref, same, "percentile")
    assert r.normalized and m.normalized


def test_a_constant_input_is_not_normalised_but_has_a_zero_texture_floor(tmp_path):
    ref = _store(tmp_path / "r.zarr", np.full((32, 32), 7.0, np.float32))
    mov = _store(tmp_path / "m.zarr", textured_image((32, 32), seed=1))
    r, m, note = plan_intensity(ref, mov, "auto")
    assert (r.low, r.gain, r.texture) == (0.0, 1.0, 0.0)
    assert note.startswith("dtype scaling only")
    assert m.texture > 0


def test_bad_normalize_is_refused(tmp_path):
    a = _store(tmp_path / "a.zarr", np.zeros((16, 16), np.float32))
    with pytest.raises(
        InputError, match=r"normalize must be one of \['auto', 'none', 'percentile'\], got 'yes'"
    ):
        plan_intensity(a, a, "yes")
