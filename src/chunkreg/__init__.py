"""chunkreg: register microscopy data far larger than memory.

In-memory kernels with the :mod:`skimage.registration` API, a tiling engine that runs them
over zarr volumes on a :mod:`dask.distributed` cluster, and the workflows built on both.
"""

__version__ = "0.1.0"

# Workflows import chunkreg.io, which reads __version__: import them after it.
from . import errors
from .errors import ChunkregError
from .registration import optical_flow_ilk, optical_flow_tvl1, phase_cross_correlation, warp
from .volume import compute_flow
from .volume._blockwise import BlockShifts, blockwise_shifts
from .volume._shifts_to_flow import shifts_to_flow
from .volume._warp_volume import warp_volume

__all__ = [
    "BlockShifts",
    "ChunkregError",
    "__version__",
    "blockwise_shifts",
    "compute_flow",
    "errors",
    "optical_flow_ilk",
    "optical_flow_tvl1",
    "phase_cross_correlation",
    "shifts_to_flow",
    "warp",
    "warp_volume",
]
