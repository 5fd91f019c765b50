"""Variational inference: fit_variational against targets whose normaliser is known exactly."""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxmaf

COV = np.array([[1.0, 0.9], [0.9, 1.0]])
PREC = np.linalg.inv(COV)
LOG_NORM = -math.log(2 * math.pi) - 0.5 * math.log(np.linalg.det(COV))


def gaussian(x):
    """A normalised correlated Gaussian (log Z = 0)."""
    return -0.5 * jnp.einsum("...i,ij,...j->...", x, PREC, x) + LOG_NORM


def banana(x, b=0.5):
    """A standard normal sheared by x2 -> x2 + b (x1^2 - 1): volume preserving, log Z = 0."""
    x1, x2 = x[..., 0], x[..., 1] - b * (x[..., 0] ** 2 - 1.0)
    return -0.5 * (x1**2 + x2**2) - math.log(2 * math.pi)


def kl(flow, log_target, n=20_000, context=None):
    """KL(q || p) = log Z - ELBO for a normalised target (log Z = 0), from n samples."""
    x, log_q = flow.sample_and_log_prob(jax.random.key(99), (n,), context)
    log_p = log_target(x) if context is None else log_target(x, context)
    return float(jnp.mean(log_q - log_p))


@pytest.mark.parametrize("cls", [jaxmaf.IAF, jaxmaf.MAF])
def test_a_gaussian_target_is_matched(cls):
    """One affine layer can represent the target exactly: the KL goes to about 0."""
    flow = cls(2, 2, (16,), base="gaussian", rngs=nnx.Rngs(0))  # a MAF's 2-d default is a mixture
    assert kl(flow, gaussian) > 0.5  # the identity flow is far from it
    h = jaxmaf.fit_variational(
        flow, gaussian, num_steps=600, batch_size=128, optimizer=optax.adam(1e-2), progress=False
    )
    assert h.stop_reason == "completed" and h.steps == 600 and len(h.elbo) == 6
    assert kl(flow, gaussian) < 0.01
    # the flow ends with the best block's parameters, judged on fixed draws
    assert h.best_elbo == max(h.elbo) and h.elbo[h.best_block] == h.best_elbo
    assert abs(-h.best_elbo - kl(flow, gaussian)) < 0.01  # log Z = 0: -ELBO is the KL


def test_banana_kl_is_small():
    flow = jaxmaf.IAF(2, 4, (32, 32), rngs=nnx.Rngs(1))
    h = jaxmaf.fit_variational(
        flow, banana, num_steps=1500, batch_size=256, optimizer=optax.adam(3e-3), progress=False
    )
    assert h.best_block >= 0
    assert kl(flow, banana) < 0.03, kl(flow, banana)


def test_sticking_the_landing_has_zero_gradient_when_q_is_the_target(cls=jaxmaf.IAF):
    """At q = p the path-derivative estimator is exactly 0 for every draw (Roeder et al.
    2017), so SGD leaves the parameters where they are; the plain reparameterised estimator
    has the zero-mean score term and moves them. (An IAF: its log_prob, which the estimator
    needs, is the sequential direction; a MAF runs the same code.)"""
    flow = cls(3, 2, (16,), output_init_scale=0.5, rngs=nnx.Rngs(0))
    target = nnx.clone(flow)
    start = nnx.state(flow, nnx.Param)
    moved = {}
    for stl in (False, True):
        fitted = nnx.clone(flow)
        jaxmaf.fit_variational(
            fitted,
            target.log_prob,
            num_steps=20,
            batch_size=4,
            optimizer=optax.sgd(0.1),
            steps_per_block=20,
            stick_the_landing=stl,
            progress=False,
        )
        moved[stl] = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(
                jax.tree.leaves(start), jax.tree.leaves(nnx.state(fitted, nnx.Param)), strict=True
            )
        )
    assert moved[True] < 1e-5, moved
    assert moved[False] > 1e-2, moved


STL_FLOWS = {
    "iaf_3d_random_orders": lambda: jaxmaf.IAF(3, 3, (16,), permutation="random", rngs=nnx.Rngs(1)),
    "iaf_5d_spline": lambda: jaxmaf.IAF(5, 2, (16, 16), transformer="spline", rngs=nnx.Rngs(2)),
    "iaf_4d_context": lambda: jaxmaf.IAF(4, 2, (16,), context_dim=2, rngs=nnx.Rngs(3)),
}


