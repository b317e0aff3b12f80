"""In-memory registration kernels: numpy in, numpy out (no dask, no zarr).

The API mirrors :mod:`skimage.registration` (0.18 onward) so code can switch by changing
the import.
"""

from ._metrics import normalized_cross_correlation
from ._phase_correlator import PhaseCorrelator
from ._phase_cross_correlation import phase_cross_correlation

__all__ = ["PhaseCorrelator", "normalized_cross_correlation", "phase_cross_correlation"]
