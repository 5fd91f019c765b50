"""Input orders, hidden-unit degrees and MADE connectivity masks (pure numpy).

Degrees follow the MADE paper (Germain et al. 2015): every input gets a degree
in ``1..D`` (its position in the autoregressive order), every hidden unit a
degree ``k`` meaning "this unit may see inputs of degree <= k", and output ``i``
(the conditional of the input with degree ``d_i``) may only see hidden units of
degree ``< d_i``. Conditioning inputs have degree 0: they reach every unit.

The masks are ``(fan_in, fan_out)`` boolean arrays matching the kernel layout
of :class:`jaxmaf.MaskedLinear` (``y = x @ (kernel * mask) + bias``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmaf.draws import draw, standard_uniform
from jaxmaf.validation import check_int, renamed

ORDERS = ("natural", "reversed", "random")
HIDDEN_DEGREES = ("equal", "random")
_ORDER_ALIASES = {"left-to-right": "natural", "right-to-left": "reversed", "reverse": "reversed"}

OrderLike = str | Sequence[int] | np.ndarray


def input_degrees(dim: int, order: OrderLike = "natural", seed: int | None = 0) -> np.ndarray:
    """Degrees (autoregressive positions, 1-based) of the ``dim`` inputs.

    Args:
      dim: number of inputs ``D >= 1``.
      order: ``"natural"`` (``x_0`` first; alias ``"left-to-right"``),
        ``"reversed"`` (``x_{D-1}`` first; aliases ``"right-to-left"``,
        ``"reverse"``), ``"random"`` (a seeded random order), or an explicit
        order: a permutation of ``0..D-1`` listing the inputs in the order in
        which they are generated (``[2, 0, 1]``: ``x_2`` first, then ``x_0``).
      seed: seed of the random order (used only with ``"random"``).

    Returns:
      int array of shape ``(dim,)``: ``degrees[i]`` is the 1-based position of
      input ``i`` in the order; output ``i`` of a MADE may depend on input
      ``j`` only when ``degrees[j] < degrees[i]``.

    Raises:
      ValueError: ``dim < 1``, an unknown order name, or an explicit order that
        is not a permutation of ``0..dim-1``.

    Examples:
      >>> input_degrees(3, "reversed")
      array([3, 2, 1])
      >>> input_degrees(3, [2, 0, 1])
      array([2, 3, 1])
    """
    dim = check_int("dim", dim, minimum=1)
    if isinstance(order, str):
        name = _ORDER_ALIASES.get(order, order)
        if name == "natural":
            sequence = np.arange(dim)
        elif name == "reversed":
            sequence = np.arange(dim)[::-1]
        elif name == "random":
            sequence = np.random.default_rng(seed).permutation(dim)
        else:
            raise ValueError(
                f"Unknown order {order!r}: expected one of {ORDERS + tuple(_ORDER_ALIASES)} "
                "or a permutation of 0..dim-1."
            )
    else:
        sequence = check_permutation(order, dim, what="order")
    degrees = np.empty(dim, dtype=np.int64)
    degrees[sequence] = np.arange(1, dim + 1)
    return degrees


def check_permutation(
    perm: Sequence[int] | np.ndarray, dim: int, what: str = "permutation"
) -> np.ndarray:
    """Validates that ``perm`` is a permutation of ``0..dim-1`` and returns it as int array.

    Args:
      perm: candidate permutation, shape ``(dim,)``.
      dim: expected length.
      what: name used in the error message.

    Returns:
      int64 numpy array of shape ``(dim,)``.

    Raises:
      ValueError: wrong length, non-integer entries, or repeated/missing indices.

    Examples:
      >>> check_permutation([1, 0], 2)
      array([1, 0])
    """
    arr = np.asarray(perm)
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise ValueError(f"Expected {what} of shape ({dim},), got shape {arr.shape}.")
    if dim and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"Expected integer entries in {what}, got dtype {arr.dtype}.")
    if not np.array_equal(np.sort(arr), np.arange(dim)):
        raise ValueError(
            f"Expected {what} to be a permutation of 0..{dim - 1}, got {arr.tolist()}."
        )
    return arr.astype(np.int64)


def hidden_degrees(
    in_degrees: np.ndarray,
    width: int,
    dim: int,
    rule: str = "equal",
    conditional: bool = False,
    seed: int | None = 0,
) -> np.ndarray:
    """Degrees of one hidden layer.

    A unit of degree ``k`` may see inputs of degree ``<= k``; degrees lie in
    ``[lo, D-1]`` where ``lo = 0`` for a conditional MADE (so that some units
    see only the context and feed the first output non-linearly) and ``lo =
    min(1, D-1)`` otherwise (degree-0 units of an unconditional MADE would see
    nothing but a bias).

    Args:
      in_degrees: degrees of the previous layer, shape ``(fan_in,)``.
      width: number of units of this layer (``>= 1``; may be smaller than D).
      dim: number of autoregressive inputs D.
      rule: ``"equal"``: degrees cycle through ``lo..D-1`` (as TFP's
        ``hidden_degrees='equal'``); ``"random"``: drawn uniformly from
        ``[max(lo, min(in_degrees)), D-1]`` as in the MADE paper.
      conditional: whether the MADE has context inputs.
      seed: seed for ``"random"``.

    Returns:
      int array of shape ``(width,)``.

    Raises:
      ValueError: unknown rule or ``width < 1``.

    Examples:
      >>> hidden_degrees(np.array([1, 2, 3]), 5, 3)
      array([1, 2, 1, 2, 1])
    """
    if width < 1:
        raise ValueError(f"Expected a hidden width >= 1, got {width}.")
    lo = 0 if conditional else min(1, dim - 1)
    hi = dim - 1
    if rule == "equal":
        return lo + np.arange(width) % (hi - lo + 1)
    if rule == "random":
        start = max(lo, min(int(np.min(in_degrees)), hi)) if len(in_degrees) else lo
        return np.random.default_rng(seed).integers(start, hi + 1, size=width)
    raise ValueError(f"Unknown hidden_degrees {rule!r}: expected one of {HIDDEN_DEGREES}.")


def made_masks(
    in_degrees: np.ndarray,
    hidden_widths: Sequence[int],
    num_params: int | None = None,
    rule: str = "equal",
    conditional: bool = False,
    seed: int | None = 0,
    residual: bool = False,
    *,
    params_per_dim: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Masks of every layer of a MADE.

    Args:
      in_degrees: input degrees, shape ``(D,)`` (see :func:`input_degrees`).
      hidden_widths: widths of the hidden layers (may be empty: a single masked
        linear layer from inputs to outputs).
      num_params: number of outputs per input dimension P (default 1); the
        output units are laid out as ``(D, P)`` flattened (unit ``i * P + p``).
      rule: hidden-degree rule (see :func:`hidden_degrees`).
      conditional: whether context inputs exist (allows degree-0 hidden units).
      seed: seed for random hidden degrees.
      residual: every hidden layer reuses the first hidden layer's degrees, so
        an identity (skip) connection between hidden layers respects the
        order (hidden-to-hidden masks then include the diagonal).
      params_per_dim: former name of ``num_params`` (deprecated).

    Returns:
      ``(masks, hidden_degree_list)``: ``masks`` is a list of boolean arrays of
      shapes ``(D, h_1), (h_1, h_2), ..., (h_L, D * P)``; the second element is
      the list of hidden degree arrays (for inspection).

    Raises:
      ValueError: as :func:`hidden_degrees`.

    Examples:
      >>> masks, _ = made_masks(input_degrees(2), [4], num_params=2)
      >>> [m.shape for m in masks]
      [(2, 4), (4, 4)]
    """
    num_params = renamed("num_params", num_params, "params_per_dim", params_per_dim, 1)
    in_degrees = np.asarray(in_degrees)
    dim = in_degrees.shape[0]
    rng = np.random.default_rng(seed)
    masks, degrees_list = [], []
    prev = in_degrees
    # Context inputs (degree 0) feed the first layer too, so its random degrees may start at 0.
    reach = np.append(in_degrees, 0) if conditional else in_degrees
    for i, width in enumerate(hidden_widths):
        deg = hidden_degrees(reach, width, dim, rule, conditional, seed=rng.integers(2**31))
        if residual and i:
            deg = degrees_list[0]
        masks.append(prev[:, None] <= deg[None, :])
        degrees_list.append(deg)
        prev = reach = deg
    out_degrees = np.repeat(in_degrees, num_params)
    masks.append(prev[:, None] < out_degrees[None, :])
    return masks, degrees_list


