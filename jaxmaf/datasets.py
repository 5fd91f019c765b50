"""Data sets for examples and benchmarks: generated or bundled with scikit-learn (no download)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
    """A train/validation/test split (arrays of shape ``(n, D)``) and optional contexts."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    train_context: np.ndarray | None = None
    validation_context: np.ndarray | None = None
    test_context: np.ndarray | None = None


def split(x: np.ndarray, sizes: tuple[int, int, int], seed: int = 0,
          context: np.ndarray | None = None) -> Split:
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

    Example:
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


def circles(n_samples: int = 1600, sizes: tuple[int, int, int] = (1200, 200, 200),
            seed: int = 0, dtype=np.float32) -> Split:
    """The seed experiment's data: ``make_circles(noise=0.05, factor=0.99, random_state=1)``.

    Standardized (zero mean, unit variance per axis) and split.

    Args:
      n_samples: number of points generated.
      sizes: ``(n_train, n_val, n_test)``.
      seed: seed of the split (the points themselves use ``random_state=1``).
      dtype: dtype of the arrays.

    Returns:
      a :class:`Split` of ``(n, 2)`` arrays.

    Example:
      >>> circles().train.shape
      (1200, 2)
    """
    from sklearn.datasets import make_circles

    x, _ = make_circles(noise=0.05, factor=0.99, random_state=1, n_samples=n_samples)
    x = (x - x.mean(0)) / x.std(0)
    return split(x.astype(dtype), sizes, seed)


def moons(n_samples: int = 2000, sizes: tuple[int, int, int] = (1400, 300, 300),
          noise: float = 0.08, seed: int = 0, dtype=np.float32) -> Split:
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
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return split(x.astype(dtype), sizes, seed, context=y[:, None].astype(dtype))


def digits(sizes: tuple[int, int, int] = (1297, 250, 250), alpha: float = 1e-3,
           seed: int = 0, dtype=np.float32) -> Split:
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
    from sklearn.datasets import load_digits

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
