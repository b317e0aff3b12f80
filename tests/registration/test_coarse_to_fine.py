"""coarse_to_fine driver and the picklable ilk_solver / tvl1_solver."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage as ndi

import chunkreg
from chunkreg.errors import InputError
from chunkreg.registration import _coarse_to_fine, coarse_to_fine, ilk_solver, tvl1_solver
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

SHAPE = (128, 128)


def exact_flow(displacement):
    u = displacement.copy()
    for _ in range(10):
        u = np.stack([apply_flow(component, u) for component in displacement])
    return u


@pytest.fixture(scope="module")
def pair():
    reference = textured_image(SHAPE, seed=21)
    displacement = smooth_displacement(SHAPE, amplitude=4.0, seed=22, periods=0.5)
    moving = apply_flow(reference, -displacement)
    return reference, moving, exact_flow(displacement)


def endpoint_error(flow, truth):
    return float(np.sqrt(((flow - truth) ** 2).sum(axis=0)).mean())


class RecordingSolver:
    """Records the level shapes and starting flows it is called with; returns flow0 + 1."""

    def __init__(self):
        self.calls = []

    def __call__(self, reference, moving, flow0):
        assert reference.shape == moving.shape == flow0.shape[1:]
        assert reference.dtype == moving.dtype == flow0.dtype
        self.calls.append((reference.shape, flow0.copy()))
        return flow0 + 1


def test_public_functions_are_coarse_to_fine_with_default_solvers(pair):
    reference, moving, _ = pair
    assert_array_equal(
        chunkreg.optical_flow_ilk(reference, moving, radius=5, gaussian=True),
        coarse_to_fine(reference, moving, ilk_solver(radius=5, gaussian=True)),
    )
    assert_array_equal(
        chunkreg.optical_flow_tvl1(reference, moving, attachment=10, dtype=np.float64),
        coarse_to_fine(reference, moving, tvl1_solver(attachment=10), dtype=np.float64),
    )


@pytest.mark.parametrize(
    ("shape", "kwargs", "levels"),
    [
        # reduce while the smallest axis > downscale * min_size = 32
        ((128, 100), {}, [(32, 25), (64, 50), (128, 100)]),
        ((128, 100), {"num_levels": 2}, [(64, 50), (128, 100)]),
        ((128, 100), {"num_levels": 1}, [(128, 100)]),
        ((128, 100), {"min_size": 8}, [(16, 13), (32, 25), (64, 50), (128, 100)]),
        ((90, 100), {"downscale": 3}, [(30, 34), (90, 100)]),
        ((32, 200), {}, [(32, 200)]),
        ((40, 40, 70), {}, [(20, 20, 35), (40, 40, 70)]),
    ],
)
def test_pyramid_levels(shape, kwargs, levels):
    image = textured_image(shape, seed=0)
    solver = RecordingSolver()
    flow = coarse_to_fine(image, image, solver, **kwargs)
    assert [s for s, _ in solver.calls] == levels
    # zero start at the coarsest level
    assert_array_equal(solver.calls[0][1], 0)
    assert flow.shape == (len(shape), *shape)
    assert flow.dtype == np.float32


def test_flow_is_carried_between_levels_and_rescaled():
    """A constant flow c at one level becomes c * (size ratio) on the next, per axis."""
    image = textured_image((128, 96), seed=0)
    solver = RecordingSolver()
    flow = coarse_to_fine(image, image, solver, num_levels=3)
    shapes = [s for s, _ in solver.calls]
    assert shapes == [(32, 24), (64, 48), (128, 96)]
    # level 0 returns 1; level 1 starts from 2 (1 * 2); returns 3; level 2 starts from 6
    assert_allclose(solver.calls[1][1], 2.0)
    assert_allclose(solver.calls[2][1], 6.0)
    assert_allclose(flow, 7.0)


@pytest.mark.parametrize(
    ("coarse", "fine"),
    [
        ((16, 16), (32, 32)),
        ((47, 32), (93, 63)),
        ((250, 371), (500, 741)),
        ((5, 7, 9), (9, 13, 17)),
    ],
)
def test_flow_upsampling_is_scipy_nearest_zoom_with_end_samples_aligned(coarse, fine):
    """Between levels: scikit-image's zoom (order 0, grid_mode=False), values rescaled."""
    flow = np.random.default_rng(0).normal(size=(len(coarse), *coarse)).astype(np.float32)
    ratios = [f / c for f, c in zip(fine, coarse, strict=True)]
    expected = np.stack(
        [
            ndi.zoom(component, ratios, order=0, mode="nearest", prefilter=False) * ratios[axis]
            for axis, component in enumerate(flow)
        ]
    )
    upsampled = _coarse_to_fine._rescale_flow(flow, fine)
    assert upsampled.dtype == np.float32
    assert_array_equal(upsampled, expected.astype(np.float32))
    # nearest neighbour creates no new values: each is a coarse value times the ratio
    for axis in range(len(coarse)):
        scaled = np.unique(flow[axis] * np.float32(ratios[axis]))
        assert np.isin(upsampled[axis], scaled).all()