def connectivity(
    masks: Sequence[np.ndarray], num_params: int | None = None, *, params_per_dim: int | None = None
) -> np.ndarray:
    """Which inputs can reach which outputs through a stack of masks.

    Args:
      masks: masks as returned by :func:`made_masks`.
      num_params: outputs per input dimension (default 1).
      params_per_dim: former name of ``num_params`` (deprecated).

    Returns:
      boolean array ``(D_out, D_in)``: entry ``(i, j)`` is True when output
      dimension ``i`` (any of its P parameters) has a path from input ``j``.

    Examples:
      >>> masks, _ = made_masks(input_degrees(3), [8])
      >>> connectivity(masks).astype(int)
      array([[0, 0, 0],
             [1, 0, 0],
             [1, 1, 0]])
    """
    num_params = renamed("num_params", num_params, "params_per_dim", params_per_dim, 1)
    path = masks[0].astype(np.int64)
    for m in masks[1:]:
        path = np.minimum(path @ m.astype(np.int64), 1)
    d_in = path.shape[0]
    per_out = path.reshape(d_in, -1, num_params).max(axis=-1)
    return per_out.T.astype(bool)


def check_index_array(
    permutation: jax.Array, what: str = "permutation", read_values: bool = True
) -> jax.Array:
    """Checks a JAX permutation array's shape and dtype (its values only when concrete).

    A traced or abstract array (a flow's state under ``jit`` or ``nnx.eval_shape``)
    cannot be read, so only its shape and dtype are checked.

    Args:
      permutation: an integer array of shape ``(D,)``.
      what: name used in the error message.
      read_values: check the values of a concrete array too (one read from
        the device); False where the array was checked when it was set.

    Returns:
      the array as int32.

    Raises:
      ValueError: not integer of shape ``(D,)``, or (concrete) not a permutation.

    Examples:
      >>> check_index_array(jnp.array([1, 0])).tolist()
      [1, 0]
    """
    if permutation.ndim != 1 or not jnp.issubdtype(permutation.dtype, jnp.integer):
        raise ValueError(
            f"Expected {what} to be an integer array of shape (D,), got "
            f"{permutation.dtype} of shape {permutation.shape}."
        )
    if read_values and not isinstance(permutation, jax.core.Tracer):
        check_permutation(np.asarray(permutation), permutation.shape[0], what)
    if permutation.dtype == jnp.int32:  # (an eager astype compiles, even to its own dtype)
        return permutation
    return permutation.astype(jnp.int32)


