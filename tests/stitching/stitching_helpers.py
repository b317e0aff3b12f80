"""Helpers for the stitching tests: synthetic mosaics with known tile positions."""

import numpy as np
from scipy import ndimage


class Mosaic:
    """Tiles cut from ``source`` at ``truth`` (source coordinates), nominally at ``layout``."""

    def __init__(self, source, truth, layout, tiles, group_path):
        self.source = source
        self.truth = truth
        self.layout = layout
        self.tiles = tiles
        self.group_path = group_path


def cut_tile(source, position, shape, *, subpixel):
    """The pixels of ``source`` seen by a tile whose first pixel sits at ``position``."""
    if not subpixel:
        start = np.round(position).astype(int)
        return source[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))].copy()
    pad = 12
    base = np.floor(position).astype(int)
    frac = position - base
    region = source[tuple(slice(a - pad, a + n + pad) for a, n in zip(base, shape, strict=True))]
    # sample at base + frac + k: shift the band-limited content by -frac (Fourier shift)
    shifted = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(region), -frac)).real
    return shifted[tuple(slice(pad, pad + n) for n in shape)]


def relative_error(positions, truth):
    """Largest per-axis error after removing the common translation (the gauge)."""
    d = (positions - positions.mean(axis=0)) - (truth - truth.mean(axis=0))
    return np.abs(d).max()
