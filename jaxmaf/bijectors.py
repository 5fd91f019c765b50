"""distrax bijectors: the masked autoregressive layer and a fixed permutation.

:class:`jaxmaf.batch_norm.BatchNorm` lived here and is still importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxmaf.batch_norm import BatchNorm
from jaxmaf.masks import check_index_array, check_permutation
from jaxmaf.transformers import Transformer, get_transformer
from jaxmaf.validation import (
    check_event,
    check_float,
)

Array = jax.Array
SEQUENTIAL_METHODS = ("exact", "jacobi")
__all__ = ["SEQUENTIAL_METHODS", "BatchNorm", "MaskedAutoregressive", "Permute"]


class MaskedAutoregressive(distrax.Bijector):
    """An autoregressive bijector driven by any conditioner (MAF convention).

    ``forward`` maps base noise ``u`` to data ``x``: ``x_i = tau(u_i;
    theta_i(x_{<i}))`` where ``theta = conditioner(x)`` and ``tau`` is the
    transformer (affine: ``x = u * scale + shift``, as in the MAF paper).

    - ``inverse`` / ``inverse_and_log_det`` (density direction): ONE
      conditioner pass; the log-det is the sum of the elementwise
      log-derivatives (the Jacobian is triangular).
    - ``forward`` / ``forward_and_log_det`` (sampling direction): D sequential
      conditioner passes inside ``lax.fori_loop``, so the traced program does
      not grow with D. After pass k the first k dimensions of the order are
      exact, so after D passes all are, whatever the order. When the
      conditioner is a MADE (it has ``params_at(x, index)`` and input
      ``degrees``), pass k computes only dimension k's parameters and value:
      the MADE's output layer shrinks from ``D * P`` to ``P`` columns (17%
      less time for a 64-d affine MAF with 512-wide MADEs, 5.8x less with
      8-bin splines, measured on CPU).

    ``forward`` and ``inverse`` skip the log-det work. The bijector holds no
    parameters: wrap it in :class:`distrax.Inverse` for an IAF layer (one-pass
    sampling, sequential density).

    Args:
      conditioner: callable ``(..., D) -> (..., D, P)`` with the autoregressive
        property (output ``i`` depends only on inputs before ``i`` in some
        order), e.g. a :class:`jaxmaf.MADE` or ``made.bind(context)``. Its
        output batch shape may be larger than the input's (a batch of
        contexts): outputs broadcast. Optionally it also has
        ``params_at(x, index) -> (..., P)`` (one dimension's parameters) and
        ``degrees`` (``(D,)``, the order), which the exact sampling pass uses.
      transformer: ``"affine"``, ``"spline"`` or a transformer instance with
        ``num_params == P``.
      method: how the sequential (sampling) direction is computed:
        ``"exact"`` (D passes in ``lax.fori_loop``) or ``"jacobi"``
        (fixed-point iteration until the update is at most ``tol``; see
        :meth:`forward_jacobi`).
      tol: Jacobi stopping threshold; 0 stops at the exact fixed point.

    Raises:
      ValueError: unknown method, negative tol; (when called, at trace time)
        an input with fewer than one dimension, or a conditioner output that
        is not ``(..., D, P)``.

    Examples:
      >>> from flax import nnx
      >>> made = jaxmaf.MADE(3, (16,), 2, output_init_scale=1.0, rngs=nnx.Rngs(0))
      >>> bij = MaskedAutoregressive(made)
      >>> x = bij.forward(jnp.ones(3))
      >>> u, log_det = bij.inverse_and_log_det(x)   # u == 1, one pass
    """

    def __init__(
        self,
        conditioner: Callable[[Array], Array],
        transformer: str | Transformer = "affine",
        *,
        method: str = "exact",
        tol: float = 0.0,
    ):
        super().__init__(event_ndims_in=1)
        if not callable(conditioner):
            raise ValueError(f"Expected a callable conditioner, got {conditioner!r}.")
        if method not in SEQUENTIAL_METHODS:
            raise ValueError(f"Unknown method {method!r}: expected one of {SEQUENTIAL_METHODS}.")
        tol = check_float("tol", tol, low=0.0, low_open=False)
        self._conditioner = conditioner
        self._transformer = get_transformer(transformer)
        self._method = method
        self._tol = tol

    @property
    def conditioner(self) -> Callable[[Array], Array]:
        """The conditioner callable."""
        return self._conditioner

    @property
    def transformer(self) -> Transformer:
        """The elementwise transformer."""
        return self._transformer

    def _params(self, x: Array) -> Array:
        params = self._conditioner(x)
        self._check_params(x, params)
        return params

    def _check_params(self, x: Array, params: Array | jax.ShapeDtypeStruct) -> None:
        dim, p = x.shape[-1], self._transformer.num_params
        if params.ndim < 2 or params.shape[-2:] != (dim, p):
            raise ValueError(
                f"Expected the conditioner to return shape (..., {dim}, {p}) for an input of "
                f"shape {x.shape}, got {params.shape}."
            )

    def inverse(self, y: Array) -> Array:
        """Computes ``u = f^{-1}(y)`` in one conditioner pass; ``(..., D) -> (..., D)``."""
        self._check_inverse_input_shape(y)
        return self._transformer.inverse(y, self._params(y))

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        """Computes ``u = f^{-1}(y)`` ``(..., D)`` and ``log|det J_{f^{-1}}(y)|`` ``(...)``."""
        self._check_inverse_input_shape(y)
        u, log_d = self._transformer.inverse_and_log_det(y, self._params(y))
        return u, jnp.sum(log_d, axis=-1)

    def forward(self, x: Array) -> Array:
        """Computes ``y = f(x)`` by sequential passes; ``(..., D) -> (..., D)``."""
        if self._method == "jacobi":
            return self.forward_jacobi(x, self._tol)[0]
        x, y = self._sequential_start(x)
        return jax.lax.fori_loop(0, x.shape[-1], self._sequential_step(x), y)

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        """Computes ``y = f(x)`` ``(..., D)`` and ``log|det J_f(x)|`` ``(...)``.

        Exact method: D - 1 passes inside the loop, the last one outside it to
        read the log-scales that produced the final ``y`` (no extra pass).
        """
        x, y = self._sequential_start(x)
        if self._method == "jacobi":
            y, _ = self._jacobi(x, y, self._tol)
        else:
            y = jax.lax.fori_loop(0, x.shape[-1] - 1, self._sequential_step(x), y)
        y, log_d = self._transformer.forward_and_log_det(x, self._params(y))
        return y, jnp.sum(log_d, axis=-1)

    def forward_jacobi(self, x: Array, tol: float = 0.0) -> tuple[Array, Array]:
        """Sampling direction by fixed-point (Jacobi) iteration.

        Iterates ``y <- tau(x; conditioner(y))`` (all dimensions at once) in a
        ``lax.while_loop`` until ``max |y_new - y| <= tol`` over the batch, and
        never more than D times: by the autoregressive structure the iterate
        is exact after D passes, so ``tol=0`` returns the exact result (up to
        floating-point rounding: the exact method computes one dimension's
        conditioner outputs per pass, this one all of them), usually after
        far fewer passes (Song et al. 2021).

        Args:
          x: base points ``(..., D)``.
          tol: stopping threshold on the largest absolute update (>= 0).

        Returns:
          ``(y, iterations)``: ``y`` of shape ``(..., D)`` and the number of
          conditioner passes used (an int32 scalar).
        """
        return self._jacobi(*self._sequential_start(x), tol)

    def _jacobi(self, x: Array, y: Array, tol: float) -> tuple[Array, Array]:
        step = self._full_step(x)
        dim = x.shape[-1]

        def cond(state):
            _, delta, i = state
            return (i < dim) & (delta > tol)

        def body(state):
            y, _, i = state
            y_new = step(i, y)
            return y_new, jnp.max(jnp.abs(y_new - y)), i + 1

        init = (y, jnp.asarray(jnp.inf, y.dtype), jnp.asarray(0, jnp.int32))
        y, _, iterations = jax.lax.while_loop(cond, body, init)
        return y, iterations

    def _sequential_start(self, x: Array) -> tuple[Array, Array]:
        self._check_forward_input_shape(x)
        out = jax.eval_shape(self._conditioner, x)
        self._check_params(x, out)
        shape = jnp.broadcast_shapes(x.shape, out.shape[:-1])
        x = jnp.broadcast_to(x, shape)
        return x, jnp.zeros(shape, jnp.result_type(x, out.dtype))

    def _full_step(self, x: Array) -> Callable[[int, Array], Array]:
        """One pass updating every dimension: ``y <- tau(x; conditioner(y))``."""

        def step(_, y):
            return self._transformer.forward(x, self._conditioner(y)).astype(y.dtype)

        return step

    def _sequential_step(self, x: Array) -> Callable[[int, Array], Array]:
        """Pass ``i`` of the exact method: dimension ``i`` of the order becomes exact.

        With a conditioner that has ``params_at`` and ``degrees`` (a MADE),
        only that dimension's parameters and value are computed; otherwise
        every dimension is recomputed (a :meth:`_full_step`), which gives the
        same values.
        """
        params_at = getattr(self._conditioner, "params_at", None)
        degrees = getattr(self._conditioner, "degrees", None)
        if params_at is None or degrees is None:
            return self._full_step(x)
        order = np.argsort(np.asarray(getattr(degrees, "array", degrees)), kind="stable")
        if order.shape != x.shape[-1:]:
            raise ValueError(
                f"Expected conditioner degrees of shape ({x.shape[-1]},), got {order.shape}."
            )

        def step(i, y):
            d = jnp.asarray(order, jnp.int32)[i]
            params = params_at(y, d)[..., None, :]
            x_d = jax.lax.dynamic_slice_in_dim(x, d, 1, axis=-1)
            y_d = self._transformer.forward(x_d, params).astype(y.dtype)
            return jax.lax.dynamic_update_slice_in_dim(y, y_d, d, axis=-1)

        return step


class Permute(distrax.Bijector):
    """Reorders the last axis: ``y[..., i] = x[..., permutation[i]]`` (log-det 0).

    distrax has no permutation bijector; this is TFP's ``tfb.Permute``
    convention. The permutation is a constant (a list or numpy array, checked)
    or a JAX integer array, which may be traced: a flow's permutations are
    state (:class:`jaxmaf.layers.Permutation`), so that flows drawn with
    different orders share one structure.

    Args:
      permutation: a permutation of ``0..D-1``, shape ``(D,)``.
      inverse: its inverse (``argsort``), when ``permutation`` is a JAX array
        that already has one; None: computed.

    Raises:
      ValueError: a constant that is not a permutation, an integer array of
        another shape than ``(D,)``; (when called) an input whose last
        dimension is not D.

    Examples:
      >>> Permute([1, 0]).forward(jnp.array([1.0, 2.0])).tolist()
      [2.0, 1.0]
      >>> Permute(jnp.array([2, 0, 1])).inverse(jnp.array([1.0, 2.0, 3.0])).tolist()
      [2.0, 3.0, 1.0]
    """

    def __init__(
        self, permutation: Sequence[int] | np.ndarray | Array, inverse: Array | None = None
    ):
        super().__init__(event_ndims_in=1, is_constant_jacobian=True)
        if isinstance(permutation, jax.Array):  # a flow's state: its values checked when set
            self._perm = check_index_array(permutation, read_values=False)
            self._inv = jnp.argsort(permutation) if inverse is None else inverse
        else:
            perm = check_permutation(permutation, len(np.asarray(permutation)))
            self._perm, self._inv = perm, np.argsort(perm)

    @property
    def permutation(self) -> np.ndarray | Array:
        """The permutation, shape ``(D,)``."""
        return self._perm

    def _apply(self, x: Array, index: np.ndarray | Array) -> Array:
        check_event(x, index.shape[0], "Permute input")
        # A gather even for the reversal: XLA duplicates a cheap jnp.flip (and the
        # affine maps before it) into every consumer, so in a flow each layer
        # recomputed all the earlier layers' elementwise work. The gather is
        # materialised once: 41 MB less traffic, a 4-5% faster train step for a
        # 64-d 5-layer MAF on CPU (benchmarks/throughput.py), identical values.
        return jnp.take(x, index, axis=-1)

    def forward(self, x: Array) -> Array:
        """Permutes ``x`` ``(..., D)``."""
        return self._apply(x, self._perm)

    def inverse(self, y: Array) -> Array:
        """Undoes the permutation of ``y`` ``(..., D)``."""
        return self._apply(y, self._inv)

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        """Permutes ``x``; log-det zeros of shape ``(...)``."""
        y = self.forward(x)
        return y, jnp.zeros(y.shape[:-1], y.dtype)

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        """Undoes the permutation; log-det zeros of shape ``(...)``."""
        x = self.inverse(y)
        return x, jnp.zeros(x.shape[:-1], x.dtype)

    def same_as(self, other: distrax.Bijector) -> bool:
        """True when ``other`` is a Permute with the same permutation."""
        if not isinstance(other, Permute):
            return False
        if isinstance(self._perm, jax.Array) or isinstance(other._perm, jax.Array):
            return other._perm is self._perm  # values not read back from the device
        return bool(np.array_equal(other._perm, self._perm))
