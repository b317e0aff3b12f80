"""The global solver: least-squares placement, link rejection, unlinked tiles."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from chunkreg.errors import InputError
from chunkreg.stitching import overlapping_pairs, regular_grid, solve_positions


def _grid_links(rows, cols, *, seed=0, jitter=3.0, noise=0.0):
    """Nominal grid, true positions and measured links (with optional measurement noise)."""
    rng = np.random.default_rng(seed)
    nominal = regular_grid((rows, cols), (100, 100), overlap=0.1).positions
    truth = nominal + rng.uniform(-jitter, jitter, nominal.shape)
    pairs = overlapping_pairs(nominal, (100, 100), adjacent=True)
    offsets = truth[pairs[:, 1]] - truth[pairs[:, 0]] + noise * rng.standard_normal((len(pairs), 2))
    return nominal, truth, pairs, offsets


def _gauge_free(x):
    return x - x.mean(axis=0)


def test_consistent_links_recovered_exactly():
    nominal, truth, pairs, offsets = _grid_links(5, 7)
    sol = solve_positions(pairs, offsets, np.ones(len(pairs)), nominal)
    assert_allclose(_gauge_free(sol.positions), _gauge_free(truth), atol=1e-9)
    # the nominal centroid is kept
    assert_allclose(sol.positions.mean(axis=0), nominal.mean(axis=0), atol=1e-9)
    assert_allclose(sol.residuals, 0, atol=1e-9)
    assert sol.kept.all() and len(sol.unlinked) == 0 and sol.iterations == 1


def test_weighted_least_squares_matches_dense_solution():
    nominal, _, pairs, offsets = _grid_links(4, 4, noise=0.5, seed=1)
    w = np.random.default_rng(2).uniform(0.6, 1.0, len(pairs))
    sol = solve_positions(pairs, offsets, w, nominal, max_residual=np.inf)
    # dense reference: minimise sum w (x_j - x_i - t)^2 with tile 0 fixed, then re-centre
    n = len(nominal)
    design = np.zeros((len(pairs), n))
    design[np.arange(len(pairs)), pairs[:, 1]] = 1
    design[np.arange(len(pairs)), pairs[:, 0]] = -1
    sw = np.sqrt(w)[:, None]
    x = np.zeros((n, 2))
    x[1:] = np.linalg.lstsq(design[:, 1:] * sw, offsets * sw, rcond=None)[0]
    x += nominal.mean(axis=0) - x.mean(axis=0)
    assert_allclose(sol.positions, x, atol=1e-8)


def test_fixed_tile():
    nominal, truth, pairs, offsets = _grid_links(3, 3)
    sol = solve_positions(pairs, offsets, np.ones(len(pairs)), nominal, fixed_tile=4)
    assert_allclose(sol.positions[4], nominal[4], atol=1e-9)
    assert_allclose(sol.positions - sol.positions[4], truth - truth[4], atol=1e-9)


def test_wrong_high_quality_link_is_dropped_by_residual():
    nominal, truth, pairs, offsets = _grid_links(6, 6, noise=0.1, seed=3)
    bad = 17
    offsets[bad] += [6.0, -5.0]
    sol = solve_positions(pairs, offsets, np.full(len(pairs), 0.9), nominal)
    assert sol.drop_reason[bad] == "residual"
    assert_array_equal(np.flatnonzero(~sol.kept), [bad])
    assert sol.residuals[bad] > 6
    assert np.abs(_gauge_free(sol.positions) - _gauge_free(truth)).max() < 0.3
    assert sol.iterations == 2


def test_several_bad_links_dropped_in_one_round():
    nominal, truth, pairs, offsets = _grid_links(10, 10, noise=0.1, seed=4)
    # bad links far apart from each other (no shared tile)
    bad = [3, 70, 150]
    for k in bad:
        offsets[k] += 8.0
    sol = solve_positions(pairs, offsets, np.ones(len(pairs)), nominal)
    assert_array_equal(np.flatnonzero(~sol.kept), bad)
    assert sol.iterations == 2
    assert np.abs(_gauge_free(sol.positions) - _gauge_free(truth)).max() < 0.3


def test_thresholds_are_configurable():
    nominal, _, pairs, offsets = _grid_links(4, 4, noise=0.1, seed=5)
    offsets[5] += 2.0
    q = np.ones(len(pairs))
    assert solve_positions(pairs, offsets, q, nominal).kept.all()  # below 2.5 px
    strict = solve_positions(pairs, offsets, q, nominal, max_residual=0.5)
    assert strict.drop_reason[5] == "residual"
    lax = solve_positions(pairs, offsets, q, nominal, max_residual=0.5, max_relative_residual=50)
    assert lax.kept.all()


def test_quality_floor_and_missing_estimates():
    nominal, truth, pairs, offsets = _grid_links(3, 3)
    q = np.ones(len(pairs))
    q[0] = 0.4
    offsets[-1] = np.nan
    sol = solve_positions(pairs, offsets, q, nominal)
    assert sol.drop_reason[0] == "quality" and sol.drop_reason[-1] == "no estimate"
    assert_array_equal(np.flatnonzero(~sol.kept), [0, len(pairs) - 1])
    assert np.isnan(sol.residuals[-1])
    assert_allclose(_gauge_free(sol.positions), _gauge_free(truth), atol=1e-9)
    low = solve_positions(pairs, offsets, q, nominal, min_quality=0.3)
    assert low.kept[0]


def test_unlinked_tile_placed_relative_to_neighbours():
    nominal, truth, pairs, offsets = _grid_links(3, 3, seed=6)
    q = np.ones(len(pairs))
    lonely = 4  # the centre tile loses all its links
    q[(pairs == lonely).any(axis=1)] = 0.0
    with pytest.warns(UserWarning, match=r"1 tile\(s\) have no reliable link.*: 4\.") as rec:
        sol = solve_positions(pairs, offsets, q, nominal)
    assert rec[0].filename == __file__
    assert_array_equal(sol.unlinked, [lonely])
    assert sol.component[lonely] != 0 and (np.delete(sol.component, lonely) == 0).all()
    others = np.delete(np.arange(9), lonely)
    # its neighbours moved by their mean correction; it moves by the same amount
    nbrs = [1, 3, 5, 7]
    expected = nominal[lonely] + (sol.positions[nbrs] - nominal[nbrs]).mean(axis=0)
    assert_allclose(sol.positions[lonely], expected, atol=1e-9)
    d = sol.positions[others] - truth[others]
    assert_allclose(d - d.mean(axis=0), 0, atol=1e-9)


def test_split_mosaic_second_part_follows_the_first():
    # a 2 x 4 grid whose middle column links fail: two components of 4 tiles
    nominal, truth, pairs, offsets = _grid_links(2, 4, seed=7)
    q = np.ones(len(pairs))
    cut = np.array([tuple(p) in {(1, 2), (5, 6)} for p in pairs])
    assert cut.sum() == 2
    q[cut] = 0
    with pytest.warns(UserWarning, match="4 tile"):
        sol = solve_positions(pairs, offsets, q, nominal)
    assert len(sol.unlinked) == 4
    first, second = [0, 1, 4, 5], [2, 3, 6, 7]
    assert len(set(sol.component[first])) == 1 and len(set(sol.component[second])) == 1
    # within each part, exact relative placement
    for part in (first, second):
        d = sol.positions[part] - truth[part]
        assert_allclose(d - d.mean(axis=0), 0, atol=1e-9)
    # across the cut, the nominal offset is kept on average over the cut links
    i, j = pairs[cut].T
    gap = (sol.positions[j] - sol.positions[i]) - (nominal[j] - nominal[i])
    assert_allclose(gap.mean(axis=0), 0, atol=1e-9)


def test_no_links_at_all_gives_nominal():
    nominal = regular_grid((2, 2), (10, 10), overlap=0.1).positions
    with pytest.warns(UserWarning, match="3 tile"):
        sol = solve_positions(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), nominal)
    assert_allclose(sol.positions, nominal)


def test_solver_errors():
    nominal = np.zeros((3, 2))
    with pytest.raises(InputError, match="one row per link"):
        solve_positions([[0, 1]], [[0, 1], [1, 1]], [1], nominal)
    with pytest.raises(InputError, match="two different tile indices"):
        solve_positions([[0, 3]], [[0, 1]], [1], nominal)
    with pytest.raises(InputError, match="two different tile indices"):
        solve_positions([[1, 1]], [[0, 1]], [1], nominal)
    with pytest.raises(InputError, match="fixed_tile"):
        solve_positions([[0, 1]], [[0, 1]], [1], nominal, fixed_tile=7, warn=False)


def test_100_by_100_grid_of_links():
    # 10,000 tiles and 19,800 links, with noise and a few gross errors
    nominal, truth, pairs, offsets = _grid_links(100, 100, noise=0.2, seed=8)
    rng = np.random.default_rng(9)
    bad = rng.choice(len(pairs), 20, replace=False)
    offsets[bad] += rng.choice([-1, 1], (20, 2)) * rng.uniform(6, 20, (20, 2))
    sol = solve_positions(pairs, offsets, np.ones(len(pairs)), nominal)
    assert set(np.flatnonzero(~sol.kept)) == set(bad)
    err = _gauge_free(sol.positions) - _gauge_free(truth)
    assert np.abs(err).max() < 1.0
    assert np.sqrt((err**2).mean()) < 0.3
