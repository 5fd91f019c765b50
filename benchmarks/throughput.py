"""Throughput of jaxmaf against flowjax, TFP's JAX substrate, and an unmasked-MLP floor.

Same architecture and work in one process, every function driven by plain
``jax.jit`` (warm-up, ``block_until_ready``, compile time separately). The
implementations take turns in every round of repeats, so slow drifts of the
machine fall on all of them; a ratio is the median over rounds of the
per-round ratio, printed with its quartiles:
  - train step (NLL, gradient, Adam update) on one batch;
  - ``log_prob`` of 10k points;
  - sampling 10k points (the sequential direction: D MADE passes per layer);
Workloads: D=2, 4 layers, MADE 2x128, batch 256 (the circles example's flow); D=64,
5 layers, MADE 2x512, batch 512; and a spline MAF, D=16, 4 layers, MADE
2x128, 8 bins, batch 256 (jaxmaf and flowjax only). The floor is the same flow with plain dense
layers (no masks, no flow bookkeeping beyond the affine map and the log-det
sum). Peers are optional (``pip install -e '.[bench]'``); a missing one is
skipped with a message.

NNX call overhead: every implementation hands its compiled functions plain
arrays as flat leaf lists (the floor's dict, jaxmaf's flow, flowjax's
equinox modules, the jaxmaf MADEs inside the TFP entry), so that they differ
in their compiled programs alone. Handing them
``nnx.State`` objects instead costs Python time around each call that no
compiled program sees: at D=2 flattening the parameters and Adam state takes
67 us against a dict's 13 us, and the whole train-step call 1.93 ms against
1.65 ms from flat leaves (whose program time matches the floor's 1.63 ms).
``jaxmaf.fit`` pays it once per epoch (one call runs the whole epoch); a
hand-written per-step loop pays it every step unless it flattens as here.

Run: python benchmarks/throughput.py [--out DIR] [--quick] [--skip-sampling]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

WORKLOADS = {
    "D2": dict(dim=2, layers=4, hidden=(128, 128), batch=256),
    "D64": dict(dim=64, layers=5, hidden=(512, 512), batch=512),
    # Spline MAF: jaxmaf Spline(8 bins, tail bound 3), 25 conditioner outputs per dimension
    # (distrax's layout); flowjax RationalQuadraticSpline(knots=8, interval=3).
    # No floor or TFP entry: both are affine here.
    "D16_spline": dict(dim=16, layers=4, hidden=(128, 128), batch=256, spline_bins=8),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/throughput")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument(
        "--min-seconds",
        type=float,
        default=10.0,
        help="train-step and log_prob rounds go on until this many seconds per task",
    )
    ap.add_argument("--sample-repeats", type=int, default=3)
    ap.add_argument("--skip-sampling", action="store_true")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--quick", action="store_true", help="D2 only, few repeats (CI smoke)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads


import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxmaf
from jaxmaf.transformers import inverse_softplus

N_EVAL = 10_000
LR = 1e-3
OFFSET = inverse_softplus(1.0 - 1e-3)


def compile_fn(fn, *args):
    """(compiled function, compile seconds), after one discarded warm-up call."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    return compiled, compile_s


def time_interleaved(calls, repeats, min_seconds=0.0):
    """Per-name lists of wall-clock seconds, the implementations taking turns each round.

    Interleaving spreads slow drifts of the machine (other load, clocks, caches)
    over every implementation instead of charging them to whichever ran then.
    At least `repeats` rounds; fast calls go on until `min_seconds` have passed
    (at most 20 * repeats rounds), so that a noisy minute on a shared machine
    is a minority of a fast task's rounds.
    """
    times = {name: [] for name in calls}
    end = time.perf_counter() + min_seconds
    rounds = 0
    while rounds < repeats or (time.perf_counter() < end and rounds < 20 * repeats):
        rounds += 1
        for name, (compiled, args) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[name].append(time.perf_counter() - t0)
    return times


def adam_step(loss):
    opt = optax.adam(LR)

    def step(params, opt_state, x):
        val, g = jax.value_and_grad(loss)(params, x)
        u, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, u), opt_state, val

    return opt, step


# ------------------------------------------------------------------ implementations
class Unsupported(Exception):
    """An implementation that has no counterpart of a workload (skipped with a message)."""


def affine_only(w):
    if "spline_bins" in w:
        raise Unsupported("affine transformer only")


def split_flat(module):
    """(parameters as a flat list of arrays, leaves -> module): see NNX call overhead above."""
    graphdef, state, rest = nnx.split(module, nnx.Param, ...)  # rest: permutations, constants
    leaves, treedef = jax.tree.flatten(state)

    def build(leaves):
        return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)

    return leaves, build