@pytest.mark.parametrize("name", STL_FLOWS)
def test_sticking_the_landing_score_by_jacobian_equals_by_log_prob(x64, name):
    """The score from the sampling pass's Jacobian (J^-T grad_u log q) is log_prob's gradient:
    the STL gradient agrees with the one through the sequential log_prob to 1e-9 in float64,
    for random orders, splines and a batch of contexts, away from the identity start."""
    flow = STL_FLOWS[name]()
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    keys = iter(jax.random.split(jax.random.key(0), 100))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(next(keys), p.shape), params)
    context = jnp.array([[0.5, -1.0], [2.0, 0.0], [-1.0, 1.0]]) if flow.context_dim else None
    u = jax.random.normal(jax.random.key(1), (8,) + (() if context is None else (3,)) + (flow.dim,))

    def target(x, c=None):
        shift = 0.0 if c is None else jnp.sum(c, -1, keepdims=True)
        return -0.5 * jnp.sum((x - 1.0 - shift) ** 2 / (1.0 + jnp.arange(x.shape[-1])), -1)

    assert jaxmaf.elbo.uses_jacobian(nnx.merge(graphdef, params, rest), u, context)

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def grad(params, stl, score):  # compiled: op by op, the sequential log_prob takes seconds
        return jax.value_and_grad(jaxmaf.elbo.elbo)(
            params, rest, graphdef, u, target, context, stl, score
        )

    (value, by_jacobian), (auto, _) = (grad(params, True, s) for s in ("jacobian", "auto"))
    reference, by_log_prob = grad(params, True, "log_prob")
    assert float(value) == float(auto) and abs(float(value - reference)) < 1e-9
    flat_j, flat_l = (
        jnp.concatenate([g.ravel() for g in jax.tree.leaves(t)]) for t in (by_jacobian, by_log_prob)
    )
    assert float(jnp.max(jnp.abs(flat_j - flat_l))) < 1e-9 * float(jnp.max(jnp.abs(flat_l)))
    # and it is not the plain gradient: the score term it drops is not zero here
    plain = grad(params, False, "auto")[1]
    flat_p = jnp.concatenate([g.ravel() for g in jax.tree.leaves(plain)])
    assert float(jnp.max(jnp.abs(flat_p - flat_l))) > 1e-3 * float(jnp.max(jnp.abs(flat_l)))


def test_the_jacobian_is_used_where_it_saves_passes(monkeypatch):
    u3, u2 = jnp.zeros((64, 3)), jnp.zeros((64, 2))
    uses = jaxmaf.elbo.uses_jacobian
    assert uses(jaxmaf.IAF(3, 2, (8,), rngs=nnx.Rngs(0)), u3)
    assert not uses(jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0)), u2)  # 2-d: slower (measured)
    assert not uses(jaxmaf.MAF(3, 2, (8,), rngs=nnx.Rngs(0)), u3)  # log_prob is one pass
    assert not uses(jaxmaf.IAF(3, 2, (8,), batch_norm=True, rngs=nnx.Rngs(0)), u3)  # rows coupled
    ctx = jnp.zeros((5, 1))
    iaf = jaxmaf.IAF(3, 2, (8,), context_dim=1, rngs=nnx.Rngs(0))
    monkeypatch.setattr(jaxmaf.elbo, "JACOBIAN_BUDGET", 64 * 5 * 9)
    assert uses(iaf, jnp.zeros((64, 5, 3)), ctx) and uses(iaf, jnp.zeros((64, 1, 3)), ctx)
    assert not uses(iaf, jnp.zeros((65, 1, 3)), ctx)  # 65 x 5 samples x 9 entries: over


