"""Reliability, one test per family of failure: arguments checked at construction, no NaN
from finite inputs, checkpoints that refuse the wrong run by name, files that are checked
before they are trusted."""

from __future__ import annotations

import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxmaf
from conftest import FLOWS, make_flow
from jaxmaf import epochs, serialization, training

R = nnx.Rngs


def _data(n=96, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


# ---------------------------------------------------------------- constructor arguments
BAD_CONSTRUCTIONS = {
    "tail_bound inf": (lambda: jaxmaf.Spline(tail_bound=float("inf")), "tail_bound"),
    "tail_bound nan": (lambda: jaxmaf.Spline(tail_bound=float("nan")), "tail_bound"),
    "tail_bound 0": (lambda: jaxmaf.Spline(tail_bound=0.0), "tail_bound"),
    "bins do not fit": (
        lambda: jaxmaf.Spline(num_bins=8, tail_bound=1.0, min_bin_size=0.25),
        r"num_bins \* min_bin_size < 2 \* tail_bound",
    ),
    "min_bin_size 0": (lambda: jaxmaf.Spline(min_bin_size=0.0), "min_bin_size"),
    "negative min_knot_slope": (lambda: jaxmaf.Spline(min_knot_slope=-0.1), "min_knot_slope"),
    "min_knot_slope 1": (lambda: jaxmaf.Spline(min_knot_slope=1.0), "min_knot_slope"),
    "num_bins bool": (lambda: jaxmaf.Spline(num_bins=True), "num_bins"),
    "num_bins float": (lambda: jaxmaf.Spline(num_bins=8.0), "num_bins"),
    "softclamp bound inf": (
        lambda: jaxmaf.Affine(scale="exp_softclamp", bound=float("inf")),
        "bound",
    ),
    "softclamp bound nan": (lambda: jaxmaf.Affine(bound=float("nan")), "bound"),
    "min_scale 1": (lambda: jaxmaf.Affine(min_scale=1.0), "min_scale"),
    "scale name": (lambda: jaxmaf.Affine(scale="sigmoid"), "scale"),
    "output_init_scale nan": (
        lambda: jaxmaf.MAF(2, 2, (8,), output_init_scale=float("nan"), rngs=R(0)),
        "output_init_scale",
    ),
    "output_init_scale inf (MADE)": (
        lambda: jaxmaf.MADE(2, (8,), 2, output_init_scale=float("inf"), rngs=R(0)),
        "output_init_scale",
    ),
    "rngs int": (lambda: jaxmaf.MAF(2, 2, (8,), rngs=0), "rngs"),
    "rngs key": (lambda: jaxmaf.IAF(2, 2, (8,), rngs=jax.random.key(0)), "rngs"),
    "rngs None (MADE)": (lambda: jaxmaf.MADE(2, (8,), 2, rngs=None), "rngs"),
    "dim bool": (lambda: jaxmaf.MAF(True, 2, (8,), rngs=R(0)), "dim"),
    "num_layers float": (lambda: jaxmaf.MAF(2, 2.0, (8,), rngs=R(0)), "num_layers"),
    "hidden width 0": (lambda: jaxmaf.MAF(2, 2, (8, 0), rngs=R(0)), "hidden_dims"),
    "hidden_dims int": (lambda: jaxmaf.MAF(2, 2, 8, rngs=R(0)), "hidden_dims"),
    "context_dim -1": (lambda: jaxmaf.MAF(2, 2, (8,), context_dim=-1, rngs=R(0)), "context_dim"),
    "num_components 0": (
        lambda: jaxmaf.MAF(2, 2, (8,), base="mog", num_components=0, rngs=R(0)),
        "num_components",
    ),
    "num_components without a mixture base": (
        lambda: jaxmaf.IAF(2, 2, (8,), num_components=4, rngs=R(0)),
        "num_components",
    ),
    "residual str": (lambda: jaxmaf.MAF(2, 2, (8,), residual="yes", rngs=R(0)), "residual"),
    "int param_dtype": (lambda: jaxmaf.MAF(2, 2, (8,), param_dtype="int32", rngs=R(0)), "dtype"),
    "float64 without x64": (
        lambda: jaxmaf.MAF(2, 2, (8,), param_dtype=jnp.float64, rngs=R(0)),
        "jax_enable_x64",
    ),
    "activation name": (lambda: jaxmaf.MAF(2, 2, (8,), activation="rel", rngs=R(0)), "rel"),
    "mask_seed negative": (
        lambda: jaxmaf.MAF(2, 2, (8,), hidden_degrees="random", mask_seed=-1, rngs=R(0)),
        "mask_seed",
    ),
    "hidden_degrees name": (
        lambda: jaxmaf.MAF(2, 2, (8,), hidden_degrees="cyclic", rngs=R(0)),
        "hidden_degrees",
    ),
    "batch norm momentum 1": (lambda: jaxmaf.BatchNorm(2, momentum=1.0), "momentum"),
    "batch norm eps 0": (lambda: jaxmaf.BatchNorm(2, eps=0.0), "eps"),
    "batch norm dim 0": (lambda: jaxmaf.BatchNorm(0), "dim"),
    "bijector tol nan": (
        lambda: jaxmaf.MaskedAutoregressive(lambda x: x, tol=float("nan")),
        "tol",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONSTRUCTIONS))
def test_bad_constructor_arguments_are_refused_by_name(case):
    build, match = BAD_CONSTRUCTIONS[case]
    with pytest.raises(ValueError, match=match):
        build()


def test_numpy_scalars_are_accepted_and_normalised():
    spline = jaxmaf.Spline(num_bins=np.int64(4), tail_bound=np.float32(2.5))
    assert spline == jaxmaf.Spline(num_bins=4, tail_bound=2.5)
    assert type(spline.num_bins) is int and type(spline.tail_bound) is float
    flow = jaxmaf.MAF(
        np.int32(3), np.int64(2), (np.int64(8),), transformer=spline, rngs=nnx.Rngs(0)
    )
    reference = jaxmaf.MAF(3, 2, (8,), transformer=jaxmaf.Spline(4, 2.5), rngs=nnx.Rngs(0))
    assert flow.config == reference.config
    json.dumps(flow.config.to_dict())  # plain Python types all the way down
    x = jnp.full((2, 3), 0.5)
    np.testing.assert_array_equal(flow.log_prob(x), reference.log_prob(x))


# ---------------------------------------------------------------- call-time inputs
BAD_FIT_ARGUMENTS = {
    "seed negative": (dict(seed=-1), "seed"),
    "seed float": (dict(seed=1.5), "seed"),
    "seed bool": (dict(seed=True), "seed"),
    "optimizer name": (dict(optimizer="adam"), "optax.GradientTransformation"),
    "optimizer factory": (dict(optimizer=optax.adam), "optax.GradientTransformation"),
    "ema_epochs 0": (dict(ema_epochs=0.0), "ema_epochs"),
    "ema_epochs nan": (dict(ema_epochs=float("nan")), "ema_epochs"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIT_ARGUMENTS))
def test_bad_fit_arguments_are_refused_before_training(case):
    kwargs, match = BAD_FIT_ARGUMENTS[case]
    flow = jaxmaf.MAF(2, 2, (8,), rngs=R(0))
    with pytest.raises(ValueError, match=match):
        jaxmaf.fit(flow, _data(), num_epochs=1, progress=False, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(learning_rate=[1e-3, -1.0]), "learning_rate"),
        (dict(optimizer=optax.adam(1e-3), learning_rate=1e-2), "rate is fixed"),
        (dict(optimizer="adam"), "factory"),
        (dict(seeds=[0, 1.5]), "seeds"),
        (dict(patience_se=-0.5), "patience_se"),
    ],
)
def test_bad_ensemble_arguments_are_refused(kwargs, match):
    kwargs = {"seeds": [0, 1], **kwargs}
    with pytest.raises(ValueError, match=match):
        jaxmaf.fit_ensemble(
            lambda rngs: jaxmaf.MAF(2, 2, (8,), rngs=rngs),
            _data(),
            num_epochs=1,
            progress=False,
            **kwargs,
        )


