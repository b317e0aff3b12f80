"""In-memory registration kernels: numpy in, numpy out (no dask, no zarr).

The API mirrors :mod:`skimage.registration` (0.18 onward) so code can switch by changing
the import.
"""

from ._affine import (
    apply_affine,
    compose_affine,
    fit_affine,
    invert_affine,
    ransac_affine,
    rotation_matrix,
)
from ._coarse_to_fine import coarse_to_fine
from ._metrics import normalized_cross_correlation
from ._optical_flow_dis import optical_flow_dis
from ._optical_flow_ilk import axis_radii, ilk_solver, optical_flow_ilk
from ._optical_flow_tvl1 import optical_flow_tvl1, tvl1_solver
from ._phase_correlator import PhaseCorrelator
from ._phase_cross_correlation import phase_cross_correlation
from ._pyramid import reduced_axes
from ._warp import warp

__all__ = [
    "PhaseCorrelator",
    "apply_affine",
    "axis_radii",
    "coarse_to_fine",
    "compose_affine",
    "fit_affine",
    "ilk_solver",
    "invert_affine",
    "normalized_cross_correlation",
    "optical_flow_dis",
    "optical_flow_ilk",
    "optical_flow_tvl1",
    "phase_cross_correlation",
    "ransac_affine",
    "reduced_axes",
    "rotation_matrix",
    "tvl1_solver",
    "warp",
]
