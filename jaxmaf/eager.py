"""Eager calls that compile once: a method called outside ``jit`` runs a cached program.

A flow's ``log_prob``, ``sample`` and ``sample_and_log_prob`` called eagerly
(in a notebook, a script) would otherwise dispatch op by op, or retrace a
sequential sampler on every call. :func:`call` compiles the method once per
method, static arguments and module structure, and runs the cached program;
under a transformation (``jit``, ``grad``, ``vmap``) it calls the method
directly, so it composes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

try:  # JAX's own test of "no transformation is tracing now" (private, hence the fallback)
    from jax._src.core import trace_state_clean as _eager
except ImportError:  # pragma: no cover - a JAX without it: every call runs uncompiled

    def _eager() -> bool:
        return False


@functools.cache
def _modules_are_pytrees() -> bool:
    """Whether this flax registers NNX modules as JAX pytrees (flax >= 0.11 does).

    Asked on the first eager call, not at import: ``import jaxmaf`` must not start a JAX
    backend (``jax.distributed.initialize`` has to come first in multi-process runs).
    """

    class Probe(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros(()))

    return len(jax.tree.leaves(Probe())) == 1


@functools.lru_cache(maxsize=256)
def _compiled(name: str, statics: tuple, writes_state: bool) -> Callable[..., object]:
    """A compiled ``module.<name>(*arrays, *statics)``, one per method and static arguments.

    The module is an argument, not a constant: a parameter update reuses the program, and
    its structure (graph definition, static attributes such as batch norm's mode) is part
    of the cache key, so a structural change compiles anew instead of running a stale
    program. Read-only calls pass the module as a pytree to ``jax.jit`` (0.15 ms of Python
    per call for a 4-layer flow); a call that writes state (batch statistics) goes through
    ``nnx.jit``, which writes it back (1.6 ms of graph traversal).
    """

    def run(module, *arrays):
        return getattr(module, name)(*arrays, *statics)

    return nnx.jit(run) if writes_state or not _modules_are_pytrees() else jax.jit(run)


def _hashable(statics: tuple) -> bool:
    try:
        hash(statics)
    except TypeError:
        return False
    return True


def call(
    module: nnx.Module, name: str, statics: tuple, *arrays, writes_state: bool = False
) -> object:
    """``module.<name>(*arrays, *statics)``: compiled and cached when called eagerly.

    Args:
      module: the NNX module whose method runs.
      name: the method's name; it takes the arrays, then the statics.
      statics: hashable arguments that select the program (shapes, flags); an
        unhashable one runs the method uncompiled.
      *arrays: array arguments (and None).
      writes_state: the method changes the module's state (it is written back).

    Returns:
      what the method returns.

    Examples:
      >>> flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
      >>> call(flow, "_log_prob", ("exact", 0.0, None, False), jnp.zeros((3, 2)), None).shape
      (3,)
    """
    if _eager() and _hashable(statics):
        return _compiled(name, statics, writes_state)(module, *arrays)
    return getattr(module, name)(*arrays, *statics)
