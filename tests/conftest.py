"""Shared fixtures: a registry of flow constructors driving the property tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmaf

CONTEXT_DIM = 3


def batch_norm_maf(dim, num_layers, rngs, **kw):
    """A MAF with batch norm between layers, in eval mode with non-trivial running statistics."""
    flow = jaxmaf.MAF(dim, num_layers, (16,), batch_norm=True, rngs=rngs, **kw)
    for i, bn in enumerate(flow.batch_norms):
        bn.mean[...] = 0.3 * jnp.arange(dim, dtype=bn.mean.dtype) - i
        bn.var[...] = 1.5 + 0.2 * jnp.arange(dim, dtype=bn.var.dtype)
    flow.eval()
    return flow


# name -> (constructor(dim, num_layers, rngs), context_dim)
FLOWS = {
    "maf": (functools.partial(jaxmaf.MAF, hidden_dims=(16, 16)), 0),
    "iaf": (functools.partial(jaxmaf.IAF, hidden_dims=(16, 16)), 0),
    "maf_cond": (
        functools.partial(jaxmaf.MAF, hidden_dims=(16, 16), context_dim=CONTEXT_DIM),
        CONTEXT_DIM,
    ),
    "iaf_cond": (
        functools.partial(jaxmaf.IAF, hidden_dims=(16, 16), context_dim=CONTEXT_DIM),
        CONTEXT_DIM,
    ),
    "maf_random_tanh": (
        functools.partial(
            jaxmaf.MAF,
            hidden_dims=(7,),
            permutation="random",
            hidden_degrees="random",
            activation="tanh",
        ),
        0,
    ),
    "maf_exp_softclamp": (
        functools.partial(
            jaxmaf.MAF, hidden_dims=(16,), transformer=jaxmaf.Affine(scale="exp_softclamp")
        ),
        0,
    ),
    "maf_spline": (
        functools.partial(jaxmaf.MAF, hidden_dims=(16,), transformer=jaxmaf.Spline(4, 2.0)),
        0,
    ),
    "iaf_spline_cond": (
        functools.partial(
            jaxmaf.IAF, hidden_dims=(16,), transformer="spline", context_dim=CONTEXT_DIM
        ),
        CONTEXT_DIM,
    ),
    "maf_residual_mog": (
        functools.partial(
            jaxmaf.MAF, hidden_dims=(16, 16, 16), residual=True, base="mog", num_components=3
        ),
        0,
    ),
    "maf_batchnorm_eval": (batch_norm_maf, 0),
}
DIMS = (1, 2, 5, 11)


def perturb(module: nnx.Module, seed: int = 0, scale: float = 0.3) -> nnx.Module:
    """Moves every parameter away from its initial value (the identity flow) in place.

    The noise is drawn on the host (NumPy): drawing it with ``jax.random`` compiled one
    program per parameter shape, about 1 s per new flow, a tenth of the suite's time.
    """
    params = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    noisy = [np.asarray(p) + scale * rng.standard_normal(p.shape).astype(p.dtype) for p in leaves]
    nnx.update(module, jax.tree.unflatten(treedef, [jnp.asarray(v) for v in noisy]))
    return module


def make_flow(name: str, dim: int, num_layers: int = 3, seed: int = 0) -> nnx.Module:
    ctor, _ = FLOWS[name]
    return perturb(ctor(dim, num_layers, rngs=nnx.Rngs(seed)), seed=seed + 100)


def standard_normal_flow(cls, dim: int, context_dim: int = 0) -> nnx.Module:
    """An untrained flow with a zero output layer and a normal base: exactly N(0, I), for
    every context (a known q for checks against closed forms)."""
    return cls(
        dim,
        2,
        (16,),
        context_dim=context_dim,
        output_init_scale=0.0,
        base="gaussian",
        rngs=nnx.Rngs(0),
    )


def make_inputs(name: str, dim: int, n: int = 4, seed: int = 1):
    """Points (n, dim) and a matching context (n, context_dim) or None."""
    _, context_dim = FLOWS[name]
    kx, kc = jax.random.split(jax.random.key(seed))
    dtype = jaxmaf.validation.default_dtype()
    x = jax.random.normal(kx, (n, dim), dtype)
    c = jax.random.normal(kc, (n, context_dim), dtype) if context_dim else None
    return x, c


@pytest.fixture
def x64():
    """Runs the test with float64 enabled (parameters built inside are float64)."""
    with jax.enable_x64(True):
        yield
    assert jnp.zeros(()).dtype == jnp.float32
