"""Drift from pairwise frame links (``reference="previous"``), pure numpy/scipy.

Each link ``(a, b)`` with ``a < b`` measures ``d_ab``, the shift that registers frame ``b``
onto frame ``a``. With ``x_t`` the shift that registers frame ``t`` onto the anchor frame,
``d_ab = x_b - x_a``. Links at several strides (``(t - 1, t)`` for every frame, ``(t - s, t)``
for every frame ``t`` that is a multiple of a longer stride ``s``) over-determine ``x``; the
drift is their least-squares solution, which keeps the error of long chains from growing as
a plain running sum would. Links whose quality is low are dropped; frames left without any
good link are interpolated in time from their neighbours, and gaps that split the remaining
frames into separate groups are bridged by an extra link between the frames either side.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.sparse import linalg as splinalg

__all__ = [
    "DriftSolution",
    "interpolate_missing",
    "link_targets",
    "plan_bridges",
    "solve_drift",
]

# Weight of the "no motion" link that keeps an unbridgeable gap solvable.
_GAP_WEIGHT = 1e-6


def link_targets(t: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """Return ``(stride_index, source_frame)`` of every link that ends at frame ``t``.

    Stride 1 links every frame to the one before; a longer stride ``s`` links frame ``t`` to
    ``t - s`` only when ``t`` is a multiple of ``s``.
    """
    out = []
    for k, s in enumerate(strides):
        if t - s >= 0 and (s == 1 or t % s == 0):
            out.append((k, t - s))
    return out


def plan_bridges(
    n_frames: int, a: np.ndarray, b: np.ndarray, good: np.ndarray
) -> list[tuple[int, int]]:
    """Return the extra links ``(u, v)`` that join the groups of frames the good links leave.

    Frames that touch at least one good link are "linked"; consecutive linked frames ``u < v``
    that fall in different groups get a bridge, one per pair of groups merged.
    """
    a, b = np.asarray(a)[good], np.asarray(b)[good]
    linked = np.zeros(n_frames, bool)
    linked[a] = linked[b] = True
    graph = sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(n_frames, n_frames))
    _, labels = csgraph.connected_components(graph, directed=False)
    parent = {int(label): int(label) for label in np.unique(labels)}

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    bridges = []
    nodes = np.flatnonzero(linked)
    for u, v in itertools.pairwise(nodes):
        ru, rv = root(int(labels[u])), root(int(labels[v]))
        if ru != rv:
            parent[rv] = ru
            bridges.append((int(u), int(v)))
    return bridges


@dataclass(frozen=True)
class DriftSolution:
    """Drift of every frame from pairwise links.

    Attributes
    ----------
    shifts : ndarray, shape (T, ndim)
        Shift registering each frame onto the anchor frame.
    linked : ndarray of bool, shape (T,)
        Frames that had at least one good link; the others are interpolated.
    anchor : int
        Frame whose shift is zero: the first linked frame (frame 0 unless it had no good link).
    unbridged : tuple of (int, int)
        Gaps whose bridge link was also of low quality; no motion was assumed across them.
    residual_rms : float
        Root-mean-square misfit of the good links to the solution, in pixels.
    """

    shifts: np.ndarray
    linked: np.ndarray
    anchor: int
    unbridged: tuple[tuple[int, int], ...]
    residual_rms: float


def solve_drift(
    n_frames: int,
    a: np.ndarray,
    b: np.ndarray,
    d: np.ndarray,
    quality: np.ndarray,
    min_quality: float,
    *,
    measure_bridges: Callable[[list[tuple[int, int]]], tuple[np.ndarray, np.ndarray]] | None = None,
) -> DriftSolution:
    """Solve for the drift of every frame from pairwise links.

    Parameters
    ----------
    n_frames : int
        Number of frames ``T``.
    a, b : ndarray of int, shape (L,)
        Frames of each link, ``a < b``.
    d : ndarray, shape (L, ndim)
        Shift registering frame ``b`` onto frame ``a`` for each link.
    quality : ndarray, shape (L,)
        Quality of each link (e.g. NCC); links below ``min_quality`` or with non-finite
        values are dropped.
    min_quality : float
        Smallest quality of a link that is used.
    measure_bridges : callable, optional
        ``measure_bridges(pairs) -> (d, quality)`` measures extra links for the gaps found by
        :func:`plan_bridges`. Without it, gaps are crossed assuming no motion.

    Returns
    -------
    DriftSolution
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    d = np.asarray(d, dtype=np.float64).reshape(a.size, -1)
    quality = np.asarray(quality, dtype=np.float64)
    ndim = d.shape[1]
    good = (quality >= min_quality) & np.isfinite(quality) & np.isfinite(d).all(axis=1)
    bridges = plan_bridges(n_frames, a, b, good)
    unbridged = []
    ea, eb, ed, ew = [a[good]], [b[good]], [d[good]], [np.ones(int(good.sum()))]
    if bridges:
        pairs = np.asarray(bridges, dtype=np.int64)
        if measure_bridges is not None:
            bd, bq = measure_bridges(bridges)
            bd = np.asarray(bd, dtype=np.float64).reshape(len(bridges), ndim)
            bq = np.asarray(bq, dtype=np.float64)
        else:
            bd = np.zeros((len(bridges), ndim))
            bq = np.full(len(bridges), -np.inf)
        ok = (bq >= min_quality) & np.isfinite(bq) & np.isfinite(bd).all(axis=1)
        bd[~ok] = 0.0
        unbridged = [tuple(map(int, p)) for p in pairs[~ok]]
        ea.append(pairs[:, 0])
        eb.append(pairs[:, 1])
        ed.append(bd)
        ew.append(np.where(ok, 1.0, _GAP_WEIGHT))
    ea, eb, ed, ew = (np.concatenate(x) for x in (ea, eb, ed, ew))

    linked = np.zeros(n_frames, bool)
    linked[a[good]] = linked[b[good]] = True
    shifts = np.zeros((n_frames, ndim))
    if not linked.any():
        return DriftSolution(shifts, linked, 0, tuple(unbridged), 0.0)
    anchor = int(np.flatnonzero(linked)[0])
    shifts[linked] = _least_squares(n_frames, ea, eb, ed, ew, linked, anchor)
    misfit = (shifts[eb] - shifts[ea] - ed)[ew == 1.0]
    rms = float(np.sqrt(np.mean(misfit**2))) if misfit.size else 0.0
    shifts = interpolate_missing(shifts, linked)
    return DriftSolution(shifts, linked, anchor, tuple(unbridged), rms)


