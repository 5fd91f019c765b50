"""fit: learning, best-epoch parameters, refusal of bad data, divergence, no recompilation."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxmaf
from conftest import FLOWS, make_flow, make_inputs
from jaxmaf import ensemble, epochs, programs, progress, training

COV = np.array([[1.0, 0.8], [0.8, 1.0]])


def gaussian_data(n, seed):
    return (
        np.random.default_rng(seed).multivariate_normal([1.0, -2.0], COV, size=n).astype(np.float32)
    )


def true_nll():
    return 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * COV))


def small_flow(seed=0, **kw):
    return jaxmaf.MAF(2, 2, (16, 16), rngs=nnx.Rngs(seed), **kw)


def test_fit_learns_a_correlated_gaussian_and_keeps_best_epoch():
    flow = small_flow()
    x, xv, xt = gaussian_data(1000, 0), gaussian_data(300, 1), gaussian_data(2000, 2)
    h = jaxmaf.fit(
        flow,
        x,
        validation_data=xv,
        optimizer=optax.adam(1e-2),
        batch_size=100,
        num_epochs=40,
        progress=False,
    )
    assert len(h.train_loss) == len(h.val_loss) == 40
    test_nll = -float(flow.log_prob(xt).mean())
    assert abs(test_nll - true_nll()) < 0.05, (test_nll, true_nll())
    assert h.best_epoch == int(np.argmin(h.val_loss))
    np.testing.assert_allclose(
        -float(flow.log_prob(xv).mean()), h.val_loss[h.best_epoch], rtol=1e-5
    )


def test_partial_last_batch_counts_every_point():
    # With batch_size > N/2 the last batch is partial; the reported epoch loss is the mean over
    # exactly the N points (a learning rate of 0 leaves the parameters at their initial values).
    flow = small_flow()
    x = gaussian_data(150, 3)
    h = jaxmaf.fit(flow, x, optimizer=optax.sgd(0.0), batch_size=100, num_epochs=1, progress=False)
    np.testing.assert_allclose(h.train_loss[0], -float(flow.log_prob(x).mean()), rtol=1e-6)


def test_second_fit_does_not_recompile():
    flow = small_flow()
    x = gaussian_data(200, 4)
    opt = optax.adam(1e-3)
    jaxmaf.fit(
        flow, x, validation_data=x[:50], optimizer=opt, batch_size=64, num_epochs=2, progress=False
    )
    sizes = programs.traces, epochs.judge_rows._cache_size()
    jaxmaf.fit(
        flow,
        x,
        validation_data=x[:50],
        optimizer=opt,
        batch_size=64,
        num_epochs=2,
        seed=1,
        progress=False,
    )
    assert (programs.traces, epochs.judge_rows._cache_size()) == sizes


def test_conditional_fit_learns_context_dependence():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(800, 1)).astype(np.float32)
    x = (np.concatenate([2 * c, -c], 1) + 0.3 * rng.normal(size=(800, 2))).astype(np.float32)
    flow = jaxmaf.MAF(2, 2, (16, 16), context_dim=1, rngs=nnx.Rngs(0))
    jaxmaf.fit(
        flow,
        x,
        context=c,
        optimizer=optax.adam(1e-2),
        batch_size=100,
        num_epochs=60,
        progress=False,
    )
    xs = flow.sample(jax.random.key(0), (2000,), context=jnp.array([1.0]))
    np.testing.assert_allclose(np.asarray(xs).mean(0), [2.0, -1.0], atol=0.1)


def _params(flow):
    return [np.asarray(p) for p in jax.tree.leaves(nnx.state(flow, nnx.Param))]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(data=np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, np.inf]])),
            r"data contains NaN or inf in 2 row\(s\) \(rows 1, 2\)",
        ),
        (dict(data=np.zeros((0, 2))), r"non-empty data, got shape \(0, 2\)"),
        (dict(data=np.zeros((5, 3))), r"data of shape \(N, 2\), got shape \(5, 3\)"),
        (dict(batch_size=0), "batch_size to be an integer >= 1, got 0"),
        (dict(num_epochs=0), "num_epochs to be an integer >= 1, got 0"),
        (dict(batch_size=True), "batch_size to be an integer >= 1, got True"),
        (dict(num_epochs=2.0), "num_epochs to be an integer >= 1, got 2.0"),
        (dict(patience=True), "patience to be None or an integer >= 1, got True"),
        (dict(patience_se=-1.0), "patience_se .*got -1.0"),
        (dict(patience_se=float("nan")), "patience_se"),
        (dict(data=np.ones((5, 2)) * (1 + 1j)), r"real data, got complex values"),
        (dict(validation_data=np.ones((5, 2), complex)), r"real validation_data, got complex"),
        (dict(data=np.array([["a", "b"]] * 5)), "numeric data, got dtype <U1"),
        (dict(validation_data=np.full((2, 2), np.inf)), "validation_data contains NaN or inf"),
        (dict(context=np.zeros((5, 1))), "unconditional"),
    ],
)
def test_bad_input_is_refused_and_flow_untouched(kwargs, match):
    flow = small_flow()
    before = _params(flow)
    args = dict(data=np.zeros((5, 2), np.float32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        jaxmaf.fit(flow, **args, progress=False)
    for a, b in zip(before, _params(flow), strict=True):
        np.testing.assert_array_equal(a, b)


def test_conditional_context_errors():
    flow = jaxmaf.MAF(2, 2, (8,), context_dim=2, rngs=nnx.Rngs(0))
    x = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"context of shape \(N, 2\) is required, got None"):
        jaxmaf.fit(flow, x, progress=False)
    with pytest.raises(ValueError, match="context with 5 rows .* got 4"):
        jaxmaf.fit(flow, x, context=np.zeros((4, 2)), progress=False)
    with pytest.raises(ValueError, match=r"context contains NaN or inf in 1 row\(s\) \(rows 3\)"):
        c = np.zeros((5, 2))
        c[3, 1] = np.nan
        jaxmaf.fit(flow, x, context=c, progress=False)


def nan_after(steps: int, lr: float = 1e-2) -> optax.GradientTransformation:
    """SGD that starts producing NaN updates after `steps` steps (a divergence on cue)."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(grads, count, params=None):
        bad = count >= steps
        return jax.tree.map(lambda g: jnp.where(bad, jnp.nan, -lr * g), grads), count + 1

    return optax.GradientTransformation(init, update)


