"""Units and supports: standardisation fitted from data, and a box-shaped support.

:class:`Standardization` holds a shift and a scale per data column (and per
context column) estimated from training data; inside a flow it is the
data-side affine bijection ``x = shift + scale * y``, so the flow's density,
samples and distrax view speak the data's own units with the Jacobian
accounted for, and contexts are z-scored before they reach the conditioners.
:func:`box_bijector` maps R^D onto a box ``(low, high)`` with a logistic
sigmoid, so a flow can live on a prior's support. :class:`UnitsAndSupport`
gives the flows their methods for both (``standardize_from``,
``sample_within``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf.draws import full
from jaxmaf.validation import check_context, check_event, check_int

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
        self.shift = Statistic(full((dim,), 0.0, dtype))
        self.scale = Statistic(full((dim,), 1.0, dtype))
        self.context_shift = Statistic(full((context_dim,), 0.0, dtype))
        self.context_scale = Statistic(full((context_dim,), 1.0, dtype))

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


class UnitsAndSupport:
    """A flow's methods for data units and bounded supports (a mixin of :class:`jaxmaf.MAF`).

    They rely on the flow's ``dim``, ``context_dim``, ``param_dtype``,
    ``support``, ``standardization``, ``config`` and ``sample``.
    """

    def standardize_from(self, data: Any, context: Any = None) -> None:
        """Sets the flow's standardisation from data (adding it if the flow has none).

        The flow then models ``y = (x - mean) / std`` column by column (on a
        bounded ``support``, of the points mapped to R^D first) while
        ``log_prob``, ``sample`` and ``distribution()`` speak the units of
        ``data``, the Jacobian ``-sum(log std)`` included; contexts are
        z-scored likewise before the MADEs. A constant column keeps scale 1.
        The statistics are saved and loaded with the flow and not trained.
        :func:`jaxmaf.fit` calls this with ``standardize=True``.

        Args:
          data: training points ``(N, dim)`` (inside the support, if any).
          context: their contexts ``(N, context_dim)`` for a conditional flow.

        Raises:
          ValueError: wrong shapes, non-finite values, points outside the
            support, a context for an unconditional flow.

        Examples:
          >>> flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
          >>> flow.standardize_from(np.array([[0.0, 10.0], [2.0, 30.0]]))
          >>> flow.config.standardize, flow.standardization.scale[...].tolist()
          (True, [1.0, 10.0])
        """
        check_event(data, self.dim, "data")
        if context is not None and self.context_dim == 0:
            raise ValueError("context given to standardize_from, but the flow is unconditional.")
        y = to_unconstrained(np.asarray(data), self.support)
        if not np.all(np.isfinite(y)):
            raise ValueError(
                f"Expected data inside the support {self.support} (and finite) to "
                "standardise from; some points are outside it."
            )
        standardization = self.standardization
        if standardization is None:
            standardization = Standardization(self.dim, self.context_dim, self.param_dtype)
        standardization.set_from(y, context)
        self.standardization = nnx.data(standardization)
        self.config = dataclasses.replace(self.config, standardize=True)

    def sample_within(
        self,
        key: Array,
        num_samples: int,
        low: Any,
        high: Any,
        context: Array | None = None,
        *,
        max_draws: int | None = None,
    ) -> tuple[Array, float]:
        """Samples restricted to the box ``[low, high]`` by rejection, topped up to ``num_samples``.

        sbi's way of keeping a posterior on its prior's support: draws of
        ``num_samples`` at a time (one compiled program, reused every
        round) are kept where every coordinate lies inside the box, until
        ``num_samples`` are kept. The samples follow the flow's density
        truncated to the box. To have a flow that never leaves the box,
        build it with ``support=(low, high)`` instead.

        Args:
          key: a JAX PRNG key.
          num_samples: samples wanted (>= 1).
          low: lower bounds, a number or ``(dim,)``.
          high: upper bounds, a number or ``(dim,)``, above ``low``.
          context: one context ``(context_dim,)`` for a conditional flow.
          max_draws: give up after drawing this many (default ``1000 *
            num_samples``, an acceptance rate of 0.1%).

        Returns:
          ``(samples, acceptance_rate)``: ``(num_samples, dim)`` and the
          fraction of draws that fell inside the box.

        Raises:
          ValueError: bad bounds, ``num_samples``, ``max_draws`` or context
            (a batch of contexts: call once per observation); fewer than
            ``num_samples`` accepted within ``max_draws`` draws (the message
            gives the acceptance rate).

        Examples:
          >>> flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
          >>> x, rate = flow.sample_within(jax.random.key(0), 100, 0.0, 5.0)
          >>> x.shape, bool(x.min() >= 0.0), 0.1 < rate < 0.5
          ((100, 2), True, True)
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        max_draws = check_int(
            "max_draws", 1000 * num_samples if max_draws is None else max_draws, minimum=1
        )
        lo, hi = (np.asarray(b) for b in check_support((low, high), self.dim))
        check_context(context, self.context_dim)
        if context is not None and np.ndim(context) != 1:
            raise ValueError(
                f"sample_within takes one context of shape ({self.context_dim},), got shape "
                f"{np.shape(context)}: call it once per observation."
            )
        kept, accepted, drawn, round_ = [], 0, 0, 0
        while accepted < num_samples:
            if drawn >= max_draws:
                raise ValueError(
                    f"Only {accepted} of {num_samples} samples fell inside [low, high] in "
                    f"{drawn} draws (acceptance rate {accepted / drawn:.2e}): raise max_draws, "
                    "or fit the flow with support=(low, high)."
                )
            x = np.asarray(self.sample(jax.random.fold_in(key, round_), (num_samples,), context))
            inside = x[np.all((x >= lo) & (x <= hi), axis=-1)]
            kept.append(inside)
            accepted, drawn, round_ = accepted + len(inside), drawn + num_samples, round_ + 1
        return jnp.asarray(np.concatenate(kept)[:num_samples]), accepted / drawn
