"""MADE: the masked autoencoder for distribution estimation, as Flax NNX modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf import masks as masks_lib
from jaxmaf.validation import (
    check_float,
    check_int,
    check_param_dtype,
    check_rngs,
    constructor_signature,
)

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


def check_hidden_dims(hidden_dims: Any) -> tuple[int, ...]:
    """A sequence of hidden widths, each an integer >= 1 (an empty sequence is allowed).

    Args:
      hidden_dims: what the caller passed.

    Returns:
      the widths as a tuple of Python ints.

    Raises:
      ValueError: a single int, not a sequence, or an entry that is not an integer >= 1.

    Examples:
      >>> check_hidden_dims([64, np.int64(64)])
      (64, 64)
    """
    if isinstance(hidden_dims, str) or not isinstance(hidden_dims, Sequence | np.ndarray):
        raise ValueError(
            f"Expected hidden_dims to be a sequence of integers >= 1 (e.g. (64, 64)), got "
            f"{hidden_dims!r}."
        )
    try:
        return tuple(check_int("hidden_dims entry", h, minimum=1) for h in hidden_dims)
    except ValueError:
        raise ValueError(
            f"Expected every hidden_dims entry to be an integer >= 1, got {hidden_dims!r}."
        ) from None


def host_seed(rngs: nnx.Rngs) -> int:
    """A numpy seed drawn from ``rngs`` (a device value pulled to the host: not under tracing).

    Args:
      rngs: NNX random streams (``params`` is used).

    Returns:
      an int in ``[0, 2**31 - 1)``.

    Raises:
      ValueError: ``rngs`` is abstract (under ``jit`` or ``eval_shape``): pass a
        ``mask_seed`` instead.

    Examples:
      >>> 0 <= host_seed(nnx.Rngs(0)) < 2**31 - 1
      True
    """
    try:
        return int(jax.random.randint(rngs.params(), (), 0, 2**31 - 1))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError) as e:
        raise ValueError(
            "A random order, permutation or hidden-degree rule draws its numpy seed from rngs, "
            "which is abstract here (under jit or eval_shape): pass mask_seed=<int> to fix the "
            "masks without a device value."
        ) from e


def default_dtype() -> jnp.dtype:
    """float64 when ``jax_enable_x64`` is on, float32 otherwise."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


class Constant:
    """A hashable, read-only numpy array kept out of a module's state.

    Masks are compile-time constants of the program (not parameters and not
    state that jit would take as an input); NNX keeps non-array attributes in
    the graph definition, which must be hashable.
    """

    __slots__ = ("array", "_hash")

    def __init__(self, array: np.ndarray):
        array = np.array(array)
        array.setflags(write=False)
        self.array = array
        self._hash = hash((array.shape, array.dtype.str, array.tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Constant)
            and self._hash == other._hash
            and np.array_equal(self.array, other.array)
        )

    def __repr__(self) -> str:
        return f"Constant(shape={self.array.shape}, dtype={self.array.dtype})"


