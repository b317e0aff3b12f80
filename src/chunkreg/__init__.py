"""chunkreg: register microscopy data far larger than memory.

In-memory kernels with the :mod:`skimage.registration` API, a tiling engine that runs them
over zarr volumes on a :mod:`dask.distributed` cluster, and the workflows built on both.

The kernels are imported eagerly (numpy and scipy only); the workflows, which need zarr and
dask, are imported on first use, so ``import chunkreg`` stays light.
"""

import importlib

from . import errors
from ._version import __version__
from .errors import ChunkregError
from .registration import (
    optical_flow_dis,
    optical_flow_ilk,
    optical_flow_tvl1,
    phase_cross_correlation,
    warp,
)

# Workflow functions, imported lazily: public name -> module that defines it.
_LAZY = {
    "AffineResult": ".volume",
    "BlockShifts": ".volume",
    "blockwise_shifts": ".volume",
    "compute_flow": ".volume",
    "estimate_affine": ".volume",
    "load_affine": ".volume",
    "map_tiles": ".engine",
    "plan_map_tiles": ".engine",
    "run_map_tiles": ".engine",
    "register_timeseries": ".timeseries",
    "shifts_to_flow": ".volume",
    "stitch": ".stitching",
    "warp_volume": ".volume",
}


__all__ = [
    "ChunkregError",
    "__version__",
    "errors",
    "optical_flow_dis",
    "optical_flow_ilk",
    "optical_flow_tvl1",
    "phase_cross_correlation",
    "warp",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