def _least_squares(n_frames, a, b, d, w, linked, anchor) -> np.ndarray:
    """Minimise ``sum w (x_b - x_a - d)^2`` over the linked frames with ``x_anchor = 0``."""
    nodes = np.flatnonzero(linked)
    index = np.full(n_frames, -1, dtype=np.int64)
    index[nodes] = np.arange(nodes.size)
    ia, ib = index[a], index[b]
    n = nodes.size
    rows = np.concatenate([ia, ib, ia, ib])
    cols = np.concatenate([ia, ib, ib, ia])
    vals = np.concatenate([w, w, -w, -w])
    lap = sparse.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    rhs = np.zeros((n, d.shape[1]))
    np.add.at(rhs, ib, w[:, None] * d)
    np.add.at(rhs, ia, -w[:, None] * d)
    keep = np.ones(n, bool)
    keep[index[anchor]] = False
    sub = lap[keep][:, keep].tocsc()
    x = np.zeros((n, d.shape[1]))
    if sub.shape[0]:
        solve = splinalg.factorized(sub)
        x[keep] = np.column_stack([solve(rhs[keep, c]) for c in range(d.shape[1])])
    return x


def interpolate_missing(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill rows of ``values`` (shape (T, k)) where ``known`` is false by linear interpolation
    in time between the nearest known rows (constant beyond the first and last)."""
    values = np.array(values, dtype=np.float64)
    known = np.asarray(known, bool)
    if known.all() or not known.any():
        return values
    t = np.arange(values.shape[0])
    for c in range(values.shape[1]):
        values[~known, c] = np.interp(t[~known], t[known], values[known, c])
    return values
