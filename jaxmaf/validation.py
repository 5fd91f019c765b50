"""Argument checks shared by every module: one place, one wording of the errors.

Each check raises a ``ValueError`` that names the argument, what was expected
and what came, and returns the value normalised to a Python type (numpy
integers and floats are accepted wherever Python ones are; ``bool`` is never
taken for a number).
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer (Python or numpy, not bool), at least ``minimum``.

    Args:
      name: the argument's name, used in the error message.
      value: what the caller passed.
      minimum: smallest allowed value (None: no bound).

    Returns:
      ``value`` as a Python ``int``.

    Raises:
      ValueError: not an integer, a bool, or below ``minimum``.

    Examples:
      >>> check_int("num_bins", np.int64(8), minimum=1)
      8
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Expected {name} to be an integer, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = True,
) -> float:
    """A finite real number (Python or numpy, not bool) within ``(low, high)``.

    Args:
      name: the argument's name, used in the error message.
      value: what the caller passed.
      low: lower bound (None: none).
      high: upper bound (None: none).
      low_open: exclude ``low`` itself (default) or include it.
      high_open: exclude ``high`` itself (default) or include it.

    Returns:
      ``value`` as a Python ``float``.

    Raises:
      ValueError: not a real number, a bool, NaN or infinite, or out of range.

    Examples:
      >>> check_float("tail_bound", np.float32(3.0), low=0.0)
      3.0
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"Expected {name} to be a real number, got {value!r}.")
    value = float(value)
    if low is not None and high is not None:
        expected = (
            f"a finite number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        )
    elif low is not None:
        expected = f"a finite number {'>' if low_open else '>='} {low}"
    elif high is not None:
        expected = f"a finite number {'<' if high_open else '<='} {high}"
    else:
        expected = "a finite number"
    if not math.isfinite(value):
        raise ValueError(f"Expected {name} to be {expected}, got {value}.")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"Expected {name} to be {expected}, got {value}.")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"Expected {name} to be {expected}, got {value}.")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of a fixed set of names.

    Args:
      name: the argument's name, used in the error message.
      value: what the caller passed.
      choices: the allowed names.

    Returns:
      ``value``.

    Raises:
      ValueError: anything not in ``choices``.

    Examples:
      >>> check_choice("base", "mog", ("gaussian", "mog"))
      'mog'
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Unknown {name} {value!r}: expected one of {choices}.")
    return value


def renamed(new: str, new_value: Any, old: str, old_value: Any, default: Any = None) -> Any:
    """The value of an argument that was renamed, given under either name.

    The old spelling still works, with a ``DeprecationWarning`` naming the new one.

    Args:
      new: the argument's name now.
      new_value: what was passed under it (None: not passed).
      old: its former name.
      old_value: what was passed under that (None: not passed).
      default: the value when neither was passed.

    Returns:
      the value passed, or ``default``.

    Raises:
      ValueError: both names given, with different values.

    Examples:
      >>> renamed("num_params", 2, "params_per_dim", None)
      2
    """
    if old_value is None:
        return default if new_value is None else new_value
    warnings.warn(
        f"{old}= is deprecated: use {new}= (the same meaning).", DeprecationWarning, stacklevel=3
    )
    if new_value is not None and new_value != old_value:
        raise ValueError(
            f"Got {new}={new_value!r} and its former name {old}={old_value!r}: pass {new}= only."
        )
    return old_value


def check_rngs(rngs: Any) -> Any:
    """An ``nnx.Rngs`` (where the parameters' random draws come from).

    Args:
      rngs: what the caller passed.

    Returns:
      ``rngs``.

    Raises:
      ValueError: anything else (an int seed, a JAX key, None).

    Examples:
      >>> check_rngs(nnx.Rngs(0)) is not None
      True
    """
    from flax import nnx

    if not isinstance(rngs, nnx.Rngs):
        raise ValueError(
            f"Expected rngs to be a flax.nnx.Rngs (e.g. nnx.Rngs(0)), got {type(rngs).__name__}: "
            f"{rngs!r}."
        )
    return rngs