BAD_CALLS = {
    "int key": (lambda f: f.sample(0, (3,)), "random key"),
    "numpy key": (lambda f: f.sample(np.zeros(2, np.uint32), (3,)), "random key"),
    "int key, sample_and_log_prob": (lambda f: f.sample_and_log_prob(3, (2,)), "random key"),
    "float sample_shape": (lambda f: f.sample(jax.random.key(0), 3.0), "sample_shape"),
    "negative sample_shape": (lambda f: f.sample(jax.random.key(0), (2, -1)), "sample_shape"),
    "complex x": (lambda f: f.log_prob(jnp.ones((3, 2), jnp.complex64)), "real x"),
    "text x": (lambda f: f.log_prob(np.array([["a", "b"]])), "real x"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_call_inputs_are_refused_by_name(case):
    call, match = BAD_CALLS[case]
    with pytest.raises(ValueError, match=match):
        call(jaxmaf.MAF(2, 2, (8,), rngs=R(0)))


def test_array_likes_and_legacy_keys_are_accepted():
    flow = jaxmaf.MAF(2, 2, (8,), rngs=R(0))
    np.testing.assert_array_equal(
        flow.log_prob([[0.5, 1.0]]), flow.log_prob(jnp.array([[0.5, 1.0]]))
    )
    assert flow.log_prob(jnp.ones((3, 2), jnp.int32)).dtype == jnp.float32
    assert flow.sample(jax.random.PRNGKey(0), (3,)).shape == (3, 2)


@pytest.mark.parametrize(
    "name", ["maf", "iaf_cond", "maf_spline", "maf_residual_mog", "maf_batchnorm_eval"]
)
def test_log_prob_far_out_is_minus_inf_or_finite_never_nan(name):
    flow = make_flow(name, 2)
    context_dim = FLOWS[name][1]
    x = jnp.array([[1e30, 0.0], [-1e30, 1e30], [3e38, -3e38], [1e20, 1.0], [jnp.inf, 0.0]])
    c = jnp.ones((5, context_dim)) if context_dim else None
    lp = flow.log_prob(x, c)
    assert not bool(jnp.any(jnp.isnan(lp))), lp
    assert bool(jnp.all(lp < -1e3)), lp  # the density there is 0 in floating point
    nan_in = flow.log_prob(jnp.array([[jnp.nan, 0.0]]), None if c is None else c[:1])
    assert bool(jnp.isnan(nan_in[0]))  # NaN in, NaN out: nothing is hidden


# ---------------------------------------------------------------- checkpoints and resume
KW = dict(batch_size=32, num_epochs=2, progress=False, seed=0)


def _checkpoint(tmp_path, **flow_kw):
    flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0), **flow_kw)
    jaxmaf.fit(flow, _data(), checkpoint_dir=tmp_path, **KW)
    return tmp_path / training.TRAIN_STATE


