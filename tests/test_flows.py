"""Property tests over every flow in the registry (conftest.FLOWS) and several dimensions."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmaf
from conftest import CONTEXT_DIM, DIMS, FLOWS, make_flow, make_inputs, perturb

CORE = ("maf", "iaf", "maf_cond", "iaf_cond")
# The core flows at three dimensions of DIMS (1, 2 and the largest); the variants (spline,
# residual, MoG, random degrees, other scale maps) at 5, which keeps the suite within its
# CI budget (their code paths do not depend on the dimension; the core's do, at 1 and 2).
ALL = [
    (name, dim)
    for name in FLOWS
    for dim in ((DIMS[0], DIMS[1], DIMS[-1]) if name in CORE else (5,))
]
# One flow per kind of layer, for properties that live in the shared flow code (chunking,
# the float32 path): affine MAF and conditional IAF, spline, residual + MoG, batch norm.
REPRESENTATIVE = ["maf", "iaf_cond", "maf_spline", "maf_residual_mog", "maf_batchnorm_eval"]


def _dense(flow, x, context, direction="inverse"):
    """Per point: the map on single events, its value and its dense log|det J| (jitted, vmapped)."""

    def one(v, c):
        bij = flow.bijector(c)
        fn = bij.inverse if direction == "inverse" else bij.forward
        return fn(v), jaxmaf.dense_log_det(fn, v)

    return jax.jit(jax.vmap(one))(x, context)


def _dense_log_prob(flow, x, context):
    """Base log-density of the inverse plus log|det| of its dense Jacobian."""
    u, log_det = _dense(flow, x, context)
    return flow.base_log_prob(u) + log_det


@pytest.mark.parametrize("name,dim", ALL)
def test_log_prob_matches_dense_change_of_variables_float64(name, dim, x64):
    flow = make_flow(name, dim)
    x, c = make_inputs(name, dim)
    assert x.dtype == jnp.float64
    lp = flow.log_prob(x, context=c)
    assert lp.dtype == jnp.float64 and lp.shape == (4,)
    np.testing.assert_allclose(lp, _dense_log_prob(flow, x, c), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_log_prob_matches_dense_float32(name):
    flow = make_flow(name, 5)
    x, c = make_inputs(name, 5)
    lp = flow.log_prob(x, context=c)
    assert lp.dtype == jnp.float32
    np.testing.assert_allclose(lp, _dense_log_prob(flow, x, c), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,dim", ALL)
def test_round_trip_and_forward_log_det(name, dim, x64):
    flow = make_flow(name, dim)
    x, c = make_inputs(name, dim)

    @jax.jit  # one program, not op-by-op dispatch
    def round_trip(flow, x, c):
        bij = flow.bijector(c)
        u, ildj = bij.inverse_and_log_det(x)
        y, fldj = bij.forward_and_log_det(u)
        return u, ildj, bij.forward(u), y, fldj, bij.inverse(x)

    u, ildj, x_again, y, fldj, u_again = round_trip(flow, x, c)
    np.testing.assert_allclose(x_again, x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fldj, -ildj, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(u_again, u, rtol=1e-12, atol=1e-12)
    # forward log-det against the dense Jacobian of the sampling direction.
    _, dense_fldj = _dense(flow, u, c, direction="forward")
    np.testing.assert_allclose(fldj, dense_fldj, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,dim", ALL)
def test_single_layer_jacobian_is_lower_triangular(name, dim):
    x, c = make_inputs(name, dim, n=64)
    c0 = None if c is None else c[0]
    upper = np.triu(np.ones((dim, dim), bool), k=1)
    lower = np.tril(np.ones((dim, dim), bool), k=-1)
    # The registry's own activation (ReLU may switch single paths off at some points) and tanh,
    # with which every path that the masks allow carries a nonzero derivative.
    ctor, _ = FLOWS[name]
    tanh_flow = perturb(ctor(dim, 1, activation="tanh", rngs=nnx.Rngs(0)), seed=5)
    for flow in (make_flow(name, dim, num_layers=1), tanh_flow):
        jac = jax.jit(lambda x, f=flow: jaxmaf.dense_jacobian(f.bijector(c0).forward, x))(x)
        jac = np.asarray(jac)
        assert np.all(jac[:, upper] == 0.0), "a single layer must not look ahead"
        assert np.all(np.abs(np.diagonal(jac, axis1=1, axis2=2)) > 0)
    if "random" not in name:  # equal degrees: every earlier input reaches every later output
        assert np.all(np.abs(jac).max(0)[lower] > 0)


@pytest.mark.parametrize("name", list(FLOWS))
def test_gradients_reach_every_parameter(name):
    dim = 5
    flow = make_flow(name, dim)
    x, c = make_inputs(name, dim, n=16)
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)

    def loss(p):
        return -nnx.merge(graphdef, p, rest).log_prob(x, context=c).mean()

    grads = jax.jit(jax.grad(loss))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"
    # Masked-out kernel entries receive exactly zero gradient.
    made_grads = [g["conditioner"] for g in grads["layers"].values() if "conditioner" in g]
    for layer, glayer in zip(flow.conditioners, made_grads, strict=True):
        for lin, glin in zip(
            [*layer.hidden, layer.output],
            [*glayer["hidden"].values(), glayer["output"]],
            strict=True,
        ):
            assert np.all(np.asarray(glin["kernel"])[~lin.mask.array] == 0.0)


@pytest.mark.parametrize(
    "name,dim", [(n, d) for n in FLOWS for d in ((1, 5) if n in CORE else (5,))]
)
def test_distrax_transformed_agrees(name, dim, x64):
    flow = make_flow(name, dim)
    x, c = make_inputs(name, dim)
    c0 = None if c is None else c[0]
    key = jax.random.key(3)

    @jax.jit  # distrax's own code, compiled once instead of dispatched op by op
    def via_distrax(flow, x, c0, key):
        dist = distrax.Transformed(flow.base_distribution(), flow.bijector(c0))
        xs, lps = dist.sample_and_log_prob(seed=key, sample_shape=7)
        lp_view = flow.distribution(c0).log_prob(x)
        return dist.log_prob(x), lp_view, dist.sample(seed=key, sample_shape=7), xs, lps

    lp, lp_view, samples, xs, lps = via_distrax(flow, x, c0, key)
    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lp, flow.log_prob(x, c0), **tol)
    np.testing.assert_allclose(lp_view, flow.log_prob(x, c0), **tol)
    np.testing.assert_allclose(samples, flow.sample(key, (7,), c0), **tol)
    np.testing.assert_allclose(lps, flow.log_prob(xs, c0), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", list(FLOWS))
def test_sample_and_log_prob_consistent(name, x64):
    flow = make_flow(name, 4)
    _, c = make_inputs(name, 4, n=6)
    xs, lp = flow.sample_and_log_prob(jax.random.key(0), (2,), context=c)
    expected = (2, 6, 4) if c is not None else (2, 4)
    assert xs.shape == expected
    # A spline IAF's density inverts each spline by a quadratic root: in steep bins (knot
    # slopes down to 1e-4) float64 rounding is amplified to ~1e-8 relative.
    tol = 1e-7 if "spline" in name else 1e-9
    np.testing.assert_allclose(lp, flow.log_prob(xs, context=c), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "name", ["maf", "iaf", "maf_cond", "maf_spline", "iaf_spline_cond", "maf_residual_mog"]
)
def test_reparameterised_gradient_through_sampling(name, x64):
    """Gradients through sample_and_log_prob (VI's path) match central differences.

    MAF samples through the sequential loop (one dimension's MADE outputs per
    pass), IAF in one pass; the objective uses both the samples and their
    log-densities, so both directions' derivatives are checked.
    """
    flow = make_flow(name, 4, num_layers=2)
    _, c = make_inputs(name, 4, n=3)
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    leaves, treedef = jax.tree.flatten(params)

    @jax.jit
    def objective(leaves):
        f = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)
        x, log_q = f.sample_and_log_prob(jax.random.key(7), (5,), c)
        return jnp.mean(log_q + jnp.sum(jnp.sin(x) * x, axis=-1))

    grads = jax.grad(objective)(leaves)
    rng = np.random.default_rng(8)
    direction = [jnp.asarray(rng.standard_normal(p.shape).astype(p.dtype)) for p in leaves]
    eps = 1e-6
    shifted = [
        objective([p + s * eps * v for p, v in zip(leaves, direction, strict=True)])
        for s in (1, -1)
    ]
    finite_difference = (shifted[0] - shifted[1]) / (2 * eps)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(grads, direction, strict=True))
    assert abs(float(analytic)) > 1e-3  # a direction the objective actually moves along
    np.testing.assert_allclose(analytic, finite_difference, rtol=1e-6)


@pytest.mark.parametrize("name", ["maf", "iaf_cond"])
def test_leading_batch_dimensions_broadcast(name):
    flow = make_flow(name, 3)
    x, c = make_inputs(name, 3, n=6)
    lp = flow.log_prob(x, c)
    x3 = x.reshape(2, 3, 3)
    c3 = None if c is None else c.reshape(2, 3, -1)
    np.testing.assert_allclose(flow.log_prob(x3, c3), lp.reshape(2, 3), rtol=1e-6)
    if c is not None:  # one context broadcast against a batch of points
        lp_one = flow.log_prob(x, c[0])
        np.testing.assert_allclose(lp_one[2], flow.log_prob(x[2], c[0]), rtol=1e-6)
        assert flow.sample(jax.random.key(0), (5,), c).shape == (5, 6, 3)


@pytest.mark.parametrize("name", ["maf_cond", "iaf_cond"])
@pytest.mark.parametrize("dim", [1, 3])
def test_first_dimension_depends_on_context(name, dim):
    flow = make_flow(name, dim, num_layers=1)
    x, c = make_inputs(name, dim, n=8)

    def first_log_density(xi, ctx):  # u_0(x, ctx): the dimension a naive MADE leaves bias-only
        u, _ = flow.bijector(ctx).inverse_and_log_det(xi)
        return u[0]

    # ReLU units can all be off at one point, so the dependence is looked for over 8 points:
    # every context coordinate moves u_0 somewhere (a bias-only first dimension never does).
    g = jax.jit(jax.vmap(jax.grad(first_log_density, argnums=1)))(x, c)
    assert g.shape == (8, CONTEXT_DIM)
    assert np.all(np.any(np.abs(g) > 0, axis=0))


def test_trained_parameters_change_density():
    flow = make_flow("maf", 2)
    x, _ = make_inputs("maf", 2)
    before = flow.log_prob(x)
    made = flow.conditioners[0]
    made.output.bias[...] = made.output.bias[...] + 1.0
    assert not np.allclose(before, flow.log_prob(x))


def test_default_permutations_reverse_in_2d_and_are_drawn_per_flow_above_3d():
    """ "auto": the reversal for D <= 2; above 3-d, permutations drawn from rngs, one
    draw per flow, held as state: flows of one shape share their graph definition (ensembles
    stack), nnx.eval_shape works, and mask_seed fixes them without a device value."""
    flow2 = jaxmaf.MAF(2, 4, (8,), rngs=nnx.Rngs(0))
    assert flow2.permutations == ((1, 0),) * 3
    a, b = (jaxmaf.MAF(10, 5, (8,), rngs=nnx.Rngs(s)) for s in (0, 1))
    assert a.permutations == jaxmaf.MAF(10, 5, (8,), rngs=nnx.Rngs(0)).permutations
    assert a.permutations != b.permutations
    assert nnx.graphdef(a) == nnx.graphdef(b)
    for p in a.permutations + b.permutations:
        assert sorted(p) == list(range(10))
    assert len(set(a.permutations)) == 4  # 4 draws of 10! orders: distinct
    abstract = nnx.eval_shape(lambda: jaxmaf.MAF(10, 5, (8,), rngs=nnx.Rngs(1)))
    assert nnx.graphdef(abstract) == nnx.graphdef(a)
    fixed = [jaxmaf.MAF(10, 5, (8,), mask_seed=3, rngs=nnx.Rngs(s)).permutations for s in (0, 1)]
    assert fixed[0] == fixed[1] != a.permutations
    # the flow computes with the drawn orders: x -> u undoes each permutation in turn
    x = jax.random.normal(jax.random.key(0), (6, 10))
    zero = jaxmaf.MAF(10, 3, (8,), output_init_scale=0.0, rngs=nnx.Rngs(4))
    expected = x
    for p in zero.permutations[::-1]:
        expected = expected[..., np.argsort(p)]
    u, _ = zero.bijector().inverse_and_log_det(x)
    np.testing.assert_allclose(u, expected, atol=1e-6)


def layer_orders(flow) -> np.ndarray:
    """Each layer's input order in data coordinates, from the data side: (layers, dim)."""
    orders = [np.arange(flow.dim)]
    for p in flow.permutations[::-1]:  # the flow lists its layers base side first
        orders.append(orders[-1][np.argsort(p)])
    return np.array(orders)


@pytest.mark.parametrize("dim,num_layers", [(2, 4), (3, 5), (4, 5), (4, 9), (5, 7), (10, 5)])
@pytest.mark.parametrize("source", ["rngs", "mask_seed"])
def test_default_permutations_give_every_input_each_end_of_the_order_in_turn(
    dim, num_layers, source
):
    """ "auto": in any dim consecutive layers every input comes last once (modelled given all
    the others) and first once (as a marginal); independent draws leave an input last, or
    first, in every layer of some flows, whose conditional is then a chain of affine maps.
    The orders are the flow's: an identity flow maps x to x in the base-side layer's order."""
    for seed in range(6):
        kwargs = {"mask_seed": seed} if source == "mask_seed" else {}
        flow = jaxmaf.MAF(dim, num_layers, (8,), rngs=nnx.Rngs(seed), **kwargs)
        orders = layer_orders(flow)
        np.testing.assert_array_equal(orders[0], np.arange(dim))
        for start in range(max(1, num_layers - dim + 1)):
            window = orders[start : start + dim]
            assert len(set(window[:, -1].tolist())) == len(window), (seed, orders)
            assert len(set(window[:, 0].tolist())) == len(window), (seed, orders)
    zero = jaxmaf.MAF(dim, num_layers, (8,), output_init_scale=0.0, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (4, dim))
    u, _ = zero.bijector().inverse_and_log_det(x)
    np.testing.assert_allclose(u, x[..., layer_orders(zero)[-1]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [-1, (3, -2), (2.0,), (True,)])
def test_bad_sample_shape_is_refused(shape):
    flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="sample_shape to be an int >= 0 or a tuple"):
        flow.sample(jax.random.key(0), shape)
    with pytest.raises(ValueError, match="sample_shape to be an int >= 0 or a tuple"):
        flow.sample_and_log_prob(jax.random.key(0), shape)
    assert flow.sample(jax.random.key(0), np.int64(3)).shape == (3, 2)
    assert flow.sample(jax.random.key(0), (0,)).shape == (0, 2)


def test_zero_output_init_is_identity():
    flow = jaxmaf.MAF(3, 2, (8,), output_init_scale=0.0, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (5, 3))
    u, ld = flow.bijector().inverse_and_log_det(x)
    inverse = np.argsort(flow.permutations[0])  # the density direction undoes the permutation
    np.testing.assert_allclose(u, x[..., inverse], atol=1e-6)
    np.testing.assert_allclose(ld, 0.0, atol=1e-6)


@pytest.mark.parametrize(
    "cls,dim,context_dim,scale",
    [
        (jaxmaf.MAF, 1, 0, 0.3),
        (jaxmaf.MAF, 2, 0, 0.3),
        (jaxmaf.MAF, 3, 0, 1.0),
        (jaxmaf.MAF, 4, 0, 1.0),
        (jaxmaf.MAF, 5, 0, 0.0),
        (jaxmaf.MAF, 2, 1, 0.0),
        (jaxmaf.MAF, 3, 1, 0.0),
        (jaxmaf.IAF, 2, 0, 0.0),
    ],
)
def test_default_output_init_scale(cls, dim, context_dim, scale):
    """None means 0.3 for an unconditional MAF with dim <= 2 and 1 with dim 3-4 (recorded in
    the config), else 0: identity layers, which leave only the permutations between them. An
    explicit value wins."""
    flow = cls(dim, 2, (8,), context_dim=context_dim, rngs=nnx.Rngs(0))
    assert flow.config.output_init_scale == scale
    x = jax.random.normal(jax.random.key(0), (5, dim))
    c = jnp.ones((5, context_dim)) if context_dim else None
    # identity layers: the flow only permutes the coordinates, with a zero log-determinant
    u, log_det = flow.bijector(c).inverse_and_log_det(x)
    identity = np.allclose(log_det, 0.0, atol=1e-5) and np.allclose(
        np.sort(u, -1), np.sort(x, -1), atol=1e-5
    )
    assert identity == (scale == 0.0)
    same = cls(dim, 2, (8,), context_dim=context_dim, output_init_scale=scale, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(same.log_prob(x, context=c), flow.log_prob(x, context=c))
    explicit = cls(dim, 2, (8,), context_dim=context_dim, output_init_scale=0.7, rngs=nnx.Rngs(0))
    assert explicit.config.output_init_scale == 0.7


@pytest.mark.parametrize(
    "cls,dim,context_dim,base",
    [
        (jaxmaf.MAF, 1, 0, "mog"),
        (jaxmaf.MAF, 2, 0, "mog"),
        (jaxmaf.MAF, 3, 0, "mog"),
        (jaxmaf.MAF, 4, 0, "gaussian"),
        (jaxmaf.MAF, 2, 1, "mog"),
        (jaxmaf.MAF, 3, 2, "mog"),
        (jaxmaf.MAF, 4, 2, "gaussian"),
        (jaxmaf.IAF, 2, 0, "gaussian"),
        (jaxmaf.IAF, 2, 1, "gaussian"),
    ],
)
def test_default_base(tmp_path, cls, dim, context_dim, base):
    """None means a mixture of 8 Gaussians for a MAF up to 3-d, with a context or without
    (recorded in the config, so a saved flow rebuilds it), else the standard normal; the
    flow's density is its layers' change of variables over that base. An explicit base
    wins."""
    flow = cls(dim, 2, (8,), context_dim=context_dim, rngs=nnx.Rngs(0))
    mixture = base == "mog"
    classes = {"mog": (8, jaxmaf.MixtureOfGaussians), "gaussian": (1, jaxmaf.StandardNormal)}
    components, base_class = classes[base]
    assert flow.config.base == base and flow.config.num_components == components
    assert isinstance(flow.base, base_class)
    x = jax.random.normal(jax.random.key(0), (5, dim))
    c = jnp.ones((5, context_dim)) if context_dim else None
    u, log_det = flow.bijector(c).inverse_and_log_det(x)
    if mixture:  # the mixture's density, written out, away from its equal-weight unit start
        b = flow.base
        b.log_scales[...] = 0.3 * jax.random.normal(jax.random.key(1), b.log_scales.shape)
        b.logits[...] = jax.random.normal(jax.random.key(2), b.logits.shape)
        z = (u[:, None, :] - b.means[...]) * jnp.exp(-b.log_scales[...])
        comp = jax.scipy.stats.norm.logpdf(z).sum(-1) - b.log_scales[...].sum(-1)
        base_lp = jax.scipy.special.logsumexp(comp + jax.nn.log_softmax(b.logits[...]), -1)
    else:
        base_lp = jax.scipy.stats.norm.logpdf(u).sum(-1)
    np.testing.assert_allclose(flow.log_prob(x, context=c), base_lp + log_det, atol=1e-5)
    jaxmaf.save(tmp_path / "flow.jaxmaf", flow)
    loaded = jaxmaf.load(tmp_path / "flow.jaxmaf")
    assert type(loaded.base) is type(flow.base)
    np.testing.assert_array_equal(loaded.log_prob(x, context=c), flow.log_prob(x, context=c))
    other = "gaussian" if mixture else "mog"
    assert (
        cls(dim, 2, (8,), context_dim=context_dim, base=other, rngs=nnx.Rngs(0)).config.base
        == other
    )
    if mixture:
        assert cls(dim, 2, (8,), num_components=3, rngs=nnx.Rngs(0)).base.means.shape == (3, dim)
    else:
        with pytest.raises(ValueError, match="num_components=3 applies to a mixture base only"):
            cls(dim, 2, (8,), context_dim=context_dim, num_components=3, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- dtype and errors
@pytest.mark.parametrize("cls", [jaxmaf.MAF, jaxmaf.IAF])
def test_float64_end_to_end(cls, x64):
    flow = cls(3, 2, (8,), rngs=nnx.Rngs(0))
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(nnx.state(flow, nnx.Param)))
    xs = flow.sample(jax.random.key(0), (4,))
    assert xs.dtype == jnp.float64
    assert flow.log_prob(xs).dtype == jnp.float64


def test_float32_by_default():
    flow = jaxmaf.MAF(3, 2, (8,), rngs=nnx.Rngs(0))
    xs = flow.sample(jax.random.key(0), (4,))
    assert xs.dtype == jnp.float32 and flow.log_prob(xs).dtype == jnp.float32


@pytest.mark.parametrize("cls", [jaxmaf.MAF, jaxmaf.IAF])
def test_bad_input_errors(cls):
    flow = cls(3, 2, (8,), rngs=nnx.Rngs(0))
    cond = cls(3, 2, (8,), context_dim=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\), got shape \(4, 2\)"):
        flow.log_prob(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"needs context= of shape \(\.\.\., 2\); got None"):
        cond.log_prob(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"needs context="):
        cond.sample(jax.random.key(0), (2,))
    with pytest.raises(ValueError, match="unconditional"):
        flow.log_prob(jnp.zeros((4, 3)), context=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"context of shape \(\.\.\., 2\), got shape \(4, 5\)"):
        cond.log_prob(jnp.zeros((4, 3)), context=jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match="inside jit too"):
        try:
            jax.jit(flow.log_prob)(jnp.zeros((4, 2)))
        except ValueError as e:
            raise ValueError(f"{e} inside jit too") from e


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=0), "dim to be an integer >= 1, got 0"),
        (dict(num_layers=0), "num_layers to be an integer >= 1, got 0"),
        (dict(hidden_dims=(8, 0)), r"every hidden_dims entry to be an integer >= 1, got \(8, 0\)"),
        (dict(hidden_dims=8), "hidden_dims to be a sequence"),
        (dict(activation="relux"), "Unknown activation 'relux'"),
        (dict(permutation="shuffle"), "Unknown permutation 'shuffle'"),
        (dict(permutation=[[0, 1, 2]]), "Expected num_layers - 1 = 2 permutations, got 1"),
        (dict(permutation=[[0, 1, 1], [0, 1, 2]]), "permutation of 0..2"),
        (dict(hidden_degrees="uniform"), "Unknown hidden_degrees 'uniform'"),
        (dict(transformer="spline3"), "Unknown transformer 'spline3'"),
    ],
)
def test_bad_configuration_errors(kwargs, match):
    args = dict(dim=3, num_layers=3, hidden_dims=(8,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        jaxmaf.MAF(**args, rngs=nnx.Rngs(0))


def _count_eqns(jaxpr) -> int:
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for sub in _subjaxprs(eqn.params):
            n += _count_eqns(sub)
    return n


def _subjaxprs(params):
    for v in params.values():
        vals = v if isinstance(v, list | tuple) else [v]
        for item in vals:
            if hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                yield item.jaxpr
            elif hasattr(item, "eqns"):
                yield item


@pytest.mark.parametrize("cls", [jaxmaf.MAF, jaxmaf.IAF])
def test_sequential_program_size_does_not_grow_with_dim(cls):
    """The program compiled for sampling (MAF) / density (IAF) is the same size at D=4 and 96."""
    sizes = []
    for dim in (4, 96):
        flow = cls(dim, 2, (32,), rngs=nnx.Rngs(0))
        x = jnp.zeros((8, dim))
        fn = (
            (lambda k, f=flow: f.sample(k, (8,)))
            if cls is jaxmaf.MAF
            else (lambda k, f=flow, x=x: f.log_prob(x))
        )
        sizes.append(_count_eqns(jax.make_jaxpr(fn)(jax.random.key(0)).jaxpr))
    assert sizes[0] == sizes[1], sizes


# ---------------------------------------------------------------- beyond the peers
@pytest.mark.parametrize("cls", [jaxmaf.MAF, jaxmaf.IAF])
def test_spline_inside_and_outside_tail_bound(cls, x64):
    flow = perturb(cls(3, 2, (16,), transformer=jaxmaf.Spline(5, 1.5), rngs=nnx.Rngs(0)))
    x = jnp.array([[0.1, -0.4, 0.9], [3.0, -2.5, 0.2], [-4.0, 5.0, 6.0], [1.4, -1.49, 0.0]])
    lp = flow.log_prob(x)
    np.testing.assert_allclose(lp, _dense_log_prob(flow, x, None), rtol=1e-10, atol=1e-10)
    again = jax.jit(lambda f, x: f.bijector().forward(f.bijector().inverse(x)))(flow, x)
    np.testing.assert_allclose(again, x, rtol=1e-10, atol=1e-10)


def test_spline_tails_are_identity():
    t = jaxmaf.Spline(6, 2.0)
    params = jax.random.normal(jax.random.key(0), (4, t.num_params))
    x = jnp.array([-7.0, -2.5, 2.01, 9.0])
    u, log_d = t.inverse_and_log_det(x, params)
    np.testing.assert_array_equal(u, x)
    np.testing.assert_array_equal(log_d, 0.0)
    inside = jnp.array([-1.5, 0.0, 0.7, 1.9])
    assert not np.allclose(t.inverse(inside, params), inside)


def test_mog_base_density_integrates_to_one():
    flow = perturb(
        jaxmaf.MAF(2, 2, (16,), base="mog", num_components=4, rngs=nnx.Rngs(1)), scale=0.1
    )
    g = np.linspace(-9, 9, 601)
    xx, yy = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    dens = np.exp(np.asarray(jax.jit(flow.log_prob)(pts), np.float64))
    total = dens.sum() * (g[1] - g[0]) ** 2
    assert abs(total - 1.0) < 5e-3, total
    # and the base really is a mixture (not a single Gaussian)
    comp = flow.base_distribution()
    assert isinstance(comp, distrax.MixtureSameFamily)


@pytest.mark.parametrize("name", ["maf", "maf_cond", "maf_spline", "maf_residual_mog"])
def test_jacobi_sampling_tol0_equals_exact(name, x64):
    flow = make_flow(name, 6)
    _, c = make_inputs(name, 6, n=5)
    key = jax.random.key(4)
    exact = flow.sample(key, (5,), c)
    jac, iters = flow.sample_with_iterations(key, (5,), c, method="jacobi")
    np.testing.assert_allclose(jac, exact, rtol=1e-12, atol=1e-12)  # up to rounding
    assert iters.shape == (3,) and np.all((iters >= 1) & (iters <= 6))
    loose, it_loose = flow.sample_with_iterations(key, (5,), c, method="jacobi", tol=1e-3)
    assert np.all(it_loose <= iters)
    np.testing.assert_allclose(loose, exact, atol=1e-2)


def test_jacobi_converges_early_on_a_weakly_coupled_flow():
    # Near the identity (small parameters), dependence on earlier dimensions is weak and the
    # fixed point is reached to 1e-6 in far fewer than D passes.
    flow = perturb(jaxmaf.MAF(32, 2, (64,), rngs=nnx.Rngs(0)), scale=0.02)
    exact = flow.sample(jax.random.key(0), (64,))
    x, iters = flow.sample_with_iterations(jax.random.key(0), (64,), method="jacobi", tol=1e-6)
    assert np.all(np.asarray(iters) < 16), iters
    np.testing.assert_allclose(x, exact, atol=1e-5)


def test_iaf_log_prob_jacobi_matches_exact(x64):
    flow = make_flow("iaf", 5)
    x, _ = make_inputs("iaf", 5)
    np.testing.assert_allclose(flow.log_prob(x, method="jacobi"), flow.log_prob(x), rtol=1e-12)


def test_sample_with_iterations_and_the_deprecated_flag_agree_with_sample():
    flow = perturb(jaxmaf.MAF(3, 2, (16,), rngs=nnx.Rngs(0)), scale=0.1)
    key = jax.random.key(4)
    x, iters = flow.sample_with_iterations(key, (6,), method="jacobi")
    np.testing.assert_array_equal(x, flow.sample(key, (6,), method="jacobi"))
    assert iters.shape == (2,) and np.all((iters >= 1) & (iters <= 3))
    with pytest.warns(DeprecationWarning, match="sample_with_iterations"):
        x_old, iters_old = flow.sample(key, (6,), method="jacobi", return_iterations=True)
    np.testing.assert_array_equal(x_old, x)
    np.testing.assert_array_equal(iters_old, iters)


def test_bad_method_and_base_errors():
    flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="Unknown method 'newton'"):
        flow.sample(jax.random.key(0), (2,), method="newton")
    with pytest.raises(ValueError, match="Unknown method 'newton'"):
        flow.log_prob(jnp.zeros(2), method="newton")
    # method and tol where the direction is one pass: refused, naming where they apply
    with pytest.raises(ValueError, match=r"MAF.log_prob is one pass.*MAF.sample"):
        flow.log_prob(jnp.zeros(2), method="jacobi")
    with pytest.raises(ValueError, match="tol=0.1"):
        flow.log_prob(jnp.zeros(2), tol=0.1)
    iaf = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"IAF.sample is one pass.*IAF.log_prob"):
        iaf.sample(jax.random.key(0), (2,), method="jacobi")
    iaf.log_prob(jnp.zeros(2), method="jacobi", tol=1e-6)  # the sequential direction: fine
    flow.sample(jax.random.key(0), (2,), method="jacobi", tol=1e-6)
    with pytest.raises(ValueError, match="Unknown base 'laplace'"):
        jaxmaf.MAF(2, 2, (8,), base="laplace", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="equal hidden widths for a residual MADE"):
        jaxmaf.MAF(2, 2, (8, 16), residual=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_bins to be an integer >= 1"):
        jaxmaf.Spline(0)


# ------------------------------------------------------------------ chunked evaluation
@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_chunked_evaluation_equals_whole_batch(name, x64):
    """Chunks of 3 rows over a (2, 7)-batch (a padded last chunk) give the whole-batch values."""
    flow = make_flow(name, 4, num_layers=2)
    x, c = make_inputs(name, 4, n=14)
    x = x.reshape(2, 7, 4)
    c = None if c is None else c.reshape(2, 7, -1)
    whole = flow.log_prob(x, c, chunk_size=None)
    np.testing.assert_allclose(flow.log_prob(x, c, chunk_size=3), whole, rtol=1e-12, atol=1e-12)
    key = jax.random.key(5)
    shape = (2,) if c is not None else (2, 7)
    xs = flow.sample(key, shape, c, chunk_size=3)
    np.testing.assert_allclose(
        xs, flow.sample(key, shape, c, chunk_size=None), rtol=1e-12, atol=1e-12
    )
    xs2, lp = flow.sample_and_log_prob(key, shape, c, chunk_size=3)
    np.testing.assert_allclose(xs2, xs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lp, flow.log_prob(xs, c, chunk_size=None), rtol=1e-9, atol=1e-9)


def test_chunked_log_prob_gradient_and_one_context_broadcast(x64):
    flow = make_flow("maf_cond", 3)
    x, c = make_inputs("maf_cond", 3, n=10)
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)

    def loss(p, chunk):
        return -jnp.mean(nnx.merge(graphdef, p, rest).log_prob(x, c[0], chunk_size=chunk))

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g_chunk, g_whole = grad(params, 4), grad(params, None)
    for a, b in zip(jax.tree.leaves(g_chunk), jax.tree.leaves(g_whole), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert any(float(jnp.max(jnp.abs(a))) > 0 for a in jax.tree.leaves(g_chunk))


def test_jacobi_iterations_with_chunks_are_the_most_any_chunk_used():
    flow = make_flow("maf", 6)
    key = jax.random.key(2)
    x_whole, it_whole = flow.sample_with_iterations(key, (12,), method="jacobi", chunk_size=None)
    x_chunk, it_chunk = flow.sample_with_iterations(key, (12,), method="jacobi", chunk_size=5)
    np.testing.assert_allclose(x_chunk, x_whole, rtol=1e-6, atol=1e-6)  # tol=0: both exact
    u = jax.random.normal(key, (12, 6))
    per_chunk = [flow._forward_counting(u[i : i + 5], None, "jacobi", 0.0)[1] for i in (0, 5, 10)]
    np.testing.assert_array_equal(it_chunk, np.max(per_chunk, axis=0))
    assert it_chunk.shape == it_whole.shape == (3,)


def test_chunk_rows_validation():
    flow = jaxmaf.MAF(3, 1, (8,), rngs=nnx.Rngs(0))
    assert flow.chunk_rows(None, 10_000) is None
    assert flow.chunk_rows(100, 10_000) == 100
    assert flow.chunk_rows(100, 100) is None  # one chunk: run whole
    for bad in ("auto", 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            flow.chunk_rows(bad, 10_000)
    with pytest.raises(ValueError, match="chunk_size"):
        flow.log_prob(jnp.zeros((3, 3)), chunk_size=0)


def test_batch_norm_in_train_mode_is_never_chunked():
    flow = jaxmaf.MAF(4, 2, (8,), batch_norm=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="train mode"):  # batch statistics need the whole batch
        flow.log_prob(jnp.zeros((10, 4)), chunk_size=4)
    flow.eval()
    assert flow.chunk_rows(4, 10) == 4


@pytest.mark.parametrize("num_bins", [1, 2, 8])
def test_spline_matches_distrax_rational_quadratic_spline(num_bins, x64):
    """jaxmaf's spline (one gather per bin value) against distrax's, both directions."""
    t = jaxmaf.Spline(num_bins, 3.0)
    x = 4.0 * jax.random.normal(jax.random.key(0), (500, 5))  # inside and outside the bound
    p = 1.5 * jax.random.normal(jax.random.key(1), (500, 5, t.num_params))

    @jax.jit  # compiled once, not dispatched op by op
    def both(x, p):
        ref = distrax.RationalQuadraticSpline(p, -3.0, 3.0, boundary_slopes="identity")
        return (
            (t.inverse_and_log_det(x, p), ref.forward_and_log_det(x)),
            (t.forward_and_log_det(x, p), ref.inverse_and_log_det(x)),
        )

    for ours, theirs in both(x, p):
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12, atol=1e-12)
    outside = np.abs(np.asarray(x)) >= 3.0
    assert outside.any() and (~outside).any()

    def loss(fn):
        return lambda q: jnp.sum(fn(q)[0] + fn(q)[1])

    g_ours = jax.jit(jax.grad(loss(lambda q: t.inverse_and_log_det(x, q))))(p)
    g_ref = jax.jit(
        jax.grad(
            loss(
                lambda q: distrax.RationalQuadraticSpline(
                    q, -3.0, 3.0, boundary_slopes="identity"
                ).forward_and_log_det(x)
            )
        )
    )(p)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-10, atol=1e-10)


