"""Units and supports: standardisation fitted from data, and a box-shaped support.

:class:`Standardization` holds a shift and a scale per data column (and per
context column) estimated from training data; inside a flow it is the
data-side affine bijection ``x = shift + scale * y``, so the flow's density,
samples and distrax view speak the data's own units with the Jacobian
accounted for, and contexts are z-scored before they reach the conditioners.
:func:`box_bijector` maps R^D onto a box ``(low, high)`` with a logistic
sigmoid, so a flow can live on a prior's support.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf.validation import check_event

Array = jax.Array


class Statistic(nnx.Variable):
    """A value estimated from data rather than trained (optimizers leave it alone)."""


def _location_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations; a constant column gets scale 1 (no division by 0).

    A column counts as constant when its standard deviation is below ``1e-6`` of its
    magnitude (``max(1, |mean|)``): float32 rounding of a constant column is about 6e-8
    relative, so such a spread carries no information to rescale by.
    """
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    constant = ~(std > 1e-6 * np.maximum(1.0, np.abs(mean)))
    return mean, np.where(constant, 1.0, std)


class Standardization(nnx.Module):
    """Z-scoring of data and context columns, stored in the flow (saved and loaded with it).

    Data side: the affine bijection ``x = shift + scale * y`` (``y`` the
    flow's standardised units), log-det ``sum(log scale)``. Context side:
    ``(context - context_shift) / context_scale`` before the conditioners.
    Statistics start as the identity (0 and 1) and are set from data by
    :meth:`set_from`; they are :class:`Statistic` variables, not parameters,
    so training does not move them.

    Args:
      dim: data dimension D.
      context_dim: context width (0: none).
      dtype: the statistics' dtype (the flow's parameter dtype).

    Examples:
      >>> s = Standardization(2, 0, jnp.float32)
      >>> s.set_from(np.array([[0.0, 10.0], [2.0, 30.0]]))
      >>> s.shift[...].tolist(), s.scale[...].tolist()
      ([1.0, 20.0], [1.0, 10.0])
    """

    def __init__(self, dim: int, context_dim: int, dtype: Any):
        self.shift = Statistic(jnp.zeros((dim,), dtype))
        self.scale = Statistic(jnp.ones((dim,), dtype))
        self.context_shift = Statistic(jnp.zeros((context_dim,), dtype))
        self.context_scale = Statistic(jnp.ones((context_dim,), dtype))

    def set_from(self, data: Any, context: Any = None) -> None:
        """Sets the statistics to the column means and standard deviations of ``data``.

        A constant column (standard deviation below ``1e-6 * max(1, |mean|)``)
        keeps scale 1 and is only shifted.

        Args:
          data: ``(N, dim)`` points in the units the bijection's data side speaks.
          context: ``(N, context_dim)`` contexts, or None (context statistics
            stay as they are).

        Raises:
          ValueError: wrong shapes, or non-finite values.
        """
        width, context_width = self.shift[...].shape[0], self.context_shift[...].shape[0]
        if data is not None:
            self.shift[...], self.scale[...] = self._statistics("data", data, width)
        if context is not None:
            stats = self._statistics("context", context, context_width)
            self.context_shift[...], self.context_scale[...] = stats

    def _statistics(self, name: str, values: Any, width: int) -> tuple[Array, Array]:
        values = np.asarray(values, np.float64)
        if values.ndim != 2 or values.shape[1] != width or values.shape[0] < 1:
            raise ValueError(
                f"Expected {name} of shape (N, {width}) with N >= 1 to standardise from, "
                f"got shape {values.shape}."
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(f"Expected finite {name} to standardise from; it has NaN or inf.")
        mean, std = _location_scale(values)
        dtype = self.shift[...].dtype
        return jnp.asarray(mean, dtype), jnp.asarray(std, dtype)

    def bijector(self) -> distrax.Bijector:
        """The data-side bijection ``y -> shift + scale * y`` on events of shape ``(dim,)``."""
        return distrax.Block(distrax.ScalarAffine(self.shift[...], self.scale[...]), 1)

    def context(self, context: Array | None) -> Array | None:
        """Z-scored ``context`` (None stays None)."""
        if context is None:
            return None
        return (context - self.context_shift[...]) / self.context_scale[...]


def check_support(support: Any, dim: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Validates a box support ``(low, high)``; returns it per dimension, or None.

    Args:
      support: None, or ``(low, high)`` with scalars or sequences of length
        ``dim``, finite, ``low < high`` everywhere.
      dim: data dimension.

    Returns:
      ``(low, high)`` as two tuples of ``dim`` floats, or None.

    Raises:
      ValueError: anything else, naming what came.

    Examples:
      >>> check_support((0.0, [1.0, 2.0]), 2)
      ((0.0, 0.0), (1.0, 2.0))
    """
    if support is None:
        return None
    if isinstance(support, str) or not hasattr(support, "__len__") or len(support) != 2:
        raise ValueError(f"Expected support=(low, high), got {support!r}.")
    bounds = []
    for name, value in zip(("low", "high"), support, strict=True):
        try:
            a = np.broadcast_to(np.asarray(value, np.float64), (dim,))
        except (ValueError, TypeError):
            raise ValueError(
                f"Expected support {name} to be a number or {dim} numbers (one per "
                f"dimension), got {value!r}."
            ) from None
        if not np.all(np.isfinite(a)):
            raise ValueError(f"Expected a finite support {name}, got {value!r}.")
        bounds.append(tuple(float(v) for v in a))
    low, high = bounds
    if not all(lo < hi for lo, hi in zip(low, high, strict=True)):
        raise ValueError(f"Expected support low < high in every dimension, got {low} and {high}.")
    return low, high


def box_bijector(low: Sequence[float], high: Sequence[float], dtype: Any) -> distrax.Bijector:
    """R^D onto the box ``(low, high)``: ``x = low + (high - low) * sigmoid(y)``, exact log-det.

    Args:
      low: lower bounds, one per dimension.
      high: upper bounds.
      dtype: the arrays' dtype.

    Returns:
      a distrax bijector on events of shape ``(dim,)``. Points outside the
      box have no preimage: the inverse gives NaN there (a flow's
      ``log_prob`` turns it into ``-inf``).

    Examples:
      >>> b = box_bijector((0.0,), (2.0,), jnp.float32)
      >>> b.forward(jnp.zeros(1)).tolist()
      [1.0]
    """
    low, high = jnp.asarray(low, dtype), jnp.asarray(high, dtype)
    return distrax.Block(
        distrax.Chain([distrax.ScalarAffine(low, high - low), distrax.Sigmoid()]), 1
    )


def to_unconstrained(x: Array, support: tuple | None) -> Array:
    """Points of the box mapped back to R^D (the box bijector's inverse); identity without one."""
    if support is None:
        return x
    check_event(x, len(support[0]), "x")
    low, high = (np.asarray(b) for b in support)
    p = (np.asarray(x, np.float64) - low) / (high - low)
    with np.errstate(divide="ignore", invalid="ignore"):  # outside the box: NaN, checked by callers
        return np.log(p) - np.log1p(-p)
