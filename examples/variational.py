"""Variational inference with an IAF: jaxmaf's fit_variational against numpyro's AutoIAFNormal.

Two targets whose normaliser is known exactly (log Z = 0), so the fit is scored
by KL(q || p) = log Z - ELBO, estimated with many samples:

- banana (2-d): a standard normal sheared by x2 -> x2 + b (x1^2 - 1), volume
  preserving;
- Neal's funnel (10-d): v ~ N(0, 3^2), x_i | v ~ N(0, exp(v / 2)^2), i = 1..9.

Both libraries get the same variational family (an IAF: layers, MADE hidden
widths, ELU, reversed orders between layers), the same Adam learning rate, the
same number of steps and samples per step. numpyro's SVI is timed two ways: one
jitted ``svi.update`` per Python call (how a loop with a progress bar runs) and
``svi.run(progress_bar=False)`` (its whole loop compiled). Writes
``metrics.json`` and figures of target and samples into ``--out``.

Run: python examples/variational.py [--out DIR] [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

STEPS, QUICK_STEPS = 5000, 200
LAYERS, HIDDEN, BATCH, LEARNING_RATE = 4, 32, 64, 3e-3
BANANA_B = 1.0
KL_SAMPLES, QUICK_KL_SAMPLES = 100_000, 10_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/out/variational")
    parser.add_argument(
        "--quick", action="store_true", help=f"banana only, {QUICK_STEPS} steps (CI smoke)"
    )
    parser.add_argument("--steps", type=int, default=None, help=f"default {STEPS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-numpyro", action="store_true", help="jaxmaf only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxmaf
from jaxmaf import plotting


# ------------------------------------------------------------------ targets (log Z = 0)
def banana(x):
    x1, x2 = x[..., 0], x[..., 1] - BANANA_B * (x[..., 0] ** 2 - 1.0)
    return -0.5 * (x1**2 + x2**2) - math.log(2 * math.pi)


def funnel(x):
    v, rest = x[..., 0], x[..., 1:]
    log_v = -0.5 * (v / 3.0) ** 2 - math.log(3.0) - 0.5 * math.log(2 * math.pi)
    scale = jnp.exp(v / 2.0)
    k = rest.shape[-1]
    log_x = -0.5 * jnp.sum((rest / scale[..., None]) ** 2, -1) - k * (v / 2.0)
    return log_v + log_x - 0.5 * k * math.log(2 * math.pi)


TARGETS = {"banana": (banana, 2), "funnel": (funnel, 10)}


def kl_estimate(x, log_q, log_target):
    """KL(q || p) = E_q[log q - log p] (log Z = 0), its standard error, and Pareto k.

    k is the shape of the importance weights' tail (jaxmaf.pareto_k): below 0.7 q is
    reliable for importance sampling.
    """
    d = np.asarray(log_q - log_target(x), np.float64)
    k = math.nan if np.isnan(d).any() else jaxmaf.pareto_k(-d)  # NaN: a diverged fit
    return float(d.mean()), float(d.std() / math.sqrt(d.size)), k


# ------------------------------------------------------------------ jaxmaf
def make_iaf(dim, seed):
    """Numpyro's AutoIAFNormal family: reversed orders between layers, ELU MADEs."""
    return jaxmaf.IAF(
        dim,
        LAYERS,
        (HIDDEN, HIDDEN),
        activation="elu",
        permutation="reverse",
        rngs=nnx.Rngs(seed),
    )


def run_jaxmaf(log_target, dim, steps, seed, kl_samples, stl=False):
    kw = dict(batch_size=BATCH, optimizer=optax.adam(LEARNING_RATE), seed=seed, progress=False)
    kw["stick_the_landing"] = stl
    jaxmaf.fit_variational(make_iaf(dim, seed), log_target, num_steps=100, **kw)  # compile
    flow = make_iaf(dim, seed)
    t0 = time.perf_counter()
    history = jaxmaf.fit_variational(flow, log_target, num_steps=steps, **kw)
    seconds = time.perf_counter() - t0
    x, log_q = flow.sample_and_log_prob(jax.random.key(10_000 + seed), (kl_samples,))
    return flow, x, log_q, seconds, history