def test_divergence_stops_and_keeps_best_finite_parameters():
    flow = small_flow()
    x = gaussian_data(200, 5)
    with pytest.warns(RuntimeWarning, match="Training loss became nan at epoch 3"):
        h = jaxmaf.fit(
            flow,
            x,
            validation_data=x[:50],
            optimizer=nan_after(3 * 4 + 1),
            batch_size=50,
            num_epochs=10,
            progress=False,
        )
    assert h.stop_reason == "non_finite" and len(h.train_loss) == 3
    assert all(np.all(np.isfinite(p)) for p in _params(flow))
    np.testing.assert_allclose(
        -float(flow.log_prob(x[:50]).mean()), h.val_loss[h.best_epoch], rtol=1e-5
    )


@pytest.mark.parametrize("optimizer", ["diverging", "nan_last_step"])
def test_without_validation_the_returned_flow_has_history_best_loss(optimizer):
    """Without validation data the best epoch is judged by the training-set NLL of the
    parameters as they are after the epoch (not the epoch's running mean, taken before its
    last update): a diverging learning rate or a NaN final step never reaches the flow."""
    x = gaussian_data(128, 7)
    opt = optax.adam(3.0) if optimizer == "diverging" else nan_after(4)
    flow = small_flow()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        h = jaxmaf.fit(flow, x, optimizer=opt, batch_size=128, num_epochs=12, progress=False)
    assert h.best_epoch >= 0 and all(np.all(np.isfinite(p)) for p in _params(flow))
    nll = -float(flow.log_prob(x).mean())
    np.testing.assert_allclose(nll, h.best_loss, rtol=1e-5)
    if optimizer == "nan_last_step":  # epoch 4's one update is NaN, its running mean finite
        assert math.isfinite(h.train_loss[4]) and h.best_epoch < 4


def test_ensemble_without_validation_members_have_their_best_loss():
    x = gaussian_data(128, 7)
    flows, hists = jaxmaf.fit_ensemble(
        small_flow_from_rngs,
        x,
        seeds=[0, 1],
        learning_rate=[1e-2, 3.0],
        batch_size=128,
        num_epochs=12,
        progress=False,
    )
    for flow, h in zip(flows, hists, strict=True):
        assert h.best_epoch >= 0 and all(np.all(np.isfinite(p)) for p in _params(flow))
        np.testing.assert_allclose(-float(flow.log_prob(x).mean()), h.best_loss, rtol=1e-5)


