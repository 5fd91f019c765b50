"""Simulation-based calibration: ranks, KS p-values and coverage against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import stats

import jaxmaf
from conftest import standard_normal_flow
from jaxmaf import calibration


def normal_posterior():
    """q(theta | x) = N(0, I) in 2-d, whatever the 1-d x."""
    return standard_normal_flow(jaxmaf.MAF, 2, context_dim=1)


def pairs(n, ratio, dim=2, seed=1):
    """Truths from N(0, ratio^2 I) and data that say nothing: q = N(0, I) is the posterior
    when ratio = 1, too narrow above 1, too wide below."""
    theta = ratio * jax.random.normal(jax.random.key(seed), (n, dim))
    return theta, jnp.zeros((n, 1))


def test_a_calibrated_posterior_has_uniform_ranks_and_nominal_coverage():
    n = 4000
    cal = jaxmaf.sbc(normal_posterior(), *pairs(n, 1.0), num_posterior_samples=400)
    assert cal.ranks.shape == (n, 2) and cal.ranks.min() >= 0 and cal.ranks.max() <= 400
    assert cal.density_ranks.shape == (n,) and cal.num_posterior_samples == 400
    assert cal.ks_pvalues.min() > 0.01
    assert cal.coverage_error() < 4 * math.sqrt(0.25 / n) + 1 / 400


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_coverage_of_a_miscalibrated_posterior_matches_its_closed_form(ratio):
    """q = N(0, I) against truths from N(0, ratio^2 I): a central interval of level a covers
    with probability 2 Phi(z_a / ratio) - 1, and the highest-density region (a disc of
    squared radius -2 log(1 - a)) with 1 - (1 - a)^(1 / ratio^2). Within four binomial
    standard errors (and one draw's width); the KS test rejects uniform ranks."""
    n = 4000
    cal = jaxmaf.sbc(normal_posterior(), *pairs(n, ratio), num_posterior_samples=400)
    levels = cal.levels
    z = stats.norm.ppf((1 + levels) / 2)
    central = 2 * stats.norm.cdf(z / ratio) - 1
    hpd = 1 - (1 - levels) ** (1 / ratio**2)
    for got, want in ((cal.central_coverage, central[:, None]), (cal.hpd_coverage, hpd)):
        se = np.sqrt(want * (1 - want) / n)
        assert np.all(np.abs(got - want) <= 4 * se + 1 / 400), (got, want)
    assert cal.ks_pvalues.max() < 1e-6
    assert cal.coverage_error() > 0.15


def test_a_biased_posterior_ranks_the_truths_to_one_side():
    """Truths from N(1, 1) against q = N(0, 1): each rank / L is Phi(theta), whose mean is
    Phi(1 / sqrt(2)) = 0.760 (ranks count the draws below the truth)."""
    theta, x = pairs(4000, 1.0)
    cal = jaxmaf.sbc(normal_posterior(), theta + 1.0, x, num_posterior_samples=400)
    want = stats.norm.cdf(1 / math.sqrt(2))
    np.testing.assert_allclose(np.mean(cal.ranks / 400, axis=0), want, atol=0.015)
    assert cal.ks_pvalues.max() < 1e-6


def test_blocks_of_pairs_and_their_padding_change_nothing_but_the_draws(monkeypatch):
    """A small draw budget splits 1,001 pairs into blocks of 40 (the last padded): the
    same shapes, ranks in range, and still calibrated."""
    monkeypatch.setattr(calibration, "DRAW_BUDGET", 40 * 100 * 2)
    n = 1001
    cal = jaxmaf.sbc(normal_posterior(), *pairs(n, 1.0), num_posterior_samples=100)
    assert cal.ranks.shape == (n, 2) and cal.density_ranks.shape == (n,)
    assert cal.ks_pvalues.min() > 0.01
    assert cal.coverage_error() < 4 * math.sqrt(0.25 / n) + 1 / 100


def test_a_trained_posterior_estimate_is_calibrated_and_as_narrow_as_the_true_one():
    """Neural posterior estimation of a linear Gaussian (theta ~ N(0, I), x = theta + 0.5
    noise: posterior standard deviation sqrt(0.2) = 0.447): a conditional MAF trained on
    3,500 simulations passes SBC on 1,000 new ones. So does the untrained flow, which is
    the prior: SBC's blind spot, which is why the posterior's width is checked too."""
    key_t, key_n = jax.random.split(jax.random.key(0))
    theta = jax.random.normal(key_t, (5000, 2))
    x = theta + 0.5 * jax.random.normal(key_n, (5000, 2))
    flow = jaxmaf.MAF(2, 3, (32, 32), context_dim=2, base="gaussian", rngs=nnx.Rngs(0))
    prior = jaxmaf.sbc(flow, theta[4000:], x[4000:], num_posterior_samples=200)
    jaxmaf.fit(
        flow,
        theta[:3500],
        context=x[:3500],
        validation_data=theta[3500:4000],
        validation_context=x[3500:4000],
        optimizer=optax.adam(3e-3),
        num_epochs=60,
        progress=False,
    )
    cal = jaxmaf.sbc(flow, theta[4000:], x[4000:], num_posterior_samples=200)
    assert prior.ks_pvalues.min() > 0.01 and prior.coverage_error() < 0.08
    assert cal.ks_pvalues.min() > 0.01 and cal.coverage_error() < 0.08
    draws = flow.sample(jax.random.key(1), (400,), x[4000:4100])  # (400, 100, 2)
    assert float(jnp.mean(jnp.std(draws, axis=0))) == pytest.approx(math.sqrt(0.2), abs=0.03)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(theta=jnp.zeros((5, 3))), r"theta of shape \(\.\.\., 2\)"),
        (dict(context=jnp.zeros((4, 1))), "same n"),
        (dict(theta=jnp.zeros((5,)) + jnp.zeros((1, 2))[:, :1]), "theta"),
        (dict(num_posterior_samples=5), "num_posterior_samples.*>= 10, got 5"),
        (dict(theta=jnp.full((5, 2), jnp.nan)), "finite theta"),
        (dict(context=None), "conditional"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    args = dict(theta=jnp.zeros((5, 2)), context=jnp.zeros((5, 1))) | kwargs
    with pytest.raises(ValueError, match=match):
        jaxmaf.sbc(normal_posterior(), **args)


def test_an_unconditional_flow_is_refused():
    flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="conditional flow"):
        jaxmaf.sbc(flow, jnp.zeros((5, 2)), jnp.zeros((5, 1)))
