"""MADE: the masked autoencoder for distribution estimation, as Flax NNX modules."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf import masks as masks_lib
from jaxmaf.activations import ACTIVATIONS, get_activation
from jaxmaf.draws import draw
from jaxmaf.masked_linear import INITS, Constant, MaskedLinear, made_initializers, uniform_fan_in
from jaxmaf.validation import (
    check_choice,
    check_context,
    check_event,
    check_float,
    check_hidden_dims,
    check_int,
    check_param_dtype,
    check_rngs,
    constructor_signature,
    default_dtype,
    host_seed,
    renamed,
)

Array = jax.Array

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "MADE",
    "BoundMADE",
    "Constant",
    "MaskedLinear",
    "default_dtype",
    "get_activation",
    "uniform_fan_in",
]


@constructor_signature
class MADE(nnx.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    One pass computes the parameters of every conditional: output ``(..., i, :)``
    depends only on inputs that precede ``i`` in the order (and on the context).

    Args:
      dim: number of autoregressive inputs D (>= 1).
      hidden_dims: widths of the hidden layers, each >= 1 (may be smaller than
        D, and may be empty for a single masked linear map).
      num_params: number of outputs per dimension P (2 for an affine
        transformer: shift and unconstrained scale; a transformer's
        ``num_params``).
      context_dim: width of the conditioning input (0: unconditional). Context
        reaches every output, the first dimension of the order included: in a
        conditional MADE some hidden units have degree 0 and see the context
        alone.
      activation: name (see :data:`ACTIVATIONS`) or callable.
      order: input order: ``"natural"``, ``"reversed"``, ``"random"`` or an
        explicit permutation (see :func:`jaxmaf.masks.input_degrees`).
      hidden_degrees: ``"equal"`` (cyclic, as TFP) or ``"random"`` (MADE paper).
      residual: masked residual blocks ``h <- h + W act(h)`` between hidden
        layers (equal widths; every hidden layer shares the first one's
        degrees, so the skip connection keeps the autoregressive property).
      init: ``"uniform"`` (default) or ``"lecun_normal"``: see
        :func:`jaxmaf.masked_linear.made_initializers` (measured for
        :class:`jaxmaf.MAF`).
      output_init_scale: multiplier of the output layer's initial draw
        (default 0: every output starts at exactly zero, so a flow built on
        it starts at the identity).
      param_dtype: dtype of the parameters (default float32, float64 under
        ``jax_enable_x64``).
      mask_seed: numpy seed of a random order and random hidden degrees
        (an int >= 0; recorded as ``self.mask_seed``). None: drawn from
        ``rngs`` when needed (a device value pulled to the host, so not
        under ``nnx.eval_shape``).
      rngs: NNX random streams (``params``).
      params_per_dim: former name of ``num_params`` (deprecated; still read
        as ``made.params_per_dim``).

    Raises:
      ValueError: ``dim < 1``, a hidden width <= 0, ``num_params < 1`` or
        missing, unknown ``init``, ``context_dim < 0``, unknown activation,
        order or hidden-degree rule, unequal widths with ``residual=True``.

    Examples:
      >>> made = MADE(3, (16, 16), 2, rngs=nnx.Rngs(0))
      >>> made(jnp.ones((5, 3))).shape
      (5, 3, 2)
    """

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int],
        num_params: int | None = None,
        *,
        context_dim: int = 0,
        activation: str | Callable[[Array], Array] = "relu",
        order: masks_lib.OrderLike = "natural",
        hidden_degrees: str = "equal",
        residual: bool = False,
        init: str = "uniform",
        output_init_scale: float = 0.0,
        param_dtype: jnp.dtype | None = None,
        mask_seed: int | None = None,
        rngs: nnx.Rngs,
        params_per_dim: int | None = None,
    ):
        dim = check_int("dim", dim, minimum=1)
        hidden_dims = check_hidden_dims(hidden_dims)
        num_params = _check_num_params(num_params, params_per_dim)
        context_dim = check_int("context_dim", context_dim, minimum=0)
        check_choice("init", init, INITS)
        output_init_scale = check_float("output_init_scale", output_init_scale)
        param_dtype = check_param_dtype(param_dtype)
        check_rngs(rngs)
        check_choice("hidden_degrees", hidden_degrees, masks_lib.HIDDEN_DEGREES)
        if residual and len(set(hidden_dims)) > 1:
            raise ValueError(
                f"Expected equal hidden widths for a residual MADE, got {hidden_dims}."
            )
        self.activation_fn = get_activation(activation)
        self.residual = bool(residual)
        degrees, layer_masks, self.mask_seed = _connectivity(
            dim,
            hidden_dims,
            num_params,
            order,
            hidden_degrees,
            context_dim,
            residual,
            mask_seed,
            rngs,
        )
        self.dim, self.num_params, self.context_dim = dim, num_params, context_dim
        self.hidden_dims = hidden_dims
        self.degrees = Constant(degrees)
        inits, context_init = made_initializers(
            init, [m.shape[0] for m in layer_masks], context_dim, output_init_scale
        )
        layers = [
            MaskedLinear(m, kernel_init=k, bias_init=b, param_dtype=param_dtype, rngs=rngs)
            for m, (k, b) in zip(layer_masks, inits, strict=True)
        ]
        self.hidden, self.output = nnx.List(layers[:-1]), layers[-1]
        first_width = hidden_dims[0] if hidden_dims else dim * num_params
        self.context_proj = (
            nnx.Linear(
                context_dim,
                first_width,
                use_bias=False,
                kernel_init=functools.partial(draw, context_init),  # few compiled programs
                param_dtype=param_dtype,
                rngs=rngs,
            )
            if context_dim
            else None
        )

    @property
    def order(self) -> np.ndarray:
        """The inputs in generation order ``(dim,)``: ``order[k]`` is the k-th input generated.

        Examples:
          >>> MADE(3, (8,), 2, order="reversed", rngs=nnx.Rngs(0)).order.tolist()
          [2, 1, 0]
        """
        return np.argsort(self.degrees.array, kind="stable")

    @property
    def params_per_dim(self) -> int:
        """Former name of :attr:`num_params` (outputs per dimension)."""
        return self.num_params

    def __call__(self, x: Array, context: Array | None = None) -> Array:
        """Computes every conditional's parameters in one pass.

        Args:
          x: inputs of shape ``(..., dim)``.
          context: ``(..., context_dim)`` for a conditional MADE (batch
            dimensions broadcast against those of ``x``), else None.

        Returns:
          array of shape ``broadcast(...) + (dim, num_params)``.

        Raises:
          ValueError: wrong last dimension of ``x`` or ``context``, context
            missing on a conditional MADE or given to an unconditional one.
        """
        check_event(x, self.dim, "x")
        check_context(context, self.context_dim)
        out = self.output(self._features(x, context))
        if not self.hidden and self.context_proj is not None:
            out = out + self.context_proj(context)
        return out.reshape(out.shape[:-1] + (self.dim, self.num_params))

    def params_at(self, x: Array, index: Array | int, context: Array | None = None) -> Array:
        """The parameters of dimension ``index`` alone: ``self(x, context)[..., index, :]``.

        The hidden layers run in full; the output layer computes only the
        ``num_params`` columns of that dimension. The exact sequential
        pass of :class:`jaxmaf.MaskedAutoregressive` determines one dimension
        per pass and calls this instead of the whole MADE.

        Args:
          x: inputs ``(..., dim)``.
          index: the dimension (an int or a traced int32 scalar).
          context: as in :meth:`__call__`.

        Returns:
          ``(..., num_params)``.

        Raises:
          ValueError: as :meth:`__call__`; a concrete ``index`` outside
            ``[0, dim)`` (a traced one is clamped by ``lax.dynamic_slice``).

        Examples:
          >>> made = MADE(3, (16,), 2, output_init_scale=1.0, rngs=nnx.Rngs(0))
          >>> x = jnp.ones((5, 3))
          >>> bool(jnp.allclose(made.params_at(x, 2), made(x)[:, 2]))
          True
        """
        check_event(x, self.dim, "x")
        check_context(context, self.context_dim)
        if isinstance(index, int | np.integer) and not 0 <= index < self.dim:
            raise ValueError(f"Expected an index in [0, {self.dim}), got {index}.")
        p = self.num_params
        start = index * p
        out = self.output.columns(self._features(x, context), start, p)
        if not self.hidden and self.context_proj is not None:
            kernel = jax.lax.dynamic_slice_in_dim(self.context_proj.kernel[...], start, p, axis=1)
            out = out + context @ kernel
        return out

    def bind(self, context: Array | None) -> BoundMADE:
        """Fixes the context: returns a conditioner of ``x`` alone (a :class:`BoundMADE`)."""
        return BoundMADE(self, context)

    def _features(self, x: Array, context: Array | None) -> Array:
        """The output layer's input: the last hidden activation (``x`` without hidden layers)."""
        if not self.hidden:
            return x
        h = self.hidden[0](x)
        if self.context_proj is not None:
            h = h + self.context_proj(context)
        for layer in self.hidden[1:]:
            if self.residual:  # pre-activation residual block
                h = h + layer(self.activation_fn(h))
            else:
                h = layer(self.activation_fn(h))
        return self.activation_fn(h)


