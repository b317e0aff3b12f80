"""A synthetic volume pair with known flow, generated and evaluated block by block.

Every value is an analytic function of global voxel coordinates, so any block of the
reference, of the moving volume or of the true flow can be computed on its own, exactly, on
any worker, and a benchmark never holds a whole volume.

* Texture: ``T(x) = 0.5 + c * sum_k cos(k_k . x + phi_k)``, ``K`` plane waves with random
  directions and phases and periods spread evenly over the octaves from 4 to 256 voxels (the
  same contrast at every pyramid level: the coarse levels need long periods to capture a
  large motion without locking onto the wrong fringe), ``c`` giving a standard deviation of
  0.1 (like :func:`chunkreg.testing.textured_image`).
* Displacement: ``u_j(x) = sum_a A_ja sin(w_ja x_a + psi_ja)``, one low-frequency sinusoid per
  component and axis (0.25-0.5 periods across that axis, signs chosen so that the three terms
  add up), scaled so that each component's largest magnitude over the volume is
  ``amplitude``.
* Reference ``T(x)``; moving ``M(y) = T(y - u(y))``. Because ``u`` is a sum of one-axis terms,
  the phase of every wave in both volumes is a sum of one-axis functions, so a block is
  ``Re(E0 @ (E1 x E2))``: per-axis complex exponentials, one outer product and one float32
  matrix product (no per-voxel transcendental functions).
* True flow (``warp(moving, flow) = reference``, i.e. ``reference(x) = moving(x + f(x))``):
  ``f(x) = u(x + f(x))``, solved per voxel by fixed-point iteration, which contracts because
  the Lipschitz constant of ``u`` is below 1 (checked).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import zarr

__all__ = ["SyntheticPair", "blocks", "evaluate_block", "generate_block", "make_pair"]

#: Standard deviation of the texture (its mean is 0.5).
TEXTURE_STD = 0.1
#: Shortest and longest period of the texture's waves, voxels. scikit-image's iLK on a whole
#: 64 x 128 x 128 pair moved by 12 voxels (mean 11.8) reached an endpoint error of 12.6 with
#: 128 waves of periods 4-16, 12.0 with wave vectors drawn from the spectrum of noise smoothed
#: by 2 voxels (the noise itself, chunkreg.testing.textured_image: 7.8), 5.8 with periods up to
#: 64, 3.0-3.7 up to 128 and 2.3 up to 256.
PERIODS = (4.0, 256.0)
#: Fixed-point iterations stop when no voxel's flow moves by more than this (voxels).
TRUTH_TOL = 1e-4
TRUTH_MAX_ITER = 60


@dataclass(frozen=True, eq=False)
class SyntheticPair:
    """Parameters of the pair (small; sent with every task).

    Attributes
    ----------
    shape : tuple of int
        Volume shape ``(n0, n1, n2)``.
    waves : ndarray, shape (K, 3)
        Wave vectors of the texture, radians per voxel.
    phases : ndarray, shape (K,)
        Their phases.
    disp_amp, disp_freq, disp_phase : ndarray, shape (3, 3)
        ``u_j(x) = sum_a disp_amp[j, a] * sin(disp_freq[j, a] * x_a + disp_phase[j, a])``.
    """

    shape: tuple[int, int, int]
    waves: np.ndarray
    phases: np.ndarray
    disp_amp: np.ndarray
    disp_freq: np.ndarray
    disp_phase: np.ndarray

    @property
    def lipschitz(self) -> float:
        """Bound on how much ``u`` changes per voxel of motion (max-norm); must be < 1."""
        return float(np.abs(self.disp_amp * self.disp_freq).sum(axis=1).max())

    def _term(self, j: int, a: int, coords):
        return self.disp_amp[j, a] * np.sin(self.disp_freq[j, a] * coords + self.disp_phase[j, a])

    def _axis_factors(self, a: int, start: int, stop: int, moving: bool) -> np.ndarray:
        """``exp(i theta_ka(y_a))`` for every wave ``k`` along axis ``a``: shape (K, n)."""
        y = np.arange(start, stop, dtype=np.float64)
        theta = self.waves[:, a, None] * y
        if moving:  # the phase of T(y - u(y)): subtract k . (this axis's terms of u)
            for j in range(3):
                theta -= self.waves[:, j, None] * self._term(j, a, y)
        if a == 0:
            theta += self.phases[:, None]
        return np.exp(1j * theta).astype(np.complex64)

    def volume(self, region, *, moving: bool) -> np.ndarray:
        """The reference (or the moving volume) over ``region`` (3 slices), float32."""
        (s0, s1, s2) = region
        e0 = self._axis_factors(0, s0.start, s0.stop, moving)
        e1 = self._axis_factors(1, s1.start, s1.stop, moving)
        e2 = self._axis_factors(2, s2.start, s2.stop, moving)
        e12 = (e1[:, :, None] * e2[:, None, :]).reshape(len(e1), -1)
        # Re(e0.T @ e12) as one real product: [Re e0, -Im e0].T @ [Re e12; Im e12]
        c = TEXTURE_STD / math.sqrt(len(self.waves) / 2)
        lhs = np.concatenate([e0.real.T, -e0.imag.T], axis=1) * np.float32(c)
        rhs = np.concatenate([e12.real, e12.imag])
        del e12
        out = lhs @ rhs
        out += np.float32(0.5)
        return out.reshape(s0.stop - s0.start, s1.stop - s1.start, s2.stop - s2.start)

    def displacement(self, points) -> list[np.ndarray]:
        """``u`` at ``points`` (three arrays of coordinates that broadcast together)."""
        return [sum(self._term(j, a, points[a]) for a in range(3)) for j in range(3)]

    def truth(self, region) -> tuple[np.ndarray, int, float]:
        """The true flow over ``region``: (flow (3, *block) float32, iterations, last change).

        Solves ``f = u(x + f)`` by fixed-point iteration from ``f = u(x)``.
        """
        shape = tuple(s.stop - s.start for s in region)
        x = [
            np.arange(s.start, s.stop, dtype=np.float32).reshape(
                [-1 if a == i else 1 for i in range(3)]
            )
            for a, s in enumerate(region)
        ]
        flow = np.empty((3, *shape), np.float32)
        for j in range(3):
            flow[j] = sum(self._term(j, a, x[a]).astype(np.float32) for a in range(3))
        new = np.empty_like(flow)
        q = np.empty_like(flow)
        tmp = np.empty(shape, np.float32)
        amp, freq, phase = (
            v.astype(np.float32) for v in (self.disp_amp, self.disp_freq, self.disp_phase)
        )
        for iteration in range(1, TRUTH_MAX_ITER + 1):
            for a in range(3):
                np.add(flow[a], x[a], out=q[a])
            for j in range(3):
                new[j] = 0
                for a in range(3):
                    np.multiply(q[a], freq[j, a], out=tmp)
                    tmp += phase[j, a]
                    np.sin(tmp, out=tmp)
                    tmp *= amp[j, a]
                    new[j] += tmp
            np.subtract(new, flow, out=q)
            change = float(np.abs(q).max())
            flow, new = new, flow
            if change <= TRUTH_TOL:
                return flow, iteration, change
        raise RuntimeError(
            f"the true flow did not converge in {TRUTH_MAX_ITER} iterations (last change "
            f"{change:.2g} voxels); lower the amplitude."
        )


def make_pair(shape, amplitude: float, *, seed: int = 0, n_waves: int = 192,
              periods=PERIODS) -> SyntheticPair:  # fmt: skip
    """Draw the texture and the displacement of a pair of volumes of ``shape``.

    Parameters
    ----------
    shape : tuple of 3 int
    amplitude : float
        Largest magnitude of each displacement component over the volume, voxels.
    seed : int
    n_waves : int
        Plane waves in the texture.
    periods : (float, float)
        Shortest and longest period of the waves, voxels (log-uniform in between).
    """
    shape = tuple(int(n) for n in shape)
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    period = np.exp(rng.uniform(math.log(periods[0]), math.log(periods[1]), n_waves))
    waves = directions * (2 * np.pi / period)[:, None]
    phases = rng.uniform(0, 2 * np.pi, n_waves)
    n = np.array(shape, dtype=np.float64)
    freq = 2 * np.pi * rng.uniform(0.25, 0.5, (3, 3)) / n[None, :]
    phase = rng.uniform(0, 2 * np.pi, (3, 3))
    amp = rng.uniform(0.5, 1.0, (3, 3))
    sign = rng.choice([-1.0, 1.0], 3)
    for j in range(3):
        terms = [np.sin(freq[j, a] * np.arange(shape[a]) + phase[j, a]) for a in range(3)]
        # the three terms of a component add up rather than cancel (mean |u| near the
        # amplitude, as with the old generator's oblique waves); the component's sign is random
        amp[j] *= sign[j] * np.sign([t.mean() for t in terms])
        terms = [amp[j, a] * t for a, t in enumerate(terms)]
        # u_j is a sum of one-axis terms: its extremes over the volume are sums of theirs
        largest = max(sum(t.max() for t in terms), -sum(t.min() for t in terms))
        amp[j] *= amplitude / largest
    pair = SyntheticPair(shape, waves, phases, amp, freq, phase)
    if pair.lipschitz >= 0.9:
        raise ValueError(
            f"displacement of amplitude {amplitude} changes by {pair.lipschitz:.2f} voxel per "
            f"voxel in a {shape} volume: too steep to invert; use a smaller amplitude or a "
            "larger volume."
        )
    return pair


def blocks(shape, block) -> list[tuple[slice, slice, slice]]:
    """Regions of ``block`` voxels (the last ones ragged) covering ``shape``, in C order."""
    axes = [
        [slice(i, min(i + b, n)) for i in range(0, n, b)] for n, b in zip(shape, block, strict=True)
    ]
    return list(itertools.product(*axes))


def generate_block(task) -> dict:
    """Compute and write one block of the reference and of the moving volume.

    ``task`` is ``(region, pair, reference_path, moving_path)``; returns the sum of
    ``|moving - reference|`` over the block and timings.
    """
    region, pair, ref_path, mov_path = task
    t0 = time.perf_counter()
    ref = pair.volume(region, moving=False)
    mov = pair.volume(region, moving=True)
    t1 = time.perf_counter()
    zarr.open_array(ref_path, mode="r+")[region] = ref
    zarr.open_array(mov_path, mode="r+")[region] = mov
    t2 = time.perf_counter()
    return {
        "abs_diff": float(np.abs(mov - ref, dtype=np.float32).sum(dtype=np.float64)),
        "compute_s": t1 - t0,
        "write_s": t2 - t1,
        "seconds": t2 - t0,
        "bytes_written": ref.nbytes + mov.nbytes,
    }


def _inside(region, shape, margin: int):
    """Slices of the block (local) that lie ``margin`` voxels inside the volume's faces."""
    local = []
    for s, n in zip(region, shape, strict=True):
        lo, hi = max(s.start, margin), min(s.stop, n - margin)
        if hi <= lo:
            return None
        local.append(slice(lo - s.start, hi - s.start))
    return tuple(local)


