"""A new flow's initial values: the same numbers as before, from few compiled programs."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmaf
from jaxmaf.draws import draw, standard_normal, standard_uniform, zeros
from jaxmaf.masked_linear import LECUN_NORMAL, scaled_lecun_normal, uniform_fan_in
from jaxmaf.masks import balanced_permutations

INITS = {
    "uniform_fan_in_1": uniform_fan_in(1),
    "uniform_fan_in_37": uniform_fan_in(37),
    "uniform_fan_in_scaled": uniform_fan_in(12, 0.3),
    "lecun_normal": LECUN_NORMAL,
    "lecun_normal_scaled_0.1": scaled_lecun_normal(0.1),
    "lecun_normal_scaled_2.5": scaled_lecun_normal(2.5),
    "standard_normal": standard_normal,
    "standard_uniform": standard_uniform,
    "zeros": zeros,
}
# sizes on both sides of the power-of-two lengths, 2-D kernels and 1-D biases
SHAPES = [(1,), (255,), (256,), (257,), (0, 4), (17, 15), (16, 16), (3, 86), (300, 7), (64, 33)]


def _per_shape(init, key, shape, dtype):
    """What a flow was built from before: one program per initializer and shape."""
    return jax.jit(lambda k: init(k, shape, dtype))(key)


@pytest.mark.parametrize("name", list(INITS))
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_draw_gives_the_numbers_of_a_program_per_shape(name, precision):
    """Every initializer a flow uses, at sizes around the draw lengths, to the bit, in
    float32 and float64: flows built now equal those built before, so results recorded
    with earlier versions stand."""
    init = INITS[name]
    with jax.enable_x64(precision == "float64"):
        dtype = jnp.dtype(precision)
        for i, shape in enumerate(SHAPES):
            if name.startswith("lecun") and (len(shape) != 2 or shape[0] == 0):
                continue  # (a kernel's initializer: it needs a fan-in)
            key = jax.random.key(100 + i)
            got = draw(init, key, shape, dtype)
            want = _per_shape(init, key, shape, dtype)
            assert got.shape == want.shape and got.dtype == want.dtype == dtype
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=str(shape))


def test_draw_under_a_trace_is_the_initializer():
    """Inside ``jit`` the draw is traced (no host round trip), with the same numbers."""
    key = jax.random.key(3)
    for init in (uniform_fan_in(5), scaled_lecun_normal(0.1), standard_normal, zeros):
        traced = jax.jit(lambda k, init=init: draw(init, k, (7, 9), jnp.float32))(key)
        np.testing.assert_array_equal(traced, draw(init, key, (7, 9), jnp.float32))


@pytest.mark.parametrize(
    "build",
    [
        lambda: jaxmaf.MAF(9, 5, (23, 23), rngs=nnx.Rngs(4)),  # balanced random orders
        lambda: jaxmaf.IAF(9, 4, (23,), output_init_scale=0.1, rngs=nnx.Rngs(4)),
        lambda: jaxmaf.MAF(2, 3, (23,), batch_norm=True, standardize=True, rngs=nnx.Rngs(4)),
        lambda: jaxmaf.MAF(5, 3, (23,), context_dim=2, rngs=nnx.Rngs(4)),
    ],
    ids=["maf_balanced", "iaf_scaled_output", "maf_mog_batch_norm", "maf_context"],
)
def test_a_flow_built_in_jit_equals_the_one_built_eagerly(build):
    """Built under ``nnx.jit`` every value is traced (orders sorted by ``jax.numpy``);
    built eagerly they come from the host. Same graph, same state, leaf for leaf."""
    eager, jitted = build(), nnx.jit(build)()
    assert nnx.graphdef(eager) == nnx.graphdef(jitted)
    a, b = jax.tree.leaves(nnx.state(eager)), jax.tree.leaves(nnx.state(jitted))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_balanced_orders_agree_on_the_host_and_the_device_when_draws_tie():
    """numpy and jax.numpy sort ties alike (stably), so a flow's orders do not depend
    on where they were computed."""
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, 4, size=40) / 4 for _ in range(8)]
    host = iter([d.astype(np.float32) for d in draws])
    device = iter([jnp.asarray(d, jnp.float32) for d in draws])
    on_host = balanced_permutations(40, 7, lambda: next(host), np)
    on_device = balanced_permutations(40, 7, lambda: next(device), jnp)
    assert [p.tolist() for p in on_host] == [np.asarray(p).tolist() for p in on_device]


def test_a_flow_of_a_new_shape_compiles_nothing_once_its_draw_lengths_are_compiled(caplog):
    """Building a flow used to compile each initializer for each new shape (about 1 s
    for a new 4-layer MAF on a CPU). Once the draw lengths exist, flows of shapes never
    seen compile no program at all: MAF and IAF, the mixture base, batch norm,
    standardization, a context."""
    jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(1))  # what any first flow compiles (nnx.Rngs)
    key = jax.random.key(0)
    for init in (uniform_fan_in(3), LECUN_NORMAL, scaled_lecun_normal(0.5)):
        for n in (256, 512, 1024, 2048, 4096):
            draw(init, key, (n // 16, 16), jnp.float32)
    for init in (standard_normal, standard_uniform):
        draw(init, key, (256,), jnp.float32)
    caplog.set_level(logging.WARNING, logger="jax")
    with jax.log_compiles(True):
        jaxmaf.MAF(6, 4, (29, 29), rngs=nnx.Rngs(1))
        jaxmaf.IAF(6, 4, (29, 29), output_init_scale=0.2, rngs=nnx.Rngs(1))
        jaxmaf.MAF(3, 4, (29,), batch_norm=True, standardize=True, rngs=nnx.Rngs(1))
        jaxmaf.MAF(2, 3, (29,), context_dim=2, rngs=nnx.Rngs(1))
        jaxmaf.MAF(3, 3, (31,), transformer="spline", rngs=nnx.Rngs(1))
    compiled = [r.getMessage()[:300] for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiled == [], "\n".join(compiled)
