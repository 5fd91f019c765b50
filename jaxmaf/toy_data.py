"""Toy densities generated in code: the 2-d shapes of the flow literature and 3-d curves."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from jaxmaf.splits import Split, split, standardize


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    arms = 5
    radial = rng.normal(1.0, 0.3, n)
    angle = rng.integers(arms, size=n) * 2 * np.pi / arms + 0.25 * np.exp(radial)
    tangential = rng.normal(0.0, 0.1, n)
    cos, sin = np.cos(angle), np.sin(angle)
    return np.stack([radial * cos - tangential * sin, radial * sin + tangential * cos], -1)


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.sqrt(rng.uniform(size=n)) * 3 * np.pi
    arm = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    x = np.stack([-np.cos(t) * t, np.sin(t) * t], -1) * arm[:, None]
    return x + rng.normal(0.0, 0.5, x.shape)


def _rings(n: int, rng: np.random.Generator) -> np.ndarray:
    radius = rng.integers(1, 5, size=n).astype(float)
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.stack([np.cos(angle), np.sin(angle)], -1) * radius[:, None]
    return x + rng.normal(0.0, 0.08, x.shape)


def _swiss_roll(n: int, rng: np.random.Generator) -> np.ndarray:
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], -1)
    return x + rng.normal(0.0, 0.5, x.shape)


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, np.pi, n)
    upper = rng.uniform(size=n) < 0.5
    x = np.where(
        upper[:, None],
        np.stack([np.cos(angle), np.sin(angle)], -1),
        np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], -1),
    )
    return x + rng.normal(0.0, 0.05, x.shape)


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2 - 2 + (np.floor(x1) % 2)
    return np.stack([x1, x2], -1)


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    angle = rng.integers(8, size=n) * np.pi / 4
    centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], -1)
    return centres + rng.normal(0.0, 0.2, (n, 2))


def _banana(n: int, rng: np.random.Generator) -> np.ndarray:
    x1 = rng.normal(0.0, 1.0, n)
    return np.stack([x1, 0.5 * x1**2 + rng.normal(0.0, 0.25, n)], -1)


def _grid(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.integers(5, size=(n, 2)).astype(float)
    return centres + rng.normal(0.0, 0.1, (n, 2))


def _s_curve(n: int, rng: np.random.Generator) -> np.ndarray:
    t = 3 * np.pi * (rng.uniform(size=n) - 0.5)
    x = np.stack([np.sin(t), 2.0 * rng.uniform(size=n), np.sign(t) * (np.cos(t) - 1)], -1)
    return x + rng.normal(0.0, 0.1, x.shape)


def _helix(n: int, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, 4 * np.pi, n)
    x = np.stack([np.cos(t), np.sin(t), t / (2 * np.pi)], -1)
    return x + rng.normal(0.0, 0.1, x.shape)


TOY_2D = {
    "pinwheel": _pinwheel,
    "two_spirals": _two_spirals,
    "rings": _rings,
    "swiss_roll": _swiss_roll,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "eight_gaussians": _eight_gaussians,
    "banana": _banana,
    "grid": _grid,
}
TOY_3D = {"s_curve": _s_curve, "helix": _helix}


def _toy(table: dict, name: str, n_samples: int, sizes, seed: int, dtype: DTypeLike) -> Split:
    """Draws ``table[name]``, standardizes and splits it (``toy_2d`` and ``toy_3d``)."""
    if name not in table:
        raise ValueError(f"Unknown toy data set {name!r}: expected one of {sorted(table)}.")
    x = table[name](n_samples, np.random.default_rng(seed))
    return split(standardize(x).astype(dtype), sizes, seed)


def toy_2d(
    name: str,
    n_samples: int = 3000,
    sizes: tuple[int, int, int] = (2000, 500, 500),
    seed: int = 0,
    dtype: DTypeLike = np.float32,
) -> Split:
    """A two-dimensional toy density (generated here, no download), standardized and split.

    The shapes common in the flow literature: ``"pinwheel"`` (five curved
    arms), ``"two_spirals"``, ``"rings"`` (four concentric circles),
    ``"swiss_roll"`` (its two-dimensional spiral), ``"moons"``,
    ``"checkerboard"``, ``"eight_gaussians"``, ``"banana"`` (a Gaussian bent
    into a parabola) and ``"grid"`` (25 tight Gaussians on a 5 x 5 grid).

    Args:
      name: one of :data:`TOY_2D`.
      n_samples: number of points generated.
      sizes: ``(n_train, n_val, n_test)``.
      seed: seed of the points and of the split.
      dtype: dtype of the arrays.

    Returns:
      a :class:`Split` of ``(n, 2)`` arrays.

    Raises:
      ValueError: an unknown name.

    Examples:
      >>> toy_2d("pinwheel").train.shape
      (2000, 2)
    """
    return _toy(TOY_2D, name, n_samples, sizes, seed, dtype)


def toy_3d(
    name: str,
    n_samples: int = 3000,
    sizes: tuple[int, int, int] = (2000, 500, 500),
    seed: int = 0,
    dtype: DTypeLike = np.float32,
) -> Split:
    """A three-dimensional toy density: a noisy curve or surface, standardized and split.

    ``"s_curve"`` (scikit-learn's S-shaped surface, drawn here) and
    ``"helix"`` (two turns of a helix), each with Gaussian noise of 0.1 on
    every coordinate.

    Args:
      name: one of :data:`TOY_3D`.
      n_samples: number of points generated.
      sizes: ``(n_train, n_val, n_test)``.
      seed: seed of the points and of the split.
      dtype: dtype of the arrays.

    Returns:
      a :class:`Split` of ``(n, 3)`` arrays.

    Raises:
      ValueError: an unknown name.

    Examples:
      >>> toy_3d("helix").test.shape
      (500, 3)
    """
    return _toy(TOY_3D, name, n_samples, sizes, seed, dtype)
