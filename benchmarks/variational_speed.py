"""Steps per second of jaxmaf.fit_variational against numpyro's SVI, one step per call.

The family and targets of ``examples/variational.py`` (an IAF, 4 layers, MADE
32x32 ELU, Adam 3e-3, 64 samples per step; the banana and the 10-d funnel).
Each round times, in turn, one ``fit_variational`` run per optimizer variant
and numpyro's ``AutoIAFNormal`` driven by one jitted ``svi.update`` per Python
call, every one over the same number of steps and after a warm-up that
compiles it. The report is the median steps/s over the rounds with its range,
and the ratio of each jaxmaf variant's median to numpyro's from the same run.
A range wider than 20% of its median is flagged: the figure is not
trustworthy on that machine at that time.

Variants: ``adam`` (``optax.adam``, what the example uses: fit_variational
as it ships), ``flatten_adam`` (``optax.flatten(optax.adam)``: one flat
vector for the update; the same updates for an elementwise optimizer, fewer
kernels) and ``noise_per_step`` (``optax.adam`` with the base noise drawn
inside every step, as fit_variational did before 2026-11-27: its
``NOISE_BUDGET`` set to 1 for those runs; the same distribution of draws),
``stl`` (``stick_the_landing=True``: for an IAF of 3+ dimensions the score
from the sampling pass's Jacobian) and ``stl_log_prob`` (the same with the
score from the sequential ``log_prob``, as before 2026-11-27:
``jaxmaf.elbo.JACOBIAN_BUDGET`` set to 0).

The ``floor`` (``--no-floor`` to skip) is the same arithmetic written by hand
without jaxmaf: the IAF's masked matrix products, ELU, an ``exp`` scale
(one transcendental per output, where jaxmaf's default softplus takes
three), reversals as ``x[:, ::-1]``, Adam, the noise of 100 steps drawn at
once, and no ELBO estimate between blocks: all steps in one ``lax.scan``. It
bounds what any implementation of this step could reach on the machine, so
the ratio ``numpyro / floor`` is the most a compiled loop can gain there.

Run: python benchmarks/variational_speed.py [--out DIR] [--steps N] [--rounds N]
       [--targets funnel,banana] [--variants adam,flatten_adam] [--no-numpyro] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

VARIANTS = ("adam", "flatten_adam", "noise_per_step", "stl", "stl_log_prob")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/out/variational_speed")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--targets", default="funnel,banana")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--no-numpyro", action="store_true")
    p.add_argument("--no-floor", action="store_true", help="skip the hand-written floor")
    p.add_argument("--quick", action="store_true", help="200 steps, 1 round (CI smoke)")
    args = p.parse_args(argv)
    for v in args.variants.split(","):
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r}: expected some of {', '.join(VARIANTS)}")
    for t in args.targets.split(","):
        if t not in ("funnel", "banana"):
            p.error(f"unknown target {t!r}: expected funnel and/or banana")
    return args


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxmaf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import variational as example  # noqa: E402 - the example's targets, family and numpyro side

FLOOR_GROUP = 100  # steps whose noise the floor draws at once


def floor_program(log_target, dim: int, steps: int):
    """The hand-written step's compiled loop, ``run(params, opt_state, key)``, and its inputs.

    A MADE with hidden degrees ``1 + (j mod (dim - 1))`` per layer (numpyro's and MADE's
    rule), reversed orders between layers, the output layer started at zero.
    """
    layers, hidden, batch = example.LAYERS, example.HIDDEN, example.BATCH
    deg_in = np.arange(1, dim + 1)
    deg_h = np.arange(hidden) % max(dim - 1, 1) + 1
    deg_out = np.concatenate([deg_in, deg_in])  # shift, then log-scale
    masks = [
        jnp.asarray(deg_h[None, :] >= deg_in[:, None], jnp.float32),
        jnp.asarray(deg_h[None, :] >= deg_h[:, None], jnp.float32),
        jnp.asarray(deg_out[None, :] > deg_h[:, None], jnp.float32),
    ]
    rng = np.random.default_rng(0)

    def dense(fan_in, fan_out, scale=1.0):
        w = rng.uniform(-1, 1, (fan_in, fan_out)) * scale / np.sqrt(fan_in)
        return jnp.asarray(w, jnp.float32), jnp.zeros(fan_out, jnp.float32)

    params = [
        [dense(dim, hidden), dense(hidden, hidden), dense(hidden, 2 * dim, 0.0)]
        for _ in range(layers)
    ]
    optimizer = optax.adam(example.LEARNING_RATE)

    def neg_elbo(params, u):
        x, log_det = u, 0.0
        for i, layer in enumerate(params):
            h = x
            for j, (w, b) in enumerate(layer):
                h = h @ (w * masks[j]) + b
                h = jax.nn.elu(h) if j < 2 else h
            shift, log_scale = h[:, :dim], h[:, dim:]
            x, log_det = x * jnp.exp(log_scale) + shift, log_det + log_scale.sum(-1)
            x = x[:, ::-1] if i + 1 < layers else x
        log_q = -0.5 * jnp.sum(u**2, -1) - 0.5 * dim * np.log(2 * np.pi) - log_det
        return jnp.mean(log_q - log_target(x))

    def step(carry, u):
        params, opt_state = carry
        value, grads = jax.value_and_grad(neg_elbo)(params, u)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    @jax.jit
    def run(params, opt_state, key):
        def group(carry, key):
            u = jax.random.normal(key, (FLOOR_GROUP, batch, dim))
            return jax.lax.scan(step, carry, u)

        keys = jax.random.split(key, steps // FLOOR_GROUP)
        return jax.lax.scan(group, (params, opt_state), keys)[1]

    return run, (params, optimizer.init(params), jax.random.key(0))


def optimizer(name: str) -> optax.GradientTransformation:
    adam = optax.adam(example.LEARNING_RATE)
    return optax.flatten(adam) if name == "flatten_adam" else adam


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 200, 1
    if args.steps % FLOOR_GROUP:
        raise SystemExit(f"--steps must be a multiple of {FLOOR_GROUP}, got {args.steps}")
    variants = {v: optimizer(v) for v in args.variants.split(",")}  # one object: one program
    use_numpyro = not args.no_numpyro
    if use_numpyro:
        try:
            import numpyro  # noqa: F401
        except ImportError:
            print("numpyro is not installed (pip install -e '.[bench]'): jaxmaf only")
            use_numpyro = False
    result = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "steps": args.steps,
        "rounds": args.rounds,
    }
    print(f"backend {result['backend']} ({result['device']}), {args.steps} steps per timing")

    for name in args.targets.split(","):
        log_target, dim = example.TARGETS[name]

        def fit(variant, log_target=log_target, dim=dim):
            flow = example.make_iaf(dim, 0)
            budget, jacobian_budget = jaxmaf.variational.NOISE_BUDGET, jaxmaf.elbo.JACOBIAN_BUDGET
            if variant == "noise_per_step":
                jaxmaf.variational.NOISE_BUDGET = 1  # one draw per step
            if variant == "stl_log_prob":
                jaxmaf.elbo.JACOBIAN_BUDGET = 0  # the score from log_prob
            try:
                t0 = time.perf_counter()
                jaxmaf.fit_variational(
                    flow,
                    log_target,
                    num_steps=args.steps,
                    batch_size=example.BATCH,
                    optimizer=variants[variant],
                    seed=0,
                    progress=False,
                    stick_the_landing=variant.startswith("stl"),
                )
                jax.block_until_ready(nnx.state(flow))
                return args.steps / (time.perf_counter() - t0), flow
            finally:
                jaxmaf.variational.NOISE_BUDGET = budget
                jaxmaf.elbo.JACOBIAN_BUDGET = jacobian_budget

        rates = {v: [] for v in variants}
        kl = {}
        for v in variants:  # warm-up: compile
            fit(v)
        if not args.no_floor:
            floor, floor_args = floor_program(log_target, dim, args.steps)
            jax.block_until_ready(floor(*floor_args))  # compile
            rates["floor"] = []
        if use_numpyro:
            rates["numpyro_per_call"] = []
        for r in range(args.rounds):
            for v in variants:
                rate, flow = fit(v)
                rates[v].append(rate)
                if r == 0:
                    x, log_q = flow.sample_and_log_prob(jax.random.key(1), (20_000,))
                    kl[v] = example.kl_estimate(x, log_q, log_target)[0]
            if not args.no_floor:
                t0 = time.perf_counter()
                jax.block_until_ready(floor(*floor_args))
                rates["floor"].append(args.steps / (time.perf_counter() - t0))
            if use_numpyro:
                _, _, per_call, _ = example.run_numpyro(
                    name, args.steps, 0, 1000, compiled_loop=False
                )
                rates["numpyro_per_call"].append(args.steps / per_call)
        median = {k: statistics.median(v) for k, v in rates.items()}
        noisy = [k for k, v in rates.items() if (max(v) - min(v)) > 0.2 * median[k]]
        entry = {"steps_per_s": rates, "median": median, "kl_20000_samples": kl, "noisy": noisy}
        line = f"{name}: " + ", ".join(
            f"{k} {median[k]:,.0f} steps/s [{min(v):,.0f}-{max(v):,.0f}]" for k, v in rates.items()
        )
        if use_numpyro:
            entry["ratio_vs_numpyro_per_call"] = {
                v: median[v] / median["numpyro_per_call"] for v in variants
            }
            line += " | vs numpyro per call: " + ", ".join(
                f"{v} {r:.2f}x" for v, r in entry["ratio_vs_numpyro_per_call"].items()
            )
        if not args.no_floor:
            entry["ratio_vs_floor"] = {v: median[v] / median["floor"] for v in variants}
            line += " | vs the floor: " + ", ".join(
                f"{v} {r:.2f}x" for v, r in entry["ratio_vs_floor"].items()
            )
            if use_numpyro:
                entry["floor_vs_numpyro_per_call"] = median["floor"] / median["numpyro_per_call"]
                line += f" | floor vs numpyro per call {entry['floor_vs_numpyro_per_call']:.2f}x"
        print(line + f" | KL {', '.join(f'{v} {k:.4f}' for v, k in kl.items())}")
        if noisy:
            print(f"  WARNING: spread over 20% of the median ({', '.join(noisy)}): not trustworthy")
        result[name] = entry
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "variational_speed.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}/variational_speed.json")
    return result


if __name__ == "__main__":
    main()