def test_spline_sampling_direction_has_finite_gradients():
    """The quadratic root's unused branch divides by a = 0 in a linear bin (the identity start,
    where every flow begins): the gradient must not pick up its NaN. An IAF's density and a
    MAF's sample_and_log_prob run this direction."""
    t = jaxmaf.Spline(4, 3.0)
    u = jnp.linspace(-2.9, 2.9, 7)[:, None]  # inside the spline's interval
    identity = jnp.zeros((7, 1, t.num_params))
    grad = jax.jit(jax.grad(lambda q: jnp.sum(sum(t.forward_and_log_det(u, q)))))
    round_trip = jax.jit(lambda q: t.inverse(t.forward(u, q), q))
    for p in (identity, 0.5 * jax.random.normal(jax.random.key(0), identity.shape)):
        assert np.all(np.isfinite(grad(p)))
        np.testing.assert_allclose(round_trip(p), u, atol=1e-5)  # and the same root


def test_a_user_transformer_trains_samples_and_matches_the_dense_formula(tmp_path):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class ShiftScale:  # x = u * exp(t) + m with t = tanh(params[..., 1]): a user's own affine map
        num_params = 2

        def forward_and_log_det(self, u, params):
            t = jnp.tanh(params[..., 1])
            return u * jnp.exp(t) + params[..., 0], t

        def inverse_and_log_det(self, x, params):
            t = jnp.tanh(params[..., 1])
            return (x - params[..., 0]) * jnp.exp(-t), -t

        def forward(self, u, params):
            return self.forward_and_log_det(u, params)[0]

        def inverse(self, x, params):
            return self.inverse_and_log_det(x, params)[0]

    assert isinstance(ShiftScale(), jaxmaf.transformers.Transformer)
    flow = perturb(jaxmaf.MAF(3, 2, (16,), transformer=ShiftScale(), rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    bij = flow.bijector()
    u, dense = jax.jit(jax.vmap(lambda v: (bij.inverse(v), jaxmaf.dense_log_det(bij.inverse, v))))(
        x
    )
    np.testing.assert_allclose(flow.log_prob(x), flow.base_log_prob(u) + dense, rtol=1e-5)
    xs = flow.sample(jax.random.key(2), (4,))
    np.testing.assert_allclose(bij.forward(bij.inverse(xs)), xs, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="ShiftScale.*nnx.state"):
        jaxmaf.save(tmp_path / "f.jaxmaf", flow)
