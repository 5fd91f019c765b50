"""Activation functions by name, for MADE's hidden layers."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "selu": jax.nn.selu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "leaky_relu": jax.nn.leaky_relu,
    "log_sigmoid": jax.nn.log_sigmoid,
    "identity": lambda x: x,
}


def get_activation(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """Resolves an activation given by name or as a callable.

    Args:
      activation: a name from :data:`ACTIVATIONS` (``"relu"``, ``"sigmoid"``,
        ``"tanh"``, ``"gelu"``, ``"elu"``, ``"silu"``, ...) or any callable
        mapping an array to an array of the same shape.

    Returns:
      the activation function.

    Raises:
      ValueError: an unknown name, or neither a string nor a callable.

    Examples:
      >>> get_activation("tanh") is jnp.tanh
      True
    """
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"Unknown activation {activation!r}: expected one of {sorted(ACTIVATIONS)} "
                "or a callable."
            ) from None
    if callable(activation):
        return activation
    raise ValueError(f"Expected an activation name or a callable, got {activation!r}.")


def inverse_softplus(y: float) -> float:
    """The ``a`` with ``softplus(a) = y`` (``y > 0``), computed stably on the host.

    Args:
      y: a positive float.

    Returns:
      ``log(exp(y) - 1)`` as a float.

    Examples:
      >>> round(inverse_softplus(math.log(2.0)), 12)  # softplus(0) = log 2
      0.0
    """
    return y + math.log(-math.expm1(-y))
