"""jaxmaf.programs.bind: static choices bound once, programs shared, outputs exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxmaf
from jaxmaf import programs


def affine(tree, shift, *, scale, n):
    return {"y": [leaf * scale + shift for leaf in tree["x"]], "n": jnp.full((n,), scale)}


def test_bound_call_equals_the_function_and_rebuilds_its_outputs():
    tree = {"x": [jnp.arange(3.0), jnp.ones((2, 2))]}
    out = programs.bind(affine, scale=2.0, n=4)(tree, jnp.float32(1.0))
    want = affine(tree, 1.0, scale=2.0, n=4)
    assert jax.tree.structure(out) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_equal_static_choices_share_one_program_and_new_ones_compile():
    tree = {"x": [jnp.arange(3.0)]}
    programs.bind(affine, scale=3.0, n=2)(tree, 0.5)
    traces = programs.traces
    again = programs.bind(affine, n=2, scale=3.0)  # another bind, the same choices
    np.testing.assert_array_equal(again(tree, 0.5)["y"][0], jnp.arange(3.0) * 3.0 + 0.5)
    again(tree, 1.5)  # new values, same shapes: the same program
    assert programs.traces == traces
    again({"x": [jnp.arange(4.0)]}, 0.5)  # a new shape compiles, as jax.jit would
    assert programs.traces == traces + 1
    programs.bind(affine, scale=4.0, n=2)(tree, 0.5)  # a new static choice compiles
    assert programs.traces == traces + 2


def test_an_unhashable_static_choice_is_refused_at_bind():
    with pytest.raises(TypeError, match="unhashable"):
        programs.bind(affine, scale=[1.0], n=2)


def test_second_ensemble_fit_compiles_nothing():
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    kw = dict(batch_size=64, num_epochs=2, optimizer=optax.adam(1e-3), progress=False)
    make = lambda rngs: jaxmaf.MAF(2, 2, (8,), rngs=rngs)  # noqa: E731
    jaxmaf.fit_ensemble(make, x, seeds=[0, 1], **kw)
    traces = programs.traces
    flows, _ = jaxmaf.fit_ensemble(make, x, seeds=[2, 3], **kw)
    assert programs.traces == traces and len(flows) == 2
    assert all(np.isfinite(float(f.log_prob(x[:5]).sum())) for f in flows)


def test_fit_traces_each_flow_structure_once():
    """Two flows of one structure share the epoch program; another width compiles its own."""
    x = np.random.default_rng(1).normal(size=(128, 2)).astype(np.float32)
    kw = dict(batch_size=64, num_epochs=1, optimizer=optax.adam(1e-3), progress=False)
    jaxmaf.fit(jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0)), x, **kw)
    traces = programs.traces
    jaxmaf.fit(jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(1)), x, **kw)
    assert programs.traces == traces
    jaxmaf.fit(jaxmaf.MAF(2, 2, (9,), rngs=nnx.Rngs(0)), x, **kw)
    assert programs.traces == traces + 1
