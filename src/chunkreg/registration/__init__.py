"""In-memory registration kernels: numpy in, numpy out (no dask, no zarr).

The API mirrors :mod:`skimage.registration` (0.18 onward) so code can switch by changing
the import.
"""

__all__: list[str] = []
