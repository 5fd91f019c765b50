"""The log-det benchmark as a user runs it (--quick): analytic and dense log-dets agree.

Speed is never asserted here (benchmarks print it); what is asserted is that the
script measures what it says: the same log-det two ways, every method present.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {
    "triangular",
    "triangular_diag",
    "call_floor",
    "dense_slogdet",
    "layer_analytic",
    "layer_dense",
    "flow4_analytic",
    "flow4_dense",
}


def test_logdet_scaling_quick_float64(tmp_path):
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "logdet_scaling.py"),
            "--quick",
            "--x64",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
        env=dict(os.environ, MPLBACKEND="Agg"),
    )
    result = json.loads((tmp_path / "logdet_scaling.json").read_text())
    assert result["dtype"] == "float64"
    # The MAF layer's and the 4-layer flow's sum of log-scales equal jacfwd + slogdet of the
    # same bijector, and sum(log|diag|) equals slogdet of the triangular matrix.
    assert result["max_abs_logdet_diff"] < 1e-10
    assert {r["method"] for r in result["rows"]} == METHODS == set(result["slopes"])
    assert all(math.isfinite(s) for s in result["slopes"].values())
    dims = {m: sorted(r["dim"] for r in result["rows"] if r["method"] == m) for m in METHODS}
    assert dims["dense_slogdet"] == [2, 4, 8, 16, 32]
    assert dims["layer_dense"] == [2, 4, 8, 16]
    assert dims["triangular_diag"][-1] == 4096  # the diagonal alone goes past the matrix range
    png = (tmp_path / "logdet_scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_accuracy_quick_writes_per_seed_nll(tmp_path):
    """--quick on one data set and one seed: both libraries fitted on one split; the JSON
    layout (the paired difference of one seed is the plain difference)."""
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "accuracy.py"),
            "--quick",
            "--datasets",
            "pinwheel",
            "--variants",
            "init_0.3",
            "--seeds",
            "1",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
    )
    result = json.loads((tmp_path / "accuracy.json").read_text())
    entry = result["datasets"]["pinwheel"]
    assert set(result["datasets"]) == {"pinwheel"} and entry["dim"] == 2
    assert len(entry["jaxmaf"]) == len(entry["flowjax"]) == 1
    assert all(math.isfinite(v) for v in entry["jaxmaf"] + entry["flowjax"])
    diff = entry["jaxmaf"][0] - entry["flowjax"][0]
    assert math.isclose(entry["paired_diff"], diff, rel_tol=1e-9, abs_tol=1e-12)
    assert result["mean_paired_diff"] == entry["paired_diff"]
    # The start is near the standard normal, about D/2 log(2 pi e) nats on standardized
    # data; three epochs stay near it (a wrong log-det sign or density is far off).
    assert max(entry["jaxmaf"]) < 1.4189385 * entry["dim"] + 0.5
    # init_0.3 is today's 2-d default (output_init_scale=None): it repeats the default exactly.
    assert entry["variants"]["init_0.3"]["nll"] == entry["jaxmaf"]
    assert set(result["ablation"]) == {"init_0.3"}


def test_interactive_quick_finds_no_recompilation(tmp_path):
    """The eager-call benchmark counts traces and compilations of each second eager call:
    none for any of jaxmaf's public calls (MAF and IAF, exact and jacobi, conditional).
    Its train-step table hands the state over five ways to the same Adam step, and its
    log_prob table three ways: each way ends at the same loss and the same densities.
    Its sweep of flows of new shapes compiles fewer programs than it builds flows (100
    for 8 flows when each shape compiled its initializers)."""
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "interactive.py"),
            "--quick",
            "--import-rounds",
            "0",
            "--no-peers",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
    )
    result = json.loads((tmp_path / "interactive.json").read_text())
    ours = [r for r in result["calls"] if r["name"].startswith("jaxmaf")]
    assert len(ours) == 10
    for r in ours:
        assert (r["second_call_traces"], r["second_call_compiles"]) == (0, 0), r["name"]
        assert r["eager_median_ms"] > 0 and r["jit_median_ms"] > 0
    for table, ways in (("train_step", 5), ("log_prob", 3)):
        rows = result["train_step_paths"][table]
        assert len(rows) == ways and "plain dicts (jaxmaf.split)" in rows
        values = [r["last_value"] for r in rows.values()]
        np.testing.assert_allclose(values, values[0], rtol=1e-5, err_msg=table)
    builds = result["builds"]["jaxmaf"]
    assert builds["processes"] == 1 and builds["first_median_s"] > 0
    assert len(builds["sweep_compiles"]) == len(builds["sweep"]) == 8
    assert sum(builds["sweep_compiles"]) < len(builds["sweep"])


def test_npe_base_quick_scores_each_base_and_the_default_is_the_mixture(tmp_path):
    """--quick (the 3-d beta-binomial, one seed, two epochs): a finite KL(p || q) per base,
    and ``base=None`` builds exactly the flow that ``base="mog"`` builds (the same KL),
    which is not the normal base's."""
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "npe_base.py"),
            "--quick",
            "--bases",
            "gaussian,mog,default",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
    )
    runs = json.loads((tmp_path / "npe_base.json").read_text())["runs"]
    gaussian, mog, default = (runs[f"beta_binomial/0/{b}"] for b in ("gaussian", "mog", "default"))
    assert all(math.isfinite(k) for r in (gaussian, mog, default) for k in r["kl"])
    assert default["base"] == mog["base"] == "mog" and gaussian["base"] == "gaussian"
    assert default["kl"] == mog["kl"] and default["kl"] != gaussian["kl"]


