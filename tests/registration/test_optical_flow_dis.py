"""chunkreg.optical_flow_dis: known smooth flows in 2-D and 3-D, exact identity, dtypes, input
errors, and the tiled compute_flow(method="dis") against the truth."""

import hashlib

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

import chunkreg
from chunkreg import optical_flow_dis, warp
from chunkreg.errors import InputError
from chunkreg.registration._methods import kernel_memory_factor, resolve_method
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import compute_flow, flow_depth


def _truth(displacement: np.ndarray) -> np.ndarray:
    """``u`` with ``moving(x + u) = reference(x)`` for ``moving = apply_flow(ref, -d)``."""
    truth = displacement.copy()
    for _ in range(8):
        truth = np.stack([apply_flow(c, truth, order=1) for c in displacement])
    return truth


def _pair(shape, amplitude, seed=1):
    ref = textured_image(shape, seed=seed)
    d = smooth_displacement(shape, amplitude=amplitude, seed=seed + 1, periods=0.5)
    return ref, apply_flow(ref, -d), _truth(d)


def epe(flow, truth, border=0):
    inner = (slice(None),) + (slice(border, -border or None),) * (flow.ndim - 1)
    return float(np.sqrt(((flow - truth)[inner] ** 2).sum(axis=0)).mean())


@pytest.fixture(scope="module")
def pair2d():
    return _pair((160, 144), 4.0)


@pytest.fixture(scope="module")
def pair3d():
    return _pair((48, 48, 40), 2.5)


# -- accuracy on known flows -------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "bound"), [("fast", 0.13), ("medium", 0.06), ("fine", 0.05)])
def test_2d_smooth_flow_is_recovered(pair2d, preset, bound):
    """Up to 4 px of smooth motion: mean endpoint error away from the 8-px border band (where
    content leaves the frame) below the stated bound per preset (measured 0.095 / 0.036 /
    0.036), far below the 2 px of no registration; over the whole image < 2.5x that."""
    ref, mov, truth = pair2d
    flow = optical_flow_dis(ref, mov, preset=preset)
    assert flow.shape == (2, *ref.shape) and flow.dtype == np.float32
    assert epe(np.zeros_like(truth), truth, border=8) > 2.0
    assert epe(flow, truth, border=8) < bound
    assert epe(flow, truth) < 2.5 * bound
    # the convention: warping the moving image with the flow gives back the reference
    before = np.abs(mov - ref)[8:-8, 8:-8].mean()
    after = np.abs(warp(mov, flow) - ref)[8:-8, 8:-8].mean()
    assert after < 0.1 * before


def test_3d_smooth_flow_is_recovered(pair3d):
    """3-D, up to 2.5 px: mean endpoint error < 0.14 px away from the border band (measured
    0.118), < 0.22 over the whole volume (measured 0.178)."""
    ref, mov, truth = pair3d
    flow = optical_flow_dis(ref, mov)
    assert flow.shape == (3, *ref.shape) and flow.dtype == np.float32
    assert epe(flow, truth, border=8) < 0.14
    assert epe(flow, truth) < 0.22


def test_large_motion_needs_and_uses_the_pyramid():
    """A 12 px smooth motion on 192²: found through the pyramid (measured 0.065), lost with
    one level (3.0)."""
    ref, mov, truth = _pair((192, 192), 12.0, seed=4)
    assert epe(optical_flow_dis(ref, mov), truth, border=16) < 0.1
    assert epe(optical_flow_dis(ref, mov, num_levels=1), truth, border=16) > 1.0


def test_parameters_override_the_preset(pair2d):
    ref, mov, truth = pair2d
    plain = optical_flow_dis(ref, mov, preset="medium")
    same = optical_flow_dis(ref, mov, preset="fast", finest_level=0, variational_iterations=8)
    assert_array_equal(plain, same)  # in 2-D "medium" is "fast" at full resolution, 8 sweeps
    coarse = optical_flow_dis(ref, mov, gd_iterations=0, variational_iterations=0)
    assert epe(coarse, truth) > epe(plain, truth)


# -- identity, dtypes, scale -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 80), (24, 32, 28)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.uint16])
def test_identical_images_give_exactly_zero(shape, dtype):
    image = textured_image(shape, seed=5)
    if np.dtype(dtype).kind == "u":
        image = (image * np.iinfo(dtype).max).astype(dtype)
    flow = optical_flow_dis(image, image.copy())
    assert flow.shape == (len(shape), *shape)
    assert_array_equal(flow, 0.0)