def jaxmaf_impl(w):
    transformer = jaxmaf.Spline(w["spline_bins"], 3.0) if "spline_bins" in w else "affine"
    flow = jaxmaf.MAF(
        w["dim"],
        w["layers"],
        w["hidden"],
        transformer=transformer,
        base="gaussian",  # the peers' and the floor's base (the default is a mixture in 2-d)
        output_init_scale=0.1,
        rngs=nnx.Rngs(0),
    )
    params, build = split_flat(flow)

    def log_prob(p, x):
        return build(p).log_prob(x)

    def sample(p, key):
        return build(p).sample(key, (N_EVAL,))

    return params, log_prob, sample


def floor_impl(w):
    """The same shapes and work with unmasked dense layers."""
    affine_only(w)
    flow = jaxmaf.MAF(w["dim"], w["layers"], w["hidden"], output_init_scale=0.1, rngs=nnx.Rngs(0))
    params, treedef = jax.tree.flatten(nnx.state(flow, nnx.Param).to_pure_dict())
    dim = w["dim"]
    rev = np.arange(dim)[::-1]  # a gather, as jaxmaf.Permute (a flip is slower in a flow)

    def net(layer, x):
        h = x
        for lin in layer["hidden"].values():
            h = jax.nn.relu(h @ lin["kernel"] + lin["bias"])
        out = h @ layer["output"]["kernel"] + layer["output"]["bias"]
        out = out.reshape(out.shape[:-1] + (dim, 2))
        s = jax.nn.softplus(out[..., 1] + OFFSET) + 1e-3
        return out[..., 0], s

    def mades(p):  # the MADEs' parameters, base side first
        layers = jax.tree.unflatten(treedef, p)["layers"].values()
        return [layer["conditioner"] for layer in layers if "conditioner" in layer]

    def log_prob(p, x):
        layers = mades(p)
        ld = 0.0
        for k, layer in enumerate(reversed(layers)):
            if k:
                x = jnp.take(x, rev, axis=-1)
            b, s = net(layer, x)
            x = x * s + b
            ld = ld + jnp.sum(jnp.log(s), -1)
        return -0.5 * jnp.sum(x**2, -1) - 0.5 * dim * math.log(2 * math.pi) + ld

    def sample(p, key):
        u = jax.random.normal(key, (N_EVAL, dim))
        for k, layer in enumerate(mades(p)):
            if k:
                u = jnp.take(u, rev, axis=-1)

            def body(_, y, layer=layer, u=u):
                b, s = net(layer, y)
                return (u - b) / s

            u = jax.lax.fori_loop(0, dim, body, jnp.zeros_like(u))
        return u

    return params, log_prob, sample


def flowjax_impl(w):
    import equinox as eqx
    import paramax
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    extra = {}
    if "spline_bins" in w:
        from flowjax.bijections import RationalQuadraticSpline

        extra["transformer"] = RationalQuadraticSpline(knots=w["spline_bins"], interval=3.0)
    flow = masked_autoregressive_flow(
        jax.random.key(0),
        base_dist=Normal(jnp.zeros(w["dim"])),
        flow_layers=w["layers"],
        nn_width=w["hidden"][0],
        nn_depth=len(w["hidden"]),
        **extra,
    )
    params, static = eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda x: isinstance(x, paramax.NonTrainable)
    )
    params, treedef = jax.tree.flatten(params)

    def build(p):
        return paramax.unwrap(eqx.combine(jax.tree.unflatten(treedef, p), static))

    def log_prob(p, x):
        return build(p).log_prob(x)

    def sample(p, key):
        return build(p).sample(key, (N_EVAL,))

    return params, log_prob, sample


def tfp_impl(w):
    """TFP's MaskedAutoregressiveFlow (JAX substrate) around a plain-JAX MADE (jaxmaf.MADE)."""
    affine_only(w)
    import tensorflow_probability.substrates.jax as tfp

    tfb, tfd = tfp.bijectors, tfp.distributions
    dim = w["dim"]
    mades = [
        jaxmaf.MADE(dim, w["hidden"], 2, rngs=nnx.Rngs(i), output_init_scale=0.1)
        for i in range(w["layers"])
    ]
    splits = [split_flat(m) for m in mades]
    params = [p for p, _ in splits]

    def dist(p):
        bijectors = []
        for k, ((_, build), pk) in enumerate(zip(splits, p, strict=True)):
            made = build(pk)

            def fn(x, made=made):
                out = made(x)
                return out[..., 0], out[..., 1]

            if k:
                bijectors.append(tfb.Permute(list(range(dim))[::-1]))
            bijectors.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=fn))
        base = tfd.MultivariateNormalDiag(jnp.zeros(dim))
        return tfd.TransformedDistribution(base, tfb.Chain(bijectors[::-1]))

    def log_prob(p, x):
        return dist(p).log_prob(x)

    def sample(p, key):
        return dist(p).sample(N_EVAL, seed=key)

    return params, log_prob, sample