def uniform_fan_in(fan_in: int) -> Callable[[Array, tuple[int, ...], jnp.dtype], Array]:
    """An initializer drawing from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    PyTorch's and equinox's default for biases; MADE uses it for its hidden
    biases. With zero biases every ReLU unit of a MADE has its kink on a
    hyperplane through the origin (in 2-d: the whole conditioner is
    piecewise linear with one kink, at 0), and training has to move the
    kinks out from there first; random biases spread them over the data
    from the start (measured in ``benchmarks/accuracy.py``: 0.29 nats lower
    test NLL on average over its 8 data sets at equal budget, up to 0.8 in 2-d).

    Args:
      fan_in: the number of inputs of the layer (>= 1).

    Returns:
      an initializer ``(key, shape, dtype) -> Array``.

    Examples:
      >>> b = uniform_fan_in(4)(jax.random.key(0), (1000,), jnp.float32)
      >>> bool(jnp.all(jnp.abs(b) <= 0.5)), b.dtype
      (True, dtype('float32'))
    """
    limit = 1.0 / np.sqrt(max(int(fan_in), 1))

    def init(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


@constructor_signature
class MaskedLinear(nnx.Module):
    """A dense layer whose kernel is multiplied by a fixed binary mask.

    ``y = x @ (kernel * mask) + bias``; the mask is a constant of the program.

    Args:
      mask: boolean array ``(in_features, out_features)``.
      use_bias: whether to add a bias.
      kernel_init: initializer of the kernel (applied before masking;
        default LeCun normal).
      bias_init: initializer of the bias (default zeros).
      param_dtype: dtype of the parameters (default: float64 under
        ``jax_enable_x64``, else float32).
      rngs: NNX random streams (``params`` is used).

    Examples:
      >>> layer = MaskedLinear(np.tril(np.ones((3, 3), bool)), rngs=nnx.Rngs(0))
      >>> layer(jnp.ones(3)).shape
      (3,)
    """

    def __init__(
        self,
        mask: np.ndarray,
        *,
        use_bias: bool = True,
        kernel_init: Callable | None = None,
        bias_init: Callable | None = None,
        param_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ):
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"Expected a 2-D mask (in, out), got shape {mask.shape}.")
        check_rngs(rngs)
        fan_in, fan_out = mask.shape
        dtype = check_param_dtype(param_dtype)
        kernel_init = kernel_init or nnx.initializers.lecun_normal()
        self.in_features, self.out_features = fan_in, fan_out
        self.mask = Constant(mask)
        self.kernel = nnx.Param(kernel_init(rngs.params(), (fan_in, fan_out), dtype))
        if not use_bias:
            self.bias = None
        elif bias_init is None:
            self.bias = nnx.Param(jnp.zeros((fan_out,), dtype))
        else:
            self.bias = nnx.Param(bias_init(rngs.params(), (fan_out,), dtype))

    def masked_kernel(self) -> Array:
        """The effective kernel ``kernel * mask``, shape ``(in, out)``."""
        kernel = self.kernel[...]
        return kernel * jnp.asarray(self.mask.array, kernel.dtype)

    def __call__(self, x: Array) -> Array:
        """Applies the layer to ``x`` of shape ``(..., in)``; returns ``(..., out)``."""
        y = x @ self.masked_kernel()
        if self.bias is not None:
            y = y + self.bias[...]
        return y

    def columns(self, x: Array, start: Array | int, size: int) -> Array:
        """Outputs ``start .. start + size - 1`` alone: ``self(x)[..., start:start + size]``.

        Args:
          x: inputs ``(..., in)``.
          start: first output column (may be traced).
          size: number of columns (static).

        Returns:
          ``(..., size)``, computed from those columns of the kernel only.
        """
        kernel = jax.lax.dynamic_slice_in_dim(self.kernel[...], start, size, axis=1)
        mask = jax.lax.dynamic_slice_in_dim(jnp.asarray(self.mask.array), start, size, axis=1)
        y = x @ (kernel * mask.astype(kernel.dtype))
        if self.bias is not None:
            y = y + jax.lax.dynamic_slice_in_dim(self.bias[...], start, size)
        return y


