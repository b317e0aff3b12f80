"""chunkreg: register microscopy data far larger than memory.

In-memory kernels with the :mod:`skimage.registration` API, a tiling engine that runs them
over zarr volumes on a :mod:`dask.distributed` cluster, and the workflows built on both.
"""

__version__ = "0.1.0"

from . import errors
from .errors import ChunkregError
from .volume import compute_flow

__all__ = ["ChunkregError", "__version__", "compute_flow", "errors"]