PERMUTATIONS = ("auto", "reverse", "random", "none")


def balanced_permutations(dim: int, n: int, uniform: Callable[[], Any], xp: Any) -> list:
    """``n`` permutations whose layer orders give every input each end of the order in turn.

    The layer on the data side sees the inputs in their natural order; the
    ``l``-th from it (``l = 0..n``) orders them starting with ``c[(l + 1) % dim]``
    and ending with ``c[l % dim]``, where ``c`` is a random cycle through the
    inputs (``c[0] = dim - 1`` and ``c[1] = 0``, the natural order's ends); the
    inputs between come in a fresh random order. So over ``dim`` consecutive layers
    every input is modelled once last, given all the others, and once first,
    as a marginal: with independent draws one input can stay last, or first,
    in every layer, and its conditional (or marginal) is then only as flexible
    as a chain of affine maps. In 2-d this is the reversal; in 3-d cyclic
    shifts, with nothing random.

    Args:
      dim: the data dimension (>= 2).
      n: the number of permutations (layers - 1).
      uniform: draws ``(dim,)`` uniform numbers in ``[0, 1)``, once per call.
      xp: ``numpy`` or ``jax.numpy``, which computes them.

    Returns:
      ``n`` arrays of shape ``(dim,)`` in the flow's order (base side first),
      permutations in :class:`jaxmaf.Permute`'s convention: on the density
      side of one, the layers see ``x``, on its base side ``x[..., argsort(perm)]``.

    Examples:
      >>> [p.tolist() for p in balanced_permutations(3, 2, lambda: np.zeros(3), np)]
      [[2, 0, 1], [2, 0, 1]]
    """

    def argsort(a):  # stable in both, so numpy and jax.numpy agree on ties
        return np.argsort(a, kind="stable") if xp is np else jnp.argsort(a, stable=True)

    idx = xp.arange(dim)
    cycle = argsort(xp.where(idx == dim - 1, -2.0, xp.where(idx == 0, -1.0, uniform())))
    orders = [idx]
    for layer in range(1, n + 1):
        last, first = cycle[layer % dim], cycle[(layer + 1) % dim]
        orders.append(argsort(xp.where(idx == first, -1.0, xp.where(idx == last, 2.0, uniform()))))
    steps = [argsort(argsort(a)[b]) for a, b in zip(orders, orders[1:], strict=False)]
    return steps[::-1]  # the flow lists its layers base side first