def test_dtype_option_and_integer_inputs(pair2d):
    ref, mov, _ = pair2d
    as_u16 = [(np.clip(x, 0, 1) * 65535).round().astype(np.uint16) for x in (ref, mov)]
    flow16 = optical_flow_dis(*as_u16)
    flow = optical_flow_dis(*(np.multiply(x, 1 / 65535, dtype=np.float32) for x in as_u16))
    assert flow16.dtype == np.float32
    assert_array_equal(flow16, flow)  # scaled by the dtype range, as the other kernels
    flow64 = optical_flow_dis(ref, mov, dtype=np.float64)
    assert flow64.dtype == np.float64
    assert float(np.abs(flow64 - optical_flow_dis(ref, mov)).mean()) < 1e-3


def test_intensity_scale_does_not_matter(pair2d):
    """Intensities are compared relative to the contrast: a 12-bit image in the low range of
    uint16 (or any affine rescaling) gives the same flow, up to float32 rounding of the
    rescaled values (which moves a few pixels by up to 0.1 px)."""
    ref, mov, _ = pair2d
    flow = optical_flow_dis(ref, mov)
    scaled = optical_flow_dis(ref * 0.06 + 3, mov * 0.06 + 3)
    assert float(np.abs(scaled - flow).mean()) < 1e-3
    assert float(np.abs(scaled - flow).max()) < 0.2


def test_inputs_are_not_modified(pair2d):
    ref, mov, _ = pair2d
    before = [hashlib.sha256(x.tobytes()).hexdigest() for x in (ref, mov)]
    optical_flow_dis(ref, mov)
    assert [hashlib.sha256(x.tobytes()).hexdigest() for x in (ref, mov)] == before


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "slow"}, r"preset must be one of \['fast', 'fine', 'medium'\], got 'slow'"),
        ({"patch_size": 1}, "patch_size must be an integer >= 2, got 1"),
        ({"patch_stride": 9}, "patch_stride must be <= patch_size"),
        ({"gd_iterations": -1}, "gd_iterations must be an integer >= 0, got -1"),
        ({"num_levels": 0}, "num_levels must be an integer >= 1, got 0"),
        ({"smoothness": 0.0}, "smoothness must be a finite number > 0, got 0.0"),
        ({"normalize_patches": 1}, "normalize_patches must be True or False, got 1"),
        ({"dtype": np.int32}, "dtype must be float32 or float64"),
    ],
)
def test_bad_parameters_raise(kwargs, message):
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(InputError, match=message):
        optical_flow_dis(image, image, **kwargs)


def test_bad_images_raise():
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(InputError, match="shape"):
        optical_flow_dis(image, np.zeros((32, 33), np.float32))
    with pytest.raises(InputError, match="at least 8 are needed for DIS patches of 8 pixels"):
        optical_flow_dis(np.zeros((6, 32)), np.zeros((6, 32)))
    bad = image.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        optical_flow_dis(image, bad)
    with pytest.raises(InputError, match="colour"):
        optical_flow_dis(np.zeros((32, 32, 3)), np.zeros((32, 32, 3)))


# -- the tiled pipeline ------------------------------------------------------------------------


def test_registry_entry():
    assert chunkreg.optical_flow_dis is optical_flow_dis
    assert resolve_method("dis", {"patch_size": 6})["patch_size"] == 6
    assert resolve_method("dis", {})["preset"] == "medium"
    with pytest.raises(InputError, match=r"preset must be one of \['fast', 'medium', 'fine'\]"):
        resolve_method("dis", {"preset": "slow"})
    with pytest.raises(InputError, match="unknown parameter"):
        resolve_method("dis", {"radius": 3})
    # depth = patch_size + patch_stride + variational_iterations + 2 + motion, with the
    # preset's parameters for the images' dimensions
    assert flow_depth("dis") == 8 + 8 + 8 + 2 + 4
    assert flow_depth("dis", preset="fine", motion=0) == 8 + 6 + 10 + 2
    assert flow_depth("dis", ndim=3) == 6 + 6 + 4 + 2 + 4
    assert flow_depth("dis", ndim=3, preset="fine", motion=2) == 6 + 5 + 8 + 2 + 2
    assert (
        flow_depth("dis", ndim=3, patch_size=8, variational_iterations=3, motion=0) == 8 + 6 + 3 + 2
    )
    assert kernel_memory_factor("dis", 3) < kernel_memory_factor("ilk", 3)


