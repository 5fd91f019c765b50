"""Importance diagnostics of a variational fit: Pareto k, log Z, KL and ESS against truths."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxmaf
from conftest import standard_normal_flow
from jaxmaf.diagnostics import importance_diagnostics, pareto_k


def normal_q(dim=1, context_dim=0):
    """q = N(0, I) exactly: an IAF (sampling and density in one pass)."""
    return standard_normal_flow(jaxmaf.IAF, dim, context_dim)


def scaled_normal(s, c=0.0):
    """log of exp(c) N(x; 0, s^2 I): log Z = c."""

    def log_target(x):
        d = x.shape[-1]
        return (
            jnp.sum(-0.5 * (x / s) ** 2, -1) - d * (math.log(s) + 0.5 * math.log(2 * math.pi)) + c
        )

    return log_target


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.8, 1.0])
def test_pareto_k_recovers_the_shape_of_generalised_pareto_weights(shape):
    """Weights drawn from a generalised Pareto of known shape: the estimate is within 0.06
    of it on average over five seeds, and within 0.12 on each. Scaling every weight by a
    constant changes nothing."""
    estimates = []
    for seed in range(5):
        u = np.random.default_rng(seed).uniform(size=20_000)
        weights = ((1 - u) ** -shape - 1) / shape  # inverse CDF, scale 1
        k = pareto_k(np.log(weights))
        assert pareto_k(np.log(weights) + 17.0) == pytest.approx(k, abs=1e-9)
        estimates.append(k)
    assert abs(np.mean(estimates) - shape) < 0.06, estimates
    assert max(abs(k - shape) for k in estimates) < 0.12, estimates


def test_pareto_k_fits_only_the_largest_three_root_s_weights():
    """Vehtari et al.'s tail: the largest min(S / 5, 3 sqrt(S)) weights. Here 200,000
    exponential weights (a light tail, k = 0) whose largest 1,341 = 3 sqrt(S) are replaced
    by a Pareto tail of shape 0.8 above the same threshold: a tail of S / 5 would take in
    the exponential part and report about 0.15."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        w = np.sort(rng.exponential(size=200_000))
        w[-1341:] = w[-1342] + ((1 - rng.uniform(size=1341)) ** -0.8 - 1) / 0.8
        assert abs(pareto_k(np.log(w)) - 0.8) < 0.12, seed


def test_pareto_k_without_a_tail_with_an_infinite_weight_and_bad_input():
    assert pareto_k(np.zeros(100)) == -math.inf  # equal weights: no tail
    noise = np.random.default_rng(0).uniform(0, 1e-7, size=100)  # equal but for rounding
    assert pareto_k(noise, tol=1e-6) == -math.inf and math.isfinite(pareto_k(noise))
    assert pareto_k(np.r_[np.zeros(99), np.inf]) == math.inf
    assert pareto_k(np.r_[np.full(50, -np.inf), np.zeros(50)]) == -math.inf  # zeros are fine
    with pytest.raises(ValueError, match="at least 25 log_weights.*got 24"):
        pareto_k(np.zeros(24))
    with pytest.raises(ValueError, match="NaN"):
        pareto_k(np.r_[np.zeros(99), np.nan])


def test_q_equal_to_the_target_has_full_ess_and_zero_kl():
    """q = p up to the normaliser: every weight is Z, so log Z is exact, the KL 0, the ESS 1,
    and no tail (k = -inf, not a fit to rounding noise); also for Z = e^1000, whose weights
    overflow unless shifted."""
    d = importance_diagnostics(normal_q(3), scaled_normal(1.0, c=2.5), num_samples=2000)
    assert d.log_evidence == pytest.approx(2.5, abs=1e-5)
    assert d.elbo == pytest.approx(2.5, abs=1e-5)
    assert d.kl < 1e-6 and d.ess > 1 - 1e-6 and d.reliable and d.pareto_k == -math.inf
    huge = importance_diagnostics(normal_q(3), scaled_normal(1.0, c=1000.0), num_samples=2000)
    assert huge.log_evidence == pytest.approx(1000.0, abs=1e-3) and huge.ess > 1 - 1e-6
    assert huge.pareto_k == -math.inf
    assert d.num_samples == 2000 and d.threshold == pytest.approx(1 - 1 / math.log10(2000))


@pytest.mark.parametrize("s", [0.8, 1.2])
def test_log_z_elbo_and_kl_match_closed_forms(s):
    """q = N(0, 1) against Z N(0, s^2), log Z = 3: KL(q || p) = log s + 1 / (2 s^2) - 1/2.
    Each estimate within four Monte Carlo standard errors (the ELBO's from the closed-form
    variance of log w, (1 - 1/s^2)^2 / 2); finite-variance weights (k < 0.5) are reliable."""
    n = 20_000
    d = importance_diagnostics(normal_q(), scaled_normal(s, c=3.0), num_samples=n, seed=1)
    kl = math.log(s) + 1 / (2 * s * s) - 0.5
    elbo_se = abs(1 - 1 / s**2) / math.sqrt(2 * n)
    assert abs(d.log_evidence - 3.0) < 4 * d.log_evidence_se
    assert abs(d.elbo - (3.0 - kl)) < 4 * elbo_se
    assert abs(d.kl - kl) < 4 * elbo_se + 4 * d.log_evidence_se
    assert d.pareto_k < 0.5 and d.reliable and 0.5 < d.ess < 1


