"""Data sets for examples and benchmarks: generated or bundled with scikit-learn (no download)."""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import DTypeLike


def _sklearn_datasets():
    """``sklearn.datasets``, or an ImportError that says how to install it."""
    try:
        from sklearn import datasets
    except ImportError as e:
        raise ImportError(
            "jaxmaf.datasets needs scikit-learn, which the core install leaves out: "
            "pip install 'jaxmaf[examples]' (or pip install scikit-learn)."
        ) from e
    return datasets


@dataclasses.dataclass
class Split:
    """A train/validation/test split (arrays of shape ``(n, D)``) and optional contexts."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    train_context: np.ndarray | None = None
    validation_context: np.ndarray | None = None
    test_context: np.ndarray | None = None


def split(
    x: np.ndarray, sizes: tuple[int, int, int], seed: int = 0, context: np.ndarray | None = None
) -> Split:
    """Shuffles ``x`` (and ``context``) and cuts them into train/validation/test.

    Args:
      x: data ``(N, D)``.
      sizes: ``(n_train, n_val, n_test)`` with sum <= N.
      seed: shuffling seed.
      context: optional ``(N, C)`` rows aligned with ``x``.

    Returns:
      a :class:`Split`.

    Raises:
      ValueError: the sizes add up to more than N.

    Examples:
      >>> s = split(np.zeros((10, 2)), (6, 2, 2))
      >>> s.train.shape, s.test.shape
      ((6, 2), (2, 2))
    """
    if sum(sizes) > len(x):
        raise ValueError(f"Expected split sizes summing to at most {len(x)}, got {sizes}.")
    perm = np.random.default_rng(seed).permutation(len(x))
    a, b, c = np.cumsum(sizes)
    idx = perm[:a], perm[a:b], perm[b:c]
    parts = [x[i] for i in idx]
    ctx = [None] * 3 if context is None else [context[i] for i in idx]
    return Split(*parts, *ctx)


def circles(
    n_samples: int = 1600,
    sizes: tuple[int, int, int] = (1200, 200, 200),
    seed: int = 0,
    dtype: DTypeLike = np.float32,
) -> Split:
    """The two-circles data: ``make_circles(noise=0.05, factor=0.99, random_state=1)``.

    Standardized (zero mean, unit variance per axis) and split.

    Args:
      n_samples: number of points generated.
      sizes: ``(n_train, n_val, n_test)``.
      seed: seed of the split (the points themselves use ``random_state=1``).
      dtype: dtype of the arrays.

    Returns:
      a :class:`Split` of ``(n, 2)`` arrays.

    Examples:
      >>> circles().train.shape
      (1200, 2)
    """
    make_circles = _sklearn_datasets().make_circles
    x, _ = make_circles(noise=0.05, factor=0.99, random_state=1, n_samples=n_samples)
    x = (x - x.mean(0)) / x.std(0)
    return split(x.astype(dtype), sizes, seed)


def moons(
    n_samples: int = 2000,
    sizes: tuple[int, int, int] = (1400, 300, 300),
    noise: float = 0.08,
    seed: int = 0,
    dtype: DTypeLike = np.float32,
) -> Split:
    """Two moons with the class label as a one-dimensional context (0 or 1).

    Args:
      n_samples: number of points.
      sizes: ``(n_train, n_val, n_test)``.
      noise: ``make_moons`` noise.
      seed: seed of the points and the split.
      dtype: dtype of the arrays.

    Returns:
      a :class:`Split` of ``(n, 2)`` points with ``(n, 1)`` contexts.
    """
    make_moons = _sklearn_datasets().make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return split(x.astype(dtype), sizes, seed, context=y[:, None].astype(dtype))


def digits(
    sizes: tuple[int, int, int] = (1297, 250, 250),
    alpha: float = 1e-3,
    seed: int = 0,
    dtype: DTypeLike = np.float32,
) -> Split:
    """scikit-learn's 8x8 digits (64 dimensions), dequantized and logit-transformed.

    Pixels (integers 0..16) get uniform noise ``(v + U(0,1)) / 17`` in (0, 1),
    then ``y = logit(alpha + (1 - 2 alpha) p)`` as the MAF paper does for
    images: an unbounded space where near-constant pixels do not produce
    degenerate densities. Log-densities in ``y`` relate to pixel space by
    :func:`digits_log_det` .

    Args:
      sizes: ``(n_train, n_val, n_test)`` (1797 images in all).
      alpha: logit boundary margin.
      seed: seed of the noise and the split.
      dtype: dtype of the arrays.

    Returns:
      a :class:`Split` of ``(n, 64)`` arrays.
    """
    load_digits = _sklearn_datasets().load_digits

    v = load_digits().data
    rng = np.random.default_rng(seed)
    p = (v + rng.uniform(size=v.shape)) / 17.0
    q = alpha + (1 - 2 * alpha) * p
    return split(np.log(q / (1 - q)).astype(dtype), sizes, seed)


def digits_to_pixels(y: np.ndarray, alpha: float = 1e-3) -> np.ndarray:
    """Inverse of the digits transform: logit space -> intensities in [0, 16]."""
    q = 1 / (1 + np.exp(-np.asarray(y, np.float64)))
    return np.clip((q - alpha) / (1 - 2 * alpha) * 17.0 - 0.5, 0, 16)


def digits_log_det(y: np.ndarray, alpha: float = 1e-3) -> np.ndarray:
    """``log|dy/dp|`` of the logit transform, summed over pixels ``(n, 64) -> (n,)``.

    ``log p_pixels(p) = log p_y(y) + digits_log_det(y)`` for ``p`` in (0, 1)^64
    (the dequantized, /17-scaled pixels).
    """
    y = np.asarray(y, np.float64)
    q = 1 / (1 + np.exp(-y))
    return np.sum(np.log(1 - 2 * alpha) - np.log(q) - np.log1p(-q), axis=-1)


def _standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per column (constant columns are only centred)."""
    std = x.std(0)
    return (x - x.mean(0)) / np.where(std > 0, std, 1.0)


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
    return split(_standardize(x).astype(dtype), sizes, seed)


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


