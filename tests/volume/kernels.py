"""Stand-in kernels for workflow tests: cheap, with a known neighbourhood.

``box_flow`` depends on a (2r+1)-wide neighbourhood only, so with a halo >= r the tiled result
must equal the whole-image result (up to float rounding): a test of tiling, halos and stitching
that does not depend on any flow algorithm. The module is pickled by value so worker processes
that cannot import the tests still run these.
"""

import sys
import time

import cloudpickle
import numpy as np
from scipy import ndimage


def box_flow(reference, moving, *, radius=3, scale=1.0):
    """Per-axis local means of ``reference - moving`` and of the coordinates (shape (ndim, ...))."""
    diff = ndimage.uniform_filter(
        np.asarray(reference, np.float64) - moving, size=2 * radius + 1, mode="mirror"
    )
    return np.stack([scale * (a + 1) * diff for a in range(reference.ndim)]).astype(np.float32)


def slow_box_flow(reference, moving, *, radius=3, delay=0.2):
    """``box_flow`` that takes at least ``delay`` seconds (to interrupt runs part-way)."""
    time.sleep(delay)
    return box_flow(reference, moving, radius=radius)


def failing_box_flow(reference, moving, *, radius=3, bad_shape=None):
    """``box_flow`` that raises on inputs of shape ``bad_shape`` (one tile's read region)."""
    if bad_shape is not None and tuple(reference.shape) == tuple(bad_shape):
        raise RuntimeError(f"cursed tile of shape {reference.shape}")
    return box_flow(reference, moving, radius=radius)


def wrong_shape_flow(reference, moving):
    """A broken kernel: drops the component axis."""
    return np.zeros(reference.shape, np.float32)


cloudpickle.register_pickle_by_value(sys.modules[__name__])
