"""Low-dimensional data sets (3 to 8 dimensions) added on 2026-11-27 to test a default.

None of them was used to choose any of jaxmaf's defaults: they were written to
check whether a start that suits the S curve, the helix and iris holds in
three to eight dimensions elsewhere. Curves, surfaces, a mixture and a heavy
tail, each standardized and split 2000/500/500 (600 points, 400/100/100, in
``--quick`` mode).
"""

from __future__ import annotations

import numpy as np

from jaxmaf.splits import Split, split, standardize


def _torus(n: int, rng: np.random.Generator) -> np.ndarray:
    theta, phi = rng.uniform(0.0, 2 * np.pi, (2, n))
    ring = 2.0 + 0.6 * np.cos(phi)
    x = np.stack([ring * np.cos(theta), ring * np.sin(theta), 0.6 * np.sin(phi)], -1)
    return x + rng.normal(0.0, 0.05, x.shape)


def _swiss_roll_3d(n: int, rng: np.random.Generator) -> np.ndarray:
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    x = np.stack([t * np.cos(t), 21.0 * rng.uniform(size=n), t * np.sin(t)], -1)
    return x + rng.normal(0.0, 0.5, x.shape)


def _moons_lifted(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two moons in the first two coordinates, two noisy functions of them in the others."""
    upper = rng.uniform(size=n) < 0.5
    t = np.pi * rng.uniform(size=n)
    a = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    b = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    a, b = a + rng.normal(0.0, 0.05, n), b + rng.normal(0.0, 0.05, n)
    c = a * b + rng.normal(0.0, 0.1, n)
    d = np.sin(2.0 * a) + 0.5 * b**2 + rng.normal(0.0, 0.1, n)
    return np.stack([a, b, c, d], -1)


def _manifold_5d(n: int, rng: np.random.Generator) -> np.ndarray:
    """A two-dimensional Gaussian latent mapped into five dimensions, with noise 0.1."""
    z1, z2 = rng.normal(size=(2, n))
    x = np.stack([z1, z2, z1 * z2, np.sin(z1) + np.cos(z2), np.tanh(z1 - z2)], -1)
    return x + rng.normal(0.0, 0.1, x.shape)


def _gmm_6d(n: int, rng: np.random.Generator) -> np.ndarray:
    """Eight Gaussians in 6-d with random means and random full covariances."""
    k, d = 8, 6
    means = rng.normal(0.0, 2.0, (k, d))
    factors = rng.normal(0.0, 0.5, (k, d, d))
    which = rng.integers(k, size=n)
    eps = rng.normal(size=(n, d))
    return means[which] + np.einsum("nij,nj->ni", factors[which], eps) + 0.05 * eps


def _student_t_8d(n: int, rng: np.random.Generator) -> np.ndarray:
    """A correlated multivariate Student t with 4 degrees of freedom (heavy tails)."""
    d, df = 8, 4.0
    factor = rng.normal(0.0, 1.0, (d, d)) / np.sqrt(d) + np.eye(d)
    g = rng.normal(size=(n, d)) @ factor.T
    return g / np.sqrt(rng.chisquare(df, (n, 1)) / df)


LOWDIM = {
    "torus": _torus,
    "swiss_roll_3d": _swiss_roll_3d,
    "moons_lifted": _moons_lifted,
    "manifold_5d": _manifold_5d,
    "gmm_6d": _gmm_6d,
    "student_t_8d": _student_t_8d,
}


def load_lowdim(name: str, quick: bool, seed: int = 0) -> Split:
    """One of :data:`LOWDIM`, drawn with ``seed``, standardized and split (float32)."""
    n, sizes = (600, (400, 100, 100)) if quick else (3000, (2000, 500, 500))
    x = LOWDIM[name](n, np.random.default_rng(seed))
    return split(standardize(x).astype(np.float32), sizes, seed)
