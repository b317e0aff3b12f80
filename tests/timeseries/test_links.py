"""Drift from pairwise links: least squares over strides, dropped links, bridges."""

import numpy as np
from numpy.testing import assert_allclose, assert_array_equal

from chunkreg.timeseries._links import (
    interpolate_missing,
    link_targets,
    plan_bridges,
    solve_drift,
)


def links(truth, strides, noise=0.0, seed=0):
    """All links of ``strides`` over a drift ``truth`` (T, ndim), with Gaussian noise."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for t in range(len(truth)):
        for _, source in link_targets(t, strides):
            a.append(source)
            b.append(t)
    a, b = np.array(a), np.array(b)
    d = truth[b] - truth[a] + rng.normal(0, noise, (a.size, truth.shape[1]))
    return a, b, d, np.ones(a.size)


def test_link_targets():
    assert link_targets(0, (1, 10)) == []
    assert link_targets(7, (1, 10)) == [(0, 6)]
    assert link_targets(20, (1, 10, 100)) == [(0, 19), (1, 10)]
    assert link_targets(100, (1, 10, 100)) == [(0, 99), (1, 90), (2, 0)]


def test_chain_of_exact_links_is_the_running_sum():
    truth = np.cumsum(np.random.default_rng(1).normal(size=(50, 2)), axis=0)
    truth -= truth[0]
    solution = solve_drift(50, *links(truth, (1,)), min_quality=0.5)
    assert_allclose(solution.shifts, truth, atol=1e-9)
    assert solution.linked.all() and solution.anchor == 0 and solution.residual_rms < 1e-9


def test_longer_strides_reduce_accumulated_error():
    t = 2000
    truth = np.cumsum(np.random.default_rng(2).normal(0, 0.3, (t, 2)), axis=0)
    truth -= truth[0]
    chain = solve_drift(t, *links(truth, (1,), noise=0.05, seed=3), min_quality=0.5)
    strided = solve_drift(t, *links(truth, (1, 10, 100), noise=0.05, seed=3), min_quality=0.5)
    err_chain = np.abs(chain.shifts - truth).max()
    err_strided = np.abs(strided.shifts - truth).max()
    # measured over 5 seeds: chain 2.3-6.0 px, strided 0.41-0.78 px (ratio 0.11-0.22)
    assert err_strided < 0.35 * err_chain
    assert err_strided < 1.0
    assert strided.residual_rms < 0.05  # the links agree with the solution within their noise


def test_low_quality_links_are_dropped_and_frames_interpolated():
    truth = np.stack([np.linspace(0, 9, 10), np.zeros(10)], axis=1)
    a, b, d, q = links(truth, (1, 3))  # the link 3 -> 6 passes frame 4 by
    bad_frame = 4
    touching = (a == bad_frame) | (b == bad_frame)
    q[touching] = 0.0
    d[touching] = 1000.0  # garbage that must not leak into the solution
    solution = solve_drift(10, a, b, d, q, min_quality=0.5)
    assert_array_equal(solution.linked, np.arange(10) != bad_frame)
    assert_allclose(solution.shifts, truth, atol=1e-9)  # frame 4 interpolated: exact here


def test_gap_is_bridged_with_a_measured_link():
    truth = np.stack([np.arange(12.0), -np.arange(12.0)], axis=1)
    a, b, d, q = links(truth, (1,))
    q[(a == 6) | (b == 6)] = 0.0  # frame 6 is blank: links 5-6 and 6-7 are useless
    calls = []

    def measure(pairs):
        calls.append(pairs)
        pairs = np.array(pairs)
        return truth[pairs[:, 1]] - truth[pairs[:, 0]], np.ones(len(pairs))

    solution = solve_drift(12, a, b, d, q, min_quality=0.5, measure_bridges=measure)
    assert calls == [[(5, 7)]]
    assert_allclose(solution.shifts, truth, atol=1e-9)
    assert not solution.linked[6] and solution.unbridged == ()


def test_unbridgeable_gap_assumes_no_motion_and_says_so():
    truth = np.stack([np.arange(8.0), np.zeros(8)], axis=1)
    a, b, d, q = links(truth, (1,))
    q[(a == 3) | (b == 3)] = 0.0
    solution = solve_drift(
        8, a, b, d, q, min_quality=0.5, measure_bridges=lambda p: (np.zeros((1, 2)), [0.0])
    )
    assert solution.unbridged == ((2, 4),)
    assert_allclose(solution.shifts[:3], truth[:3], atol=1e-6)
    assert_allclose(solution.shifts[4:], truth[4:] - (2.0, 0.0), atol=1e-6)  # jump 2 -> 4 lost


def test_first_frame_blank_anchors_at_first_linked_frame():
    truth = np.stack([np.arange(6.0), np.zeros(6)], axis=1)
    a, b, d, q = links(truth, (1,))
    q[a == 0] = 0.0
    solution = solve_drift(6, a, b, d, q, min_quality=0.5)
    assert solution.anchor == 1
    assert_allclose(solution.shifts[1:], truth[1:] - truth[1], atol=1e-9)
    assert_allclose(solution.shifts[0], solution.shifts[1])


def test_no_good_link_gives_zero_drift():
    a, b, d, q = links(np.zeros((5, 2)), (1,))
    solution = solve_drift(5, a, b, d, np.zeros_like(q), min_quality=0.5)
    assert not solution.linked.any()
    assert_array_equal(solution.shifts, 0.0)


def test_plan_bridges_joins_all_groups_once():
    a = np.array([0, 1, 3, 6])
    b = np.array([1, 2, 4, 7])
    good = np.ones(4, bool)
    assert plan_bridges(9, a, b, good) == [(2, 3), (4, 6)]
    assert plan_bridges(9, a, b, np.array([True, True, False, True])) == [(2, 6)]


def test_interpolate_missing_is_linear_inside_and_constant_outside():
    values = np.array([[np.nan], [1.0], [np.nan], [3.0], [np.nan]])
    known = np.isfinite(values[:, 0])
    assert_allclose(interpolate_missing(values, known)[:, 0], [1, 1, 2, 3, 3])