MISMATCHES = {
    "architecture": (dict(hidden_dims=(16,)), {}, "hidden_dims: saved \\[8\\], this run \\[16\\]"),
    "layers": (dict(num_layers=3), {}, "num_layers: saved 2, this run 3"),
    "transformer": (dict(transformer="spline"), {}, "transformer: saved"),
    "activation": (dict(activation="tanh"), {}, "activation: saved 'relu', this run 'tanh'"),
    "optimizer": ({}, dict(optimizer=optax.sgd(1e-2)), "different optimizer"),
    "data size": ({}, dict(data=_data(64)), "n: saved 96, this run 64"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_resume_from_another_run_names_the_mismatch(tmp_path, case):
    _checkpoint(tmp_path)
    flow_kw, fit_kw, match = MISMATCHES[case]
    args = dict(num_layers=2, hidden_dims=(8,)) | flow_kw
    flow = jaxmaf.MAF(2, args.pop("num_layers"), args.pop("hidden_dims"), rngs=R(1), **args)
    before = serialization.flat_params(flow)
    data = fit_kw.pop("data", _data())
    with pytest.raises(ValueError, match=match):
        jaxmaf.fit(flow, data, checkpoint_dir=tmp_path, resume=True, **KW, **fit_kw)
    after = serialization.flat_params(flow)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # untouched


def test_resume_with_another_dtype_names_it(tmp_path, x64):
    _checkpoint(tmp_path, param_dtype=jnp.float32)
    flow = jaxmaf.MAF(2, 2, (8,), param_dtype=jnp.float64, rngs=R(0))
    with pytest.raises(ValueError, match="param_dtype: saved 'float32', this run 'float64'"):
        jaxmaf.fit(flow, _data(), checkpoint_dir=tmp_path, resume=True, **KW)


def test_truncated_or_altered_training_state_is_refused_by_file_name(tmp_path):
    path = _checkpoint(tmp_path)
    data = path.read_bytes()
    flow = jaxmaf.MAF(2, 2, (8,), rngs=R(0))
    for damaged in (data[: len(data) // 2], data[:-1], data[:-8] + bytes(8), b""):
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match=f"{path.name}.*(corrupted or truncated|not a jaxmaf)"):
            jaxmaf.fit(flow, _data(), checkpoint_dir=tmp_path, resume=True, **KW)
    path.write_bytes(data)
    history = jaxmaf.fit(flow, _data(), checkpoint_dir=tmp_path, resume=True, **KW)
    assert len(history.train_loss) == KW["num_epochs"]  # the intact file resumes


def test_a_flow_file_is_not_a_training_state_and_vice_versa(tmp_path):
    path = _checkpoint(tmp_path)
    with pytest.raises(ValueError, match="holds a training state"):
        jaxmaf.load(path)
    os.replace(tmp_path / training.BEST_FLOW, path)
    with pytest.raises(ValueError, match="holds a saved flow"):
        jaxmaf.fit(jaxmaf.MAF(2, 2, (8,), rngs=R(0)), _data(), checkpoint_dir=tmp_path,
                   resume=True, **KW)  # fmt: skip


def test_unusable_checkpoint_dir_is_refused_before_training(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("x")
    flow = jaxmaf.MAF(2, 2, (8,), rngs=R(0))
    before = serialization.flat_params(flow)
    with pytest.raises(ValueError, match="checkpoint_dir to be a directory.*a_file"):
        jaxmaf.fit(flow, _data(), checkpoint_dir=file, **KW)
    with pytest.raises(ValueError, match="writable checkpoint_dir"):
        jaxmaf.fit(flow, _data(), checkpoint_dir=file / "sub", **KW)
    after = serialization.flat_params(flow)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_unsavable_flow_warns_up_front_and_still_checkpoints(tmp_path):
    flow = jaxmaf.MAF(2, 2, (8,), activation=jnp.sin, rngs=R(0))
    calls = {"n": 0}
    real = epochs.bind

    def counting(fn, **static):
        epoch = real(fn, **static)

        def counted(*args):
            calls["n"] += 1
            return epoch(*args)

        return counted

    with warnings.catch_warnings(record=True) as caught, pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("always")
        mp.setattr(epochs, "bind", counting)
        jaxmaf.fit(flow, _data(), checkpoint_dir=tmp_path, **KW)
    messages = [str(w.message) for w in caught if "best.jaxmaf" in str(w.message)]
    assert len(messages) == 1 and "callable" in messages[0]
    assert (tmp_path / training.TRAIN_STATE).exists()
    assert not (tmp_path / training.BEST_FLOW).exists()
    resumed = jaxmaf.MAF(2, 2, (8,), activation=jnp.sin, rngs=R(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jaxmaf.fit(resumed, _data(), checkpoint_dir=tmp_path, resume=True, **KW)
    x = jnp.ones((3, 2))
    np.testing.assert_array_equal(resumed.log_prob(x), flow.log_prob(x))


def test_next_write_removes_temporary_files_of_an_interrupted_one(tmp_path):
    path = tmp_path / "flow.jaxmaf"
    stale = tmp_path / ".flow.jaxmaf.tmp-abc123"
    stale.write_bytes(b"half a file")
    other = tmp_path / ".other.jaxmaf.tmp-abc123"  # another file's: not ours to remove
    other.write_bytes(b"x")
    jaxmaf.save(path, jaxmaf.MAF(2, 2, (8,), rngs=R(0)))
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, path.name]


def test_saved_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        jaxmaf.save(tmp_path / "a", jaxmaf.MAF(2, 2, (8,), rngs=R(0)))
        os.umask(0o077)
        jaxmaf.save(tmp_path / "b", jaxmaf.MAF(2, 2, (8,), rngs=R(0)))
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- load trusts nothing
def _saved(tmp_path, cls=jaxmaf.MAF, **kw):
    flow = cls(3, 3, (8,), rngs=R(0), **kw)
    from conftest import perturb

    perturb(flow)
    path = tmp_path / "flow.jaxmaf"
    jaxmaf.save(path, flow)
    return flow, path


@pytest.mark.parametrize(
    "content",
    [b"", b"\x89PNG\r\n\x1a\n" + bytes(64), b"jaxmaf", np.random.default_rng(0).bytes(500)],
    ids=["empty", "png", "text", "random"],
)
def test_load_refuses_what_is_not_a_jaxmaf_file(tmp_path, content):
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(ValueError, match="not a jaxmaf file"):
        jaxmaf.load(tmp_path / "f")


def test_fuzz_flipped_bytes_give_a_clean_error_never_a_different_flow(tmp_path):
    flow, path = _saved(tmp_path, transformer="spline", context_dim=2)
    data = path.read_bytes()
    x, c = jax.random.normal(jax.random.key(0), (4, 3)), jnp.ones((4, 2))
    reference = np.asarray(flow.log_prob(x, c))
    rng = np.random.default_rng(0)
    positions = rng.integers(0, len(data), size=120)
    positions[:3] = [0, len(serialization.MAGIC) + 1, len(data) - 1]  # marker, digest, payload
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(damaged))
        try:
            loaded = jaxmaf.load(path)
        except ValueError:
            continue
        np.testing.assert_array_equal(loaded.log_prob(x, c), reference)  # pragma: no cover


def _tampered(path, change):
    """Rewrites a saved flow with ``change(payload)`` applied AND a valid checksum."""
    payload = serialization.read(path, "flow")
    change(payload)
    serialization.atomic_write(path, serialization.encode("flow", payload))


def _set_config(key, value):
    def change(payload):
        config = json.loads(payload["config"])
        config[key] = value
        payload["config"] = json.dumps(config)

    return change


def _set_transformer_name(payload):
    config = json.loads(payload["config"])
    config["transformer"]["name"] = "bspline"
    payload["config"] = json.dumps(config)


def _flip_mask(payload):
    mask = payload["masks"]["1"]["hidden"]["0"].copy()
    mask[-1, 0] = not mask[-1, 0]  # lets a unit see the last input: breaks the ordering
    payload["masks"]["1"]["hidden"]["0"] = mask


BIAS = "layers/0/conditioner/output/bias"
TAMPERING = {
    "class": (_set_config("class", "os.system"), "unknown flow class 'os.system'"),
    "transformer": (_set_transformer_name, "unknown transformer 'bspline'"),
    "field": (_set_config("evil", 1), r"unknown \['evil'\]"),
    "dim": (_set_config("dim", "3"), "dim"),
    "activation": (_set_config("activation", "__import__"), "Unknown activation"),
    "permutation": (_set_config("permutation", [[0, 0, 1], [0, 1, 2]]), "permutation"),
    "mask": (_flip_mask, "layer 1's hidden mask 0 differs"),
    "param shape": (
        lambda p: p["params"].update({"layers/0/conditioner/output/bias": np.zeros(3, np.float32)}),
        r"layers/0/conditioner/output/bias: expected float32\(",
    ),
    "param dtype": (
        lambda p: p["params"].update({BIAS: p["params"][BIAS].astype(np.float16)}),
        "layers/0/conditioner/output/bias: expected float32",
    ),
    "param missing": (lambda p: p["params"].pop("layers/0/conditioner/output/bias"), "missing"),
    "eval_mode": (lambda p: p.update(eval_mode="yes"), "eval_mode"),
    "extra field": (lambda p: p.update(code="print(1)"), r"unknown \['code'\]"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_load_checks_every_field_even_with_a_valid_checksum(tmp_path, case):
    _, path = _saved(tmp_path)
    change, match = TAMPERING[case]
    _tampered(path, change)
    with pytest.raises(ValueError, match=match):
        jaxmaf.load(path)


def test_random_hidden_degrees_are_recomputed_from_the_recorded_seed(tmp_path):
    flow, path = _saved(tmp_path, hidden_degrees="random")
    assert flow.config.mask_seed is not None
    loaded = jaxmaf.load(path)
    for a, b in zip(flow.conditioners, loaded.conditioners, strict=True):
        np.testing.assert_array_equal(a.output.mask.array, b.output.mask.array)
    _tampered(path, _set_config("mask_seed", flow.config.mask_seed + 1))
    with pytest.raises(ValueError, match="differs from the one its configuration defines"):
        jaxmaf.load(path)


def test_version_1_files_still_load_with_their_masks_checked(tmp_path):
    from flax import serialization as flax_serialization

    flow, path = _saved(tmp_path)
    payload = serialization.read(path, "flow")
    config = json.loads(payload["config"])
    legacy = {
        "format": "jaxmaf-flow",
        "version": 1,
        "class": config.pop("class"),
        "config": json.dumps(config),
        "masks": payload["masks"],
        "params": payload["params"],
        "eval_mode": False,
    }
    path.write_bytes(flax_serialization.msgpack_serialize(legacy))
    with pytest.warns(UserWarning, match="version-1"):
        loaded = jaxmaf.load(path)
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(loaded.log_prob(x), flow.log_prob(x))
    _flip_mask(legacy)
    path.write_bytes(flax_serialization.msgpack_serialize(legacy))
    with pytest.raises(ValueError, match="differs"):
        jaxmaf.load(path)


def test_files_with_the_mixture_base_under_its_old_names_still_load(tmp_path):
    """Files saved before the base became a module name its parameters ``base_logits``, ..."""
    flow = jaxmaf.MAF(2, 2, (8,), base="mog", num_components=3, rngs=R(0))
    nnx.update(flow.base, jax.tree.map(lambda a: a + 0.5, nnx.state(flow.base)))  # not the init
    path = tmp_path / "old.jaxmaf"
    jaxmaf.save(path, flow)
    payload = serialization.read(path, "flow")
    old = {"base/logits": "base_logits", "base/means": "base_means"}
    old["base/log_scales"] = "base_log_scales"
    payload["params"] = {old.get(k, k): v for k, v in payload["params"].items()}
    assert "base_means" in payload["params"]
    serialization.atomic_write(path, serialization.encode("flow", payload))
    loaded = jaxmaf.load(path)
    x = jnp.linspace(-2, 2, 10).reshape(5, 2)
    np.testing.assert_array_equal(loaded.log_prob(x), flow.log_prob(x))


def test_core_import_leaves_out_scikit_learn_and_matplotlib_and_starts_no_backend():
    """``import jaxmaf`` loads neither extra, and starts no JAX backend (so that
    ``jax.distributed.initialize`` and platform settings can still come after it)."""
    import subprocess
    import sys

    code = (
        "import sys, jaxmaf; from jax._src import xla_bridge; "
        "loaded = [m for m in ('sklearn', 'matplotlib', 'numpyro') if m in sys.modules]; "
        "loaded += ['a JAX backend'] if getattr(xla_bridge, '_backends', None) else []; "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_datasets_and_plotting_without_their_extra_say_how_to_install(monkeypatch):
    import importlib
    import sys

    from jaxmaf import datasets

    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if scikit-learn were not installed
    with pytest.raises(ImportError, match=r"jaxmaf\[examples\]"):
        datasets.circles()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.delitem(sys.modules, "jaxmaf.plotting", raising=False)
    with pytest.raises(ImportError, match=r"jaxmaf\[examples\]"):
        importlib.import_module("jaxmaf.plotting")
    monkeypatch.delitem(sys.modules, "jaxmaf.plotting", raising=False)


def test_random_masks_and_permutations_with_mask_seed_build_under_eval_shape():
    def build(**kw):
        return jaxmaf.MAF(
            4, 3, (8,), permutation="random", hidden_degrees="random", rngs=nnx.Rngs(0), **kw
        )

    abstract = nnx.eval_shape(lambda: build(mask_seed=5))  # no device value is pulled
    concrete = build(mask_seed=5)
    assert nnx.graphdef(abstract) == nnx.graphdef(concrete)
    same_seed = jaxmaf.MAF(
        4, 3, (8,), permutation="random", hidden_degrees="random", mask_seed=5, rngs=nnx.Rngs(1)
    )
    assert concrete.permutations == same_seed.permutations
    assert build(mask_seed=6).permutations != concrete.permutations
    with pytest.raises(ValueError, match="mask_seed"):
        nnx.eval_shape(lambda: build())
    with pytest.raises(ValueError, match="mask_seed"):
        nnx.eval_shape(lambda: jaxmaf.MADE(3, (8,), 2, order="random", rngs=nnx.Rngs(0)))


def test_reversed_is_accepted_for_permutation_as_for_order():
    a = jaxmaf.MAF(3, 3, (8,), permutation="reversed", rngs=nnx.Rngs(0))
    b = jaxmaf.MAF(3, 3, (8,), permutation="reverse", rngs=nnx.Rngs(0))
    assert a.permutations == b.permutations == ((2, 1, 0), (2, 1, 0))


def test_transformer_objects_without_the_protocol_or_unhashable_are_refused():
    import dataclasses

    class NoInverse:
        num_params = 1

        def forward_and_log_det(self, u, params):
            return u, jnp.zeros_like(u)

    with pytest.raises(ValueError, match="missing"):
        jaxmaf.MAF(2, 2, (8,), transformer=NoInverse(), rngs=nnx.Rngs(0))

    @dataclasses.dataclass  # not frozen: unhashable
    class Mutable:
        num_params = 1

        def forward(self, u, p):
            return u

        def inverse(self, x, p):
            return x

        def forward_and_log_det(self, u, p):
            return u, jnp.zeros_like(u)

        def inverse_and_log_det(self, x, p):
            return x, jnp.zeros_like(x)

    with pytest.raises(ValueError, match="hashable"):
        jaxmaf.MAF(2, 2, (8,), transformer=Mutable(), rngs=nnx.Rngs(0))


def test_flows_and_their_configuration_share_one_num_components_rule():
    """Left out, ``num_components`` means 8 for a mixture base and 1 otherwise, in the flow
    and in a FlowConfig alike; a file's configuration rebuilds the same base."""
    for base, expected in (("mog", 8), ("gaussian", 1)):
        flow = jaxmaf.MAF(2, 2, (8,), base=base, rngs=R(0))
        assert flow.config.num_components == expected
        fields = {k: v for k, v in vars(flow.config).items() if k != "num_components"}
        assert jaxmaf.FlowConfig(**fields) == flow.config
    mog = jaxmaf.MAF(2, 2, (8,), base="mog", rngs=R(0))
    assert mog.base.logits.shape == (8,)
    again = jaxmaf.MAF(**mog.config.to_dict() | {"transformer": "affine"}, rngs=R(0))
    assert again.base.logits.shape == (8,)
