"""Global placement of tiles from pairwise offsets: sparse weighted least squares.

Each link ``(i, j)`` with measured offset ``t`` and quality ``w`` asks for
``x_j - x_i = t``. The weighted least-squares positions solve the graph Laplacian system
``(B^T W B) x = B^T W t`` (``B`` the link-tile incidence matrix), one right-hand side per
axis, with one tile per connected component held fixed; each component is then translated so
that its centroid (or a chosen tile) sits at its nominal position. Links whose residual is
both above an absolute threshold and several times the mean residual are removed and the
system solved again, as in the global optimisation of BigStitcher
(doi:10.1038/s41592-019-0501-0).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from ..errors import InputError

__all__ = ["GlobalSolution", "solve_positions"]

#: Reasons a link can be left out of the solution (``GlobalSolution.drop_reason``).
DROP_REASONS = ("", "no estimate", "quality", "residual")


@dataclass(frozen=True)
class GlobalSolution:
    """Result of :func:`solve_positions`.

    Attributes
    ----------
    positions : ndarray, shape (n_tiles, ndim)
        Solved first-pixel position of each tile.
    residuals : ndarray, shape (n_links,)
        Euclidean norm of ``(x_j - x_i) - offset`` at the solved positions, for every link
        (kept or dropped; NaN where the link has no estimate).
    kept : ndarray of bool, shape (n_links,)
        Links used in the final solution.
    drop_reason : ndarray of str, shape (n_links,)
        ``""`` for kept links, else ``"no estimate"``, ``"quality"`` or ``"residual"``.
    component : ndarray of int, shape (n_tiles,)
        Connected component of each tile over the kept links; component 0 is the reference
        (the largest, or the one holding ``fixed_tile``).
    unlinked : ndarray of int
        Tiles outside the reference component, placed at their nominal positions relative to
        their already placed neighbours.
    iterations : int
        Number of solves.
    """

    positions: np.ndarray
    residuals: np.ndarray
    kept: np.ndarray
    drop_reason: np.ndarray
    component: np.ndarray
    unlinked: np.ndarray
    iterations: int


def solve_positions(
    pairs,
    offsets,
    qualities,
    nominal_positions,
    *,
    min_quality: float = 0.5,
    max_residual: float = 2.5,
    max_relative_residual: float = 3.0,
    fixed_tile: int | None = None,
    max_iterations: int = 100,
    warn: bool = True,
) -> GlobalSolution:
    """Place tiles by weighted least squares over their pairwise offsets.

    Parameters
    ----------
    pairs : array_like of int, shape (n_links, 2)
        Tile indices ``(i, j)`` of each link.
    offsets : array_like, shape (n_links, ndim)
        Measured ``x_j - x_i`` (NaN rows mean "no estimate").
    qualities : array_like, shape (n_links,)
        Link quality (NCC); also the least-squares weight.
    nominal_positions : array_like, shape (n_tiles, ndim)
        Stage positions: they fix each component's translation and place unlinked tiles.
    min_quality : float
        Links with lower quality are dropped before solving.
    max_residual : float
        A link is dropped if its residual exceeds ``max_residual`` pixels **and**
        ``max_relative_residual`` times the mean residual of the kept links.
    max_relative_residual : float
        See ``max_residual``.
    fixed_tile : int, optional
        Tile held at its nominal position; by default the nominal centroid of each
        component is kept.
    max_iterations : int
        Upper bound on solve / drop rounds.
    warn : bool
        Emit a :class:`UserWarning` naming the tiles placed without links.

    Returns
    -------
    GlobalSolution

    Notes
    -----
    Each round drops, in decreasing order of residual, the offending links within a factor
    of two of the worst that share no tile with a link dropped earlier in the same round (one
    bad link inflates the residuals of its neighbours). When no link offends any more, links
    dropped for their residual that agree with the final solution are taken back once. A
    link that is the only connection between two parts (a bridge) always has zero residual
    and is never dropped for its residual.

    Examples
    --------
    >>> sol = solve_positions([[0, 1], [1, 2], [0, 2]], [[0, 10], [0, 10], [0, 20]],
    ...                       [1, 1, 1], [[0, 0], [0, 9], [0, 19]])
    >>> np.round(sol.positions, 6).tolist()
    [[0.0, -0.666667], [0.0, 9.333333], [0.0, 19.333333]]
    """
    nominal = np.asarray(nominal_positions, dtype=np.float64)
    n, ndim = nominal.shape
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, ndim)
    qualities = np.asarray(qualities, dtype=np.float64).reshape(-1)
    if not (len(pairs) == len(offsets) == len(qualities)):
        raise InputError(
            f"pairs, offsets and qualities must have one row per link, got {len(pairs)}, "
            f"{len(offsets)} and {len(qualities)}."
        )
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n or (pairs[:, 0] == pairs[:, 1]).any()):
        raise InputError(f"pairs must hold two different tile indices in 0..{n - 1}.")
    if fixed_tile is not None and not 0 <= fixed_tile < n:
        raise InputError(f"fixed_tile must be a tile index in 0..{n - 1}, got {fixed_tile}.")
    reason = np.full(len(pairs), "", dtype=object)
    reason[~np.isfinite(offsets).all(axis=1)] = "no estimate"
    reason[(reason == "") & ~(qualities >= min_quality)] = "quality"
    weights = np.clip(np.nan_to_num(qualities), 1e-3, None)

    iterations = 0
    readmitted = False
    while True:
        kept = reason == ""
        iterations += 1
        positions, component = _solve(n, pairs[kept], offsets[kept], weights[kept], nominal)
        residuals = _residuals(positions, pairs, offsets)
        if iterations >= max_iterations or not kept.any():
            break
        drop = _links_to_drop(residuals, kept, pairs, max_residual, max_relative_residual)
        if len(drop):
            reason[drop] = "residual"
            continue
        # links dropped early only for the error a worse link spread to them are consistent
        # with the final solution: take them back once
        back = (reason == "residual") & ~_exceeds(
            residuals, kept, max_residual, max_relative_residual
        )
        if readmitted or not back.any():
            break
        reason[back] = ""
        readmitted = True

    component, unlinked = _place_components(
        positions, component, pairs, nominal, fixed_tile=fixed_tile
    )
    residuals = _residuals(positions, pairs, offsets)
    if warn and len(unlinked):
        warnings.warn(unlinked_message(unlinked, [str(i) for i in range(n)]), stacklevel=2)
    return GlobalSolution(
        positions=positions,
        residuals=residuals,
        kept=reason == "",
        drop_reason=reason.astype(str),
        component=component,
        unlinked=unlinked,
        iterations=iterations,
    )


def unlinked_message(unlinked, names) -> str:
    """Warning text for tiles placed at nominal positions."""
    listed = ", ".join(names[i] for i in unlinked[:10]) + (" ..." if len(unlinked) > 10 else "")
    return (
        f"{len(unlinked)} tile(s) have no reliable link to the rest of the mosaic and were placed "
        f"at their nominal positions relative to their neighbours: {listed}. Check them for "
        "blank or out-of-focus content, or lower min_quality."
    )


def _solve(n, pairs, offsets, weights, nominal):
    """Least-squares positions per component, each component centred on its nominal centroid."""
    ndim = nominal.shape[1]
    positions = nominal.copy()
    if len(pairs) == 0:
        return positions, np.arange(n)
    i, j = pairs[:, 0], pairs[:, 1]
    adjacency = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    n_comp, labels = connected_components(adjacency, directed=False)
    # Laplacian L = B^T W B and right-hand side B^T W t, all axes at once
    diag = np.bincount(i, weights, n) + np.bincount(j, weights, n)
    lap = sparse.coo_matrix(
        (
            np.concatenate([diag, -weights, -weights]),
            (np.concatenate([np.arange(n), i, j]), np.concatenate([np.arange(n), j, i])),
        ),
        shape=(n, n),
    ).tocsc()
    wt = offsets * weights[:, None]
    rhs = np.zeros((n, ndim))
    np.add.at(rhs, j, wt)
    np.subtract.at(rhs, i, wt)
    # hold the first tile of every component at 0 (removes the Laplacian's null space)
    anchors = np.zeros(n, dtype=bool)
    anchors[np.unique(labels, return_index=True)[1]] = True
    free = np.flatnonzero(~anchors)
    x = np.zeros((n, ndim))
    if len(free):
        sub = lap[free][:, free]
        sol = spsolve(sub.tocsc(), rhs[free])
        x[free] = np.asarray(sol).reshape(len(free), ndim)
    # translate each component so that its centroid matches the nominal centroid
    counts = np.bincount(labels, minlength=n_comp)[:, None]
    shift = (
        np.stack(
            [np.bincount(labels, nominal[:, a] - x[:, a], n_comp) for a in range(ndim)], axis=1
        )
        / counts
    )
    positions = x + shift[labels]
    return positions, labels


def _residuals(positions, pairs, offsets):
    if len(pairs) == 0:
        return np.zeros(0)
    d = positions[pairs[:, 1]] - positions[pairs[:, 0]] - offsets
    return np.sqrt((d**2).sum(axis=1))


def _exceeds(residuals, kept, max_residual, max_relative):
    """Links whose residual is above both thresholds (the mean is over the kept links)."""
    mean = residuals[kept].mean() if kept.any() else 0.0
    r = np.nan_to_num(residuals, nan=-np.inf)
    return (r > max_residual) & (r > max_relative * mean)


def _links_to_drop(residuals, kept, pairs, max_residual, max_relative):
    """Worst offending links of this round.

    A wrong link spreads part of its error to the links around it, so only links within a
    factor of two of the worst residual are taken, and no two sharing a tile.
    """
    r = np.where(kept, residuals, 0.0)
    bad = np.flatnonzero(kept & _exceeds(residuals, kept, max_residual, max_relative))
    if len(bad) == 0:
        return bad
    bad = bad[r[bad] >= 0.5 * r[bad].max()]
    touched: set[int] = set()
    chosen = []
    for link in bad[np.argsort(-r[bad], kind="stable")]:
        i, j = (int(v) for v in pairs[link])
        if i in touched or j in touched:
            continue
        touched.update((i, j))
        chosen.append(link)
    return np.array(chosen, dtype=np.int64)


def _place_components(positions, labels, pairs, nominal, *, fixed_tile):
    """Order components (reference first) and move the others next to their neighbours.

    ``positions`` is modified in place. Returns (component labels renumbered so that 0 is
    the reference, indices of tiles outside the reference component).
    """
    n = len(positions)
    n_comp = labels.max() + 1 if n else 0
    sizes = np.bincount(labels, minlength=n_comp)
    order = np.argsort(-sizes, kind="stable")
    if fixed_tile is not None:
        ref = labels[fixed_tile]
        order = np.concatenate([[ref], order[order != ref]])
        positions[labels == ref] += nominal[fixed_tile] - positions[fixed_tile]
    rank = np.empty(n_comp, dtype=np.int64)
    rank[order] = np.arange(n_comp)
    component = rank[labels]
    if n_comp > 1:
        correction = positions - nominal  # per tile, how far the solve moved it
        placed = component == 0
        # nominal neighbours of every tile, both directions
        nbr_i = np.concatenate([pairs[:, 0], pairs[:, 1]]) if len(pairs) else np.zeros(0, int)
        nbr_j = np.concatenate([pairs[:, 1], pairs[:, 0]]) if len(pairs) else np.zeros(0, int)
        by_comp = np.argsort(component, kind="stable")
        bounds = np.searchsorted(component[by_comp], np.arange(n_comp + 1))
        for c in range(1, n_comp):
            members = by_comp[bounds[c] : bounds[c + 1]]
            inside = np.zeros(n, dtype=bool)
            inside[members] = True
            touching = inside[nbr_i] & placed[nbr_j]
            if touching.any():
                shift = (correction[nbr_j[touching]] - correction[nbr_i[touching]]).mean(axis=0)
                positions[members] += shift
                correction[members] += shift
            placed[members] = True
    unlinked = np.flatnonzero(component != 0)
    return component, unlinked