def test_a_q_that_misses_the_target_modes_is_flagged():
    """q = N(0, 1) against two modes at +-4: the weights of the few draws out there have no
    usable mean. k is above the threshold, the ESS a few percent, and log Z is off by more
    than its standard error admits, which is why k, not the error bar, is the verdict."""

    def two_modes(x):
        x = x[..., 0]
        log_mix = jnp.logaddexp(-0.5 * (x - 4) ** 2, -0.5 * (x + 4) ** 2) - math.log(2)
        return log_mix - 0.5 * math.log(2 * math.pi)  # log Z = 0

    for seed in range(3):
        d = importance_diagnostics(normal_q(), two_modes, num_samples=10_000, seed=seed)
        assert d.pareto_k > d.threshold and not d.reliable, (seed, d.pareto_k)
        assert d.ess < 0.05 and d.kl > 1.0


def test_a_target_with_zero_density_somewhere_gives_zero_weights_not_a_verdict_of_equality():
    """log p = -inf on half the line (a half-normal, log Z = log(1/2) against its full
    normal): zero weights there, log Z = -log 2, and a finite tail estimate."""

    def half_normal(x):
        log_n = -0.5 * x[..., 0] ** 2 - 0.5 * math.log(2 * math.pi)
        return jnp.where(x[..., 0] > 0, log_n, -jnp.inf)

    d = importance_diagnostics(normal_q(), half_normal, num_samples=20_000)
    assert d.log_evidence == pytest.approx(-math.log(2), abs=4 * d.log_evidence_se)
    assert d.ess == pytest.approx(0.5, abs=0.02) and d.elbo == -math.inf
    assert d.pareto_k == -math.inf and d.reliable  # the nonzero weights are all equal


def test_a_trained_iaf_on_the_banana_is_reliable_and_finds_log_z():
    """After fit_variational the banana's weights are light-tailed and log Z = 0 is found
    within 0.01; the untrained flow is not reliable there."""

    def banana(x):
        x1, x2 = x[..., 0], x[..., 1] - 0.5 * (x[..., 0] ** 2 - 1.0)
        return -0.5 * (x1**2 + x2**2) - math.log(2 * math.pi)

    flow = jaxmaf.IAF(2, 4, (32, 32), rngs=nnx.Rngs(1))
    before = importance_diagnostics(flow, banana)
    jaxmaf.fit_variational(
        flow, banana, num_steps=1500, batch_size=256, optimizer=optax.adam(3e-3), progress=False
    )
    after = importance_diagnostics(flow, banana)
    assert abs(after.log_evidence) < 0.01 and after.kl < 0.01
    assert after.reliable and after.pareto_k < 0.5 and after.ess > 0.95
    assert before.kl > 10 * after.kl and before.pareto_k > after.pareto_k


def test_one_diagnosis_per_context_of_an_amortised_flow():
    """A batch of contexts gives arrays, each context's KL against its closed form
    (q = N(0, 1) for every context; the target N(0, s^2) with s from the context)."""
    scales = jnp.array([0.8, 1.0, 1.25])
    context = jnp.stack([scales, jnp.zeros(3)], -1)  # (3, 2)

    def log_target(x, c):
        s = c[..., 0]
        return -0.5 * (x[..., 0] / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)

    d = importance_diagnostics(
        normal_q(context_dim=2), log_target, num_samples=20_000, context=context
    )
    assert d.kl.shape == d.pareto_k.shape == d.reliable.shape == (3,)
    kl = np.log(scales) + 1 / (2 * scales**2) - 0.5
    np.testing.assert_allclose(d.kl, kl, atol=0.01)
    np.testing.assert_allclose(d.log_evidence, 0.0, atol=0.02)
    assert d.kl[1] < 1e-6 and d.pareto_k[1] == -math.inf  # q is the target there
    assert bool(d.reliable.all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_samples=10), "num_samples.*>= 25, got 10"),
        (dict(log_target=lambda x: x), r"one log-density per point, shape \(100,\)"),
        (dict(context=jnp.zeros(2)), "context"),
        (dict(num_samples=10.0), "num_samples"),
        (dict(log_target=lambda x: jnp.sum(jnp.log(x), -1)), "NaN at .* draws"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    args = dict(log_target=scaled_normal(1.0), num_samples=100) | kwargs
    with pytest.raises(ValueError, match=match):
        importance_diagnostics(normal_q(2), **args)
