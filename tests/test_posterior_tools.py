"""What simulation-based inference needs: standardisation, bounded supports, amortised sampling."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_interactive import Counter

import jaxmaf

LOW, HIGH = (-1.0, 0.0, 2.0), (1.0, 5.0, 3.0)


def _conditional(cls, **kw):
    return cls(3, 3, (16,), context_dim=2, output_init_scale=0.5, rngs=nnx.Rngs(0), **kw)


def _box_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(LOW, HIGH, size=(n, 3))
    c = rng.normal(size=(n, 2)) * np.array([10.0, 0.1]) + np.array([100.0, -5.0])
    return x, c


@pytest.mark.parametrize("cls", [jaxmaf.MAF, jaxmaf.IAF])
def test_support_and_standardisation_match_the_dense_change_of_variables(cls, x64):
    """log_prob = base(u) + log|det d u / d x| with the box and the z-scoring in the chain."""
    flow = _conditional(cls, support=(LOW, HIGH), param_dtype=jnp.float64)
    data, ctx = _box_data()
    flow.standardize_from(data, ctx)
    c = jnp.asarray(ctx[3])
    x = flow.sample(jax.random.key(0), (6,), c)
    inverse = flow.bijector(c).inverse
    u = jax.vmap(inverse)(x)
    dense = flow.base_log_prob(u) + jnp.linalg.slogdet(jax.vmap(jax.jacfwd(inverse))(x))[1]
    np.testing.assert_allclose(flow.log_prob(x, c), dense, rtol=1e-10, atol=1e-10)
    x2, lp2 = flow.sample_and_log_prob(jax.random.key(1), (6,), c)
    np.testing.assert_allclose(lp2, flow.log_prob(x2, c), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [jaxmaf.MAF, jaxmaf.IAF])
def test_a_flow_with_a_support_never_leaves_it(cls):
    flow = _conditional(cls, support=(LOW, HIGH))
    x = flow.sample(jax.random.key(0), (4000,), jnp.array([3.0, -2.0]) * 50)  # far-out context
    assert bool(jnp.all((x >= jnp.array(LOW)) & (x <= jnp.array(HIGH))))
    outside = jnp.array([[2.0, 1.0, 2.5], [0.0, -0.1, 2.5], [0.0, 1.0, 3.5]])
    assert jnp.all(flow.log_prob(outside, jnp.zeros(2)) == -jnp.inf)
    c = jnp.array([0.3, -0.2])
    assert jnp.all(jnp.isfinite(flow.log_prob(flow.sample(jax.random.key(1), (100,), c), c)))


def test_fit_standardize_equals_training_on_z_scored_data():
    """The z-scoring is a constant shift of the log-density: the same gradients, the same
    parameters, and a density in the data's units that differs by exactly -sum(log std).
    Contexts are z-scored too, before they reach the MADEs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3)) * np.array([1000.0, 0.01, 1.0]) + np.array([5e4, -3.0, 0.0])
    x[:, 2] = 7.0  # a constant column: shifted, scale 1 (no division by 0)
    c = rng.normal(size=(600, 2)) * np.array([300.0, 1.0]) + np.array([-2e3, 1.0])
    x, c = x.astype(np.float32), c.astype(np.float32)

    def z_scored(v):
        mean, std = v.astype(np.float64).mean(0), v.astype(np.float64).std(0)
        std[std < 1e-3] = 1.0
        return ((v - mean) / std).astype(np.float32), mean, std

    z, mean, std = z_scored(x)
    zc = z_scored(c)[0]
    a = jaxmaf.MAF(3, 2, (16,), context_dim=2, rngs=nnx.Rngs(0))
    b = jaxmaf.MAF(3, 2, (16,), context_dim=2, rngs=nnx.Rngs(0))
    ha = jaxmaf.fit(a, x, context=c, num_epochs=2, standardize=True, progress=False)
    hb = jaxmaf.fit(b, z, context=zc, num_epochs=2, progress=False)
    np.testing.assert_allclose(a.standardization.shift[...], mean, rtol=1e-6)
    np.testing.assert_allclose(a.standardization.scale[...], std, rtol=1e-5)
    log_std = float(np.log(std).sum())
    assert ha.best_loss == pytest.approx(hb.best_loss + log_std, abs=1e-4)
    for p, q in zip(
        jax.tree.leaves(nnx.state(a.layers, nnx.Param)),
        jax.tree.leaves(nnx.state(b.layers, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_allclose(p, q, atol=2e-4)
    np.testing.assert_allclose(
        a.log_prob(x[:50], c[:50]), b.log_prob(z[:50], zc[:50]) - log_std, atol=5e-3
    )
    samples = a.sample(jax.random.key(0), (2000,), c[0])
    assert samples[:, 0].mean() == pytest.approx(5e4, rel=0.01)


def test_standardised_and_bounded_flows_save_and_load(tmp_path):
    data, ctx = _box_data()
    for flow in (
        _conditional(jaxmaf.MAF, support=(LOW, HIGH)),
        _conditional(jaxmaf.IAF, standardize=True),
    ):
        bounded = flow.support is not None
        flow.standardize_from(data if bounded else data * 100, ctx)  # added, or set, in place
        path = os.fspath(tmp_path / f"{type(flow).__name__}.jaxmaf")
        jaxmaf.save(path, flow)
        again = jaxmaf.load(path)
        assert again.config == flow.config and again.config.standardize
        x = flow.sample(jax.random.key(0), (20,), jnp.asarray(ctx[0]))
        np.testing.assert_array_equal(
            again.log_prob(x, jnp.asarray(ctx[0])), flow.log_prob(x, jnp.asarray(ctx[0]))
        )


@pytest.mark.parametrize(
    "support,match",
    [
        ((1.0, 1.0), "low < high"),
        ((0.0, np.inf), "finite support high"),
        ((0.0, [1.0, 2.0]), "support high to be a number or 3 numbers"),
        (3.0, r"support=\(low, high\)"),
    ],
)
def test_bad_supports_are_refused(support, match):
    with pytest.raises(ValueError, match=match):
        jaxmaf.MAF(3, 1, (4,), support=support, rngs=nnx.Rngs(0))


def test_standardize_from_refuses_points_outside_the_support_and_bad_shapes():
    flow = _conditional(jaxmaf.MAF, support=(LOW, HIGH))
    data, ctx = _box_data()
    with pytest.raises(ValueError, match="inside the support"):
        flow.standardize_from(data + 10.0, ctx)
    with pytest.raises(ValueError, match=r"context of shape \(N, 2\)"):
        flow.standardize_from(data, ctx[:, :1])
    assert flow.standardization is None  # nothing was set


def test_sample_within_keeps_the_box_and_reports_the_acceptance_rate():
    """At the identity a MAF with a normal base is a standard normal: P(inside [0, 5]^2) =
    (Phi(5) - 1/2)^2."""
    flow = jaxmaf.MAF(2, 2, (8,), base="gaussian", output_init_scale=0.0, rngs=nnx.Rngs(0))
    x, rate = flow.sample_within(jax.random.key(0), 4000, 0.0, 5.0)
    assert x.shape == (4000, 2) and bool(jnp.all((x >= 0.0) & (x <= 5.0)))
    assert rate == pytest.approx(0.25, abs=0.02)
    # the kept draws are the flow's own samples, in order
    first = flow.sample(jax.random.fold_in(jax.random.key(0), 0), (4000,))
    inside = first[jnp.all((first >= 0.0) & (first <= 5.0), axis=-1)]
    np.testing.assert_array_equal(x[: len(inside)], inside)
    with pytest.raises(ValueError, match="acceptance rate"):
        flow.sample_within(jax.random.key(0), 100, 4.0, 5.0, max_draws=1000)
    with pytest.raises(ValueError, match="once per observation"):
        _conditional(jaxmaf.MAF).sample_within(jax.random.key(0), 10, 0.0, 1.0, jnp.zeros((2, 2)))


def test_amortised_sampling_broadcasts_contexts_and_compiles_once():
    """One observation (context_dim,) broadcasts over the sample shape; M observations
    (M, context_dim) sample in one call, each column conditioned on its own; a new
    observation of the same shape runs the cached program."""
    flow = _conditional(jaxmaf.MAF, standardize=True)
    flow.standardize_from(*_box_data())
    key = jax.random.key(0)
    obs = jnp.array([[100.0, -5.0], [80.0, -5.2], [120.0, -4.9]])
    x = flow.sample(key, (500,), obs)
    assert x.shape == (500, 3, 3)
    assert flow.sample(key, (500,), obs[0]).shape == (500, 3)
    joint = flow.log_prob(x, obs)
    for m in range(3):
        np.testing.assert_allclose(flow.log_prob(x[:, m], obs[m]), joint[:, m], rtol=1e-5)
    means = x.mean(0)
    assert float(jnp.max(jnp.abs(means[0] - means[1]))) > 1e-3  # the contexts matter
    flow.sample(key, (500,), obs[1])
    others, another = obs[2], obs + 1.0  # (outside the counter: the addition compiles)
    with Counter() as counter:
        flow.sample(key, (500,), others)
        flow.sample(key, (500,), another)
    assert counter.events == [], "a new observation traced or compiled"