def test_ensemble_members_with_batch_norm_come_back_as_validated():
    x, xv = gaussian_data(256, 13) * 2 + 3, gaussian_data(64, 14) * 2 + 3
    flows, hists = jaxmaf.fit_ensemble(
        lambda rngs: jaxmaf.MAF(2, 3, (16,), batch_norm=True, rngs=rngs),
        x,
        validation_data=xv,
        seeds=[0, 1],
        batch_size=64,
        num_epochs=4,
        progress=False,
    )
    for flow, h in zip(flows, hists, strict=True):
        assert all(bn.use_running_average for bn in flow.batch_norms)
        lp = flow.log_prob(xv)
        np.testing.assert_allclose(-float(lp.mean()), h.val_loss[h.best_epoch], rtol=1e-5)
        np.testing.assert_allclose(flow.log_prob(xv[:1]), lp[:1], rtol=1e-6)


def small_flow_from_rngs(rngs):
    return jaxmaf.MAF(2, 2, (16, 16), rngs=rngs)


def test_early_stopping():
    flow = small_flow()
    x = gaussian_data(200, 6)
    # lr 0: validation never improves after epoch 0, so training stops after 1 + patience epochs.
    h = jaxmaf.fit(
        flow,
        x,
        validation_data=x[:50],
        optimizer=optax.sgd(0.0),
        batch_size=50,
        num_epochs=50,
        patience=3,
        progress=False,
    )
    assert h.stop_reason == "early_stopping" and len(h.val_loss) == 4 and h.best_epoch == 0


def test_patience_counts_only_epochs_evidently_worse_than_the_best(monkeypatch):
    """Scripted judgements (mean NLL, gain over the kept parameters, its standard error).

    After the best epoch 0 come 5 epochs within noise of it (gain -0.001, one standard
    error 0.01), then epochs evidently worse (gain -0.5). With patience 3 the default
    rule stops after 1 + 5 + 3 epochs; the classic rule (``patience_se=None``), or a
    margin smaller than the epochs' differences, after 1 + 3.
    """
    real = training.epoch_stats
    flat = [(1.0, np.inf, np.nan)] + [(1.001, -0.001, 0.01)] * 5 + [(1.5, -0.5, 0.01)] * 20

    def run(**kwargs):
        script = iter(flat)

        def scripted(rows, kept_rows):
            real(rows, kept_rows)
            return jnp.array([next(script), (np.nan,) * 3])

        monkeypatch.setattr(training, "epoch_stats", scripted)
        x = gaussian_data(100, 9)
        h = jaxmaf.fit(
            small_flow(),
            x,
            validation_data=x[:40],
            batch_size=50,
            num_epochs=20,
            patience=3,
            ema_epochs=None,
            progress=False,
            **kwargs,
        )
        assert h.stop_reason == "early_stopping" and h.best_epoch == 0
        return len(h.val_loss)

    assert run() == 9
    assert run(patience_se=None) == run(patience_se=0.05) == 4


