"""``jaxmaf.split``: a flow's state as plain dicts, for hand-written jitted steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxmaf
from conftest import FLOWS, make_flow, make_inputs


def _plain(tree) -> bool:
    """Whether every inner node of ``tree`` is a ``dict`` and every leaf a JAX array."""
    if isinstance(tree, dict):
        return type(tree) is dict and all(_plain(v) for v in tree.values())
    return isinstance(tree, jax.Array)


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_split_gives_plain_dicts_that_merge_back_to_the_same_flow(name):
    flow = make_flow(name, 3, num_layers=2)
    x, c = make_inputs(name, 3)
    graphdef, params, rest = jaxmaf.split(flow)
    assert _plain(params) and _plain(rest)
    # the same arrays as nnx.split's, parameters and the rest each
    _, p_state, r_state = nnx.split(flow, nnx.Param, ...)
    for plain, state in ((params, p_state), (rest, r_state)):
        assert len(jax.tree.leaves(plain)) == len(jax.tree.leaves(state))
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(state), strict=True):
            assert a is b
    log_prob = jax.jit(lambda p, r, x, c: nnx.merge(graphdef, p, r).log_prob(x, c))
    np.testing.assert_array_equal(log_prob(params, rest, x, c), flow.log_prob(x, c))


def test_an_adam_step_on_plain_dicts_equals_the_step_on_nnx_state_and_updates_back():
    flow = make_flow("maf_residual_mog", 2, num_layers=3)
    x, _ = make_inputs("maf", 2, n=64)
    opt = optax.adam(1e-2)
    graphdef, params, rest = jaxmaf.split(flow)
    _, p_state, r_state = nnx.split(flow, nnx.Param, ...)
    traces = []

    def make_step(rest):
        @jax.jit
        def step(p, o):
            traces.append(1)
            value, grads = jax.value_and_grad(
                lambda p: -nnx.merge(graphdef, p, rest).log_prob(x).mean()
            )(p)
            updates, o = opt.update(grads, o, p)
            return optax.apply_updates(p, updates), o, value

        return step

    plain_step, state_step = make_step(rest), make_step(r_state)
    p, o = params, opt.init(params)
    s, so = p_state, opt.init(p_state)
    for _ in range(3):
        p, o, v = plain_step(p, o)
        s, so, w = state_step(s, so)
        assert float(v) == float(w)
    assert len(traces) == 2  # one trace each: the dicts do not retrace
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(s), strict=True):
        np.testing.assert_array_equal(a, b)
    trained = make_flow("maf_residual_mog", 2, num_layers=3)
    before = trained.log_prob(x)
    nnx.update(trained, p)
    np.testing.assert_array_equal(trained.log_prob(x), nnx.merge(graphdef, p, rest).log_prob(x))
    assert not np.allclose(trained.log_prob(x), before)


def test_batch_statistics_moved_in_the_merged_flow_come_out_of_split():
    flow = make_flow("maf_batchnorm_eval", 2, num_layers=2)
    flow.train()
    x, _ = make_inputs("maf", 2, n=32)
    graphdef, params, rest = jaxmaf.split(flow)

    @jax.jit
    def moved(p, r):
        f = nnx.merge(graphdef, p, r)
        f.update_batch_stats(x)
        return jaxmaf.split(f)[2]

    new_rest = moved(params, rest)
    expected = jaxmaf.split(flow)[2]
    flow.update_batch_stats(x)
    after = jaxmaf.split(flow)[2]
    assert jax.tree.structure(new_rest) == jax.tree.structure(rest)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(new_rest), jax.tree.leaves(expected), strict=True)
    ]
    assert any(changed)
    for a, b in zip(jax.tree.leaves(new_rest), jax.tree.leaves(after), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_split_keeps_float64(x64):
    flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
    _, params, _ = jaxmaf.split(flow)
    assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype("float64")}


@pytest.mark.parametrize("bad", [42, {"layers": []}, nnx.split])
def test_split_refuses_what_is_not_a_module(bad):
    with pytest.raises(ValueError, match="Expected module to be an NNX module"):
        jaxmaf.split(bad)
