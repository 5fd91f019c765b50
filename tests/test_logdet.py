"""The dense references themselves: log-dets, Jacobian zero patterns, and what they refuse."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmaf
from conftest import perturb


def _made(dim, order, hidden=(16, 16), params=3):
    made = jaxmaf.MADE(dim, hidden, params, order=order, activation="tanh", rngs=nnx.Rngs(0))
    perturb(made, seed=1, scale=0.3)
    return made


@pytest.mark.parametrize("order", ["natural", "reversed", "random", [2, 0, 3, 1]])
def test_made_outputs_are_certified_autoregressive_in_their_order(order):
    made = _made(4, order)
    x = jax.random.normal(jax.random.key(0), (6, 4))
    nz = jaxmaf.jacobian_nonzero(made, x)
    assert nz.shape == (4, 4)
    deg = made.degrees.array
    np.testing.assert_array_equal(nz, deg[None, :] < deg[:, None])  # every allowed edge used
    assert jaxmaf.is_autoregressive(made, x, order=made.order, strict=True)
    # Output i seeing its own input breaks strictness, not the non-strict property.
    leaky = lambda v: made(v) + v[:, None]  # noqa: E731
    assert not jaxmaf.is_autoregressive(leaky, x, order=made.order, strict=True)
    assert jaxmaf.is_autoregressive(leaky, x, order=made.order)
    if order != "natural":  # the natural order is the wrong one for any other MADE
        assert not jaxmaf.is_autoregressive(made, x, strict=True)


def test_a_zero_jacobian_is_refused_not_certified():
    made = jaxmaf.MADE(3, (8,), 2, rngs=nnx.Rngs(0))  # output layer starts at zero
    with pytest.raises(ValueError, match="zero at every point"):
        jaxmaf.is_autoregressive(made, jnp.ones((4, 3)), strict=True)
    with pytest.raises(ValueError, match="zero at every point"):
        jaxmaf.is_autoregressive(lambda v: jnp.zeros_like(v), jnp.ones(3))


def test_bad_order_and_bad_output_shapes_are_refused():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="permutation of 0..2"):
        jaxmaf.is_autoregressive(jnp.cumsum, x, order=[0, 0, 1])
    with pytest.raises(ValueError, match="permutation of 0..2"):
        jaxmaf.is_autoregressive(jnp.cumsum, x, order=[0, 1])
    with pytest.raises(ValueError, match=r"output shape \(2,\)"):
        jaxmaf.jacobian_nonzero(lambda v: v[:2], x)
    with pytest.raises(ValueError, match=r"conditioner"):
        jaxmaf.dense_log_det(_made(3, "natural"), x)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., D\)"):
        jaxmaf.dense_log_det(jnp.cumsum, jnp.float32(1.0))


def test_dense_log_det_of_a_linear_map_is_its_slogdet():
    a = jax.random.normal(jax.random.key(0), (5, 5))
    x = jax.random.normal(jax.random.key(1), (3, 5))
    expected = np.linalg.slogdet(np.asarray(a, np.float64))[1]
    np.testing.assert_allclose(jaxmaf.dense_log_det(lambda v: a @ v, x), [expected] * 3, rtol=1e-4)