def test_against_is_the_paired_gain_and_its_standard_error():
    rng = np.random.default_rng(0)
    kept, rows = rng.normal(size=(2, 3, 50))  # three members, 50 judged points
    mean, gain, se = np.moveaxis(np.asarray(epochs.against(rows, kept)), -1, 0)
    d = kept - rows
    np.testing.assert_allclose(mean, rows.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(gain, d.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(se, d.std(-1, ddof=1) / np.sqrt(50), rtol=1e-5)


# ---------------------------------------------------------------- ensembles
def test_ensemble_members_match_single_fits_with_their_own_learning_rates():
    x, xv = gaussian_data(300, 7), gaussian_data(100, 8)
    make = lambda rngs: jaxmaf.MAF(2, 2, (8, 8), rngs=rngs)  # noqa: E731
    lrs = [1e-2, 3e-3, 1e-3]
    flows, hists = jaxmaf.fit_ensemble(
        make,
        x,
        seeds=[0, 5, 9],
        learning_rate=lrs,
        validation_data=xv,
        batch_size=64,
        num_epochs=4,
        progress=False,
    )
    assert len(flows) == len(hists) == 3
    for flow, h, seed, lr in zip(flows, hists, [0, 5, 9], lrs, strict=True):
        single = make(nnx.Rngs(seed))
        hs = jaxmaf.fit(
            single,
            x,
            validation_data=xv,
            optimizer=optax.adam(lr),
            batch_size=64,
            num_epochs=4,
            seed=seed,
            progress=False,
        )
        np.testing.assert_allclose(h.val_loss, hs.val_loss, rtol=1e-5)
        np.testing.assert_allclose(h.train_loss, hs.train_loss, rtol=1e-5)
        assert h.best_epoch == hs.best_epoch
        np.testing.assert_allclose(flow.log_prob(xv), single.log_prob(xv), rtol=1e-4, atol=1e-4)
    # different learning rates really give different members
    assert not np.allclose(hists[0].val_loss, hists[2].val_loss)


def test_ensemble_members_keep_their_own_drawn_permutations():
    """Above 2-d each flow draws its permutations from its rngs (state, not structure): the
    ensemble stacks members with different orders, and each trains as its single fit does."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(240, 4)) @ rng.normal(size=(4, 4))).astype(np.float32)
    make = lambda rngs: jaxmaf.MAF(4, 3, (8,), output_init_scale=0.5, rngs=rngs)  # noqa: E731
    kw = dict(batch_size=60, num_epochs=3, progress=False)
    seeds = [0, 1, 2]
    flows, hists = jaxmaf.fit_ensemble(make, x, seeds=seeds, optimizer=optax.adam(1e-2), **kw)
    assert len({f.permutations for f in flows}) == 3
    for flow, h, seed in zip(flows, hists, seeds, strict=True):
        single = make(nnx.Rngs(seed))
        hs = jaxmaf.fit(single, x, optimizer=optax.adam(1e-2), seed=seed, **kw)
        assert flow.permutations == single.permutations
        np.testing.assert_allclose(h.train_loss, hs.train_loss, rtol=1e-5)
        np.testing.assert_allclose(flow.log_prob(x), single.log_prob(x), rtol=1e-4, atol=1e-4)


def test_ensemble_members_stop_where_single_fits_stop(monkeypatch):
    """Early stopping with ``patience_se`` per member, as in :func:`jaxmaf.fit`; no epoch is
    run past the last member's last (none dispatched ahead when a member could stop)."""
    real, calls = epochs.bind, {"n": 0}

    def counting(fn, **static):
        epoch = real(fn, **static)

        def counted(*args):
            calls["n"] += fn is ensemble._ensemble_epoch
            return epoch(*args)

        return counted

    monkeypatch.setattr(epochs, "bind", counting)
    x, xv = gaussian_data(300, 7), gaussian_data(60, 8)
    make = lambda rngs: jaxmaf.MAF(2, 2, (8, 8), rngs=rngs)  # noqa: E731
    opt, seeds = optax.adam(0.1), [0, 1, 2, 3]
    common = dict(validation_data=xv, batch_size=100, num_epochs=30, patience=2, progress=False)
    lengths = {}
    for patience_se in (1.0, None):
        calls["n"] = 0
        flows, hists = jaxmaf.fit_ensemble(
            make, x, seeds=seeds, optimizer=opt, patience_se=patience_se, **common
        )
        assert calls["n"] == max(len(h.val_loss) for h in hists)
        for flow, h, seed in zip(flows, hists, seeds, strict=True):
            single = make(nnx.Rngs(seed))
            hs = jaxmaf.fit(single, x, optimizer=opt, seed=seed, patience_se=patience_se, **common)
            assert (len(h.val_loss), h.best_epoch, h.stop_reason) == (
                len(hs.val_loss),
                hs.best_epoch,
                hs.stop_reason,
            )
            np.testing.assert_allclose(flow.log_prob(xv), single.log_prob(xv), rtol=1e-4, atol=1e-4)
        lengths[patience_se] = np.array([len(h.val_loss) for h in hists])
    # epochs within noise of the best no longer count: no member stops sooner, some go on
    assert np.all(lengths[1.0] >= lengths[None]) and np.any(lengths[1.0] > lengths[None])


def test_ensemble_takes_the_same_optimizer_object_as_fit():
    """``optimizer=`` may be what fit takes (here a scheduled chain): every member uses it."""
    x = gaussian_data(200, 3)
    make = lambda rngs: jaxmaf.MAF(2, 2, (8,), rngs=rngs)  # noqa: E731
    opt = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(1e-2, 30))
    )
    kw = dict(batch_size=50, num_epochs=3, progress=False)
    flows, hists = jaxmaf.fit_ensemble(make, x, seeds=[1, 2], optimizer=opt, **kw)
    for flow, h, seed in zip(flows, hists, [1, 2], strict=True):
        single = make(nnx.Rngs(seed))
        hs = jaxmaf.fit(single, x, optimizer=opt, seed=seed, **kw)
        np.testing.assert_allclose(h.train_loss, hs.train_loss, rtol=1e-5)
        np.testing.assert_allclose(flow.log_prob(x), single.log_prob(x), rtol=1e-4, atol=1e-4)


def test_ensemble_errors():
    make = lambda rngs: small_flow()  # noqa: E731
    with pytest.raises(ValueError, match="at least one seed"):
        jaxmaf.fit_ensemble(make, gaussian_data(10, 0), seeds=[])
    with pytest.raises(ValueError, match="Expected 2 learning rates"):
        jaxmaf.fit_ensemble(make, gaussian_data(10, 0), seeds=[0, 1], learning_rate=[1e-3])
    rand = lambda rngs: jaxmaf.MAF(3, 2, (8,), hidden_degrees="random", rngs=rngs)  # noqa: E731
    with pytest.raises(ValueError, match="differs in structure"):
        jaxmaf.fit_ensemble(rand, np.zeros((10, 3)), seeds=[0, 1], progress=False)


