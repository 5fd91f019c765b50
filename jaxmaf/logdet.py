"""Dense references: log-determinants and Jacobian zero patterns of any bijection.

These cost O(D^3) (``slogdet``) and D forward-mode passes (``jacfwd``); they
exist to check the O(D) analytic log-determinants of triangular bijections, in
the tests, the benchmarks and users' own code.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def dense_jacobian(fn: Callable[[Array], Array], x: Array) -> Array:
    """The Jacobian of ``fn`` at every point of a batch, by forward mode.

    Args:
      fn: a map ``(D,) -> (D,)`` (called on single events; batch dimensions
        of ``x`` are mapped over with ``vmap``).
      x: points of shape ``(..., D)``.

    Returns:
      Jacobians of shape ``(..., D, D)``; entry ``[..., i, j] = d fn_i / d x_j``.

    Raises:
      ValueError: ``x`` has no event axis.

    Example:
      >>> dense_jacobian(lambda v: 2 * v, jnp.ones(3))[0].tolist()
      [2.0, 0.0, 0.0]
    """
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"Expected x of shape (..., D), got shape {x.shape}.")
    jac = jax.jacfwd(fn)
    for _ in range(x.ndim - 1):
        jac = jax.vmap(jac)
    return jac(x)


def dense_log_det(fn: Callable[[Array], Array], x: Array) -> Array:
    """``log|det J_fn(x)|`` from the dense Jacobian (``jacfwd`` + ``slogdet``).

    Args:
      fn: a map ``(D,) -> (D,)`` applied to single events.
      x: points of shape ``(..., D)``.

    Returns:
      log-absolute-determinants of shape ``(...)``.

    Raises:
      ValueError: ``x`` has no event axis.

    Example:
      >>> float(dense_log_det(lambda v: 2 * v, jnp.ones(3)))  # 3 log 2
      2.079...
    """
    return jnp.linalg.slogdet(dense_jacobian(fn, x))[1]


def jacobian_nonzero(fn: Callable[[Array], Array], x: Array, atol: float = 0.0) -> np.ndarray:
    """Which Jacobian entries are nonzero anywhere over a batch of points.

    Args:
      fn: a map ``(D,) -> (D,)``.
      x: points of shape ``(..., D)``.
      atol: entries with ``|J_ij| <= atol`` at every point count as zero.

    Returns:
      boolean numpy array ``(D, D)``; ``[i, j]`` is True when
      ``d fn_i / d x_j`` exceeds ``atol`` at some point.

    Example:
      >>> jacobian_nonzero(jnp.cumsum, jnp.ones(3)).astype(int).tolist()
      [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    jac = np.asarray(dense_jacobian(fn, x))
    jac = jac.reshape((-1,) + jac.shape[-2:])
    return np.abs(jac).max(axis=0) > atol


def is_autoregressive(
    fn: Callable[[Array], Array],
    x: Array,
    order: np.ndarray | None = None,
    atol: float = 0.0,
    strict: bool = False,
) -> bool:
    """Whether output ``i`` of ``fn`` depends only on inputs not after ``i`` in ``order``.

    The Jacobian, with rows and columns reordered by ``order``, must be lower
    triangular (with ``strict=True``, strictly lower: for a conditioner such
    as a MADE, whose output ``i`` must not see input ``i``).

    Args:
      fn: a map ``(D,) -> (D,)``.
      x: points of shape ``(..., D)`` at which to test.
      order: the inputs in generation order (a permutation of ``0..D-1``;
        default natural order).
      atol: tolerance below which an entry counts as zero.
      strict: require a zero diagonal too.

    Returns:
      True when every entry above (or on, with ``strict``) the diagonal is
      zero at every point of ``x``.

    Example:
      >>> is_autoregressive(jnp.cumsum, jnp.ones(3))
      True
      >>> is_autoregressive(lambda v: jnp.cumsum(v[::-1])[::-1], jnp.ones(3))
      False
    """
    nz = jacobian_nonzero(fn, x, atol)
    if order is not None:
        order = np.asarray(order)
        nz = nz[np.ix_(order, order)]
    return not np.any(np.triu(nz, k=0 if strict else 1))