class BoundMADE:
    """A :class:`MADE` with its context bound: ``conditioner(x) = made(x, context)``.

    Keeps :meth:`MADE.params_at` and the input ``degrees`` visible to
    :class:`jaxmaf.MaskedAutoregressive` (a ``functools.partial`` would hide
    them), so the exact sequential pass can compute one dimension per pass.
    """

    def __init__(self, made: MADE, context: Array | None):
        self.made, self.context = made, context

    @property
    def degrees(self) -> Constant:
        """The MADE's input degrees ``(dim,)`` (the autoregressive order)."""
        return self.made.degrees

    def __call__(self, x: Array) -> Array:
        """``made(x, context)``: ``(..., dim) -> (..., dim, num_params)``."""
        return self.made(x, self.context)

    def params_at(self, x: Array, index: Array | int) -> Array:
        """``made.params_at(x, index, context)``: ``(..., num_params)``."""
        return self.made.params_at(x, index, self.context)


def _check_num_params(num_params: int | None, params_per_dim: int | None) -> int:
    """``num_params``, or its former name ``params_per_dim`` (deprecated); one is required."""
    num_params = renamed("num_params", num_params, "params_per_dim", params_per_dim)
    if num_params is None:
        raise ValueError(
            "MADE needs num_params, the number of outputs per dimension (e.g. 2 for an "
            "affine transformer: transformer.num_params)."
        )
    return check_int("num_params", num_params, minimum=1)


def _connectivity(
    dim: int,
    hidden_dims: tuple[int, ...],
    num_params: int,
    order: masks_lib.OrderLike,
    hidden_degrees: str,
    context_dim: int,
    residual: bool,
    mask_seed: int | None,
    rngs: nnx.Rngs,
) -> tuple[np.ndarray, list[np.ndarray], int | None]:
    """A MADE's input degrees, its layers' masks, and the seed to record (None: none drawn)."""
    needs_seed = (isinstance(order, str) and order == "random") or hidden_degrees == "random"
    if mask_seed is not None:
        seed = check_int("mask_seed", mask_seed, minimum=0)
    elif needs_seed:  # a host integer drawn once; pass mask_seed to stay off the device
        seed = host_seed(rngs)
    else:
        seed = 0
    degrees = masks_lib.input_degrees(dim, order, seed=seed)
    layer_masks, _ = masks_lib.made_masks(
        degrees,
        hidden_dims,
        num_params,
        hidden_degrees,
        context_dim > 0,
        seed=seed + 1,
        residual=residual,
    )
    return degrees, layer_masks, seed if needs_seed else None
