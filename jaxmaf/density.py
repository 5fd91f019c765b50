"""A flow's density: ``log_prob`` and ``update_batch_stats``, a mixin of :class:`jaxmaf.Flow`.

The density direction runs the flow's bijector from data to noise
(``inverse_and_log_det``) and adds the base's log-density. It relies on the
flow's ``bijector``, ``base_log_prob``, ``dim``, ``context_dim``, and on its
eager-call, chunking and method checks (:class:`jaxmaf.Flow`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmaf.validation import check_context, check_event

Array = jax.Array


class Density:
    """``log_prob`` and ``update_batch_stats`` (mixed into :class:`jaxmaf.Flow`)."""

    def _density_inputs(self, x: Array, context: Array | None) -> tuple[Array, Array | None]:
        """Checks ``x`` and ``context`` against the flow and makes them arrays."""
        check_event(x, self.dim, "x")
        check_context(context, self.context_dim)
        return jnp.asarray(x), None if context is None else jnp.asarray(context)

    def log_prob(
        self,
        x: Array,
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        chunk_size: int | None = None,
    ) -> Array:
        """Log-density of ``x``.

        Args:
          x: points of shape ``(..., dim)``.
          context: ``(..., context_dim)`` for a conditional flow (batch
            dimensions broadcast with those of ``x``), else None.
          method: for an IAF (sequential density), ``"exact"`` or
            ``"jacobi"``; a MAF's density is one pass, and refuses any other
            than ``"exact"``.
          tol: Jacobi stopping threshold (IAF only, as ``method``).
          chunk_size: evaluate the batch this many points at a time, which
            bounds memory (see :meth:`chunk_rows`); None: all at once.

        Returns:
          log-densities of shape ``broadcast(...)``. Points so far out that the
          computation overflows (``|x|`` around ``1e19`` in float32, or
          infinite) get ``-inf`` (density 0 in floating point); NaN comes out
          only where NaN went in (in ``x``, the context or the parameters).

        Raises:
          ValueError: wrong event dimension of ``x``; context missing,
            unexpected, or of the wrong width; a bad ``chunk_size``; an
            unknown ``method``, or ``method``/``tol`` on a MAF.

        Examples:
          >>> flow = jaxmaf.MAF(2, 4, (32, 32), rngs=nnx.Rngs(0))
          >>> flow.log_prob(jnp.zeros((10, 2))).shape
          (10,)
        """
        self._check_method("log_prob", method, tol)
        x, context = self._density_inputs(x, context)
        return self._call("_log_prob", (method, tol, chunk_size, False), x, context)

    def update_batch_stats(self, x: Array, context: Array | None = None) -> Array:
        """Log-density of a training batch, moving batch norm's running averages towards it.

        The one call that changes a flow's statistics (``log_prob`` and
        ``sample`` never do): in train mode each batch norm normalises ``x``
        with the batch's statistics and moves its running averages by
        ``1 - momentum`` towards them. :func:`jaxmaf.fit` calls it on every
        minibatch. In eval mode, or without batch norm, it is ``log_prob``.

        Args:
          x: a batch ``(..., dim)``.
          context: ``(..., context_dim)`` for a conditional flow, else None.

        Returns:
          log-densities ``(...)`` under the batch's statistics.

        Raises:
          ValueError: as :meth:`log_prob`.

        Examples:
          >>> flow = jaxmaf.MAF(2, 2, (8,), batch_norm=True, rngs=nnx.Rngs(0))
          >>> x = 3.0 + jax.random.normal(jax.random.key(0), (64, 2))
          >>> _ = flow.log_prob(x); float(flow.batch_norms[0].mean[0])  # unchanged
          0.0
          >>> _ = flow.update_batch_stats(x); float(flow.batch_norms[0].mean[0]) > 0
          True
        """
        x, context = self._density_inputs(x, context)
        writes = self._batch_statistics()
        return self._call("_log_prob", ("exact", 0.0, None, True), x, context, writes_state=writes)

    def _log_prob(
        self,
        x: Array,
        context: Array | None,
        method: str,
        tol: float,
        chunk_size: int | None,
        update_batch_stats: bool,
    ) -> Array:
        def log_prob(x, context):
            bijector = self.bijector(
                context, method=method, tol=tol, update_batch_stats=update_batch_stats
            )
            u, log_det = bijector.inverse_and_log_det(x)
            lp = self.base_log_prob(u) + log_det
            # Far out (|x| ~ 1e19 and beyond in float32) the conditioner overflows and
            # inf - inf or 0 * inf gives NaN where the density has underflowed to 0.
            # NaN stays NaN where it came in: from x, the context or the parameters.
            nan_in = jnp.isnan(x).any(-1)
            if context is not None:
                nan_in = nan_in | jnp.isnan(context).any(-1)
            for leaf in jax.tree.leaves(nnx.state(self, nnx.Param)):
                nan_in = nan_in | jnp.isnan(leaf).any()
            return jnp.where(jnp.isnan(lp) & ~nan_in, -jnp.inf, lp)

        return self._chunked(log_prob, x, context, chunk_size)