def test_variational_speed_quick_writes_rates_and_kl(tmp_path):
    """--quick, one target, two variants, no numpyro: the JSON carries the per-round
    steps/s, their median and a finite KL of the fitted IAF (the banana, log Z = 0)."""
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "variational_speed.py"),
            "--quick",
            "--no-numpyro",
            "--targets",
            "banana",
            "--variants",
            "adam,noise_per_step",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
    )
    result = json.loads((tmp_path / "variational_speed.json").read_text())
    entry = result["banana"]
    assert result["steps"] == 200 and len(entry["steps_per_s"]["adam"]) == 1
    assert entry["median"]["adam"] == entry["steps_per_s"]["adam"][0] > 0
    # KL(q || p) >= 0 up to Monte Carlo error; 200 steps from the base leave it well under
    # the KL of the standard normal base itself (1.0 nats for this banana).
    kl = entry["kl_20000_samples"]
    assert -0.01 < kl["adam"] < 0.5 and -0.01 < kl["noise_per_step"] < 0.5
    # Per-step draws are other numbers: a different fit. Equal KLs would mean the budget was
    # not set for that variant, or not restored for the next.
    assert kl["adam"] != kl["noise_per_step"]


def load_accuracy_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "accuracy_bench", os.path.join(ROOT, "benchmarks", "accuracy.py")
    )
    accuracy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accuracy)
    return accuracy


def test_accuracy_variant_names_combine_changes():
    """``A+B`` merges the changes of A and B; ``perm_draw_M`` is one fixed random draw."""
    accuracy = load_accuracy_module()
    _, flow_kwargs, fit_kwargs, *hooks = accuracy.variant_spec("init_sqrt2_over_d+perm_draw_3")
    assert flow_kwargs(8) == {"output_init_scale": 0.5, "permutation": "random", "mask_seed": 3}
    assert fit_kwargs == {} and hooks == []
    _, flow_kwargs, fit_kwargs, *hooks = accuracy.variant_spec("bias_zero+ema_off")
    assert flow_kwargs(4) == {} and fit_kwargs == {"ema_epochs": None}
    assert hooks == [accuracy.zero_bias]
    try:
        accuracy.variant_spec("perm_draw_x")
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown variant name was accepted")