@constructor_signature
class MADE(nnx.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    One pass computes the parameters of every conditional: output ``(..., i, :)``
    depends only on inputs that precede ``i`` in the order (and on the context).

    Args:
      dim: number of autoregressive inputs D (>= 1).
      hidden_dims: widths of the hidden layers, each >= 1 (may be smaller than
        D, and may be empty for a single masked linear map).
      params_per_dim: number of outputs per dimension P (2 for an affine
        transformer: shift and unconstrained scale).
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
      output_init_scale: standard deviation multiplier of the output layer's
        initial kernel relative to LeCun-normal; 0 makes every output start at
        exactly its bias (zero), so a flow built on it starts at the identity.
        Hidden kernels are LeCun normal and hidden biases
        ``U(+-1/sqrt(fan_in))`` (see :func:`uniform_fan_in`).
      param_dtype: dtype of the parameters (default float32, float64 under
        ``jax_enable_x64``).
      mask_seed: numpy seed of a random order and random hidden degrees
        (an int >= 0; recorded as ``self.mask_seed``). None: drawn from
        ``rngs`` when needed (a device value pulled to the host, so not
        under ``nnx.eval_shape``).
      rngs: NNX random streams (``params``).

    Raises:
      ValueError: ``dim < 1``, a hidden width <= 0, ``params_per_dim < 1``,
        ``context_dim < 0``, unknown activation, order or hidden-degree rule,
        unequal widths with ``residual=True``.

    Examples:
      >>> made = MADE(3, (16, 16), 2, rngs=nnx.Rngs(0))
      >>> made(jnp.ones((5, 3))).shape
      (5, 3, 2)
    """

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int],
        params_per_dim: int,
        *,
        context_dim: int = 0,
        activation: str | Callable[[Array], Array] = "relu",
        order: masks_lib.OrderLike = "natural",
        hidden_degrees: str = "equal",
        residual: bool = False,
        output_init_scale: float = 0.0,
        param_dtype: jnp.dtype | None = None,
        mask_seed: int | None = None,
        rngs: nnx.Rngs,
    ):
        dim = check_int("dim", dim, minimum=1)
        hidden_dims = check_hidden_dims(hidden_dims)
        params_per_dim = check_int("params_per_dim", params_per_dim, minimum=1)
        context_dim = check_int("context_dim", context_dim, minimum=0)
        output_init_scale = check_float("output_init_scale", output_init_scale)
        param_dtype = check_param_dtype(param_dtype)
        check_rngs(rngs)
        if hidden_degrees not in masks_lib.HIDDEN_DEGREES:
            raise ValueError(
                f"Unknown hidden_degrees {hidden_degrees!r}: expected one of "
                f"{masks_lib.HIDDEN_DEGREES}."
            )
        if residual and len(set(hidden_dims)) > 1:
            raise ValueError(
                f"Expected equal hidden widths for a residual MADE, got {hidden_dims}."
            )
        self.activation_fn = get_activation(activation)
        self.residual = bool(residual)
        needs_seed = (isinstance(order, str) and order == "random") or hidden_degrees == "random"
        if mask_seed is not None:
            seed = check_int("mask_seed", mask_seed, minimum=0)
        elif needs_seed:  # a host integer drawn once; pass mask_seed to stay off the device
            seed = host_seed(rngs)
        else:
            seed = 0
        self.mask_seed = seed if needs_seed else None
        degrees = masks_lib.input_degrees(dim, order, seed=seed)
        layer_masks, _ = masks_lib.made_masks(
            degrees,
            hidden_dims,
            params_per_dim,
            hidden_degrees,
            context_dim > 0,
            seed=seed + 1,
            residual=residual,
        )
        dtype = param_dtype

        self.dim, self.params_per_dim, self.context_dim = dim, params_per_dim, context_dim
        self.hidden_dims = hidden_dims
        self.degrees = Constant(degrees)
        self.hidden = nnx.List(
            [
                MaskedLinear(m, bias_init=uniform_fan_in(m.shape[0]), param_dtype=dtype, rngs=rngs)
                for m in layer_masks[:-1]
            ]
        )
        base_init = nnx.initializers.lecun_normal()

        def out_init(key, shape, dtype):
            return output_init_scale * base_init(key, shape, dtype)

        self.output = MaskedLinear(
            layer_masks[-1], kernel_init=out_init, param_dtype=dtype, rngs=rngs
        )
        first_width = hidden_dims[0] if hidden_dims else dim * params_per_dim
        self.context_proj = (
            nnx.Linear(context_dim, first_width, use_bias=False, param_dtype=dtype, rngs=rngs)
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

    def __call__(self, x: Array, context: Array | None = None) -> Array:
        """Computes every conditional's parameters in one pass.

        Args:
          x: inputs of shape ``(..., dim)``.
          context: ``(..., context_dim)`` for a conditional MADE (batch
            dimensions broadcast against those of ``x``), else None.

        Returns:
          array of shape ``broadcast(...) + (dim, params_per_dim)``.

        Raises:
          ValueError: wrong last dimension of ``x`` or ``context``, context
            missing on a conditional MADE or given to an unconditional one.
        """
        check_event(x, self.dim, "x")
        check_context(context, self.context_dim)
        out = self.output(self._features(x, context))
        if not self.hidden and self.context_proj is not None:
            out = out + self.context_proj(context)
        return out.reshape(out.shape[:-1] + (self.dim, self.params_per_dim))

    def params_at(self, x: Array, index: Array | int, context: Array | None = None) -> Array:
        """The parameters of dimension ``index`` alone: ``self(x, context)[..., index, :]``.

        The hidden layers run in full; the output layer computes only the
        ``params_per_dim`` columns of that dimension. The exact sequential
        pass of :class:`jaxmaf.MaskedAutoregressive` determines one dimension
        per pass and calls this instead of the whole MADE.

        Args:
          x: inputs ``(..., dim)``.
          index: the dimension (an int or a traced int32 scalar).
          context: as in :meth:`__call__`.

        Returns:
          ``(..., params_per_dim)``.

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
        p = self.params_per_dim
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
        """``made(x, context)``: ``(..., dim) -> (..., dim, params_per_dim)``."""
        return self.made(x, self.context)

    def params_at(self, x: Array, index: Array | int) -> Array:
        """``made.params_at(x, index, context)``: ``(..., params_per_dim)``."""
        return self.made.params_at(x, index, self.context)


def check_event(x: Array, dim: int, name: str = "x") -> None:
    """Raises ValueError unless ``x`` is real (or integer) with shape ``(..., dim)``."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)  # a list or a scalar
    shape = tuple(x.shape)
    if len(shape) < 1 or shape[-1] != dim:
        raise ValueError(f"Expected {name} of shape (..., {dim}), got shape {shape}.")
    dtype = x.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"Expected real {name}, got dtype {dtype}.")


def check_context(context: Array | None, context_dim: int) -> None:
    """Raises ValueError unless ``context`` matches a flow's ``context_dim``."""
    if context_dim == 0:
        if context is not None:
            raise ValueError(
                "Got a context, but this model is unconditional (context_dim=0); "
                "build it with context_dim=... to condition on one."
            )
        return
    if context is None:
        raise ValueError(
            f"This model is conditional (context_dim={context_dim}) and needs "
            f"context= of shape (..., {context_dim}); got None."
        )
    check_event(context, context_dim, "context")