def test_a_runaway_value_stays_on_the_pixels_it_covers():
    """A coarse pixel pointing far out of the frame covers its 2x2 block, nothing more."""
    flow = np.zeros((2, 8, 8), np.float32)
    flow[1, 3, 0] = -40.0
    upsampled = _coarse_to_fine._rescale_flow(flow, (16, 16))
    assert sorted(zip(*np.nonzero(upsampled[1]), strict=True)) == [(6, 0), (6, 1), (7, 0), (7, 1)]
    assert_array_equal(upsampled[1][upsampled[1] != 0], -80.0)


def test_initial_flow_is_reduced_to_the_coarsest_level():
    image = textured_image((128, 96), seed=0)
    initial = np.empty((2, 128, 96), dtype=np.float64)
    initial[0], initial[1] = 4.0, -8.0
    solver = RecordingSolver()
    coarse_to_fine(image, image, solver, initial_flow=initial, num_levels=3)
    start = solver.calls[0][1]
    assert start.dtype == np.float32
    assert_allclose(start[0], 1.0, rtol=1e-6)
    assert_allclose(start[1], -2.0, rtol=1e-6)
    # never modified
    assert_array_equal(initial[0], 4.0)


def test_initial_flow_single_level_starts_at_full_resolution():
    image = textured_image((40, 50), seed=0)
    initial = smooth_displacement((40, 50), amplitude=2.0, seed=1)
    solver = RecordingSolver()
    flow = coarse_to_fine(image, image, solver, initial_flow=initial, num_levels=1)
    assert len(solver.calls) == 1
    assert_array_equal(solver.calls[0][1], initial)
    assert_array_equal(flow, initial + 1)


@pytest.mark.parametrize("solver", [ilk_solver(), tvl1_solver()], ids=["ilk", "tvl1"])
def test_refining_the_true_flow_at_full_resolution_stays_near_truth(pair, solver):
    reference, moving, truth = pair
    refined = coarse_to_fine(reference, moving, solver, initial_flow=truth, num_levels=1)
    pyramid = coarse_to_fine(reference, moving, solver)
    # starting from the truth, one level is enough and at least as good as the pyramid
    assert endpoint_error(refined, truth) < 0.2  # measured 0.14 (iLK), 0.06 (TV-L1)
    assert endpoint_error(refined, truth) <= endpoint_error(pyramid, truth) + 0.01


def test_large_motion_needs_the_pyramid(pair):
    """Sanity check of what the pyramid buys: 4 px motion with a radius-3 window."""
    reference, moving, truth = pair
    single = coarse_to_fine(reference, moving, ilk_solver(radius=3), num_levels=1)
    multi = coarse_to_fine(reference, moving, ilk_solver(radius=3))
    assert endpoint_error(multi, truth) < 0.5 * endpoint_error(single, truth)


@pytest.mark.parametrize("solver", [ilk_solver(radius=5), tvl1_solver()], ids=["ilk", "tvl1"])
def test_tile_refinement_from_whole_image_flow(solver):
    """How the tiling engine uses the driver: a tile plus halo, started from a coarse
    whole-image estimate and refined at full resolution only, agrees with the whole-image
    flow in the tile's core (measured: 2e-5 px for iLK, 2e-3 px for TV-L1)."""
    shape = (192, 160)
    reference = textured_image(shape, seed=31)
    moving = apply_flow(reference, -smooth_displacement(shape, amplitude=4.0, seed=32))
    whole = coarse_to_fine(reference, moving, solver)
    tile = (slice(40, 136), slice(32, 128))  # 96 x 96, of which the central 64 x 64 is core
    core = (slice(None), slice(16, -16), slice(16, -16))
    start = whole[(slice(None), *tile)]
    refined = coarse_to_fine(
        reference[tile], moving[tile], solver, initial_flow=start, num_levels=1
    )
    assert np.abs(refined - start)[core].mean() < 0.02