# ---------------------------------------------------------------- save / load / resume
@pytest.mark.parametrize("name", list(FLOWS))
def test_every_configuration_fits_saves_and_loads(tmp_path, name):
    """The registry drives a short fit and a save/load round trip of every configuration."""
    flow = make_flow(name, 3, num_layers=2)
    x, c = make_inputs(name, 3, n=96, seed=5)
    xv, cv = make_inputs(name, 3, n=32, seed=6)
    before = [np.asarray(p) for p in jax.tree.leaves(nnx.state(flow, nnx.Param))]
    h = jaxmaf.fit(
        flow,
        x,
        validation_data=xv,
        context=c,
        validation_context=cv,
        batch_size=32,
        num_epochs=2,
        progress=False,
    )
    after = jax.tree.leaves(nnx.state(flow, nnx.Param))
    assert h.best_epoch >= 0 and any(
        not np.array_equal(a, b) for a, b in zip(before, after, strict=True)
    )
    # the loss fit reports is the returned flow's validation NLL
    np.testing.assert_allclose(-float(flow.log_prob(xv, cv).mean()), h.best_loss, rtol=1e-5)
    path = tmp_path / f"{name}.jaxmaf"
    jaxmaf.save(path, flow)
    loaded = jaxmaf.load(path)
    assert type(loaded) is type(flow) and loaded.config == flow.config
    np.testing.assert_array_equal(loaded.log_prob(xv, cv), flow.log_prob(xv, cv))
    key, c0 = jax.random.key(2), None if cv is None else cv[0]
    np.testing.assert_array_equal(loaded.sample(key, (4,), c0), flow.sample(key, (4,), c0))


def test_save_load_keeps_batch_norm_statistics_and_mode(tmp_path):
    from conftest import batch_norm_maf

    flow = batch_norm_maf(3, 3, nnx.Rngs(0))
    jaxmaf.save(tmp_path / "bn.jaxmaf", flow)
    loaded = jaxmaf.load(tmp_path / "bn.jaxmaf")
    assert loaded.batch_norms[0].use_running_average
    x = jax.random.normal(jax.random.key(0), (5, 3))
    np.testing.assert_array_equal(loaded.log_prob(x), flow.log_prob(x))


