"""Exact sequential sampling against fixed-point (Jacobi) sampling on a trained 64-d MAF.

A MAF (5 layers, MADE 2x256) is trained on the digits data (logit space, as
examples/digits.py); then, in the same run, sampling N points exactly (D = 64
MADE passes per layer, what every peer does) is timed against Jacobi sampling
at several tolerances: conditioner passes used per layer, the largest
|difference| from the exact samples, and the speedup (medians after warm-up,
the methods taking turns in every round of repeats).

Run: python benchmarks/jacobi_sampling.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/jacobi_sampling")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 epochs, 100 samples (CI smoke)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads


import jax
import numpy as np
import optax
from _backend import matmul_precision_note
from flax import nnx

import jaxmaf
from jaxmaf import datasets


def time_interleaved(fns, args, repeats):
    """Median seconds of each jitted function, the functions taking turns every round.

    Interleaving spreads slow drifts of the machine over every method instead
    of charging them to whichever ran then.
    """
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.epochs, args.num_samples, args.repeats = 2, 100, 2
    os.makedirs(args.out, exist_ok=True)
    data = datasets.digits()
    flow = jaxmaf.MAF(64, 5, (256, 256), rngs=nnx.Rngs(0))
    h = jaxmaf.fit(
        flow,
        data.train,
        validation_data=data.validation,
        optimizer=optax.adam(1e-3),
        batch_size=128,
        num_epochs=args.epochs,
        patience=20,
        progress=False,
    )
    test_nll = -float(flow.log_prob(data.test).mean())
    print(
        f"backend {jax.default_backend()}; trained MAF 5x(256, 256) on digits: "
        f"{len(h.train_loss)} epochs, best {h.best_epoch}, test NLL {test_nll:.2f} nats "
        f"(logit space)"
    )
    graphdef, params = nnx.split(flow)
    key = jax.random.key(1)
    n = args.num_samples

    def sampler(method, tol):
        def fn(p, k):
            return nnx.merge(graphdef, p).sample_with_iterations(k, (n,), method=method, tol=tol)

        return jax.jit(fn)

    tols = (0.0, 1e-6, 1e-4, 1e-3)
    fns = {"exact": sampler("exact", 0.0)} | {tol: sampler("jacobi", tol) for tol in tols}
    medians = time_interleaved(fns, (params, key), args.repeats)
    exact, _ = fns["exact"](params, key)
    t_exact = medians["exact"]
    scale = float(np.max(np.abs(np.asarray(exact))))  # differences are judged against this
    rows = [
        dict(
            method="exact",
            tol=0.0,
            median_ms=1e3 * t_exact,
            iterations=[64] * 5,
            max_abs_diff=0.0,
            max_rel_diff=0.0,
            speedup=1.0,
        )
    ]
    print(
        f"\n{'method':<8} {'tol':>8} {'median (ms)':>12} {'speedup':>8} {'max |diff|':>11}  "
        f"passes per layer   (max |exact sample| {scale:.1e})"
    )
    print(f"{'exact':<8} {'-':>8} {1e3 * t_exact:>12.1f} {1.0:>7.2f}x {0.0:>11.1e}  [64] * 5")
    for tol in tols:
        x, iters = fns[tol](params, key)
        t = medians[tol]
        diff = float(np.max(np.abs(np.asarray(x) - np.asarray(exact))))
        rows.append(
            dict(
                method="jacobi",
                tol=tol,
                median_ms=1e3 * t,
                iterations=np.asarray(iters).tolist(),
                max_abs_diff=diff,
                max_rel_diff=diff / scale,
                speedup=t_exact / t,
            )
        )
        print(
            f"{'jacobi':<8} {tol:>8.0e} {1e3 * t:>12.1f} {t_exact / t:>7.2f}x {diff:>11.1e}  "
            f"{np.asarray(iters).tolist()}"
        )
    print(matmul_precision_note())
    result = dict(
        rows=rows,
        num_samples=n,
        epochs=len(h.train_loss),
        test_nll=test_nll,
        backend=jax.default_backend(),
        jax=jax.__version__,
    )
    with open(os.path.join(args.out, "jacobi_sampling.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}/jacobi_sampling.json")


if __name__ == "__main__":
    main()