def test_fit_variational_chooses_the_score_before_compiling(monkeypatch):
    """The Jacobian-or-log_prob choice is a static argument: changing the budget between two
    runs compiles another program, and both fits agree (the same gradient up to rounding)."""
    kw = dict(num_steps=50, batch_size=32, steps_per_block=50, progress=False)
    kw.update(optimizer=optax.adam(1e-2), stick_the_landing=True)
    fits, target = [], lambda x: -0.5 * jnp.sum((x - 1.0) ** 2, -1)  # one target: one program
    for budget in (jaxmaf.elbo.JACOBIAN_BUDGET, 0):
        monkeypatch.setattr(jaxmaf.elbo, "JACOBIAN_BUDGET", budget)
        flow = jaxmaf.IAF(3, 2, (16,), rngs=nnx.Rngs(0))
        traces = jaxmaf.programs.traces
        jaxmaf.fit_variational(flow, target, **kw)
        assert jaxmaf.programs.traces == traces + 1
        fits.append(jax.tree.leaves(nnx.state(flow, nnx.Param)))
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*fits, strict=True)) < 1e-4
    with pytest.raises(ValueError, match="score to be one of auto, jacobian, log_prob"):
        jaxmaf.elbo.elbo(None, None, None, jnp.zeros((2, 3)), None, None, True, "exact")


def test_amortised_over_a_batch_of_contexts():
    """q(x | c) for three contexts at once: the target's mean moves with c."""

    def target(x, c):
        return -0.5 * jnp.sum((x - c) ** 2, -1) - math.log(2 * math.pi)

    flow = jaxmaf.IAF(2, 2, (16,), context_dim=2, rngs=nnx.Rngs(0))
    contexts = jnp.array([[-2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    jaxmaf.fit_variational(
        flow,
        target,
        num_steps=800,
        batch_size=64,
        optimizer=optax.adam(1e-2),
        context=contexts,
        progress=False,
    )
    x = flow.sample(jax.random.key(1), (4000,), contexts)
    assert x.shape == (4000, 3, 2)
    # Means within 0.3 (contexts lie 1.4-5.4 apart); a shift of 0.1-0.2 costs KL 0.005-0.02,
    # what 800 noisy steps at this rate leave on some seeds: the KL bound below is the test.
    np.testing.assert_allclose(x.mean(0), contexts, atol=0.3)
    assert kl(flow, target, context=contexts) < 0.02


def test_steps_per_draw_divides_the_block_within_the_budget(monkeypatch):
    steps_per_draw = jaxmaf.variational._steps_per_draw
    monkeypatch.setattr(jaxmaf.variational, "NOISE_BUDGET", 1000)
    assert steps_per_draw(100, 10) == 100  # 1000 numbers: the whole block at once
    assert steps_per_draw(100, 30) == 25  # at most 33 steps: the largest divisor of 100
    assert steps_per_draw(97, 30) == 1  # a prime block: one step per draw
    assert steps_per_draw(10, 5000) == 1  # one step over the budget: still one per draw
    for steps in range(1, 60):
        for per_step in (1, 7, 64, 999):
            c = steps_per_draw(steps, per_step)
            assert steps % c == 0 and 1 <= c and (c == 1 or c * per_step <= 1000)


@pytest.mark.parametrize("budget", [None, 1], ids=["one_draw", "a_draw_per_step"])
@pytest.mark.parametrize("contexts", [None, [[1.0, -1.0], [0.0, 2.0], [-2.0, 0.5]]])
def test_train_elbo_is_unbiased_however_the_noise_is_drawn(monkeypatch, budget, contexts):
    """With a zero step the block averages fresh ELBO estimates of a fixed q: -KL exactly.

    The untrained IAF is the identity (q = N(0, I)); the target N(m, s^2 I) has
    KL(q || p) = sum_i log s + (1 + m_i^2) / (2 s^2) - 1/2 in closed form. Noise drawn for
    all steps at once, or step by step, must give the same mean within its standard error;
    noise reused across draws (a key not split) or of the wrong scale misses it.
    """
    if budget is not None:
        monkeypatch.setattr(jaxmaf.variational, "NOISE_BUDGET", budget)
    s, steps, batch = 0.5, 500, 64
    context = None if contexts is None else jnp.asarray(contexts)
    means = jnp.ones(2) if context is None else context

    def target(x, c=None):
        m = means if c is None else c
        return jnp.sum(-0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi), -1)

    flow = jaxmaf.IAF(2, 2, (16,), context_dim=0 if context is None else 2, rngs=nnx.Rngs(0))
    kw = dict(num_steps=steps, steps_per_block=steps, batch_size=batch, progress=False)
    h = jaxmaf.fit_variational(flow, target, optimizer=optax.sgd(0.0), context=context, **kw)
    kl_exact = float(jnp.mean(jnp.sum(math.log(s) + (1 + means**2) / (2 * s**2) - 0.5, -1)))
    u = jax.random.normal(jax.random.key(5), (20_000,) + means.shape)  # q's draws: the noise
    terms = target(u) - jnp.sum(-0.5 * u**2 - 0.5 * math.log(2 * math.pi), -1)
    se = float(jnp.std(terms.reshape(20_000, -1).mean(-1))) / math.sqrt(steps * batch)
    assert abs(h.train_elbo[0] + kl_exact) < 4 * se


@pytest.mark.parametrize("stl", [False, True], ids=["plain", "sticking_the_landing"])
def test_float64_is_kept_end_to_end(x64, stl):
    """Under x64 a float64 flow trains in float64: parameters, noise and the judged ELBO.

    The history's ELBO of the best block equals, to float64 rounding, the ELBO recomputed
    from the final flow on the same evaluation draws; a float32 step anywhere (noise,
    target, log-density) would leave the parameters float64 but miss by ~1e-7.
    """
    flow = jaxmaf.IAF(2, 2, (16,), rngs=nnx.Rngs(0))
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(nnx.state(flow, nnx.Param)))
    seen = []

    def target(x):
        seen.append(x.dtype)
        return gaussian(x)

    h = jaxmaf.fit_variational(
        flow,
        target,
        num_steps=200,
        batch_size=64,
        eval_samples=512,
        optimizer=optax.adam(1e-2),
        stick_the_landing=stl,
        seed=3,
        progress=False,
    )
    assert set(seen) == {jnp.dtype(jnp.float64)}
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(nnx.state(flow, nnx.Param)))
    key, eval_key = jax.random.split(jax.random.key(3))
    x, log_q = flow.sample_and_log_prob(eval_key, (512,))
    assert x.dtype == log_q.dtype == jnp.float64
    assert abs(float(jnp.mean(gaussian(x) - log_q)) - h.best_elbo) < 1e-12

    # The training draws too: one frozen step's ELBO, recomputed from the first block's key.
    h = jaxmaf.fit_variational(
        flow,
        gaussian,
        num_steps=1,
        steps_per_block=1,
        batch_size=64,
        optimizer=optax.sgd(0.0),
        stick_the_landing=stl,
        seed=3,
        progress=False,
    )
    (draw_key,) = jax.random.split(jax.random.split(key)[1], 1)
    x, log_q = flow.sample_and_log_prob(draw_key, (1, 64))
    assert abs(float(jnp.mean(gaussian(x[0]) - log_q[0])) - h.train_elbo[0]) < 1e-12