def layer_permutations(
    permutation: str | Sequence[Sequence[int]], dim: int, num_layers: int, seed: Any
) -> tuple[tuple[int, ...] | jax.Array, ...]:
    """The permutations a flow puts between consecutive layers (``num_layers - 1`` of them).

    Args:
      permutation: ``"auto"`` (:func:`balanced_permutations`: the reversal
        for ``dim <= 2``, cyclic shifts in 3-d, random orders that hand each
        input both ends of the order in turn above), ``"reverse"`` (or MADE's
        spelling ``"reversed"``), ``"random"`` (independent uniform draws),
        ``"none"``, or an explicit list.
      dim: the data dimension.
      num_layers: the number of autoregressive layers.
      seed: for random permutations: an int ``mask_seed`` (a numpy stream of
        its own: constants, no device value), or an ``nnx.Rngs`` to draw them
        from on the device (with ``rngs.params()``; abstract under
        ``nnx.eval_shape``).

    Returns:
      a tuple of ``num_layers - 1`` permutations: tuples of ints, or int32
      arrays of shape ``(dim,)`` when drawn from ``rngs``.

    Raises:
      ValueError: an unknown name, a list of the wrong length, or an entry
        that is not a permutation of ``range(dim)``.

    Examples:
      >>> layer_permutations("reverse", 3, 3, 0)
      ((2, 1, 0), (2, 1, 0))
      >>> layer_permutations("auto", 3, 2, 0)
      ((2, 0, 1),)
    """
    n = num_layers - 1
    if isinstance(permutation, str) and permutation == "reversed":  # the MADE order's name
        permutation = "reverse"
    if not isinstance(permutation, str):
        if len(permutation) != n:
            raise ValueError(f"Expected num_layers - 1 = {n} permutations, got {len(permutation)}.")
        perms = [check_permutation(p, dim) for p in permutation]
    elif permutation == "auto" and dim > 3:
        if not isinstance(seed, int):  # nnx.Rngs: drawn on the device, one draw per flow
            dtype = jax.dtypes.canonicalize_dtype(float)
            draws = [draw(standard_uniform, seed.params(), (dim,), dtype) for _ in range(n + 1)]
            # Concrete draws are ordered on the host: op by op on the device, each new
            # dim compiled about fifteen small programs (0.5 s of a new flow's build).
            xp = jnp if any(isinstance(u, jax.core.Tracer) for u in draws) else np
            it = iter(draws if xp is jnp else [np.asarray(u) for u in draws])
            perms = balanced_permutations(dim, n, lambda: next(it), xp)
            if xp is jnp:
                return tuple(p.astype(jnp.int32) for p in perms)
            return tuple(jax.device_put(p.astype(np.int32)) for p in perms)
        rng = np.random.default_rng([seed, 1])
        perms = balanced_permutations(dim, n, lambda: rng.uniform(size=dim), np)
    elif permutation == "auto" and dim == 3:  # the balanced design has nothing to draw in 3-d
        perms = balanced_permutations(dim, n, lambda: np.zeros(dim), np)
    elif permutation == "random":
        if not isinstance(seed, int):  # nnx.Rngs: drawn on the device, one draw per flow
            return tuple(
                jax.random.permutation(seed.params(), dim).astype(jnp.int32) for _ in range(n)
            )
        # With mask_seed, a stream of its own (not the hidden degrees'), no device value.
        rng = np.random.default_rng([seed, 1])
        perms = [rng.permutation(dim) for _ in range(n)]
    elif permutation in ("reverse", "auto"):
        perms = [np.arange(dim)[::-1]] * n
    elif permutation == "none":
        perms = [np.arange(dim)] * n
    else:
        raise ValueError(
            f"Unknown permutation {permutation!r}: expected one of {PERMUTATIONS} or a "
            f"list of num_layers - 1 = {n} permutations."
        )
    return tuple(tuple(int(i) for i in p) for p in perms)
