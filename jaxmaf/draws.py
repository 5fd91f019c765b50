"""A new flow's random initial values, from few compiled programs.

Called outside ``jit``, a JAX initializer compiles a program for each new
shape (0.1-0.2 s on a CPU), and a numpy array handed to ``jnp.asarray``
compiles one too. A flow of a new shape used to spend most of its build
there: 1.1-1.5 s for a 4-layer MAF on a 2-core CPU. :func:`draw` gives the
same numbers from one program per power-of-two length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Init = Callable[[Array, tuple[int, ...], jnp.dtype], Array]

# Initializers that are an elementwise map of JAX's random stream, the shape
# entering only through scalars: ``init -> (distribution, scale)``.
_FLAT_FORMS: dict[Callable, tuple[str, float]] = {}


def flat_form(distribution: str, scale: float = 1.0) -> Callable[[Init], Init]:
    """Registers an initializer as a flat form that :func:`draw` makes by length.

    Args:
      distribution: what the initializer draws for ``shape``, numbers in
        JAX's ``jax.random`` order: ``"uniform"`` (``U(-scale, scale)``),
        ``"lecun_normal"`` (``scale`` times LeCun normal of a 2-D kernel,
        its fan-in ``shape[0]``), ``"normal"`` (standard normal, ``scale`` 1)
        or ``"unit_uniform"`` (``U(0, 1)``, ``scale`` 1).
      scale: the scalar of the form.

    Returns:
      a decorator that registers the initializer and returns it unchanged.

    Raises:
      ValueError: an unknown distribution.

    Examples:
      >>> init = flat_form("uniform", 0.5)(
      ...     lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -0.5, 0.5)
      ... )
      >>> draw(init, jax.random.key(0), (3,), jnp.float32).shape
      (3,)
    """
    if distribution not in _PROGRAMS:
        raise ValueError(
            f"Unknown distribution {distribution!r}: expected one of {sorted(_PROGRAMS)}."
        )

    def register(init: Init) -> Init:
        _FLAT_FORMS[init] = (distribution, float(scale))
        return init

    return register


def zeros(key: Array | None, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
    """The zero initializer (a scale-0 draw; :func:`draw` makes it on the host).

    Args:
      key: unused.
      shape: the shape.
      dtype: the dtype.

    Returns:
      zeros of ``shape``.

    Examples:
      >>> draw(zeros, None, (2,), jnp.float32).tolist()
      [0.0, 0.0]
    """
    return jnp.zeros(shape, dtype)


def full(shape: tuple[int, ...], value: float, dtype: jnp.dtype) -> Array:
    """An array of one value, made on the host (an eager ``jnp.full`` compiles per shape).

    Args:
      shape: the shape.
      value: the value of every entry.
      dtype: the dtype.

    Returns:
      the array, on JAX's default device.

    Examples:
      >>> full((2,), 1.0, jnp.float32).tolist()
      [1.0, 1.0]
    """
    return jax.device_put(np.full(shape, value, dtype))


def standard_normal(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
    """``jax.random.normal(key, shape, dtype)`` as an initializer (a mixture base's means).

    Args:
      key: a JAX random key.
      shape: the shape drawn.
      dtype: the dtype drawn.

    Returns:
      standard normal draws of ``shape``.

    Examples:
      >>> standard_normal(jax.random.key(0), (2, 3), jnp.float32).shape
      (2, 3)
    """
    return jax.random.normal(key, shape, dtype)


def standard_uniform(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
    """``jax.random.uniform(key, shape, dtype)``: ``U(0, 1)`` (a random order's keys).

    Args:
      key: a JAX random key.
      shape: the shape drawn.
      dtype: the dtype drawn.

    Returns:
      uniform draws in ``[0, 1)`` of ``shape``.

    Examples:
      >>> bool(jnp.all(standard_uniform(jax.random.key(0), (4,), jnp.float32) < 1))
      True
    """
    return jax.random.uniform(key, shape, dtype)


def draw(init: Init, key: Array | None, shape: tuple[int, ...], dtype: jnp.dtype) -> Array:
    """``init(key, shape, dtype)``, the same numbers, with few compiled programs.

    JAX's random stream is counter-based (``jax_threefry_partitionable``, on
    by default): the first ``n`` numbers of a longer draw are the draw of
    ``n``. An initializer registered with :func:`flat_form` is drawn by one
    program per power-of-two length (at least 256) and cut on the host, so a
    flow of a new shape compiles nothing an earlier flow compiled. Zeros are
    made on the host. Any other initializer, or the stream option off, gets
    one compiled program per ``(init, shape, dtype)``. Inside a trace
    (``nnx.jit``, ``nnx.eval_shape``) it is ``init(key, shape, dtype)``.

    Args:
      init: an initializer ``(key, shape, dtype) -> Array`` (hashable: functions are).
      key: a JAX random key (unused by :func:`zeros`).
      shape: the shape drawn.
      dtype: the dtype drawn.

    Returns:
      the array ``init`` returns.

    Examples:
      >>> a = draw(standard_normal, jax.random.key(0), (3, 5), jnp.float32)
      >>> bool(jnp.all(a == jax.random.normal(jax.random.key(0), (3, 5), jnp.float32)))
      True
    """
    shape, dtype = tuple(int(n) for n in shape), jnp.dtype(dtype)
    if isinstance(key, jax.core.Tracer):
        return init(key, shape, dtype)
    if init is zeros:
        return full(shape, 0.0, dtype)
    form = _FLAT_FORMS.get(init)
    if (
        form is None
        or not jax.config.jax_threefry_partitionable
        or (form[0] == "lecun_normal" and len(shape) != 2)
    ):
        return _compiled(init, shape, dtype)(key)
    distribution, scale = form
    size = int(np.prod(shape))
    length = max(256, 1 << max(size - 1, 0).bit_length())
    if distribution == "uniform":
        scalars: tuple[float, ...] = (-scale, scale)
    elif distribution == "lecun_normal":  # the stddev times the scale, as XLA folds them
        variance = np.asarray(1.0 / max(shape[0], 1), dtype)
        stddev = np.sqrt(variance) / np.asarray(0.87962566103423978, dtype)
        scalars = (stddev * np.asarray(scale, dtype),)
    else:
        scalars = ()
    flat = _flat_program(distribution, length, dtype)(
        key, *(jnp.asarray(c, dtype) for c in scalars)
    )
    return jax.device_put(np.asarray(flat)[:size].reshape(shape))  # (jnp.asarray would compile)


@functools.lru_cache(maxsize=1024)
def _compiled(init: Init, shape: tuple[int, ...], dtype: jnp.dtype) -> Callable:
    return jax.jit(lambda key: init(key, shape, dtype))


def _uniform(length, dtype, key, low, high):
    return jax.random.uniform(key, (length,), dtype, low, high)


def _lecun_normal(length, dtype, key, stddev):
    return jax.random.truncated_normal(key, -2, 2, (length,), dtype) * stddev


def _normal(length, dtype, key):
    return jax.random.normal(key, (length,), dtype)


def _unit_uniform(length, dtype, key):
    return jax.random.uniform(key, (length,), dtype)


_PROGRAMS = {
    "uniform": _uniform,
    "lecun_normal": _lecun_normal,
    "normal": _normal,
    "unit_uniform": _unit_uniform,
}


@functools.lru_cache(maxsize=256)
def _flat_program(distribution: str, length: int, dtype: jnp.dtype) -> Callable:
    """``length`` numbers of a flat form, its scalars as arguments (rounded as in the form)."""
    return jax.jit(functools.partial(_PROGRAMS[distribution], length, dtype))


flat_form("normal")(standard_normal)
flat_form("unit_uniform")(standard_uniform)