def test_tiled_compute_flow_agrees_with_truth(tmp_path):
    """compute_flow(method="dis") on a ragged zarr pair, 4 tiles: EPE < 0.08 px (untiled
    0.03), and within 0.05 px of the in-memory flow on average."""
    shape = (176, 160)
    ref = textured_image(shape, seed=7)
    d = smooth_displacement(shape, amplitude=3.0, seed=8, periods=0.5)
    mov = apply_flow(ref, -d)
    truth = _truth(d)
    paths = []
    for name, data in (("ref", ref), ("mov", mov)):
        path = tmp_path / f"{name}.zarr"
        zarr.create_array(str(path), data=data, chunks=(48, 40))
        paths.append(str(path))
    report = compute_flow(
        *paths, tmp_path / "flow.zarr", method="dis", tile=(96, 80), levels=1,
        scheduler="synchronous", progress=False,
    )  # fmt: skip
    report.raise_if_failed()
    flow = zarr.open_array(str(tmp_path / "flow.zarr"), path="flow", mode="r")[:]
    whole = optical_flow_dis(ref, mov)
    assert epe(whole, truth) < 0.05
    assert epe(flow, truth) < 0.08
    assert epe(flow, whole) < 0.05


# -- the compiled kernels against the numpy reference --------------------------------------------


@pytest.mark.parametrize("shape", [(96, 80), (32, 28, 24)])
def test_compiled_kernels_match_the_numpy_path(shape, monkeypatch):
    """The numba patch search and sweeps compute what the vectorised numpy code computes (to
    float rounding: the kernels accumulate in float64)."""
    from chunkreg.registration import _dis_patches, _dis_variational

    ref, mov, _ = _pair(shape, 2.0, seed=9)
    robust = len(shape) == 2
    compiled = optical_flow_dis(ref, mov, robust_smoothness=robust)
    monkeypatch.setattr(_dis_patches, "_COMPILED", False)
    monkeypatch.setattr(_dis_variational, "compiled_sweep", lambda *args: False)
    monkeypatch.setattr(_dis_variational, "compiled_diffusivity", lambda *args: False)
    monkeypatch.setattr(_dis_variational, "compiled_linearise", lambda *args: False)
    reference = optical_flow_dis(ref, mov, robust_smoothness=robust)
    assert float(np.abs(compiled - reference).mean()) < 2e-3
    assert float(np.abs(compiled - reference).max()) < 0.1


def test_four_dimensions():
    """Any number of dimensions: a 4-D pair with a known smooth flow (numpy sweeps)."""
    ref, mov, truth = _pair((16, 16, 16, 16), 1.0, seed=11)
    flow = optical_flow_dis(ref, mov, patch_size=4, patch_stride=4)
    assert flow.shape == (4, 16, 16, 16, 16)
    assert epe(flow, truth, border=3) < 0.5 * epe(np.zeros_like(truth), truth, border=3)


def test_cli_flow_method_dis(tmp_path, capsys):
    """``chunkreg flow --method dis``: the plan shows DIS's halo rule; options of other
    methods are refused, and DIS's own refused for them, writing nothing."""
    from chunkreg.cli import main

    paths = []
    for name, seed in (("ref", 1), ("mov", 2)):
        path = tmp_path / f"{name}.zarr"
        zarr.create_array(str(path), data=textured_image((96, 80), seed=seed), chunks=(32, 40))
        paths.append(str(path))
    out = tmp_path / "out.zarr"
    argv = ["flow", *paths, str(out), "--method", "dis", "--preset", "fast", "--dry-run"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(auto: patch_size+patch_stride+variational_iterations+2" in text
    assert main(["flow", *paths, str(out), "--method", "dis", "--radius", "3"]) == 2
    assert "--radius does not apply to --method dis" in capsys.readouterr().err
    assert main(["flow", *paths, str(out), "--patch-size", "6"]) == 2
    assert "--patch-size does not apply to --method ilk" in capsys.readouterr().err
    assert not out.exists()
