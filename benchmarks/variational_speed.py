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
import optax
from flax import nnx

import jaxmaf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import variational as example  # noqa: E402 - the example's targets, family and numpyro side


def optimizer(name: str) -> optax.GradientTransformation:
    adam = optax.adam(example.LEARNING_RATE)
    return optax.flatten(adam) if name == "flatten_adam" else adam


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 200, 1
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
        if use_numpyro:
            rates["numpyro_per_call"] = []
        for r in range(args.rounds):
            for v in variants:
                rate, flow = fit(v)
                rates[v].append(rate)
                if r == 0:
                    x, log_q = flow.sample_and_log_prob(jax.random.key(1), (20_000,))
                    kl[v] = example.kl_estimate(x, log_q, log_target)[0]
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
