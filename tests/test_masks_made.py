"""Masks (pure numpy) and the MADE module: the autoregressive property, exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmaf
from jaxmaf import masks


@pytest.mark.parametrize(
    "order,expected",
    [
        ("natural", [1, 2, 3, 4]),
        ("reversed", [4, 3, 2, 1]),
        ("left-to-right", [1, 2, 3, 4]),
        ([2, 0, 3, 1], [2, 4, 1, 3]),
    ],
)
def test_input_degrees(order, expected):
    np.testing.assert_array_equal(masks.input_degrees(4, order), expected)


def test_random_order_is_seeded_permutation():
    a = masks.input_degrees(20, "random", seed=3)
    np.testing.assert_array_equal(a, masks.input_degrees(20, "random", seed=3))
    assert not np.array_equal(a, masks.input_degrees(20, "random", seed=4))
    np.testing.assert_array_equal(np.sort(a), np.arange(1, 21))


@pytest.mark.parametrize("dim", [1, 2, 5, 11])
@pytest.mark.parametrize("widths", [(3,), (16, 16), (4, 40, 2)])
@pytest.mark.parametrize("rule", ["equal", "random"])
@pytest.mark.parametrize("conditional", [False, True])
def test_mask_connectivity_is_strictly_autoregressive(dim, widths, rule, conditional):
    deg = masks.input_degrees(dim, "random", seed=dim)
    layer_masks, _ = masks.made_masks(deg, widths, 2, rule, conditional, seed=1)
    conn = masks.connectivity(layer_masks, 2)
    allowed = deg[None, :] < deg[:, None]  # output i may see input j iff deg_j < deg_i
    assert not np.any(conn & ~allowed)
    if rule == "equal" and min(widths) >= dim - 1:  # wide enough: every allowed path exists
        np.testing.assert_array_equal(conn, allowed)


def test_equal_hidden_degrees_match_tfp_rule():
    np.testing.assert_array_equal(
        masks.hidden_degrees(np.arange(1, 5), 7, 4), [1, 2, 3, 1, 2, 3, 1]
    )
    np.testing.assert_array_equal(
        masks.hidden_degrees(np.arange(1, 5), 6, 4, conditional=True), [0, 1, 2, 3, 0, 1]
    )
    np.testing.assert_array_equal(masks.hidden_degrees(np.array([1]), 3, 1), [0, 0, 0])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: masks.input_degrees(0), "dim to be an integer >= 1, got 0"),
        (lambda: masks.input_degrees(3, "sideways"), "Unknown order 'sideways'"),
        (lambda: masks.input_degrees(3, [0, 1]), r"shape \(3,\), got shape \(2,\)"),
        (lambda: masks.input_degrees(3, [0, 1, 1]), "permutation of 0..2"),
        (lambda: masks.hidden_degrees(np.arange(1, 3), 0, 2), "hidden width >= 1, got 0"),
        (lambda: masks.hidden_degrees(np.arange(1, 3), 4, 2, "cyclic"), "Unknown hidden_degrees"),
    ],
)
def test_mask_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _perturbed_made(dim, hidden, context_dim=0, **kw):
    made = jaxmaf.MADE(
        dim, hidden, 3, context_dim=context_dim, output_init_scale=1.0, rngs=nnx.Rngs(0), **kw
    )
    params = nnx.state(made, nnx.Param)
    nnx.update(made, jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + 0.1), params))
    return made


@pytest.mark.parametrize("dim", [1, 3, 11])  # one input, fewer than the narrow width, more
@pytest.mark.parametrize("order", ["natural", "reversed", "random", "explicit"])
@pytest.mark.parametrize("hidden", [(16, 16), (4,), ()])
@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("residual", [False, True])
def test_made_output_ignores_inputs_not_before_it(dim, order, hidden, context_dim, residual):
    if order == "explicit":
        order = list(np.random.default_rng(dim).permutation(dim))
    hidden = (hidden[0],) * 3 if residual and hidden else hidden
    made = _perturbed_made(
        dim, hidden, context_dim, order=order, activation="tanh", residual=residual
    )
    x = jax.random.normal(jax.random.key(0), (8, dim))
    c = jax.random.normal(jax.random.key(1), (context_dim,)) if context_dim else None
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda v: made(v, c))))(x)  # (8, dim, P, dim)
    assert jac.shape == (8, dim, 3, dim)
    deg = made.degrees.array
    forbidden = deg[None, :] >= deg[:, None]  # [i, j]: output i, input j
    assert np.all(np.asarray(jac)[:, forbidden[:, None, :].repeat(3, 1)] == 0.0)
    nonzero = np.abs(np.asarray(jac)).max(axis=(0, 2)) > 0
    if hidden and min(hidden) >= dim - 1 + (context_dim > 0):  # every degree present
        np.testing.assert_array_equal(nonzero, ~forbidden)
    full = made(x, c)  # params_at (one dimension's output columns) agrees with the full pass
    one = jax.jit(jax.vmap(lambda i: made.params_at(x, i, c), out_axes=1))(jnp.arange(dim))
    np.testing.assert_allclose(one, full, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dim,hidden", [(1, (8,)), (4, (8, 8)), (4, ()), (6, (3,))])
def test_made_context_reaches_every_output(dim, hidden):
    made = _perturbed_made(dim, hidden, context_dim=2, activation="tanh")
    x = jnp.ones(dim)
    jac_c = jax.jacfwd(lambda c: made(x, c))(jnp.array([0.3, -0.2]))  # (dim, P, 2)
    assert np.all(np.abs(np.asarray(jac_c)).max(axis=-1) > 0)


@pytest.mark.parametrize("name", sorted(jaxmaf.ACTIVATIONS))
def test_activation_by_name(name):
    made = _perturbed_made(3, (5,), activation=name)
    x = jnp.array([0.5, -1.0, 2.0])
    fn = jaxmaf.ACTIVATIONS[name]
    h = fn(x @ made.hidden[0].masked_kernel() + made.hidden[0].bias[...])
    expected = (h @ made.output.masked_kernel() + made.output.bias[...]).reshape(3, 3)
    np.testing.assert_allclose(made(x), expected, rtol=1e-6)


def test_made_zero_output_init_and_callable_activation():
    zero = jaxmaf.MADE(3, (8,), 2, output_init_scale=0.0, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(zero(jnp.ones((4, 3))), np.zeros((4, 3, 2)))
    made = jaxmaf.MADE(
        3, (8,), 2, activation=jax.nn.soft_sign, output_init_scale=1.0, rngs=nnx.Rngs(0)
    )
    x = jax.random.normal(jax.random.key(1), (4, 3))
    hidden, out = made.hidden[0], made.output  # the callable is the one applied
    expected = out(jax.nn.soft_sign(hidden(x))).reshape(4, 3, 2)
    np.testing.assert_allclose(made(x), expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(expected, out(jax.nn.relu(hidden(x))).reshape(4, 3, 2))


def test_masks_are_constants_not_state():
    made = jaxmaf.MADE(3, (8,), 2, rngs=nnx.Rngs(0))
    state = nnx.state(made)
    n_params = len(jax.tree.leaves(nnx.state(made, nnx.Param)))
    assert len(jax.tree.leaves(state)) == n_params == 4  # 2 kernels + 2 biases; no mask leaves


def test_params_at_index_out_of_range():
    made = jaxmaf.MADE(3, (8,), 2, rngs=nnx.Rngs(0))
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=r"index in \[0, 3\)"):
            made.params_at(jnp.zeros(3), bad)


def test_made_errors():
    made = jaxmaf.MADE(3, (8,), 2, context_dim=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x of shape \(\.\.\., 3\), got shape \(3, 4\)"):
        made(jnp.ones((3, 4)), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="needs context="):
        made(jnp.ones(3))
    with pytest.raises(ValueError, match="Unknown activation 'rel'"):
        jaxmaf.MADE(3, (8,), 2, activation="rel", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_params to be an integer >= 1"):
        jaxmaf.MADE(3, (8,), 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="MADE needs num_params"):
        jaxmaf.MADE(3, (8,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="Unknown order"):
        jaxmaf.MADE(3, (8,), 2, order="zigzag", rngs=nnx.Rngs(0))


def test_hidden_biases_break_positive_homogeneity():
    """With zero hidden biases every ReLU kink of a 2-d MADE sits at x_0 = 0, so the
    conditioner is positively homogeneous, made(c x) = c made(x) for c > 0: a degenerate
    start that cost up to 0.8 nats on 2-d data (benchmarks/accuracy.py). The default
    U(+-1/sqrt(fan_in)) hidden biases spread the kinks (the former LeCun initialisation)."""
    made = jaxmaf.MADE(2, (64, 64), 2, init="lecun_normal", output_init_scale=1.0, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (256, 2))
    for layer in made.hidden:
        limit = 1 / np.sqrt(layer.kernel.shape[0])
        bias = np.asarray(layer.bias[...])
        assert np.all(np.abs(bias) <= limit) and np.std(bias) > 0.4 * limit
    out_bias = np.asarray(made.output.bias[...])
    np.testing.assert_array_equal(out_bias, 0.0)  # the output still starts at its bias
    scaled = made(3.0 * x) - 3.0 * made(x)
    assert float(jnp.max(jnp.abs(scaled))) > 0.1
    for layer in made.hidden:  # the old initialisation: exactly homogeneous
        layer.bias[...] = jnp.zeros_like(layer.bias[...])
    np.testing.assert_allclose(made(3.0 * x), 3.0 * made(x), atol=1e-5)


def test_params_per_dim_is_the_former_name_of_num_params():
    """One name for the outputs per dimension, the transformers' (and flowjax's) num_params;
    the former keyword still builds the same MADE, with a DeprecationWarning."""
    new = jaxmaf.MADE(3, (8,), num_params=2, rngs=nnx.Rngs(0))
    with pytest.warns(DeprecationWarning, match="use num_params="):
        old = jaxmaf.MADE(3, (8,), params_per_dim=2, rngs=nnx.Rngs(0))
    assert new.num_params == old.num_params == old.params_per_dim == 2
    x = jax.random.normal(jax.random.key(1), (4, 3))
    np.testing.assert_array_equal(new(x), old(x))
    with pytest.raises(ValueError, match="pass num_params= only"), pytest.warns(DeprecationWarning):
        jaxmaf.MADE(3, (8,), 2, params_per_dim=3, rngs=nnx.Rngs(0))
    masks, _ = jaxmaf.masks.made_masks(jaxmaf.masks.input_degrees(3), [8], num_params=2)
    with pytest.warns(DeprecationWarning):
        reach = jaxmaf.masks.connectivity(masks, params_per_dim=2)
    np.testing.assert_array_equal(reach, jaxmaf.masks.connectivity(masks, 2))


@pytest.mark.parametrize("context_dim", [0, 3])
def test_uniform_init_draws_every_layer_within_its_full_fan_in_bound(context_dim):
    """init="uniform" (the default): each kernel and bias ~ U(+-1/sqrt(fan_in)) over the
    layer's whole input (the first layer's includes the context), spread over the bound; the
    output layer's times output_init_scale, whose default above 4-d (and always for IAF) is 0:
    the exact identity flow."""
    made = jaxmaf.MADE(
        5, (64, 32), 2, context_dim=context_dim, output_init_scale=1.0, rngs=nnx.Rngs(0)
    )
    fan_ins = [5 + context_dim, 64, 32]
    layers = [*made.hidden, made.output]
    for layer, fan_in in zip(layers, fan_ins, strict=True):
        limit = 1 / np.sqrt(fan_in)
        for w in (np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])):
            assert np.all(np.abs(w) <= limit) and np.std(w) > 0.35 * limit  # U: 0.577 limit
    if context_dim:
        proj = np.asarray(made.context_proj.kernel[...])
        assert np.all(np.abs(proj) <= 1 / np.sqrt(fan_ins[0])) and np.std(proj) > 0
    half = jaxmaf.MADE(5, (64, 32), 2, output_init_scale=0.5, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(half.output.kernel[...], 0.5 * made.output.kernel[...])
    x = jax.random.normal(jax.random.key(1), (8, 5))
    expected = jnp.sum(jax.scipy.stats.norm.logpdf(x), -1)
    for cls in (jaxmaf.MAF, jaxmaf.IAF):
        flow = cls(5, 2, (16,), rngs=nnx.Rngs(0))
        np.testing.assert_allclose(flow.log_prob(x), expected, rtol=1e-6, atol=1e-6)
        out = flow.conditioners[0].output
        assert not np.any(out.kernel[...]) and not np.any(out.bias[...])
    maf = jaxmaf.MAF(3, 2, (16,), rngs=nnx.Rngs(0))
    hidden = np.asarray(maf.conditioners[0].hidden[0].kernel[...])
    assert np.all(np.abs(hidden) <= 1 / np.sqrt(3)) and np.std(hidden) > 0.35 / np.sqrt(3)
    iaf = jaxmaf.IAF(3, 2, (16,), rngs=nnx.Rngs(0))  # IAF: LeCun normal, unbounded draws
    assert np.max(np.abs(iaf.conditioners[0].hidden[0].kernel[...])) > 1 / np.sqrt(3)
    random = jaxmaf.MAF(5, 2, (16,), output_init_scale=1.0, rngs=nnx.Rngs(0))
    assert float(jnp.max(jnp.abs(random.log_prob(x) - expected))) > 1e-3
    with pytest.raises(ValueError, match="Unknown init 'he'"):
        jaxmaf.MADE(3, (8,), 2, init="he", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("init", ["uniform", "lecun_normal"])
def test_made_without_hidden_layers_takes_a_context_under_either_init(init):
    """A single masked map (hidden_dims=()) with a context: built under both inits, the
    context reaching every output once the output layer is drawn."""
    made = jaxmaf.MADE(3, (), 2, context_dim=2, init=init, output_init_scale=1.0, rngs=nnx.Rngs(0))
    jac = jax.jacfwd(lambda c: made(jnp.ones(3), c))(jnp.ones(2))  # (3, 2, 2)
    assert np.all(np.abs(np.asarray(jac)).max(axis=(1, 2)) > 0)
