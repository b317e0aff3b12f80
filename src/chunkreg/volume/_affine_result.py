"""The result of a global affine estimation: the matrix, its evidence, storage and loading.

Stored in a small zarr group: the matrix in the group attributes as an OME-Zarr
``coordinateTransformations`` entry of type ``affine`` (the form of the NGFF 0.5 transform
list; the ``affine`` type is the one RFC-5 adds), from the reference's voxel space to the
moving one's, and the block correspondences it was fitted to as small arrays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import zarr
import zarr.errors

from ..errors import InputError
from ..execution import RunReport
from ..registration._affine import as_matrix

__all__ = ["AffineResult", "load_affine", "resolve_affine"]

#: Attribute of the output group holding the estimate.
AFFINE_ATTR = "affine"
_ARRAYS = ("reference_points", "moving_points", "inliers", "residuals", "quality")


@dataclass(frozen=True)
class AffineResult:
    """A global affine transform between two volumes and the evidence for it.

    Attributes
    ----------
    matrix : ndarray of float64, shape (ndim + 1, ndim + 1)
        Maps reference voxel coordinates (array axis order) to moving voxel coordinates:
        ``scipy.ndimage.affine_transform(moving, matrix)`` approximates the reference.
    model : str
        "affine", "similarity", "rigid" or "translation".
    level : int
        Pyramid level of the coarse estimate (``2**level`` times coarser than the input).
    reference_points, moving_points : ndarray of float64, shape (n, ndim)
        The final correspondences (input voxels): block centres in the reference and where
        each block was found in the moving volume; NaN for blocks without a measurement.
    inliers : ndarray of bool, shape (n,)
        Correspondences the final fit used (RANSAC consensus).
    residuals : ndarray of float64, shape (n,)
        Distance (voxels) between each moving point and its reference point mapped by
        ``matrix``; NaN where not measured.
    quality : ndarray of float64, shape (n,)
        NCC of each block with the moving volume through the estimate (NaN: not measured).
    shape, moving_shape : tuple of int
        Shapes of the reference and moving volumes.
    stages : list of dict
        Per estimation pass: ``stage``, ``level``, ``pairs``, ``inliers``, ``rms`` (voxels of
        that level).
    report : RunReport or None
        The run's report (None when loaded from storage).
    """

    matrix: np.ndarray
    model: str
    level: int
    reference_points: np.ndarray
    moving_points: np.ndarray
    inliers: np.ndarray
    residuals: np.ndarray
    quality: np.ndarray
    shape: tuple[int, ...]
    moving_shape: tuple[int, ...]
    stages: list = field(default_factory=list)
    report: RunReport | None = None

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.shape)

    @property
    def n_inliers(self) -> int:
        """Correspondences in the final fit."""
        return int(self.inliers.sum())

    @property
    def rms(self) -> float:
        """Root-mean-square residual of the inliers (voxels)."""
        r = self.residuals[self.inliers]
        return float(np.sqrt(np.mean(r**2))) if r.size else float("nan")

    def describe(self) -> str:
        """A few lines: the matrix, its decomposition, the evidence."""
        n = self.ndim
        lin = self.matrix[:n, :n]
        singular = np.linalg.svd(lin, compute_uv=False)
        u, _, vt = np.linalg.svd(lin)
        rot = u @ vt
        angle = np.degrees(np.arccos(np.clip((np.trace(rot) - (n - 2)) / 2, -1.0, 1.0)))
        measured = np.isfinite(self.residuals)
        lines = [
            f"affine ({self.model}), reference {self.shape} -> moving {self.moving_shape}, "
            f"coarse level {self.level}",
            "matrix (reference voxel -> moving voxel, axis order):",
            *("  [" + ", ".join(f"{v:10.5f}" for v in row) + "]" for row in self.matrix),
            f"rotation {angle:.2f} degrees, scales {', '.join(f'{s:.4f}' for s in singular)}, "
            f"translation {', '.join(f'{t:.2f}' for t in self.matrix[:n, n])} voxels",
            f"blocks: {int(measured.sum())} of {len(self.inliers)} measured, {self.n_inliers} "
            f"inliers, residual RMS {self.rms:.3f} voxels",
        ]
        if np.isfinite(self.quality[self.inliers]).any():
            lines.append(
                f"NCC of the inlier blocks: median {np.nanmedian(self.quality[self.inliers]):.3f}"
            )
        for s in self.stages:
            lines.append(
                f"  {s['stage']} (level {s['level']}): {s['inliers']} of {s['pairs']} pairs "
                f"inliers, RMS {s['rms']:.3f} voxels of that level"
            )
        return "\n".join(lines)

    summary = describe

    def save(self, group: zarr.Group) -> None:
        """Write the matrix (attributes, OME-Zarr transform) and the correspondences."""
        for name in _ARRAYS:
            value = np.asarray(getattr(self, name))
            group.create_array(
                name, shape=value.shape, dtype=value.dtype, chunks=value.shape or (1,),
                overwrite=True,
            )[...] = value  # fmt: skip
        n = self.ndim
        group.attrs[AFFINE_ATTR] = {
            "matrix": self.matrix.tolist(),
            "model": self.model,
            "level": int(self.level),
            "shape": list(self.shape),
            "moving_shape": list(self.moving_shape),
            "n_inliers": self.n_inliers,
            "rms": self.rms,
            "stages": self.stages,
            "convention": "homogeneous, array axis order; maps reference voxel coordinates to "
            "moving voxel coordinates: scipy.ndimage.affine_transform(moving, matrix) ~ reference",
        }
        ome = dict(group.attrs.get("ome", {}))
        ome["version"] = "0.5"
        ome["coordinateTransformations"] = [
            {
                "type": "affine",
                "affine": self.matrix[:n].tolist(),
                "input": "reference",
                "output": "moving",
            }
        ]
        group.attrs["ome"] = ome


def _open_group(source) -> zarr.Group:
    if isinstance(source, zarr.Group):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(
            f"an affine must be a matrix, an AffineResult or the path of an estimate_affine "
            f"output, got {type(source).__name__}."
        )
    try:
        return zarr.open_group(os.fspath(source), mode="r")
    except (
        FileNotFoundError,
        zarr.errors.GroupNotFoundError,
        zarr.errors.NodeTypeValidationError,
    ) as exc:
        raise InputError(f"{source!s} is not an estimate_affine output ({exc}).") from exc


def load_affine(source) -> AffineResult:
    """Read an :class:`AffineResult` back from an :func:`estimate_affine` output group.

    Parameters
    ----------
    source : str, os.PathLike, zarr.Group or AffineResult

    Returns
    -------
    AffineResult

    Raises
    ------
    InputError
        If ``source`` is not a (complete) estimate_affine output.
    """
    if isinstance(source, AffineResult):
        return source
    group = _open_group(source)
    meta = group.attrs.get(AFFINE_ATTR)
    if not isinstance(meta, dict) or "matrix" not in meta:
        raise InputError(
            f"{source!s} holds no affine estimate (no '{AFFINE_ATTR}' attributes); give the "
            "output of chunkreg.estimate_affine / `chunkreg register` (step affine), or run it "
            "again to finish it."
        )
    arrays = {name: group[name][...] for name in _ARRAYS}
    return AffineResult(
        matrix=as_matrix(meta["matrix"]),
        model=meta["model"],
        level=int(meta["level"]),
        shape=tuple(meta["shape"]),
        moving_shape=tuple(meta["moving_shape"]),
        stages=list(meta.get("stages", [])),
        **arrays,
    )


def resolve_affine(value, ndim: int) -> np.ndarray | None:
    """The matrix of an ``initial_affine=`` / ``affine=`` argument (None stays None).

    Accepts a matrix (``(ndim + 1)`` square, or without the last row), an
    :class:`AffineResult`, or the path (or group) of a stored estimate.
    """
    if value is None:
        return None
    if isinstance(value, AffineResult):
        return as_matrix(value.matrix, ndim)
    if isinstance(value, (str, os.PathLike, zarr.Group)):
        return as_matrix(load_affine(value).matrix, ndim)
    return as_matrix(value, ndim)
