"""chunkreg: register microscopy data far larger than memory.

In-memory kernels with the :mod:`skimage.registration` API, a tiling engine that runs them
over zarr volumes on a :mod:`dask.distributed` cluster, and the workflows built on both.
"""

from . import errors
from .errors import ChunkregError
from .registration import optical_flow_ilk, optical_flow_tvl1, phase_cross_correlation, warp

__version__ = "0.1.0"

__all__ = [
    "ChunkregError",
    "__version__",
    "errors",
    "optical_flow_ilk",
    "optical_flow_tvl1",
    "phase_cross_correlation",
    "warp",
]
