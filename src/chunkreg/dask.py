"""Lazy optical flow on :mod:`dask.array` arrays, for users who compose in dask.

Each block is extended by a halo (``depth``) with :func:`dask.array.overlap.overlap` (no padding
beyond the array edges), the in-memory kernel runs on it with :func:`dask.array.map_blocks`
(which adds the leading component axis), and :func:`dask.array.overlap.trim_internal` crops the
halo again, so the result has exactly the shape ``(ndim, *shape)`` and the input's chunks.

This builds one graph over the whole array: convenient up to a few thousand chunks. For
terabyte volumes use :func:`chunkreg.compute_flow`, whose tasks read their own halo from zarr.

:func:`map_overlap` is the other way round: a function of the user's over dask arrays, run now
through :func:`chunkreg.map_tiles` (halo reads from zarr, crop or blend, write-once output,
resume), returned as a dask array that reads the written result.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ._validation import per_axis
from .errors import InputError
from .registration._methods import depth_rule, kernel, resolve_method
from .volume._intensity import to_float

__all__ = ["map_overlap", "optical_flow_dis", "optical_flow_ilk", "optical_flow_tvl1"]


def _flow_block(reference, moving, *, method, params, out_dtype):
    # integers scaled by their dtype's range exactly as the in-memory kernels scale them
    flow = kernel(method)(to_float(reference), to_float(moving), **params)
    return np.asarray(flow, dtype=out_dtype)


def _as_dask(image, name: str) -> da.Array:
    array = image if isinstance(image, da.Array) else da.asarray(image)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} must have a real numeric dtype, got {array.dtype}.")
    if array.ndim not in (2, 3):
        raise InputError(f"{name} must be 2-D or 3-D, got shape {array.shape}.")
    return array


def _lazy_flow(reference_image, moving_image, method, depth, dtype, params) -> da.Array:
    ref = _as_dask(reference_image, "reference_image")
    mov = _as_dask(moving_image, "moving_image")
    if ref.shape != mov.shape:
        raise InputError(
            f"reference_image and moving_image must have the same shape, got {ref.shape} and "
            f"{mov.shape}."
        )
    ndim = ref.ndim
    params = resolve_method(method, params)
    if isinstance(depth, str):
        if depth != "auto":
            raise InputError(f"depth must be 'auto' or pixels per axis, got {depth!r}.")
        depth = (depth_rule(method, ndim=ndim, **params)[0],) * ndim
    else:
        depth = per_axis(depth, ndim, "depth", minimum=0)
    mov = mov.rechunk(ref.chunks)
    depths = dict(enumerate(depth))
    boundary = dict.fromkeys(range(ndim), "none")
    ref_ov = da.overlap.overlap(ref, depth=depths, boundary=boundary)
    mov_ov = da.overlap.overlap(mov, depth=depths, boundary=boundary)
    dtype = np.dtype(dtype)
    flow_ov = da.map_blocks(
        _flow_block,
        ref_ov,
        mov_ov,
        new_axis=0,
        chunks=((ndim,), *ref_ov.chunks),
        dtype=dtype,
        meta=np.empty((0,) * (ndim + 1), dtype=dtype),
        method=method,
        params=params,
        out_dtype=dtype,
    )
    trim = {0: 0, **{axis + 1: d for axis, d in enumerate(depth)}}
    return da.overlap.trim_internal(flow_ov, trim, boundary=dict.fromkeys(range(ndim + 1), "none"))


def optical_flow_ilk(
    reference_image,
    moving_image,
    *,
    depth="auto",
    radius: int = 7,
    num_warp: int = 10,
    gaussian: bool = False,
    prefilter: bool = False,
    tol: float = 1e-4,
    dtype=np.float32,
) -> da.Array:
    """Lazy iterative Lucas-Kanade flow, block by block with a halo.

    Parameters
    ----------
    reference_image, moving_image : dask.array.Array or array_like
        2-D or 3-D images of the same shape (numpy input is wrapped as one block). The moving
        image is rechunked like the reference.
    depth : "auto", int or tuple of int
        Halo per axis; ``"auto"`` uses :func:`chunkreg.volume.flow_depth` (motion up to 4 px).
        Blocks smaller than the halo are merged by dask.
    radius, num_warp, gaussian, prefilter, tol :
        As in :func:`chunkreg.optical_flow_ilk`.
    dtype : dtype
        Output dtype.

    Returns
    -------
    dask.array.Array
        Flow of shape ``(ndim, *shape)``, chunked ``((ndim,), *reference_chunks)``, such that
        ``chunkreg.warp(moving_image, flow)`` approximates ``reference_image``.

    References
    ----------
    .. [1] Le Besnerais, G., & Champagnat, F. (2005). Dense optical flow by iterative local
       window registration. IEEE ICIP 2005. :DOI:`10.1109/ICIP.2005.1529706`

    Examples
    --------
    >>> import dask.array as da
    >>> ref = da.zeros((256, 256), chunks=128)
    >>> optical_flow_ilk(ref, ref, radius=3).shape
    (2, 256, 256)
    """
    params = {
        "radius": radius,
        "num_warp": num_warp,
        "gaussian": gaussian,
        "prefilter": prefilter,
        "tol": tol,
    }
    return _lazy_flow(reference_image, moving_image, "ilk", depth, dtype, params)


def optical_flow_tvl1(
    reference_image,
    moving_image,
    *,
    depth="auto",
    attachment: float = 15,
    tightness: float = 0.3,
    num_warp: int = 5,
    num_iter: int = 10,
    tol: float = 1e-4,
    prefilter: bool = False,
    dtype=np.float32,
) -> da.Array:
    """Lazy TV-L1 flow, block by block with a halo.

    Parameters
    ----------
    reference_image, moving_image : dask.array.Array or array_like
        2-D or 3-D images of the same shape. The moving image is rechunked like the reference.
    depth : "auto", int or tuple of int
        Halo per axis; ``"auto"`` uses :func:`chunkreg.volume.flow_depth` (motion up to 4 px).
    attachment, tightness, num_warp, num_iter, tol, prefilter :
        As in :func:`chunkreg.optical_flow_tvl1`.
    dtype : dtype
        Output dtype.

    Returns
    -------
    dask.array.Array
        Flow of shape ``(ndim, *shape)``, chunked ``((ndim,), *reference_chunks)``.

    References
    ----------
    .. [1] Zach, C., Pock, T., & Bischof, H. (2007). A duality based approach for realtime
       TV-L1 optical flow. DAGM 2007. :DOI:`10.1007/978-3-540-74936-3_22`

    Examples
    --------
    >>> import dask.array as da
    >>> ref = da.zeros((64, 64, 64), chunks=32)
    >>> optical_flow_tvl1(ref, ref).chunks[0]
    (3,)
    """
    params = {
        "attachment": attachment,
        "tightness": tightness,
        "num_warp": num_warp,
        "num_iter": num_iter,
        "tol": tol,
        "prefilter": prefilter,
    }
    return _lazy_flow(reference_image, moving_image, "tvl1", depth, dtype, params)


def optical_flow_dis(
    reference_image,
    moving_image,
    *,
    depth="auto",
    preset: str = "medium",
    patch_size: int | None = None,
    patch_stride: int | None = None,
    num_levels: int | None = None,
    finest_level: int | None = None,
    gd_iterations: int | None = None,
    variational_iterations: int | None = None,
    smoothness: float | None = None,
    robust_smoothness: bool | None = None,
    normalize_patches: bool | None = None,
    dtype=np.float32,
) -> da.Array:
    """Lazy dense-inverse-search flow, block by block with a halo.

    Parameters
    ----------
    reference_image, moving_image : dask.array.Array or array_like
        2-D or 3-D images of the same shape. The moving image is rechunked like the reference.
    depth : "auto", int or tuple of int
        Halo per axis; ``"auto"`` uses :func:`chunkreg.volume.flow_depth` (motion up to 4 px).
    preset, patch_size, patch_stride, num_levels, finest_level, gd_iterations, \