def test_save_refuses_callable_activation_and_load_refuses_other_files(tmp_path):
    flow = jaxmaf.MAF(2, 1, (4,), activation=jnp.sin, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation was given as a callable"):
        jaxmaf.save(tmp_path / "f", flow)
    (tmp_path / "other").write_bytes(b"\x80")
    with pytest.raises(ValueError, match="is not a jaxmaf file"):
        jaxmaf.load(tmp_path / "other")


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    x, xv = gaussian_data(300, 9), gaussian_data(100, 10)
    kw = dict(validation_data=xv, batch_size=64, num_epochs=8, seed=3, progress=False)
    reference = small_flow()
    h_ref = jaxmaf.fit(reference, x, **kw)

    calls = {"n": 0}
    real = epochs.bind

    class CtrlC:  # Ctrl-C lands while the loop waits for the 5th epoch's loss
        def __float__(self):
            raise KeyboardInterrupt

    def interrupted(fn, **static):
        epoch = real(fn, **static)

        def fifth_interrupted(*args):
            calls["n"] += 1
            *state, train_loss, rows = epoch(*args)
            return *state, CtrlC() if calls["n"] == 5 else train_loss, rows

        return fifth_interrupted

    monkeypatch.setattr(epochs, "bind", interrupted)
    flow = small_flow()
    h1 = jaxmaf.fit(flow, x, checkpoint_dir=tmp_path, **kw)
    assert h1.stop_reason == "interrupted" and len(h1.val_loss) == 4
    # the interrupted flow holds its best parameters so far
    np.testing.assert_allclose(-float(flow.log_prob(xv).mean()), min(h1.val_loss), rtol=1e-5)
    monkeypatch.setattr(epochs, "bind", real)

    resumed = small_flow(seed=42)  # a fresh flow: the checkpoint supplies the state
    h2 = jaxmaf.fit(resumed, x, checkpoint_dir=tmp_path, resume=True, **kw)
    np.testing.assert_array_equal(h2.val_loss, h_ref.val_loss)
    assert h2.best_epoch == h_ref.best_epoch and h2.stop_reason == "completed"
    np.testing.assert_array_equal(resumed.log_prob(xv), reference.log_prob(xv))
    best = jaxmaf.load(tmp_path / training.BEST_FLOW)
    np.testing.assert_array_equal(best.log_prob(xv), reference.log_prob(xv))
    with pytest.raises(ValueError, match="different run"):
        jaxmaf.fit(
            small_flow(), x, checkpoint_dir=tmp_path, resume=True, **{**kw, "batch_size": 32}
        )


# ---------------------------------------------------------------- data parallel
DATA_PARALLEL_SCRIPT = r"""
import jax, numpy as np, optax
from flax import nnx
import jaxmaf
assert jax.device_count() == 4, jax.devices()
x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
x = x @ np.array([[1., .5], [0., 1.]], np.float32)
def run(devices):
    flow = jaxmaf.MAF(2, 2, (8, 8), rngs=nnx.Rngs(0))
    h = jaxmaf.fit(flow, x, validation_data=x[:64], optimizer=optax.adam(1e-2), batch_size=64,
                   num_epochs=3, progress=False, devices=devices)
    return flow, h
f1, h1 = run(None)
f4, h4 = run(jax.devices())
np.testing.assert_allclose(h1.val_loss, h4.val_loss, rtol=1e-5)
np.testing.assert_allclose(f1.log_prob(x), f4.log_prob(x), rtol=1e-4, atol=1e-4)
for leaf in jax.tree.leaves(nnx.state(f4, nnx.Param)):
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
try:
    run(jax.devices()[:3])
except ValueError as e:
    assert "divisible by the number of devices (3)" in str(e)
else:
    raise AssertionError("batch 64 on 3 devices must be refused")
print("DATA-PARALLEL-OK", h1.val_loss[-1], h4.val_loss[-1])
"""


def test_data_parallel_on_four_cpu_devices_matches_single_device():
    import os
    import subprocess
    import sys

    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    out = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DATA-PARALLEL-OK" in out.stdout


def test_circles_target_nll():
    """Circles data, 1200/200/200, MAF 4x(64, 64), Adam 1e-3, batch 128, 150 epochs."""
    from jaxmaf import datasets

    data = datasets.circles()
    flow = jaxmaf.MAF(2, 4, (64, 64), rngs=nnx.Rngs(0))
    h = jaxmaf.fit(
        flow,
        data.train,
        validation_data=data.validation,
        optimizer=optax.adam(1e-3),
        batch_size=128,
        num_epochs=150,
        progress=False,
    )
    # One of the 200 test points can fall in a hole of the density between the rings that
    # no validation point sees: on one CPU's rounding, this run put 107 nats on one point (test
    # mean 1.79) at a validation NLL of 1.27. The fit is judged without its 2 worst points.
    test_nll = np.sort(-np.asarray(flow.log_prob(data.test)))[:-2].mean()
    assert test_nll < 1.30, test_nll
    assert h.best_loss < 1.35 and h.val_loss[h.best_epoch] == min(h.val_loss)


def test_batch_norm_flow_fit_then_eval_mode_matches_dense_formula(x64, tmp_path):
    x, xv = gaussian_data(400, 11).astype(np.float64) * 3 + 5, gaussian_data(100, 12) * 3 + 5
    flow = jaxmaf.MAF(2, 3, (16,), batch_norm=True, rngs=nnx.Rngs(0))
    h = jaxmaf.fit(
        flow,
        x,
        validation_data=xv,
        optimizer=optax.adam(1e-2),
        batch_size=100,
        num_epochs=5,
        progress=False,
        checkpoint_dir=tmp_path,
    )
    bn = flow.batch_norms[-1]  # the data side's: its input is far from standardised
    # fit moved the running averages towards the data (20 updates at momentum 0.99)
    assert np.abs(bn.mean[...]).max() > 0.1 and np.abs(bn.var[...] - 1).max() > 0.1
    # fit hands the flow back as it was validated, in eval mode (running averages): the
    # best epoch's validation NLL is reproduced without a call to flow.eval(), and a
    # point's density does not depend on the points evaluated with it
    assert bn.use_running_average
    np.testing.assert_allclose(
        -float(flow.log_prob(xv).mean()), h.val_loss[h.best_epoch], rtol=1e-9
    )
    pts = jnp.asarray(xv[:6])
    lp = flow.log_prob(pts)
    np.testing.assert_allclose(flow.log_prob(pts[:1]), lp[:1], rtol=1e-10)
    best = jaxmaf.load(tmp_path / training.BEST_FLOW)  # the best flow's file: saved as validated
    assert all(b.use_running_average for b in best.batch_norms)
    np.testing.assert_allclose(best.log_prob(pts[:1]), lp[:1], rtol=1e-10)
    bij = flow.bijector()

    def one(v):
        return bij.inverse(v), jaxmaf.dense_log_det(bij.inverse, v)

    u, ld = jax.jit(jax.vmap(one))(pts)
    np.testing.assert_allclose(lp, flow.base_log_prob(u) + ld, rtol=1e-10)
    np.testing.assert_allclose(bij.forward(bij.inverse(pts)), pts, rtol=1e-10)
    # train mode: batch statistics, so a point's density depends on its batch
    flow.train()
    assert not np.allclose(flow.log_prob(pts[:3]), flow.log_prob(pts)[:3])


# ---------------------------------------------------------------- parameter averaging
def test_parameter_average_follows_its_recurrence():
    """avg_t = d_t avg_{t-1} + (1 - d_t) p_t with d_t = min(decay, (1 + t) / (10 + t)); the
    updates themselves are the inner optimizer's, unchanged."""
    decay, lr = 0.9, 0.1
    inner = optax.sgd(lr)
    opt = training.with_parameter_average(inner, decay)
    assert training.with_parameter_average(inner, decay) is opt  # one program per pair
    params = {"w": jnp.array([1.0, -2.0])}
    state = opt.init(params)
    avg, p = np.array([1.0, -2.0]), np.array([1.0, -2.0])
    for t in range(1, 30):
        grads = {"w": jnp.array([np.sin(t), np.cos(t)], jnp.float32)}
        updates, state = opt.update(grads, state, params)
        np.testing.assert_allclose(updates["w"], -lr * np.asarray(grads["w"]), rtol=1e-6)
        params = optax.apply_updates(params, updates)
        p = p - lr * np.asarray(grads["w"])
        d = min(decay, (1 + t) / (10 + t))
        avg = d * avg + (1 - d) * p
        np.testing.assert_allclose(state.average["w"], avg, rtol=1e-5, atol=1e-6)
    assert int(state.count) == 29


@pytest.mark.parametrize("ema_epochs", [None, 2.0])
def test_averaged_parameters_are_judged_and_returned(ema_epochs):
    """The epoch's candidate is the better of the last iterate and the average; the flow
    fit returns has exactly the loss history reports, whichever it was."""
    x, xv = gaussian_data(512, 3), gaussian_data(256, 4)
    flow = small_flow()
    h = jaxmaf.fit(
        flow,
        x,
        validation_data=xv,
        optimizer=optax.adam(2e-2),  # noisy enough that the average often wins
        batch_size=32,
        num_epochs=8,
        ema_epochs=ema_epochs,
        progress=False,
    )
    assert len(h.averaged) == len(h.val_loss) == 8
    assert any(h.averaged) == (ema_epochs is not None)
    assert h.best_epoch == int(np.argmin(h.val_loss)) and h.best_loss == h.val_loss[h.best_epoch]
    np.testing.assert_allclose(-float(flow.log_prob(xv).mean()), h.best_loss, rtol=1e-5)


def test_progress_bar_in_notebooks_and_terminals_not_under_ci(monkeypatch):
    import sys
    import types

    class ZMQInteractiveShell:  # the class name Jupyter kernels (and VS Code's) use
        pass

    class TerminalInteractiveShell:
        pass

    class Captured:
        def isatty(self):
            return False

        def write(self, s):
            return len(s)

        def flush(self):
            pass

    class Terminal(Captured):
        def isatty(self):
            return True

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", Captured())
    fake = types.SimpleNamespace(get_ipython=lambda: None)
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert progress.progress_bar(3) is None  # captured output, no notebook
    fake.get_ipython = lambda: TerminalInteractiveShell()
    assert progress.progress_bar(3) is None  # plain IPython whose output is captured
    fake.get_ipython = lambda: ZMQInteractiveShell()
    bar = progress.progress_bar(3)
    assert bar is not None and bar.total == 3
    bar.close()
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.delitem(sys.modules, "IPython")
    bar = progress.progress_bar(5, initial=2)
    assert bar is not None and (bar.total, bar.n) == (5, 2)
    bar.close()
    monkeypatch.setenv("CI", "1")
    assert progress.progress_bar(5) is None
    monkeypatch.setattr(sys, "stderr", Captured())
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert progress.progress_bar(5) is None  # CI wins over a notebook


def test_data_parallel_fit_compiles_its_epoch_once():
    """With devices=, the second epoch runs the first epoch's program: every input of the
    epoch is placed as the epoch places its outputs (the shuffling key once was not, and
    epoch 2 compiled another program). A 1-epoch fit compiles everything; a 3-epoch fit
    with the same optimizer object afterwards must lower nothing new (counted from JAX's
    lowering events, which fire whatever the persistent cache holds; not timed)."""
    lowered = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered.append(event)

    x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
    optimizer = optax.adam(1e-3)
    run = dict(batch_size=64, devices=jax.devices(), optimizer=optimizer, progress=False)
    jaxmaf.fit(jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0)), x, num_epochs=1, **run)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        jaxmaf.fit(jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0)), x, num_epochs=3, **run)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert lowered == [], f"{len(lowered)} programs lowered anew"


