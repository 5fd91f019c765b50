"""jaxmaf flows inside numpyro: distribution semantics, likelihoods, and a guide trained by SVI."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxmaf
from conftest import perturb

numpyro = pytest.importorskip("numpyro")
dist = numpyro.distributions


def test_distribution_agrees_with_the_flow():
    flow = perturb(jaxmaf.IAF(3, 2, (16,), context_dim=2, rngs=nnx.Rngs(0)))
    c = jax.random.normal(jax.random.key(1), (4, 2))
    d = jaxmaf.as_numpyro(flow, c)
    assert d.batch_shape == (4,) and d.event_shape == (3,) and d.has_rsample
    key = jax.random.key(2)
    x = d.sample(key, (5,))
    np.testing.assert_array_equal(x, flow.sample(key, (5,), c))
    np.testing.assert_allclose(d.log_prob(x), flow.log_prob(x, c), rtol=1e-5, atol=1e-5)
    xs, inter = d.sample_with_intermediates(key, (5,))
    np.testing.assert_allclose(d.log_prob(xs, inter), flow.log_prob(xs, c), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="context"):
        jaxmaf.as_numpyro(flow)


def test_a_flow_as_the_likelihood_of_a_numpyro_model():
    flow = perturb(jaxmaf.MAF(2, 2, (16,), rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (10, 2))

    def model():
        numpyro.sample("x", jaxmaf.as_numpyro(flow), obs=x)

    log_joint, _ = numpyro.infer.util.log_density(model, (), {}, {})
    np.testing.assert_allclose(log_joint, flow.log_prob(x).sum(), rtol=1e-5)
    # this flow's base is a mixture (a 2-d MAF's default): its draws are not reparameterised
    # in the mixture weights, and the distribution says so
    assert isinstance(flow.base, jaxmaf.MixtureOfGaussians)
    assert not jaxmaf.as_numpyro(flow).has_rsample
    normal = jaxmaf.MAF(2, 2, (16,), base="gaussian", rngs=nnx.Rngs(0))
    assert jaxmaf.as_numpyro(normal).has_rsample


def test_an_iaf_guide_trained_by_numpyro_svi_matches_a_banana(monkeypatch):
    """numpyro's SVI trains the flow's parameters; the ELBO never inverts the IAF."""

    def model():
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))  # noqa: F841
        x1, x2 = z[..., 0], z[..., 1]
        # banana = N(0, I) pushed by (x1, x2) -> (x1, x2 + 0.5 (x1^2 - 1)): the factor
        # turns the standard-normal prior into it (log Z = 0)
        shear = x2 - 0.5 * (x1**2 - 1.0)
        numpyro.factor("banana", -0.5 * (shear**2 - x2**2))

    iaf = jaxmaf.IAF(2, 3, (32, 32), rngs=nnx.Rngs(1))

    def guide():
        numpyro.sample("z", jaxmaf.numpyro_flow("q", iaf))

    def no_inverse(*args, **kwargs):
        raise AssertionError("the guide's log-density should come with its samples")

    monkeypatch.setattr(jaxmaf.IAF, "log_prob", no_inverse)
    svi = numpyro.infer.SVI(
        model, guide, optax.adam(3e-3), numpyro.infer.Trace_ELBO(num_particles=16)
    )
    result = svi.run(jax.random.key(0), 1500, progress_bar=False)
    monkeypatch.undo()
    jaxmaf.update_from_numpyro(iaf, result.params, "q")

    def banana(x):
        shear = x[..., 1] - 0.5 * (x[..., 0] ** 2 - 1.0)
        return -0.5 * (x[..., 0] ** 2 + shear**2) - math.log(2 * math.pi)

    x, log_q = iaf.sample_and_log_prob(jax.random.key(5), (20_000,))
    kl = float(jnp.mean(log_q - banana(x)))
    assert kl < 0.05, kl


def test_update_from_numpyro_refuses_other_sites_and_other_flows():
    iaf = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
    other = jaxmaf.IAF(2, 2, (16,), rngs=nnx.Rngs(0))
    params = {"q": nnx.to_pure_dict(nnx.state(other, nnx.Param))}
    with pytest.raises(ValueError, match="No parameter site 'p'"):
        jaxmaf.update_from_numpyro(iaf, params, "p")
    with pytest.raises(ValueError, match="do not match this flow"):
        jaxmaf.update_from_numpyro(iaf, params, "q")