def dequantize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform dequantisation of every column that holds repeated values.

    A column with fewer distinct values than rows was recorded at a finite
    resolution (or is discrete): a continuous density would put infinite
    mass on its repeated values. Each such column gets uniform noise of its
    resolution (the smallest gap between distinct values), the usual
    treatment of tabular data for density estimation.

    Args:
      x: data ``(N, D)``.
      rng: numpy random generator.

    Returns:
      the dequantized copy ``(N, D)`` (float64).

    Examples:
      >>> x = dequantize(np.array([[0.0], [1.0], [1.0]]), np.random.default_rng(0))
      >>> bool(np.all(np.abs(x - [[0.0], [1.0], [1.0]]) <= 0.5))
      True
    """
    x = np.array(x, np.float64)
    for j in range(x.shape[1]):
        values = np.unique(x[:, j])
        if len(values) < len(x) and len(values) > 1:
            gap = np.min(np.diff(values))
            x[:, j] += rng.uniform(-0.5, 0.5, len(x)) * gap
    return x


TABULAR = ("diabetes", "breast_cancer", "wine", "iris")


def tabular(
    name: str,
    fractions: tuple[float, float] = (0.7, 0.15),
    seed: int = 0,
    dtype: DTypeLike = np.float32,
) -> Split:
    """A tabular data set bundled with scikit-learn (no download): dequantized, standardized.

    ``"diabetes"`` (442 x 10), ``"breast_cancer"`` (569 x 30), ``"wine"``
    (178 x 13), ``"iris"`` (150 x 4): the feature columns only (no target),
    every column with repeated values dequantized (:func:`dequantize`), then
    standardized and split.

    Args:
      name: one of :data:`TABULAR`.
      fractions: train and validation fractions (the rest is the test set).
      seed: seed of the noise and of the split.
      dtype: dtype of the arrays.

    Returns:
      a :class:`Split`.

    Raises:
      ValueError: an unknown name.

    Examples:
      >>> tabular("diabetes").train.shape
      (309, 10)
    """
    sk = _sklearn_datasets()

    loaders = {
        "diabetes": sk.load_diabetes,
        "breast_cancer": sk.load_breast_cancer,
        "wine": sk.load_wine,
        "iris": sk.load_iris,
    }
    if name not in loaders:
        raise ValueError(f"Unknown tabular data set {name!r}: expected one of {TABULAR}.")
    x = dequantize(loaders[name]().data, np.random.default_rng(seed))
    n = len(x)
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    return split(_standardize(x).astype(dtype), (n_train, n_val, n - n_train - n_val), seed)
