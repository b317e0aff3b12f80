"""Mosaic stitching: place overlapping tiles by pairwise phase correlation and fuse them.

:func:`stitch` runs the whole workflow on zarr tiles (pairwise registration and fusion as
cluster tasks); the pieces are public for custom pipelines: layouts
(:class:`Layout`, :func:`regular_grid`, :func:`read_layout`), the pairwise kernel
(:func:`pair_regions`, :func:`register_pair`), the global solver (:func:`solve_positions`)
and the fusion kernel (:func:`fuse_block`).
"""

from ._fuse import BLEND_MODES, TilePiece, fuse_block
from ._layout import Layout, overlapping_pairs, read_layout, regular_grid, write_layout
from ._pairwise import PairRegions, pair_regions, register_pair
from ._result import StitchResult
from ._solve import GlobalSolution, solve_positions
from ._stitch import StitchPlan, plan_stitch, stitch

__all__ = [
    "BLEND_MODES",
    "GlobalSolution",
    "Layout",
    "PairRegions",
    "StitchPlan",
    "StitchResult",
    "TilePiece",
    "fuse_block",
    "overlapping_pairs",
    "pair_regions",
    "plan_stitch",
    "read_layout",
    "register_pair",
    "regular_grid",
    "solve_positions",
    "stitch",
    "write_layout",
]
