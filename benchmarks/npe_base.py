"""Posterior accuracy of a conditional MAF with each base distribution, on exact posteriors.

Neural posterior estimation as in ``examples/posterior_estimation.py`` (its
simulators, sbi's training rules, 10,000 simulations), with jaxmaf's MAF
built once per base in ``--bases`` (``gaussian``: the standard normal;
``mog``: a trainable mixture of 8 diagonal Gaussians; ``default``: what
``base=None`` resolves to). Each seed draws its simulations and observations
once and trains every base on them. The score is KL(p || q) =
E_p[log p(theta | x_o) - log q(theta | x_o)] over 10,000 exact posterior
draws, which is exact up to Monte Carlo error because both densities are
known, averaged over ``--observations`` observations; also the best
validation NLL. No C2ST: the KL is the sharper and cheaper score here.

Besides the example's four tasks, ``linear_gaussian_2d`` and
``linear_gaussian_3d`` are its linear Gaussian with 2 and 3 parameters
(unimodal posteriors in the dimensions where ``base=None`` picks the mixture),
and ``gaussian_mixture_3d`` its two-scale Gaussian mixture with 3.

Run: python benchmarks/npe_base.py [--tasks a,b] [--seeds N] [--bases gaussian,mog]
       [--observations N] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

TASKS = (
    "two_moons",
    "gaussian_mixture",
    "beta_binomial",
    "linear_gaussian",
    "linear_gaussian_2d",
    "linear_gaussian_3d",
    "gaussian_mixture_3d",
)
BASES = ("gaussian", "mog", "default")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(t for t in TASKS if t != "linear_gaussian"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--bases", default="gaussian,mog")
    p.add_argument("--observations", type=int, default=10)
    p.add_argument("--out", default="benchmarks/out/npe_base")
    p.add_argument("--quick", action="store_true", help="beta_binomial, 1 seed, 2 epochs")
    args = p.parse_args(argv)
    for name, allowed in (("tasks", TASKS), ("bases", BASES)):
        for v in getattr(args, name).split(","):
            if v not in allowed:
                p.error(f"--{name}: unknown {v!r}: expected some of {', '.join(allowed)}")
    if args.seeds < 1 or args.observations < 1:
        p.error("--seeds and --observations must be at least 1")
    return args


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import posterior_estimation as pe  # noqa: E402 - the example's simulators and training rules


def linear_gaussian(dim: int) -> type:
    """The example's linear Gaussian task with ``dim`` parameters (10-d observations)."""

    class Task(pe.LinearGaussian):
        name = f"linear_gaussian_{dim}d"

        def __init__(self):
            self.dim = dim
            self.a = np.random.default_rng(1234).normal(size=(10, dim)) / math.sqrt(dim)
            precision = np.eye(dim) + self.a.T @ self.a / self.noise**2
            self.cov = np.linalg.inv(precision)

    return Task


def task_class(name: str) -> type:
    """The simulator class of a task name."""
    if name in ("linear_gaussian_2d", "linear_gaussian_3d"):
        return linear_gaussian(int(name[-2]))
    if name == "gaussian_mixture_3d":

        class Task(pe.GaussianMixture):
            name, dim, context_dim = "gaussian_mixture_3d", 3, 3

        return Task
    return next(cls for cls in pe.TASKS if cls.name == name)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    tasks, seeds = args.tasks.split(","), range(args.seeds)
    sims, epochs, draws, n_obs = pe.SIMULATIONS, pe.MAX_EPOCHS, 10_000, args.observations
    if args.quick:
        tasks, seeds, sims, epochs, draws, n_obs = ["beta_binomial"], range(1), 1000, 2, 1000, 2
    bases = args.bases.split(",")
    result: dict = {"simulations": sims, "draws": draws, "observations": n_obs, "runs": {}}
    for name in tasks:
        for seed in seeds:
            task = task_class(name)()
            rng = np.random.default_rng(seed)
            theta = task.prior(rng, sims)
            x = task.simulate(rng, theta)
            observations = task.simulate(rng, task.prior(rng, n_obs))
            exact = [task.exact_draws(rng, x_o, draws) for x_o in observations]
            for base in bases:
                flow, seconds, history = pe.train_jaxmaf(
                    task,
                    theta.astype(np.float32),
                    x.astype(np.float32),
                    seed,
                    epochs,
                    base=None if base == "default" else base,
                )
                kls = []
                for x_o, ex in zip(observations, exact, strict=True):
                    log_q = flow.log_prob(
                        jnp.asarray(ex, jnp.float32), jnp.asarray(x_o, jnp.float32)
                    )
                    kls.append(float(np.mean(task.exact_log_prob(x_o, ex) - np.asarray(log_q))))
                run = dict(
                    kl=kls,
                    mean_kl=statistics.fmean(kls),
                    best_val_nll=history.best_loss,
                    epochs=len(history.train_loss),
                    seconds=seconds,
                    base=flow.config.base,
                )
                result["runs"][f"{name}/{seed}/{base}"] = run
                print(
                    f"{name:<20} seed {seed} {base:<8} KL(p || q) {run['mean_kl']:.4f} "
                    f"(mean of {n_obs}), validation NLL {history.best_loss:.4f}, "
                    f"{run['epochs']} epochs, {seconds:.1f} s",
                    flush=True,
                )
    summary = {}
    for name in tasks:
        row = {}
        for base in bases:
            row[base] = [result["runs"][f"{name}/{s}/{base}"]["mean_kl"] for s in seeds]
        if "gaussian" in bases and len(bases) > 1:
            for base in bases:
                if base == "gaussian":
                    continue
                diffs = [a - b for a, b in zip(row[base], row["gaussian"], strict=True)]
                spread = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0
                row[f"{base}_minus_gaussian"] = dict(mean=statistics.fmean(diffs), se=spread)
                print(
                    f"{name:<20} {base} - gaussian, KL: {statistics.fmean(diffs):+.4f} "
                    f"+- {spread:.4f} (better on {sum(d < 0 for d in diffs)} of {len(diffs)} seeds)"
                )
        summary[name] = row
    result["summary"] = summary
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "npe_base.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