def test_divergence_stops_and_keeps_the_best_parameters():
    """A target that overflows once q moves far enough: the run stops with the best block."""

    def target(x):  # -inf beyond |x| = 6, the mode at 5.5: q drifts there, then the ELBO is -inf
        lp = -0.5 * jnp.sum((x - 5.5) ** 2, -1)
        return jnp.where(jnp.all(jnp.abs(x) < 6.0, -1), lp, -jnp.inf)

    flow = jaxmaf.IAF(2, 2, (16,), rngs=nnx.Rngs(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = jaxmaf.fit_variational(
            flow,
            target,
            num_steps=2000,
            batch_size=64,
            steps_per_block=10,
            optimizer=optax.adam(3e-3),
            progress=False,
        )
    assert h.stop_reason == "non_finite" and any("non-finite" in str(w.message) for w in caught)
    assert 1 <= len(h.elbo) < 200 and h.best_elbo == max(h.elbo)  # stopped early, kept the best
    params = jax.tree.leaves(nnx.state(flow, nnx.Param))
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in params)


@pytest.mark.parametrize("optimizer", ["given", "default"])
def test_second_call_reuses_the_compiled_block(optimizer):
    """The optimizer is a static argument: the default must be one shared instance."""
    flow = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
    opt = optax.adam(1e-3) if optimizer == "given" else None
    kw = dict(num_steps=20, batch_size=16, steps_per_block=10, optimizer=opt, progress=False)
    jaxmaf.fit_variational(flow, gaussian, **kw)
    traces = jaxmaf.programs.traces
    jaxmaf.fit_variational(flow, gaussian, **kw)
    assert jaxmaf.programs.traces == traces


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_steps=0), "num_steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(seed=-1), "seed"),
        (dict(optimizer="adam"), "optimizer"),
        (dict(context=jnp.zeros(2)), "unconditional"),
        (dict(log_target=lambda x: x), r"one log-density per point, shape \(8,\)"),
        (dict(log_target=lambda x: x @ jnp.ones((3,))), "failed on inputs of shape"),
        (dict(log_target=3.0), "function of x"),
        (dict(stick_the_landing=1), "stick_the_landing"),
    ],
)
def test_bad_arguments_are_refused_before_training(kwargs, match):
    flow = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
    before = jax.tree.leaves(nnx.state(flow))
    kw = dict(log_target=gaussian, num_steps=10, batch_size=8, progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        jaxmaf.fit_variational(flow, **kw)
    for a, b in zip(before, jax.tree.leaves(nnx.state(flow)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_flow_with_a_mixture_base_is_refused_and_a_normal_one_fitted():
    """A mixture's draws carry no gradient to its weights: a 2-d MAF's default base is refused
    by name, untouched; the same MAF over the standard normal fits the Gaussian target."""
    flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
    before = jax.tree.leaves(nnx.state(flow))
    kw = dict(num_steps=300, batch_size=64, optimizer=optax.adam(1e-2), progress=False)
    with pytest.raises(ValueError, match="mixture base.*base='gaussian'"):
        jaxmaf.fit_variational(flow, gaussian, **kw)
    for a, b in zip(before, jax.tree.leaves(nnx.state(flow)), strict=True):
        np.testing.assert_array_equal(a, b)
    normal = jaxmaf.MAF(2, 2, (8,), base="gaussian", rngs=nnx.Rngs(0))
    h = jaxmaf.fit_variational(normal, gaussian, **kw)
    assert h.elbo[-1] > -0.05  # log Z = 0: the ELBO is minus the KL


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    kw = dict(
        num_steps=60, batch_size=32, steps_per_block=10, optimizer=optax.adam(1e-2), progress=False
    )
    reference = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
    h_ref = jaxmaf.fit_variational(reference, gaussian, **kw)

    class CtrlC:  # Ctrl-C lands while the loop waits for the 4th block's result
        def __float__(self):
            raise KeyboardInterrupt

    real, calls = jaxmaf.variational.bind, {"n": 0}

    def interrupted(fn, **static):
        run = real(fn, **static)

        def block(*args):
            calls["n"] += 1
            *out, train, judged = run(*args)
            return *out, CtrlC() if calls["n"] == 4 else train, judged

        return block

    flow = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
    monkeypatch.setattr(jaxmaf.variational, "bind", interrupted)
    h1 = jaxmaf.fit_variational(flow, gaussian, checkpoint_dir=tmp_path, **kw)
    monkeypatch.setattr(jaxmaf.variational, "bind", real)
    assert h1.stop_reason == "interrupted" and len(h1.elbo) == 3
    assert (tmp_path / "best.jaxmaf").exists()
    resumed = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
    h2 = jaxmaf.fit_variational(resumed, gaussian, checkpoint_dir=tmp_path, resume=True, **kw)
    np.testing.assert_allclose(h2.elbo, h_ref.elbo, rtol=1e-6)
    assert h2.best_block == h_ref.best_block and h2.steps == 60
    for a, b in zip(
        jax.tree.leaves(nnx.state(resumed)), jax.tree.leaves(nnx.state(reference)), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # another run's settings are refused by name
    with pytest.raises(ValueError, match="batch_size"):
        jaxmaf.fit_variational(
            resumed, gaussian, checkpoint_dir=tmp_path, resume=True, **(kw | {"batch_size": 16})
        )
    with pytest.raises(ValueError, match="checkpoint_dir"):
        jaxmaf.fit_variational(resumed, gaussian, resume=True, **kw)
