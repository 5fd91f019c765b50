"""The generic flow: a base and a list of layers; MAF and IAF built on it; files from before."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmaf
from conftest import perturb

DATA = pathlib.Path(__file__).parent / "data"


def made(dim=3, context_dim=0, seed=0):
    return jaxmaf.MADE(dim, (16,), 2, context_dim=context_dim, rngs=nnx.Rngs(seed))


def mixed_flow(context_dim=0, perturbed=True):
    """A MAF layer, batch norm, a permutation and an IAF layer over a standard normal."""
    layers = [
        jaxmaf.AutoregressiveLayer(made(context_dim=context_dim, seed=1)),
        jaxmaf.BatchNorm(3),
        jaxmaf.Permutation([2, 0, 1]),
        jaxmaf.AutoregressiveLayer(made(context_dim=context_dim, seed=2), inverted=True),
    ]
    base = jaxmaf.StandardNormal(3, jnp.float32)
    flow = jaxmaf.Flow(base, layers, context_dim=context_dim)
    return perturb(flow, seed=3) if perturbed else flow


def test_maf_and_iaf_are_the_generic_flow_over_their_layers():
    x = jax.random.normal(jax.random.key(0), (7, 3))
    for cls in (jaxmaf.MAF, jaxmaf.IAF):
        flow = perturb(cls(3, 3, (16,), batch_norm=True, rngs=nnx.Rngs(0)))
        kinds = [type(layer).__name__ for layer in flow.layers]
        assert kinds == ["AutoregressiveLayer", "BatchNorm", "Permutation"] * 2 + kinds[-1:]
        assert all(layer.inverted == flow.inverted for layer in flow.layers[::3])
        generic = jaxmaf.Flow(flow.base, list(flow.layers))
        np.testing.assert_array_equal(generic.log_prob(x), flow.log_prob(x))
        key = jax.random.key(1)
        np.testing.assert_array_equal(generic.sample(key, (5,)), flow.sample(key, (5,)))
        pairs = zip(flow.conditioners, flow.layers[::3], strict=True)
        assert all(m is layer.conditioner for m, layer in pairs)


def test_a_mixed_flow_matches_the_dense_change_of_variables():
    context_dim = 2  # conditional: the context reaches both autoregressive layers
    flow = mixed_flow(context_dim)
    flow.eval()  # batch norm by its running averages: a fixed bijection, invertible both ways
    x = jax.random.normal(jax.random.key(4), (3,))
    c = jnp.array([0.5, -1.0])
    bijector = flow.bijector(c)
    u = bijector.inverse(x)
    jac = jax.jacfwd(bijector.inverse)(x)
    dense = flow.base_log_prob(u) + jnp.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(flow.log_prob(x, c), dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bijector.forward(u), x, rtol=1e-5, atol=1e-5)
    y = u
    for layer in flow.layers:  # layers[0] acts on the base noise, the last one gives the data
        y = layer.bijector(c).forward(y)
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)
    samples, log_q = flow.sample_and_log_prob(jax.random.key(5), (6,), c)
    np.testing.assert_allclose(flow.log_prob(samples, c), log_q, rtol=1e-4, atol=1e-4)


def test_a_mixed_flow_trains_and_works_under_jit_vmap_and_eval_shape():
    flow = mixed_flow()
    x = jax.random.normal(jax.random.key(6), (64, 3)) * 2.0 + 1.0
    before = float(flow.log_prob(x).mean())
    history = jaxmaf.fit(flow, x, num_epochs=5, batch_size=32, progress=False)
    # fit hands it back in eval mode (running averages), in which it judged the epochs
    np.testing.assert_allclose(-float(flow.log_prob(x).mean()), history.best_loss, rtol=1e-5)
    flow.train()  # batch statistics, as `before` was measured
    assert history.best_epoch >= 0 and float(flow.log_prob(x).mean()) > before
    flow.eval()
    np.testing.assert_allclose(jax.jit(flow.log_prob)(x), flow.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(flow.log_prob)(x), flow.log_prob(x), rtol=1e-5, atol=1e-5)
    shapes = nnx.eval_shape(lambda: mixed_flow(perturbed=False))
    assert isinstance(shapes, jaxmaf.Flow) and len(shapes.layers) == 4


def test_method_and_tol_apply_where_a_direction_is_sequential():
    x = jnp.zeros((2, 3))
    mixed = mixed_flow()  # a MAF and an IAF layer: both directions are sequential
    mixed.eval()
    np.testing.assert_allclose(
        mixed.log_prob(x, method="jacobi"), mixed.log_prob(x), rtol=1e-5, atol=1e-5
    )
    assert mixed.sample(jax.random.key(0), (2,), method="jacobi").shape == (2, 3)
    maf = jaxmaf.Flow(jaxmaf.StandardNormal(3, jnp.float32), [jaxmaf.AutoregressiveLayer(made())])
    with pytest.raises(ValueError, match=r"apply to Flow\.sample"):
        maf.log_prob(x, method="jacobi")


@pytest.mark.parametrize(
    "layers,kwargs,match",
    [
        ([], {}, "at least one layer"),
        ([made()], {}, r"layers\[0\] to be a flow layer"),
        ([jaxmaf.AutoregressiveLayer(made(dim=2))], {}, "dim=3 and context_dim=0"),
        ([jaxmaf.AutoregressiveLayer(made())], dict(context_dim=2), "context_dim=2"),
    ],
)
def test_bad_layers_are_refused_by_name(layers, kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxmaf.Flow(jaxmaf.StandardNormal(3, jnp.float32), layers, **kwargs)


def test_a_base_that_is_not_a_distribution_is_refused_by_name():
    with pytest.raises(ValueError, match=r"Expected base to be a base distribution.*missing"):
        jaxmaf.Flow(made(), [jaxmaf.AutoregressiveLayer(made())])


def test_bad_layer_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="conditioner to be a jaxmaf.MADE"):
        jaxmaf.AutoregressiveLayer(lambda x: x)
    with pytest.raises(ValueError, match="25 outputs per dimension"):
        jaxmaf.AutoregressiveLayer(made(), "spline")
    with pytest.raises(ValueError, match="inverted to be True or False"):
        jaxmaf.AutoregressiveLayer(made(), inverted=1)
    with pytest.raises(ValueError, match="permutation"):
        jaxmaf.Permutation([0, 0, 1])
    with pytest.raises(ValueError, match="permutation of 0..2, got"):
        jaxmaf.Permutation(jnp.array([0, 0, 1]))  # a JAX array's values are checked too
    with pytest.raises(ValueError, match="integer array of shape"):
        jaxmaf.Permutation(jnp.array([[1, 0]]))


def test_a_generic_flow_saves_and_loads_into_a_flow_built_alike(tmp_path):
    flow = mixed_flow()
    flow.eval()
    x = jax.random.normal(jax.random.key(7), (5, 3))
    path = tmp_path / "mixed.jaxmaf"
    jaxmaf.save(path, flow)
    with pytest.raises(ValueError, match="saved without a configuration: pass like="):
        jaxmaf.load(path)
    fresh = mixed_flow(perturbed=False)
    before = np.asarray(fresh.log_prob(x))
    loaded = jaxmaf.load(path, like=fresh)
    np.testing.assert_array_equal(loaded.log_prob(x), flow.log_prob(x))  # eval mode kept
    np.testing.assert_array_equal(fresh.log_prob(x), before)  # like is copied, not changed
    base = jaxmaf.StandardNormal(3)
    other = jaxmaf.Flow(base, [jaxmaf.AutoregressiveLayer(made()), jaxmaf.BatchNorm(3)])
    with pytest.raises(ValueError, match="masks for layers"):
        jaxmaf.load(path, like=other)
    maf_path = tmp_path / "maf.jaxmaf"
    jaxmaf.save(maf_path, jaxmaf.MAF(3, 2, (8,), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="configuration differs from like's"):
        jaxmaf.load(maf_path, like=jaxmaf.MAF(3, 3, (8,), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="to save"):
        jaxmaf.save(tmp_path / "made.jaxmaf", made())


@pytest.mark.parametrize("name", ["maf_batch_norm_mog", "iaf_spline_conditional"])
def test_files_saved_before_layers_were_modules_load_with_the_same_density(name):
    """Written by the previous layout (MADEs at layers/k, batch norms at batch_norms/k)."""
    recorded = json.loads((DATA / "saved_0.1.0.json").read_text())
    flow = jaxmaf.load(DATA / f"{name}_0.1.0.jaxmaf")
    context = jnp.asarray(recorded["context"]) if "conditional" in name else None
    np.testing.assert_allclose(
        flow.log_prob(jnp.asarray(recorded["x"]), context), recorded["log_prob"][name], rtol=1e-6
    )


def test_drawn_permutations_are_saved_as_state_and_checked_on_load(tmp_path):
    """A flow's permutations travel in the file as state; ``like`` of another draw still
    loads the file's; stored values that are no permutation, or not the configuration's,
    are refused. (Files from before, with none stored, load by the test above.)"""
    from jaxmaf import serialization

    flow = jaxmaf.MAF(4, 3, (8,), output_init_scale=0.5, rngs=nnx.Rngs(2))
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    path = tmp_path / "f.jaxmaf"
    jaxmaf.save(path, flow)
    other_draw = jaxmaf.MAF(4, 3, (8,), output_init_scale=0.5, rngs=nnx.Rngs(7))
    assert other_draw.permutations != flow.permutations
    for loaded in (jaxmaf.load(path), jaxmaf.load(path, like=other_draw)):
        assert loaded.permutations == flow.permutations
        np.testing.assert_array_equal(loaded.log_prob(x), flow.log_prob(x))
    payload = serialization.flow_payload(flow)
    swapped = dict(payload["params"])
    swapped["layers/1/permutation"], swapped["layers/3/permutation"] = (
        payload["params"]["layers/3/permutation"],
        payload["params"]["layers/1/permutation"],
    )
    swapped["layers/1/inverse"], swapped["layers/3/inverse"] = (
        payload["params"]["layers/3/inverse"],
        payload["params"]["layers/1/inverse"],
    )
    with pytest.raises(ValueError, match="differ from the configuration's"):
        serialization.flow_from_payload({**payload, "params": swapped})
    bad_values = [("permutation", [0, 0, 1, 2]), ("inverse", [0, 1, 2, 3]), ("inverse", [9] * 4)]
    for name, bad in bad_values:
        broken = dict(payload["params"], **{f"layers/1/{name}": np.array(bad, np.int32)})
        with pytest.raises(ValueError, match="are not a permutation and its inverse"):
            serialization.flow_from_payload({**payload, "params": broken})


def test_a_checkpoint_from_before_layers_were_modules_is_refused_by_name(tmp_path):
    directory = tmp_path / "run"
    shutil.copytree(DATA / "checkpoint_0.1.0", directory)
    data = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    # as it was saved (the normal base, the identity start)
    flow = jaxmaf.MAF(2, 2, (8,), base="gaussian", output_init_scale=0.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="before a flow's layers became modules"):
        jaxmaf.fit(
            flow,
            data,
            num_epochs=4,
            batch_size=32,
            checkpoint_dir=directory,
            resume=True,
            progress=False,
        )
    best = jaxmaf.load(directory / "best.jaxmaf")  # what it trained is still there
    assert np.all(np.isfinite(best.log_prob(data)))
