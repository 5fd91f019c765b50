"""MaskedAutoregressive with user conditioners, Permute, and distrax composition."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmaf

D = 4
W = jnp.tril(jax.random.normal(jax.random.key(0), (2, D, D)), k=-1)  # strictly lower


def linear_conditioner(x):
    """A hand-written autoregressive conditioner: params_i = sum_{j<i} W[:, i, j] x_j."""
    return jnp.stack([x @ W[0].T, 0.5 * jnp.tanh(x @ W[1].T)], axis=-1)


def test_user_conditioner_closed_form():
    bij = jaxmaf.MaskedAutoregressive(linear_conditioner)
    x = jax.random.normal(jax.random.key(1), (5, D))
    u, ld = bij.inverse_and_log_det(x)
    params = linear_conditioner(x)
    t = jaxmaf.Affine()
    _, s, log_s = t.density_scale(params)
    np.testing.assert_allclose(u, x * s + params[..., 0], rtol=1e-6)
    np.testing.assert_allclose(ld, log_s.sum(-1), rtol=1e-6)
    np.testing.assert_allclose(bij.forward(u), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        ld,
        jax.jit(jax.vmap(lambda v: jaxmaf.dense_log_det(bij.inverse, v)))(x),
        rtol=1e-5,
        atol=1e-5,
    )
    assert jaxmaf.is_autoregressive(bij.inverse, x)
    shift_fn = lambda v: linear_conditioner(v)[:, 0]  # noqa: E731
    assert jaxmaf.is_autoregressive(shift_fn, x, strict=True)
    assert not jaxmaf.is_autoregressive(lambda v: shift_fn(v[::-1]), x)


def test_forward_without_log_det_matches_forward_and_log_det():
    bij = jaxmaf.MaskedAutoregressive(linear_conditioner)
    u = jax.random.normal(jax.random.key(2), (3, D))
    y, fldj = bij.forward_and_log_det(u)
    np.testing.assert_allclose(bij.forward(u), y, rtol=1e-6)
    np.testing.assert_allclose(fldj, -bij.inverse_and_log_det(y)[1], rtol=1e-5)


def test_composes_with_distrax_chain_inverse_and_jit():
    maf = jaxmaf.MaskedAutoregressive(linear_conditioner)
    chain = distrax.Chain([maf, jaxmaf.Permute([3, 1, 0, 2]), distrax.Inverse(maf)])
    x = jax.random.normal(jax.random.key(3), (6, D))
    y, fldj = jax.jit(chain.forward_and_log_det)(x)
    np.testing.assert_allclose(chain.inverse(y), x, rtol=1e-5, atol=1e-5)
    dense = jax.jit(jax.vmap(lambda v: jaxmaf.dense_log_det(chain.forward, v)))(x)
    np.testing.assert_allclose(fldj, dense, rtol=1e-4, atol=1e-4)


def test_permute():
    p = jaxmaf.Permute([2, 0, 1])
    x = jnp.arange(6.0).reshape(2, 3)
    y, ld = p.forward_and_log_det(x)
    np.testing.assert_array_equal(y, x[:, [2, 0, 1]])
    np.testing.assert_array_equal(ld, np.zeros(2))
    np.testing.assert_array_equal(p.inverse(y), x)
    np.testing.assert_array_equal(jaxmaf.Permute([1, 0]).forward(jnp.array([1.0, 2.0])), [2.0, 1.0])
    with pytest.raises(ValueError, match="permutation of 0..2"):
        jaxmaf.Permute([0, 0, 1])
    # a JAX array (a flow's state, traced or not) gives the same map
    q = jaxmaf.Permute(jnp.array([2, 0, 1]))
    np.testing.assert_array_equal(q.forward(x), y)
    np.testing.assert_array_equal(
        jax.jit(lambda i, v: jaxmaf.Permute(i).inverse(v))(q.permutation, y), x
    )
    with pytest.raises(ValueError, match="integer array of shape"):
        jaxmaf.Permute(jnp.array([1.0, 0.0]))
    with pytest.raises(
        ValueError, match=r"Permute input of shape \(\.\.\., 3\), got shape \(2, 4\)"
    ):
        p.forward(jnp.zeros((2, 4)))


def test_conditioner_shape_errors_at_trace_time():
    bad = jaxmaf.MaskedAutoregressive(lambda x: jnp.zeros(x.shape[:-1] + (D, 3)))
    with pytest.raises(
        ValueError,
        match=r"shape \(\.\.\., 4, 2\) for an input of shape \(4,\), "
        r"got \(4, 3\)",
    ):
        jax.jit(bad.inverse)(jnp.zeros(D))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 2\)"):
        bad.forward(jnp.zeros(D))
    with pytest.raises(ValueError, match="callable conditioner"):
        jaxmaf.MaskedAutoregressive(3)


@pytest.mark.parametrize("scale", ["softplus", "exp", "exp_softclamp"])
def test_affine_log_det_matches_derivative(scale):
    t = jaxmaf.Affine(scale=scale)
    params = jax.random.normal(jax.random.key(4), (D, 2)) * 3
    u = jax.random.normal(jax.random.key(5), (D,))
    x, ld = t.forward_and_log_det(u, params)
    deriv = jax.vmap(jax.grad(lambda ui, pi: t.forward(ui, pi)))(u, params)
    np.testing.assert_allclose(ld, jnp.log(jnp.abs(deriv)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.inverse(x, params), u, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.as_bijector(params).forward(u), x, rtol=1e-6)
    with pytest.raises(ValueError, match="Unknown scale 'sigmoid'"):
        jaxmaf.Affine(scale="sigmoid")


class _SpyMADE:
    """A MADE conditioner that counts full passes (at trace time)."""

    def __init__(self, made, context=None):
        self.bound, self.degrees, self.full_passes = made.bind(context), made.degrees, 0

    def __call__(self, x):
        self.full_passes += 1
        return self.bound(x)

    def params_at(self, x, index):
        return self.bound.params_at(x, index)


@pytest.mark.parametrize("order", ["natural", "random"])
@pytest.mark.parametrize("transformer", ["affine", "spline"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_exact_sequential_pass_computes_one_dimension_per_pass(
    order, transformer, context_dim, x64
):
    """With a MADE the exact pass calls params_at only; the values match full passes."""
    from flax import nnx

    made = jaxmaf.MADE(
        5,
        (16, 16),
        jaxmaf.transformers.get_transformer(transformer).num_params,
        context_dim=context_dim,
        order=order,
        output_init_scale=0.5,
        rngs=nnx.Rngs(0),
    )
    c = jax.random.normal(jax.random.key(1), (6, context_dim)) if context_dim else None
    u = jax.random.normal(jax.random.key(2), (6, 5))
    spy = _SpyMADE(made, c)
    one_dim = jaxmaf.MaskedAutoregressive(spy, transformer)
    full = jaxmaf.MaskedAutoregressive(lambda v: made(v, c), transformer)  # no params_at
    # Traced calls: one shape check (eval_shape) per call; full passes would add the loop body.
    x = one_dim.forward(u)
    assert spy.full_passes == 1
    np.testing.assert_allclose(x, full.forward(u), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one_dim.inverse(x), u, rtol=1e-10, atol=1e-10)
    x2, log_det = one_dim.forward_and_log_det(u)
    assert spy.full_passes == 3  # shape check + the last pass, which reads every log-scale
    np.testing.assert_allclose(x2, x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log_det, full.forward_and_log_det(u)[1], rtol=1e-12, atol=1e-12)


def test_conditioner_degrees_must_match_the_event():
    from flax import nnx

    made = jaxmaf.MADE(3, (8,), 2, rngs=nnx.Rngs(0))
    spy = _SpyMADE(made)
    spy.degrees = np.arange(1, 5)
    with pytest.raises(ValueError, match=r"degrees of shape \(3,\)"):
        jaxmaf.MaskedAutoregressive(spy).forward(jnp.zeros(3))
