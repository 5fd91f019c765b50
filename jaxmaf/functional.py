"""A flow's state as plain dicts of arrays, for hand-written jitted steps.

``nnx.split`` returns :class:`flax.nnx.State` objects whose leaves are
``nnx.Variable`` pytree nodes. Every call of a jitted function flattens its
arguments and rebuilds its outputs, and for these nodes JAX runs Python code
per variable, once for the parameters and twice more for Adam's two moments.
On a 2-d flow's train step that is about 7% of the step; the same parameters
as nested ``dict`` s of arrays, which JAX flattens in C++, cost about 1-2%
(``benchmarks/interactive.py``). :func:`split` hands them over that way.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

PlainState = dict[Any, Any]


def split(module: nnx.Module) -> tuple[nnx.GraphDef, PlainState, PlainState]:
    """A flow (or any NNX module) as ``(graphdef, params, rest)`` with plain dicts.

    The functional form for your own training step: ``params`` holds the
    ``nnx.Param`` arrays and ``rest`` everything else (permutation indices,
    batch-norm statistics), each a nested ``dict`` of arrays keyed like the
    module's attributes (``params["layers"][0]["conditioner"]["output"]
    ["kernel"]``). Optax takes ``params`` as it is. ``nnx.merge(graphdef,
    params, rest)`` rebuilds the module, inside ``jax.jit`` too, and
    ``nnx.update(module, params)`` writes trained parameters back. Batch
    norm's running averages move in the merged module
    (``update_batch_stats``): take them out with ``split(merged)[2]``.

    Args:
      module: the flow (``jaxmaf.MAF``, ``jaxmaf.IAF``, ``jaxmaf.Flow``) or
        any other NNX module, such as a ``jaxmaf.MADE``.

    Returns:
      ``(graphdef, params, rest)``: the module's structure (static, hashable)
      and two nested dicts of arrays. The arrays are the module's own, not
      copies.

    Raises:
      ValueError: ``module`` is not an NNX module.

    Examples:
      >>> flow = jaxmaf.MAF(2, 2, (16,), rngs=nnx.Rngs(0))
      >>> graphdef, params, rest = jaxmaf.split(flow)
      >>> type(params), params["layers"][0]["conditioner"]["output"]["kernel"].shape
      (<class 'dict'>, (16, 4))
      >>> x = jnp.zeros((3, 2))
      >>> log_prob = jax.jit(lambda p, x: nnx.merge(graphdef, p, rest).log_prob(x))
      >>> bool(jnp.allclose(log_prob(params, x), flow.log_prob(x)))
      True
    """
    if not isinstance(module, nnx.Module):
        raise ValueError(
            f"Expected module to be an NNX module (a jaxmaf flow or MADE), got a "
            f"{type(module).__name__}."
        )
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