def check_param_dtype(param_dtype: Any) -> np.dtype:
    """A floating dtype that JAX will keep as given (no silent float64 -> float32).

    Args:
      param_dtype: a dtype-like (``jnp.float32``, ``"float64"``, ...), or None
        for the default: float64 when ``jax_enable_x64`` is on, float32
        otherwise.

    Returns:
      the dtype.

    Raises:
      ValueError: not a dtype, not floating point, or a 64-bit dtype while
        ``jax_enable_x64`` is off (JAX would silently store float32).

    Examples:
      >>> check_param_dtype("float32")
      dtype('float32')
    """
    if param_dtype is None:
        return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
    try:
        dtype = np.dtype(param_dtype)
    except TypeError:
        raise ValueError(f"Expected param_dtype to be a dtype, got {param_dtype!r}.") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"Expected param_dtype to be a floating dtype, got {dtype}.")
    if np.dtype(jax.dtypes.canonicalize_dtype(dtype)) != dtype:
        raise ValueError(
            f"Expected a param_dtype JAX can hold, got {dtype} while jax_enable_x64 is off "
            "(it would silently become float32): enable x64 or pass float32."
        )
    return dtype


def check_key(key: Any) -> Any:
    """A JAX random key: ``jax.random.key(seed)`` (typed) or a legacy ``PRNGKey`` (uint32).

    Args:
      key: what the caller passed.

    Returns:
      ``key``.

    Raises:
      ValueError: anything else (an int seed, a numpy array, None).

    Examples:
      >>> check_key(jax.random.key(0)).shape
      ()
    """
    if isinstance(key, jax.Array):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
            return key
    raise ValueError(
        f"Expected key to be a JAX random key (e.g. jax.random.key(0)), got {type(key).__name__}: "
        f"{key!r}."
    )


def constructor_signature(cls: type) -> type:
    """Class decorator: ``help()`` and ``inspect.signature`` show the constructor's arguments.

    NNX's module metaclass defines ``__call__(*args, **kwargs)``, which ``inspect`` otherwise
    reports as the class's signature.

    Args:
      cls: a class with an ``__init__``.

    Returns:
      ``cls``, with ``__signature__`` set to that of ``__init__`` without ``self``.

    Examples:
      >>> import inspect
      >>> list(inspect.signature(jaxmaf.MAF).parameters)[:3]
      ['dim', 'num_layers', 'hidden_dims']
    """
    sig = inspect.signature(cls.__init__)
    cls.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
    return cls


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


def host_seed(rngs: Any) -> int:
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


def default_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, float32 otherwise."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def check_event(x: Any, dim: int, name: str = "x") -> None:
    """Raises ValueError unless ``x`` is real (or integer) with shape ``(..., dim)``."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)  # a list or a scalar
    shape = tuple(x.shape)
    if len(shape) < 1 or shape[-1] != dim:
        raise ValueError(f"Expected {name} of shape (..., {dim}), got shape {shape}.")

    dtype = x.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"Expected real {name}, got dtype {dtype}.")


def check_context(context: Any, context_dim: int) -> None:
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


def check_sample_shape(sample_shape: Any) -> tuple[int, ...]:
    """A sample shape: an int >= 0 or a sequence of them.

    Args:
      sample_shape: what the caller passed.

    Returns:
      the shape as a tuple of Python ints.

    Raises:
      ValueError: anything else (a float, a negative size, None).

    Examples:
      >>> check_sample_shape(3), check_sample_shape((2, np.int64(4)))
      ((3,), (2, 4))
    """
    if isinstance(sample_shape, numbers.Integral) and not isinstance(sample_shape, bool):
        shape: tuple = (sample_shape,)
    elif isinstance(sample_shape, Sequence | np.ndarray):
        shape = tuple(sample_shape)
    else:
        shape = (None,)  # refused below
    if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0 for n in shape):
        raise ValueError(
            f"Expected sample_shape to be an int >= 0 or a tuple of them, got {sample_shape!r}."
        )
    return tuple(int(n) for n in shape)
