"""Optimizers: what ``fit``, ``fit_ensemble`` and ``fit_variational`` accept, and the default."""

from __future__ import annotations

from typing import Any

import optax

# One instance, so that repeated calls with the default share their compiled programs
# (the optimizer is a static argument of the jitted training blocks).
DEFAULT_OPTIMIZER = optax.adam(1e-3)


def is_transformation(optimizer: Any) -> bool:
    """Whether ``optimizer`` looks like an Optax transformation (``init`` and ``update``).

    Args:
      optimizer: anything.

    Returns:
      True for an object with callable ``init`` and ``update``.

    Examples:
      >>> is_transformation(optax.adam(1e-3)), is_transformation(optax.adam)
      (True, False)
    """
    return callable(getattr(optimizer, "init", None)) and callable(
        getattr(optimizer, "update", None)
    )


def check_optimizer(optimizer: Any) -> optax.GradientTransformation:
    """An Optax transformation, or :data:`DEFAULT_OPTIMIZER` (``optax.adam(1e-3)``) for None.

    Args:
      optimizer: what the caller passed.

    Returns:
      ``optimizer``, or the shared default when it is None.

    Raises:
      ValueError: anything else (a factory such as ``optax.adam``, a name).

    Examples:
      >>> check_optimizer(None) is DEFAULT_OPTIMIZER
      True
      >>> check_optimizer(optax.adam)
      Traceback (most recent call last):
        ...
      ValueError: Expected optimizer to be an optax.GradientTransformation (e.g. ...
    """
    if optimizer is None:
        return DEFAULT_OPTIMIZER
    if not is_transformation(optimizer):
        raise ValueError(
            "Expected optimizer to be an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
            f"got {optimizer!r}."
        )
    return optimizer
