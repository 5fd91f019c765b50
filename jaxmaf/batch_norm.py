"""Batch normalisation as a bijection between a flow's layers (Papamakarios et al. 2017)."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

from jaxmaf.draws import full
from jaxmaf.validation import (
    check_event,
    check_float,
    check_int,
    check_param_dtype,
    constructor_signature,
)

Array = jax.Array


@constructor_signature
class BatchNorm(nnx.Module):
    """Batch normalisation as a bijection (the MAF paper's, Papamakarios et al. 2017).

    Density direction (data ``x`` to noise ``u``, the bijector's inverse):
    ``u = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta`` with exact
    log-det ``sum(log_gamma - log(v + eps) / 2)``. In train mode ``m, v`` are
    the batch's mean and variance over every leading axis (gradients flow
    through them); in eval mode (``flow.eval()``) the running averages are used and the map
    is a fixed affine bijection, invertible both ways. The sampling direction
    always uses the running averages (a batch of samples has no data
    statistics to borrow). Evaluating is pure: the running averages
    (``nnx.BatchStat``) change only through ``bijector(update_batch_stats=True)``,
    which :func:`jaxmaf.fit` uses on each minibatch (and
    :meth:`jaxmaf.MAF.update_batch_stats` exposes).

    Args:
      dim: event dimension D.
      momentum: running average ``r <- momentum * r + (1 - momentum) * batch``.
      eps: variance floor.
      param_dtype: parameter dtype (default float32, float64 under x64).

    Examples:
      >>> x = jax.random.normal(jax.random.key(0), (256, 3))
      >>> bn = BatchNorm(3)
      >>> u, log_det = bn.bijector().inverse_and_log_det(x)   # train mode: batch statistics
      >>> bn.eval(); x_again = bn.bijector().forward(u)        # eval mode: running averages
    """

    def __init__(
        self,
        dim: int,
        *,
        momentum: float = 0.99,
        eps: float = 1e-5,
        param_dtype: jnp.dtype | None = None,
    ):
        dim = check_int("dim", dim, minimum=1)
        momentum = check_float("momentum", momentum, low=0.0, high=1.0, low_open=False)
        eps = check_float("eps", eps, low=0.0)
        dtype = check_param_dtype(param_dtype)
        self.dim, self.momentum, self.eps = dim, momentum, eps
        self.use_running_average = False
        self.log_gamma = nnx.Param(full((dim,), 0.0, dtype))
        self.beta = nnx.Param(full((dim,), 0.0, dtype))
        self.mean = nnx.BatchStat(full((dim,), 0.0, dtype))
        self.var = nnx.BatchStat(full((dim,), 1.0, dtype))

    def statistics(self, x: Array, update: bool = False) -> tuple[Array, Array]:
        """Mean and variance to normalise ``x`` ``(..., D)`` with.

        Args:
          x: the batch.
          update: in train mode, also move the running averages towards the
            batch's statistics (what training does; off by default, so that
            evaluating changes nothing).

        Returns:
          ``(mean, variance)``, each ``(D,)``: the batch's in train mode, the
          running averages in eval mode.
        """
        if self.use_running_average:
            return self.mean[...], self.var[...]
        flat = x.reshape(-1, self.dim)
        m, v = jnp.mean(flat, axis=0), jnp.var(flat, axis=0)
        if update:
            mom = self.momentum
            self.mean[...] = mom * self.mean[...] + (1 - mom) * jax.lax.stop_gradient(m)
            self.var[...] = mom * self.var[...] + (1 - mom) * jax.lax.stop_gradient(v)
        return m, v

    def bijector(
        self,
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        update_batch_stats: bool = False,
    ) -> distrax.Bijector:
        """The normalisation as a distrax bijector (base -> data), a flow layer's method.

        Args:
          context: ignored (the layer has no conditioner).
          method: ignored (both directions are one pass).
          tol: ignored.
          update_batch_stats: the density direction (``inverse``) in train mode
            also moves the running averages.

        Returns:
          the bijector; ``event_ndims_in = 1``.
        """
        return _BatchNormBijector(self, update_batch_stats)


class _BatchNormBijector(distrax.Bijector):
    def __init__(self, module: BatchNorm, update_stats: bool = False):
        super().__init__(event_ndims_in=1)
        self._module, self._update_stats = module, update_stats

    def _affine(self, m, v):
        bn = self._module
        log_scale = bn.log_gamma[...] - 0.5 * jnp.log(v + bn.eps)  # density direction
        return log_scale, bn.beta[...], m

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        check_event(y, self._module.dim, "BatchNorm input")
        log_scale, beta, m = self._affine(*self._module.statistics(y, self._update_stats))
        u = (y - m) * jnp.exp(log_scale) + beta
        return u, jnp.broadcast_to(jnp.sum(log_scale), u.shape[:-1])

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        check_event(x, self._module.dim, "BatchNorm input")
        bn = self._module
        log_scale, beta, m = self._affine(bn.mean[...], bn.var[...])
        y = (x - beta) * jnp.exp(-log_scale) + m
        return y, jnp.broadcast_to(-jnp.sum(log_scale), y.shape[:-1])
