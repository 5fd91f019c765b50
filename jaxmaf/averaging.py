"""Parameter averaging: an Optax wrapper that keeps a moving average of the parameters."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

DEFAULT_EMA_EPOCHS = 8.0


class AveragedState(NamedTuple):
    """State of :func:`with_parameter_average`: the inner optimizer's, the average, the step."""

    inner: Any
    average: Any
    count: Array


@functools.lru_cache(maxsize=64)
def with_parameter_average(
    optimizer: optax.GradientTransformation, decay: float
) -> optax.GradientTransformation:
    """``optimizer`` that also tracks an exponential moving average of the parameters.

    After each update the average moves towards the new parameters,
    ``avg <- d avg + (1 - d) params`` with ``d = min(decay, (1 + t) / (10 + t))``
    at step ``t`` (the warm-up keeps the first steps from anchoring the average
    at the initial parameters). The updates themselves are the inner
    optimizer's, unchanged; the average lives in the state
    (``state.average``), so it is compiled into the training step, saved in
    checkpoints and vmapped over ensembles with everything else. One object
    per ``(optimizer, decay)``, so a second :func:`fit` reuses its program.

    Args:
      optimizer: any Optax transformation.
      decay: the average's decay per step, in ``[0, 1)``.

    Returns:
      the wrapped transformation (its state is an :class:`AveragedState`).

    Examples:
      >>> opt = with_parameter_average(optax.sgd(0.1), 0.5)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.ones(2)}, state, params)
      >>> state.average["w"].tolist()  # step 1: d = min(0.5, 2 / 11)
      [-0.08181818574666977, -0.08181818574666977]
    """

    def init(params):
        return AveragedState(optimizer.init(params), params, jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        updates, inner = optimizer.update(grads, state.inner, params)
        new_params = optax.apply_updates(params, updates)
        count = state.count + 1
        d = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
        average = jax.tree.map(
            lambda a, p: (d * a + (1.0 - d) * p).astype(a.dtype), state.average, new_params
        )
        return updates, AveragedState(inner, average, count)

    return optax.GradientTransformation(init, update)


def ema_decay(ema_epochs: float | None, num_batches: int) -> float | None:
    """The per-step decay whose time constant is ``ema_epochs`` epochs (None: no average)."""
    if ema_epochs is None:
        return None
    return max(0.0, 1.0 - 1.0 / (ema_epochs * num_batches))
