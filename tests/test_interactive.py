"""Eager (top-level) calls run one cached compiled program per shape and structure.

Counted from JAX's own trace and compile events: the second eager call of a
public method traces nothing; a parameter update reuses the program (and the
result follows the new parameters); a structural change (``flow.eval()``)
compiles anew instead of running a stale program; a call that writes state
(batch norm in train mode) writes it back to the flow, as an uncompiled call
does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmaf
from conftest import perturb

TRACE = "/jax/core/compile/jaxpr_trace_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


class Counter:
    def __init__(self):
        self.events = []

    def __call__(self, event, duration, **kwargs):
        if event in (TRACE, COMPILE):
            self.events.append(event)

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


def _calls(cls, ctx):
    x = jax.random.normal(jax.random.key(0), (7, 3))
    c = jax.random.normal(jax.random.key(1), (7, 2)) if ctx else None
    key = jax.random.key(2)
    sample_c = c
    calls = {
        "log_prob": lambda f: f.log_prob(x, c),
        "sample": lambda f: f.sample(key, () if ctx else (7,), sample_c),
        "sample_and_log_prob": lambda f: f.sample_and_log_prob(key, () if ctx else (7,), sample_c),
    }
    if cls is jaxmaf.IAF:  # jacobi where the direction is sequential: IAF density, MAF sampling
        calls["log_prob jacobi"] = lambda f: f.log_prob(x, c, method="jacobi")
    else:
        calls["sample jacobi"] = lambda f: f.sample_with_iterations(
            key, () if ctx else (7,), sample_c, method="jacobi"
        )
    return calls


@pytest.mark.parametrize("cls", [jaxmaf.MAF, jaxmaf.IAF])
@pytest.mark.parametrize("ctx", [False, True])
def test_second_eager_call_does_not_trace_and_equals_the_traced_call(cls, ctx):
    flow = cls(3, 2, (8,), context_dim=2 if ctx else 0, rngs=nnx.Rngs(0))
    flow = _perturbed(flow)
    for name, call in _calls(cls, ctx).items():
        first = call(flow)
        with Counter() as counter:
            second = call(flow)
        assert counter.events == [], f"{name}: the second eager call traced or compiled"
        jitted = nnx.jit(call)(flow)
        for a, b, c in zip(
            jax.tree.leaves(first), jax.tree.leaves(second), jax.tree.leaves(jitted), strict=True
        ):
            np.testing.assert_array_equal(a, b, err_msg=name)
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5, err_msg=name)


def _perturbed(flow):
    return perturb(flow, seed=3, scale=0.1)


def test_parameter_update_reuses_the_program_and_changes_the_result():
    flow = jaxmaf.MAF(3, 2, (8,), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (5, 3))
    before = flow.log_prob(x)
    _perturbed(flow)
    with Counter() as counter:
        after = flow.log_prob(x)
    assert counter.events == []
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, nnx.jit(lambda f: f.log_prob(x))(flow), rtol=1e-6)


def test_structural_change_compiles_anew_and_batch_norm_state_is_written_back():
    flow = jaxmaf.MAF(3, 2, (8,), batch_norm=True, rngs=nnx.Rngs(0))
    x = 2.0 + 3.0 * jax.random.normal(jax.random.key(0), (64, 3))
    mean0 = np.asarray(flow.batch_norms[0].mean[...])
    train_lp = flow.log_prob(x)  # train mode: batch statistics; evaluating changes nothing
    np.testing.assert_array_equal(flow.batch_norms[0].mean[...], mean0)
    np.testing.assert_allclose(flow.update_batch_stats(x), train_lp, rtol=1e-6)
    mean1 = np.asarray(flow.batch_norms[0].mean[...])
    assert not np.allclose(mean0, mean1), "the eager update call lost its state update"
    jitted = jax.jit(flow.log_prob)(x)  # pure, so plain jax.jit of the bound method works
    np.testing.assert_allclose(jitted, train_lp, rtol=1e-5)
    np.testing.assert_array_equal(flow.batch_norms[0].mean[...], mean1)
    flow.eval()
    eval_lp = flow.log_prob(x)  # must not reuse the train-mode program
    reference = nnx.jit(lambda f: f.log_prob(x))(flow)
    np.testing.assert_allclose(eval_lp, reference, rtol=1e-6)
    assert not np.allclose(train_lp, eval_lp)
    flow.update_batch_stats(x)  # eval mode: nothing to update
    np.testing.assert_array_equal(flow.batch_norms[0].mean[...], mean1)


def test_calls_inside_transformations_are_not_routed_through_the_cache():
    flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
    x = jnp.ones((4, 2))

    def loss(f):
        return -f.log_prob(x).mean()

    grads = nnx.grad(loss)(flow)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    per_point = jax.vmap(lambda xi: flow.log_prob(xi))(x)
    np.testing.assert_allclose(per_point, flow.log_prob(x), rtol=1e-6)
