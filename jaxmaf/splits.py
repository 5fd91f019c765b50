"""Train/validation/test splits of one array, and column standardisation."""

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


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per column (constant columns are only centred).

    Args:
      x: data ``(N, D)``.

    Returns:
      the standardized copy ``(N, D)``.

    Examples:
      >>> standardize(np.array([[1.0, 5.0], [3.0, 5.0]])).tolist()
      [[-1.0, 0.0], [1.0, 0.0]]
    """
    std = x.std(0)
    return (x - x.mean(0)) / np.where(std > 0, std, 1.0)