def _open(where) -> zarr.Array:
    store, path = where
    return zarr.open_array(store, path=path, mode="r")


def evaluate_block(task) -> dict:
    """Partial sums of the endpoint errors and of ``|registered - reference|`` over one block.

    ``task`` is ``(region, pair, flows, reference, registered, margin)``; ``flows`` maps a name
    to a flow array ``(3, *shape)``; arrays are given as ``(store path, array path)``. Returns,
    for zero flow (``"none"``) and each flow, the sum of the endpoint error over the block and
    over its part ``margin`` voxels inside the volume's faces, with the voxel counts.
    """
    region, pair, flows, ref_path, reg_path, margin = task
    t0 = time.perf_counter()
    truth, iterations, change = pair.truth(region)
    t1 = time.perf_counter()
    inside = _inside(region, pair.shape, margin)
    out = {
        "voxels": math.prod(s.stop - s.start for s in region),
        "voxels_inside": 0 if inside is None else math.prod(s.stop - s.start for s in inside),
        "iterations": iterations,
        "change": change,
        "truth_s": t1 - t0,
    }

    def sums(err):
        return float(err.sum(dtype=np.float64)), (
            0.0 if inside is None else float(err[inside].sum(dtype=np.float64))
        )

    out["epe:none"] = sums(np.sqrt((truth**2).sum(axis=0)))
    nbytes = 0
    for name, path in flows.items():
        flow = _open(path)[(slice(None), *region)]
        nbytes += flow.nbytes
        flow -= truth
        out[f"epe:{name}"] = sums(np.sqrt((flow**2).sum(axis=0)))
    del truth
    ref = _open(ref_path)[region]
    reg = _open(reg_path)[region]
    out["abs_diff"] = float(np.abs(reg - ref).sum(dtype=np.float64))
    out["bytes_read"] = nbytes + ref.nbytes + reg.nbytes
    out["seconds"] = time.perf_counter() - t0
    return out
