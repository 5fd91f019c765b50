"""Data sets for examples and benchmarks: generated or bundled with scikit-learn (no download)."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from jaxmaf.splits import Split, split, standardize
from jaxmaf.toy_data import TOY_2D, TOY_3D, toy_2d, toy_3d

__all__ = [
    "TABULAR",
    "TOY_2D",
    "TOY_3D",
    "Split",
    "circles",
    "dequantize",
    "digits",
    "digits_log_det",
    "digits_to_pixels",
    "moons",
    "split",
    "standardize",
    "tabular",
    "toy_2d",
    "toy_3d",
]


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
    return split(standardize(x).astype(dtype), (n_train, n_val, n - n_train - n_val), seed)