def test_accuracy_shuffle_columns_reorders_every_split_alike():
    """--shuffle-columns: one column order per seed, the same for train, validation, test."""
    import numpy as np

    accuracy = load_accuracy_module()
    data = accuracy.datasets.tabular("iris")
    orders = set()
    for seed in range(4):
        out = accuracy.shuffle_columns(data, seed)
        perm = [int(np.flatnonzero(np.all(data.train == c[:, None], 0))[0]) for c in out.train.T]
        assert sorted(perm) == [0, 1, 2, 3]
        pairs = ((data.validation, out.validation), (data.test, out.test))
        for before, after in pairs:
            np.testing.assert_array_equal(before[:, perm], after)
        orders.add(tuple(perm))
    assert len(orders) > 1  # the seeds draw different orders


def test_accuracy_lowdim_sets_are_standardized_splits_of_their_dimension():
    """--datasets lowdim: six sets of 3 to 8 dimensions, each drawn from its seed,
    standardized on all its points and split without overlap (2000/500/500; quick 400/100/100)."""
    import numpy as np

    accuracy = load_accuracy_module()
    dims = {}
    for name in accuracy.LOWDIM:
        data = accuracy.load(name, quick=False)
        dims[name] = data.train.shape[1]
        assert [len(a) for a in (data.train, data.validation, data.test)] == [2000, 500, 500]
        assert data.train.dtype == np.float32
        whole = np.concatenate([data.train, data.validation, data.test])
        np.testing.assert_allclose(whole.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(whole.std(0), 1.0, atol=1e-4)
        assert len(np.unique(whole, axis=0)) == len(whole)
        np.testing.assert_array_equal(accuracy.load(name, quick=False).test, data.test)
        assert accuracy.load(name, quick=True).train.shape == (400, dims[name])
    assert sorted(dims.values()) == [3, 3, 4, 5, 6, 8]


def test_jaxmaf_twin_computes_and_trains_like_flowjax():
    """flowjax's MAF in jaxmaf (its weights and permutations copied): the same density,
    and the same density after Adam steps on the same batches, in 2-d and above.

    flowjax also trains its base (a diagonal Gaussian); it is frozen here, so that
    the layers are compared alone (with ``trainable_base`` the twin's base is a
    one-component mixture, which starts where flowjax's does).
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import paramax
    from flax import nnx
    from flowjax.train.losses import MaximumLikelihoodLoss
    from flowjax.train.train_utils import step

    accuracy = load_accuracy_module()
    args = accuracy.parse_args(["--layers", "3", "--width", "16", "--width-2d", "16"])
    for dim in (2, 5):
        dist = accuracy.flowjax_maf(dim, args, jax.random.key(dim))
        flow = accuracy.jaxmaf_twin(dist, trainable_base=False)
        x = 1.5 * jax.random.normal(jax.random.key(1), (64, dim))
        np.testing.assert_allclose(flow.log_prob(x), dist.log_prob(x), rtol=1e-5, atol=1e-5)

        dist = eqx.tree_at(lambda d: d.base_dist, dist, paramax.non_trainable(dist.base_dist))
        params, static = eqx.partition(
            dist, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
        )
        opt = optax.adam(1e-2)
        opt_state = opt.init(params)
        graphdef, ours, rest = nnx.split(flow, nnx.Param, ...)
        our_state = opt.init(ours)

        def nll(p, batch, graphdef=graphdef, rest=rest):
            return -jnp.mean(nnx.merge(graphdef, p, rest).log_prob(batch))

        for k in range(3):
            batch = x[16 * k : 16 * (k + 1)]
            params, opt_state, _ = step(
                params,
                static,
                batch,
                optimizer=opt,
                opt_state=opt_state,
                loss_fn=MaximumLikelihoodLoss(),
                key=jax.random.key(0),
            )
            updates, our_state = opt.update(jax.grad(nll)(ours, batch), our_state, ours)
            ours = optax.apply_updates(ours, updates)
        trained = eqx.combine(params, static)
        np.testing.assert_allclose(
            nnx.merge(graphdef, ours, rest).log_prob(x), trained.log_prob(x), rtol=1e-4, atol=1e-4
        )
        assert not np.allclose(trained.log_prob(x), dist.log_prob(x), atol=1e-2)  # it moved