@pytest.mark.parametrize(
    "make, names, dim",
    [("toy_2d", "TOY_2D", 2), ("toy_3d", "TOY_3D", 3)],
)
def test_toy_data_sets_are_standardized_splits(make, names, dim):
    """Every toy set: the requested sizes, D columns, zero mean and unit variance over all
    its points (the split of one standardized draw); an unknown name is refused by name."""
    from jaxmaf import datasets

    make, names = getattr(datasets, make), getattr(datasets, names)
    for name in names:
        data = make(name, 600, (400, 100, 100))
        assert [x.shape for x in (data.train, data.validation, data.test)] == [
            (400, dim),
            (100, dim),
            (100, dim),
        ]
        x = np.concatenate([data.train, data.validation, data.test]).astype(np.float64)
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(x.std(0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown toy data set 'nope': expected one of"):
        make("nope")


def test_each_epoch_is_judged_against_the_best_epoch_before_it(monkeypatch):
    """The next epoch is dispatched before this one's judgement: its statistics must still
    compare it with the parameters kept after that judgement, i.e. the best epoch before it
    (its last iterate's or its average's rows, whichever was kept)."""
    real, seen = training.epoch_stats, []

    def recording(rows, kept_rows):
        seen.append((np.asarray(rows[0]), np.asarray(rows[1]), np.asarray(kept_rows)))
        return real(rows, kept_rows)

    monkeypatch.setattr(training, "epoch_stats", recording)
    x, xv = gaussian_data(300, 11), gaussian_data(100, 12)
    h = jaxmaf.fit(
        small_flow(), x, validation_data=xv, batch_size=64, num_epochs=12, progress=False
    )
    assert len(seen) == len(h.val_loss) == 12 and np.all(np.isinf(seen[0][2]))
    for k in range(1, 12):
        best = min(range(k), key=lambda j: (h.val_loss[j], j))  # first of the lowest
        kept = seen[best][1] if h.averaged[best] else seen[best][0]
        np.testing.assert_array_equal(seen[k][2], kept)


@pytest.mark.parametrize("patience", [None, 2])
def test_no_epoch_is_computed_past_the_last_one_read(monkeypatch, patience):
    """Epochs dispatched ahead are never wasted at the end: as many programs run as epochs
    are recorded, whether training stops at num_epochs or early."""
    real, calls = epochs.bind, {"n": 0}

    def counting(fn, **static):
        epoch = real(fn, **static)

        def counted(*args):
            calls["n"] += 1
            return epoch(*args)

        return counted

    monkeypatch.setattr(epochs, "bind", counting)
    x = gaussian_data(200, 13)
    # a learning rate this large stalls the fit, so patience 2 stops it early
    opt = optax.sgd(0.5) if patience else optax.adam(1e-3)
    h = jaxmaf.fit(
        small_flow(),
        x,
        optimizer=opt,
        batch_size=100,
        num_epochs=30,
        patience=patience,
        patience_se=None,
        progress=False,
    )
    expected = "early_stopping" if patience else "completed"
    assert calls["n"] == len(h.train_loss) and h.stop_reason == expected


def test_epochs_dispatched_ahead_chain_like_one_epoch_per_call(tmp_path):
    """A run whose next epoch is dispatched before the last is read equals, to the bit, the
    same run made one epoch per call (each call resumes the last one's checkpoint, so it
    dispatches nothing ahead)."""
    x, xv = gaussian_data(300, 14), gaussian_data(100, 15)
    kw = dict(validation_data=xv, batch_size=64, seed=4, progress=False)
    h_ahead = jaxmaf.fit(small_flow(), x, num_epochs=5, **kw)
    for n in range(1, 6):
        h = jaxmaf.fit(small_flow(), x, num_epochs=n, checkpoint_dir=tmp_path, resume=True, **kw)
    np.testing.assert_array_equal(h.val_loss, h_ahead.val_loss)
    np.testing.assert_array_equal(h.train_loss, h_ahead.train_loss)
