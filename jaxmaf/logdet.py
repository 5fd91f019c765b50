"""Dense references: log-determinants and Jacobian zero patterns of any bijection.

These cost O(D^3) (``slogdet``) and D forward-mode passes (``jacfwd``); they
exist to check the O(D) analytic log-determinants of triangular bijections, in
the tests, the benchmarks and users' own code.
"""

from __future__ import annotations

import math
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

    Examples:
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


def _event_output_shape(fn: Callable[[Array], Array], x: Array) -> tuple[int, ...]:
    """The shape of ``fn`` on one event of ``x``, computed abstractly (no FLOPs)."""
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"Expected x of shape (..., D), got shape {x.shape}.")
    return tuple(jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape[-1:], x.dtype)).shape)


def dense_log_det(fn: Callable[[Array], Array], x: Array) -> Array:
    """``log|det J_fn(x)|`` from the dense Jacobian (``jacfwd`` + ``slogdet``).

    Args:
      fn: a bijection ``(D,) -> (D,)`` applied to single events.
      x: points of shape ``(..., D)``.

    Returns:
      log-absolute-determinants of shape ``(...)``.

    Raises:
      ValueError: ``x`` has no event axis, or ``fn`` does not map ``(D,)`` to
        ``(D,)`` (a MADE, whose output is ``(D, P)``, is a conditioner, not a
        bijection: pass a bijector's ``forward`` or ``inverse``).

    Examples:
      >>> float(dense_log_det(lambda v: 2 * v, jnp.ones(3)))  # 3 log 2
      2.079...
    """
    out = _event_output_shape(fn, x)
    dim = jnp.shape(x)[-1]
    if out != (dim,):
        raise ValueError(
            f"Expected fn to map events of shape ({dim},) to shape ({dim},) (a bijection), "
            f"got output shape {out}. A MADE's (D, P) output is a conditioner's: pass a "
            "bijector's forward or inverse."
        )
    return jnp.linalg.slogdet(dense_jacobian(fn, x))[1]


def jacobian_nonzero(fn: Callable[[Array], Array], x: Array, atol: float = 0.0) -> np.ndarray:
    """Which outputs depend on which inputs anywhere over a batch of points.

    Args:
      fn: a map from ``(D,)`` to ``(D,)`` or to ``(D, P, ...)``: output ``i``
        is the slice ``[i]`` (a MADE's ``P`` parameters of dimension ``i``).
      x: points of shape ``(..., D)``.
      atol: entries with ``|J| <= atol`` at every point count as zero.

    Returns:
      boolean numpy array ``(D, D)``; ``[i, j]`` is True when some entry of
      ``d fn(x)[i] / d x_j`` exceeds ``atol`` at some point.

    Raises:
      ValueError: ``x`` has no event axis, or the output's first axis is not
        ``D``.

    Examples:
      >>> jacobian_nonzero(jnp.cumsum, jnp.ones(3)).astype(int).tolist()
      [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
      >>> made = jaxmaf.MADE(3, (8,), 2, rngs=nnx.Rngs(0))
      >>> jacobian_nonzero(made, jnp.ones(3)).shape  # made: (3,) -> (3, 2)
      (3, 3)
    """
    out = _event_output_shape(fn, x)
    dim = jnp.shape(x)[-1]
    if not out or out[0] != dim:
        raise ValueError(
            f"Expected fn to map events of shape ({dim},) to shape ({dim},) or ({dim}, ...), "
            f"got output shape {out}."
        )
    jac = np.abs(np.asarray(dense_jacobian(fn, x)))  # (..., D, *out[1:], D)
    jac = jac.reshape((-1, dim, math.prod(out[1:]), dim))
    return jac.max(axis=(0, 2)) > atol


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
    as a MADE, whose output ``i`` must not see input ``i``). Outputs of shape
    ``(D, P, ...)`` (a MADE's) are tested per dimension ``i`` over all its
    parameters.

    A Jacobian that is zero at every point certifies nothing (a new MADE,
    whose output layer starts at zero, say): that raises instead of answering True.

    Args:
      fn: a map from ``(D,)`` to ``(D,)`` or ``(D, P, ...)``.
      x: points of shape ``(..., D)`` at which to test.
      order: the inputs in generation order (a permutation of ``0..D-1``;
        default natural order). A MADE's is ``made.order``.
      atol: tolerance below which an entry counts as zero.
      strict: require a zero diagonal too.

    Returns:
      True when every entry above (or on, with ``strict``) the diagonal is
      zero at every point of ``x``.

    Raises:
      ValueError: ``order`` not a permutation of ``0..D-1``; an output whose
        first axis is not ``D``; a Jacobian that is zero (``<= atol``) at
        every point of ``x``.

    Examples:
      >>> is_autoregressive(jnp.cumsum, jnp.ones(3))
      True
      >>> is_autoregressive(lambda v: jnp.cumsum(v[::-1])[::-1], jnp.ones(3))
      False
      >>> made = jaxmaf.MADE(3, (8,), 2, rngs=nnx.Rngs(0))
      >>> _ = nnx.update(made, jax.tree.map(lambda p: p + 0.1, nnx.state(made, nnx.Param)))
      >>> is_autoregressive(made, jnp.ones((4, 3)), order=made.order, strict=True)
      True
    """
    dim = jnp.shape(x)[-1] if jnp.ndim(x) else None
    if order is not None:
        order = np.asarray(order)
        if order.shape != (dim,) or sorted(order.tolist()) != list(range(dim or 0)):
            raise ValueError(
                f"Expected order to be a permutation of 0..{(dim or 0) - 1}, got {order.tolist()}."
            )
    nz = jacobian_nonzero(fn, x, atol)
    if not nz.any():
        raise ValueError(
            "The Jacobian of fn is zero at every point of x, so it shows no dependence to test "
            "(a new MADE's output layer starts at zero, for one): perturb the parameters or use "
            "other points."
        )
    if order is not None:
        nz = nz[np.ix_(order, order)]
    return not np.any(np.triu(nz, k=0 if strict else 1))