IMPLS = {"floor": floor_impl, "jaxmaf": jaxmaf_impl, "flowjax": flowjax_impl, "tfp_jax": tfp_impl}


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.workloads, args.repeats, args.sample_repeats, args.min_seconds = "D2", 3, 1, 0.0
    os.makedirs(args.out, exist_ok=True)
    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); jax {jax.__version__}"
    )
    rows = []
    # Warm-up: the first program measured in a process runs slower (thread pools, caches);
    # one discarded pass keeps that off whichever implementation comes first.
    w0 = WORKLOADS["D2"]
    p0, lp0, _ = floor_impl(w0)
    compiled0, _ = compile_fn(lp0, p0, jnp.zeros((N_EVAL, w0["dim"]), jnp.float32))
    time_interleaved({"warm-up": (compiled0, (p0, jnp.zeros((N_EVAL, w0["dim"]))))}, 3)
    for wname in args.workloads.split(","):
        w = WORKLOADS[wname]
        print(
            f"\n== {wname}: D={w['dim']}, {w['layers']} layers, MADE {w['hidden']}, "
            f"batch {w['batch']}"
        )
        rng = np.random.default_rng(0)
        x_batch = jnp.asarray(rng.normal(size=(w["batch"], w["dim"])), jnp.float32)
        x_eval = jnp.asarray(rng.normal(size=(N_EVAL, w["dim"])), jnp.float32)
        tasks: dict[str, dict] = {"train_step": {}, "log_prob_10k": {}}
        if not args.skip_sampling:
            tasks["sample_10k"] = {}
        for name, impl in IMPLS.items():
            try:
                params, log_prob, sample = impl(w)
            except (ImportError, Unsupported) as e:
                print(f"{name}: skipped ({e})")
                continue
            opt, step = adam_step(lambda p, x, lp=log_prob: -jnp.mean(lp(p, x)))
            fns = {
                "train_step": (step, (params, opt.init(params), x_batch)),
                "log_prob_10k": (log_prob, (params, x_eval)),
                "sample_10k": (sample, (params, jax.random.key(1))),
            }
            for task in tasks:
                fn, fargs = fns[task]
                compiled, compile_s = compile_fn(fn, *fargs)
                tasks[task][name] = (compiled, fargs, compile_s)
        for task, calls in tasks.items():
            sampling = task == "sample_10k"
            times = time_interleaved(
                {n: c[:2] for n, c in calls.items()},
                args.sample_repeats if sampling else args.repeats,
                0.0 if sampling else args.min_seconds,
            )
            for name, ts in times.items():
                med, lo, hi = statistics.median(ts), min(ts), max(ts)
                c = calls[name][2]
                rows.append(
                    dict(
                        workload=wname,
                        impl=name,
                        task=task,
                        median_ms=1e3 * med,
                        min_ms=1e3 * lo,
                        max_ms=1e3 * hi,
                        compile_ms=1e3 * c,
                        times_ms=[1e3 * t for t in ts],
                    )
                )
                print(
                    f"{name:<8} {task:<13} median {1e3 * med:10.2f} ms (min {1e3 * lo:.2f}, "
                    f"max {1e3 * hi:.2f}); compile {1e3 * c:7.0f} ms",
                    flush=True,
                )
    ratios, spreads = {}, {}
    print(
        "\nratios (jaxmaf / other; < 1 means jaxmaf is faster): median over the interleaved "
        "rounds of the per-round ratio [quartiles]; compile-time ratio"
    )
    for wname in args.workloads.split(","):
        for task in ("train_step", "log_prob_10k", "sample_10k"):
            sel = {r["impl"]: r for r in rows if r["workload"] == wname and r["task"] == task}
            if "jaxmaf" not in sel:
                continue
            ours = sel["jaxmaf"]
            for name, r in sel.items():
                if name == "jaxmaf":
                    continue
                key = f"{wname}/{task}/jaxmaf_over_{name}"
                paired = [a / b for a, b in zip(ours["times_ms"], r["times_ms"], strict=True)]
                q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
                ratios[key], spreads[key] = statistics.median(paired), [q1, q3]
                compile_key = f"{wname}/compile_{task}/jaxmaf_over_{name}"
                ratios[compile_key] = ours["compile_ms"] / r["compile_ms"]
                noisy = q3 - q1 > 0.3 * ratios[key]
                print(
                    f"  {wname:<4} {task:<13} jaxmaf/{name:<8} {ratios[key]:6.2f} "
                    f"[{q1:.2f}, {q3:.2f}]   compile {ratios[compile_key]:5.2f}"
                    + ("  WARNING: quartiles wider than 30% of the ratio (noisy)" if noisy else "")
                )
    result = dict(
        rows=rows,
        ratios=ratios,
        ratio_quartiles=spreads,
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        versions=dict(
            jax=jax.__version__, jaxmaf=jaxmaf.__version__, python=platform.python_version()
        ),
    )
    with open(os.path.join(args.out, "throughput.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}/throughput.json")


if __name__ == "__main__":
    main()