def gradient_variance(flow, log_target, stl, draws=256):
    """Total variance of one step's ELBO gradient at the flow's current parameters.

    The trace of the gradient's covariance over ``draws`` independent batches of BATCH
    samples.
    """
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)

    def elbo(params, key):
        q = nnx.merge(graphdef, params, rest)
        if stl:  # the path derivative: log q with the parameters held constant
            x = q.sample(key, (BATCH,))
            log_q = nnx.merge(graphdef, jax.lax.stop_gradient(params), rest).log_prob(x)
        else:
            x, log_q = q.sample_and_log_prob(key, (BATCH,))
        return jnp.mean(log_target(x) - log_q)

    keys = jax.random.split(jax.random.key(7), draws)
    grads = jax.jit(jax.vmap(jax.grad(elbo), in_axes=(None, 0)))(params, keys)
    return float(sum(jnp.sum(jnp.var(g, axis=0)) for g in jax.tree.leaves(grads)))


# ------------------------------------------------------------------ numpyro
def numpyro_model(name):
    import numpyro
    import numpyro.distributions as dist

    def banana_model():
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        shear = z[..., 1] - BANANA_B * (z[..., 0] ** 2 - 1.0)
        numpyro.factor("shear", -0.5 * (shear**2 - z[..., 1] ** 2))

    def funnel_model():
        v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2.0)).expand([9]).to_event(1))

    return banana_model if name == "banana" else funnel_model


def run_numpyro(name, steps, seed, kl_samples, compiled_loop=True):
    """AutoIAFNormal at the same architecture; per-call and compiled-loop timings."""
    from jax.example_libraries import stax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoIAFNormal

    model = numpyro_model(name)
    guide = AutoIAFNormal(
        model, num_flows=LAYERS, hidden_dims=[HIDDEN, HIDDEN], nonlinearity=stax.Elu
    )
    svi = SVI(model, guide, optax.adam(LEARNING_RATE), Trace_ELBO(num_particles=BATCH))
    key = jax.random.key(seed)
    state = svi.init(key)
    update = jax.jit(svi.update)
    jax.block_until_ready(update(state))  # compile
    t0 = time.perf_counter()
    for _ in range(steps):
        state, loss = update(state)
    jax.block_until_ready(loss)
    per_call = time.perf_counter() - t0
    params, compiled = svi.get_params(state), math.nan
    if compiled_loop:
        svi.run(key, steps, progress_bar=False)  # compile the loop (its length is static)
        t0 = time.perf_counter()
        params = svi.run(key, steps, progress_bar=False).params
        compiled = time.perf_counter() - t0
    posterior = guide.get_posterior(params)
    x, inter = posterior.sample_with_intermediates(jax.random.key(10_000 + seed), (kl_samples,))
    log_q = posterior.log_prob(x, inter)
    return x, log_q, per_call, compiled