variational_iterations, smoothness, robust_smoothness, normalize_patches :
        As in :func:`chunkreg.optical_flow_dis` (None: the preset's value).
    dtype : dtype
        Output dtype.

    Returns
    -------
    dask.array.Array
        Flow of shape ``(ndim, *shape)``, chunked ``((ndim,), *reference_chunks)``.

    References
    ----------
    .. [1] Kroeger, T., Timofte, R., Dai, D., & Van Gool, L. (2016). Fast optical flow using
       dense inverse search. ECCV 2016. :DOI:`10.1007/978-3-319-46493-0_29`

    Examples
    --------
    >>> import dask.array as da
    >>> ref = da.zeros((128, 128), chunks=64)
    >>> optical_flow_dis(ref, ref, preset="fast").chunks
    ((2,), (64, 64), (64, 64))
    """
    params = {
        "preset": preset,
        "patch_size": patch_size,
        "patch_stride": patch_stride,
        "num_levels": num_levels,
        "finest_level": finest_level,
        "gd_iterations": gd_iterations,
        "variational_iterations": variational_iterations,
        "smoothness": smoothness,
        "robust_smoothness": robust_smoothness,
        "normalize_patches": normalize_patches,
    }
    return _lazy_flow(reference_image, moving_image, "dis", depth, dtype, params)


def _same_tree(a, b) -> bool:
    """Whether two folders hold the same files with the same bytes."""
    import filecmp
    from pathlib import Path

    a, b = Path(a), Path(b)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def _stage(array, path, scheduler=None) -> str:
    """Store a dask (or numpy) array as a zarr array at ``path``, chunked like its blocks.

    An existing copy with the same bytes is kept as it is (so an output reading it can be
    resumed); otherwise it is replaced.
    """
    import os
    import shutil

    import zarr

    array = array if isinstance(array, da.Array) else da.asarray(array)
    chunks = tuple(int(max(c)) for c in array.chunks)
    array = array.rechunk(chunks)  # regular blocks: zarr's chunks
    path = os.path.abspath(os.fspath(path))  # workers may run in another folder
    fresh = f"{path}.partial"
    shutil.rmtree(fresh, ignore_errors=True)
    target = zarr.create_array(fresh, shape=array.shape, dtype=array.dtype, chunks=chunks,
                               config={"write_empty_chunks": True})  # fmt: skip
    # as the run: in this process for "synchronous", else dask's default (a Client if active)
    da.store(array, target, lock=False, scheduler="sync" if scheduler == "synchronous" else None)
    if os.path.isdir(path) and _same_tree(fresh, path):
        shutil.rmtree(fresh)
    else:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(fresh, path)
    return path


def map_overlap(
    func,
    *arrays,
    output,
    tile=None,
    depth=0,
    blend: str | None = None,
    dtype=None,
    staging=None,
    overwrite: bool = False,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    progress: bool = False,
) -> da.Array:
    """Run ``func`` over arrays with a halo, like :func:`dask.array.map_overlap`, through
    :func:`chunkreg.map_tiles`; return the result as a dask array reading the written output.

    Where :func:`dask.array.map_overlap` builds a graph that pads every block with its
    neighbours' edges and computes lazily, this computes now: each task reads its tile plus
    ``depth`` straight from zarr (clipped at the array edges, like ``boundary="none"``),
    ``func`` runs on numpy arrays, and the cropped (``trim=True``) or blended result is
    written once to ``output``, resumable. The dask array returned reads that output, so it
    composes with further dask code without recomputing anything.

    Parameters
    ----------
    func : callable
        As for :func:`chunkreg.map_tiles`: ``func(*regions)`` (and ``tile=`` if it takes it),
        returning the region, optionally with leading component axes.
    *arrays : dask.array.Array, numpy.ndarray, zarr.Array or path
        Inputs of the same shape. Zarr arrays and paths are read in place; dask and numpy
        arrays are first stored to zarr under ``staging``, chunked like their (regularised)
        blocks. A staged copy whose bytes did not change is kept, so calling again resumes.
    output : str or os.PathLike
        The output group (see :func:`chunkreg.map_tiles`); the result is ``output/0``.
    tile : int or tuple of int, optional
        Core shape per task, a multiple of the first input's chunks; default one chunk (a
        dask block), as dask's ``map_overlap`` works block by block.
    depth, blend, dtype, overwrite, client, scheduler, n_workers, progress
        As for :func:`chunkreg.map_tiles`.
    staging : str or os.PathLike, optional
        Folder for the staged copies of dask and numpy inputs (default ``<output>.inputs``).

    Returns
    -------
    dask.array.Array
        The result, chunked like the output.

    Raises
    ------
    TaskFailedError
        If some tiles failed (after their retries); completed tiles are kept, so calling again
        computes only the rest.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> from scipy import ndimage
    >>> image = da.random.default_rng(0).random((60, 80), chunks=20)
    >>> smooth = map_overlap(lambda a: ndimage.uniform_filter(a, 5), image, depth=2,
    ...                      output="smooth.zarr", scheduler="synchronous")
    >>> smooth.chunks
    ((20, 20, 20), (20, 20, 20, 20))
    >>> bool(np.allclose(smooth, ndimage.uniform_filter(image.compute(), 5)))
    True
    """
    import os

    import zarr

    from .engine import map_tiles

    if not arrays:
        raise InputError("give at least one array.")
    output = os.fspath(output)
    staging = os.fspath(staging) if staging is not None else f"{output}.inputs"
    inputs = []
    for i, array in enumerate(arrays):
        if isinstance(array, (da.Array, np.ndarray)):
            os.makedirs(staging, exist_ok=True)
            array = _stage(array, os.path.join(staging, str(i)), scheduler)
        inputs.append(array)
    if tile is None:
        from .io import open_array

        tile = tuple(open_array(inputs[0], name="input 0").chunks)
    report = map_tiles(func, inputs, output, tile=tile, depth=depth, blend=blend, dtype=dtype,
                       overwrite=overwrite, client=client, scheduler=scheduler,
                       n_workers=n_workers, progress=progress)  # fmt: skip
    report.raise_if_failed()
    return da.from_zarr(zarr.open_array(os.path.abspath(output), path="0", mode="r"))