def test_initial_flow_rescues_a_small_tile_with_large_motion():
    """A 48² tile has a two-level pyramid, too shallow for 8 px of motion: TV-L1 on the
    tile alone fails (measured 5.8 px off), started from the whole-image flow it does not
    (0.02 px)."""
    shape = (192, 160)
    reference = textured_image(shape, seed=31)
    moving = apply_flow(reference, -smooth_displacement(shape, amplitude=8.0, seed=32))
    solver = tvl1_solver()
    whole = coarse_to_fine(reference, moving, solver)
    tile = (slice(60, 108), slice(50, 98))
    core = (slice(None), slice(8, -8), slice(8, -8))
    start = whole[(slice(None), *tile)]
    alone = coarse_to_fine(reference[tile], moving[tile], solver)
    refined = coarse_to_fine(
        reference[tile], moving[tile], solver, initial_flow=start, num_levels=1
    )
    assert np.abs(alone - start)[core].mean() > 1.0
    assert np.abs(refined - start)[core].mean() < 0.1


def test_solvers_are_picklable_and_comparable():
    for solver in (ilk_solver(radius=4, gaussian=True), tvl1_solver(attachment=5, tol=0)):
        clone = pickle.loads(pickle.dumps(solver))
        assert clone == solver
        assert hash(clone) == hash(solver)
    assert ilk_solver(radius=4) != ilk_solver(radius=5)
    image = textured_image((48, 48), seed=1)
    solver = pickle.loads(pickle.dumps(ilk_solver(radius=4)))
    assert_array_equal(
        coarse_to_fine(image, image[::-1], solver),
        coarse_to_fine(image, image[::-1], ilk_solver(radius=4)),
    )


def test_integer_images_are_scaled_before_the_solver():
    image = (textured_image((48, 48), seed=1) * 1000).astype(np.uint16)

    class Spy(RecordingSolver):
        def __call__(self, reference, moving, flow0):
            self.max_value = float(reference.max())
            return flow0

    spy = Spy()
    coarse_to_fine(image, image, spy, num_levels=1)
    assert_allclose(spy.max_value, image.max() / 65535, rtol=1e-6)


GOOD = textured_image((40, 40), seed=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"solver": "ilk"}, "solver must be callable"),
        ({"initial_flow": np.zeros((2, 40, 39))}, "initial_flow must have shape"),
        ({"initial_flow": np.zeros((40, 40))}, "initial_flow must have shape"),
        ({"initial_flow": np.full((2, 40, 40), np.inf)}, "initial_flow contains NaN"),
        ({"initial_flow": np.zeros((2, 40, 40), complex)}, "initial_flow must be real"),
        ({"downscale": 1}, "downscale"),
        ({"downscale": "2"}, "downscale"),
        ({"num_levels": 0}, "num_levels"),
        ({"num_levels": 2.0}, "num_levels"),
        ({"min_size": 0}, "min_size"),
        ({"dtype": np.int64}, "dtype must be float32 or float64"),
        ({"moving_image": GOOD[:, :30]}, "same shape"),
        ({"moving_image": GOOD[:1]}, "same shape"),
        ({"reference_image": GOOD[:1], "moving_image": GOOD[:1]}, "too small"),
        ({"moving_image": np.where(GOOD > 0.5, np.nan, GOOD)}, "moving_image contains NaN"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"reference_image": GOOD, "moving_image": GOOD, "solver": ilk_solver()}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        coarse_to_fine(**args)


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (ilk_solver, {"radius": 0}),
        (ilk_solver, {"num_warp": -1}),
        (tvl1_solver, {"tightness": 0}),
        (tvl1_solver, {"num_iter": 0}),
    ],
)
def test_bad_solver_parameters_raise(factory, kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        factory(**kwargs)