def main(argv=None):
    args = parse_args(argv)
    steps = args.steps or (QUICK_STEPS if args.quick else STEPS)
    kl_samples = QUICK_KL_SAMPLES if args.quick else KL_SAMPLES
    os.makedirs(args.out, exist_ok=True)
    use_numpyro = not args.no_numpyro
    if use_numpyro:
        try:
            import numpyro  # noqa: F401
        except ImportError:
            print("numpyro is not installed (pip install -e '.[numpyro]'): jaxmaf only")
            use_numpyro = False
    print(
        f"JAX backend: {jax.default_backend()}; IAF {LAYERS} layers, MADE {HIDDEN}x{HIDDEN} ELU, "
        f"Adam {LEARNING_RATE}, {BATCH} samples per step, {steps} steps, KL from "
        f"{kl_samples:,} samples"
        + (" (quick: numpyro's compiled loop not timed)" if args.quick else "")
    )
    metrics = {"steps": steps, "batch": BATCH, "layers": LAYERS, "hidden": HIDDEN}
    samples = {}
    targets = {"banana": TARGETS["banana"]} if args.quick else TARGETS  # quick: a smoke run
    for name, (log_target, dim) in targets.items():
        flow, x, log_q, seconds, history = run_jaxmaf(log_target, dim, steps, args.seed, kl_samples)
        kl, se, k = kl_estimate(x, log_q, log_target)
        row = {
            "dim": dim,
            "jaxmaf_kl": kl,
            "jaxmaf_kl_se": se,
            "jaxmaf_pareto_k": k,
            "jaxmaf_seconds": seconds,
            "jaxmaf_steps_per_s": steps / seconds,
        }
        samples[name] = {"jaxmaf": np.asarray(x[:2000])}
        line = (
            f"{name:<7} D={dim:<3} jaxmaf KL {kl:.4f} +- {se:.4f}, Pareto k {k:.2f} "
            f"({steps / seconds:,.0f} steps/s)"
        )
        if not args.quick:  # sticking the landing: its gradient variance, and a fit with it
            var = {stl: gradient_variance(flow, log_target, stl) for stl in (False, True)}
            _, xs, log_qs, seconds_stl, _ = run_jaxmaf(
                log_target, dim, steps, args.seed, kl_samples, stl=True
            )
            kl_stl, se_stl, k_stl = kl_estimate(xs, log_qs, log_target)
            row |= {
                "gradient_variance_at_fit": var[False],
                "gradient_variance_at_fit_stl": var[True],
                "jaxmaf_stl_kl": kl_stl,
                "jaxmaf_stl_kl_se": se_stl,
                "jaxmaf_stl_pareto_k": k_stl,
                "jaxmaf_stl_steps_per_s": steps / seconds_stl,
            }
            line += (
                f" | sticking the landing: gradient variance at the fit {var[True]:.3g} vs "
                f"{var[False]:.3g}, KL {kl_stl:.4f} +- {se_stl:.4f}, Pareto k {k_stl:.2f} "
                f"({steps / seconds_stl:,.0f} steps/s)"
            )
        if use_numpyro:
            xn, log_qn, per_call, compiled = run_numpyro(
                name, steps, args.seed, kl_samples, compiled_loop=not args.quick
            )
            kln, sen, kn = kl_estimate(xn, log_qn, log_target)
            timed = math.isfinite(compiled)
            row |= {
                "numpyro_kl": kln,
                "numpyro_kl_se": sen,
                "numpyro_pareto_k": kn,
                "numpyro_steps_per_s_per_call": steps / per_call,
                "numpyro_steps_per_s_compiled_loop": steps / compiled if timed else None,
                "speedup_vs_per_call": per_call / seconds,
                "speedup_vs_compiled_loop": compiled / seconds if timed else None,
            }
            samples[name]["numpyro"] = np.asarray(xn[:2000])
            loop = f"{steps / compiled:,.0f} compiled" if timed else "loop not timed"
            line += (
                f" | numpyro AutoIAFNormal KL {kln:.4f} +- {sen:.4f}, Pareto k {kn:.2f} "
                f"({steps / per_call:,.0f} steps/s per call, {loop}): "
                f"jaxmaf {per_call / seconds:.1f}x per call"
                + (f", {compiled / seconds:.1f}x compiled loop" if timed else "")
            )
        print(line)
        metrics[name] = row
    with open(os.path.join(args.out, "metrics.json"), "w") as f:  # a diverged fit's NaN: null
        json.dump(_finite_or_none(metrics), f, indent=2)
    figures(samples, args.out)
    print(f"wrote {args.out}/metrics.json and figures")


def _finite_or_none(tree):
    if isinstance(tree, dict):
        return {k: _finite_or_none(v) for k, v in tree.items()}
    return None if isinstance(tree, float) and not math.isfinite(tree) else tree


def figures(samples, out):
    cols = 1 + max(len(v) for v in samples.values())
    fig, axes = plotting.subplots(len(samples), cols)
    lim = {"banana": ((-3.5, 3.5), (-3, 8)), "funnel": ((-9, 9), (-12, 12))}
    for row, (name, by_lib) in enumerate(samples.items()):
        log_target, dim = TARGETS[name]
        (x0, x1), (y0, y1) = lim[name]
        gx, gy = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
        pts = np.zeros(gx.shape + (dim,), np.float32)
        pts[..., 0], pts[..., 1] = gx, gy
        ax = axes[row, 0]
        dens = np.exp(np.asarray(log_target(jnp.asarray(pts))))
        image = ax.pcolormesh(gx, gy, dens, shading="auto")
        fig.colorbar(image, ax=ax, label="density")
        ax.set_title(f"{name}: target" + (" (x2..x9 = 0)" if dim > 2 else ""))
        for col, (lib, x) in enumerate(by_lib.items(), start=1):
            ax = axes[row, col]
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            ax.set_title(f"{name}: {lib} IAF samples")
        for ax in axes[row]:
            ax.set_xlabel("v" if dim > 2 else "x1")
            ax.set_ylabel("x1" if dim > 2 else "x2")
    plotting.save(fig, os.path.join(out, "targets_and_samples.png"))


if __name__ == "__main__":
    main()
