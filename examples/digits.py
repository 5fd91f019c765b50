"""Density estimation on real 64-dimensional data: scikit-learn's 8x8 digits.

Pixels are dequantized with uniform noise and mapped to logit space (as the MAF
paper does for images); a MAF and an IAF are trained with early stopping. We
report test log-likelihood in nats (logit space and pixel space) and bits per
dimension, the time of density evaluation and sampling for both (MAF: one-pass
density, sequential sampling; IAF: the reverse), and a grid of sampled digits
next to real ones.

Run: python examples/digits.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/out/digits")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads


import jax
import numpy as np
import optax
from flax import nnx

import jaxmaf
from jaxmaf import datasets, plotting

EPOCHS, QUICK_EPOCHS, PATIENCE = 300, 2, 20
# IAF density is sequential (64 MADE passes per layer), so each IAF training step costs about
# 64x a MAF step: the IAF gets a small fixed budget; it is here for the timing comparison.
IAF_EPOCHS = 10
LAYERS, HIDDEN = 5, (256, 256)
BATCH_SIZE, LEARNING_RATE = 128, 1e-3
DIM = 64


def timed(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pixel_space_nll(flow, y):
    """NLL (nats) of the dequantized intensities v + u in [0, 17)^64."""
    lp_y = np.asarray(flow.log_prob(y), np.float64)
    lp_p = lp_y + datasets.digits_log_det(y)  # density of p = (v + u) / 17 in (0, 1)^64
    return float(-(lp_p - DIM * math.log(17.0)).mean())


def main(argv=None):
    args = parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    os.makedirs(args.out, exist_ok=True)
    print(f"JAX backend: {jax.default_backend()}")
    data = datasets.digits(seed=args.seed)
    repeats = 5
    layers, hidden = LAYERS, HIDDEN
    if args.quick:  # smoke test: a few minibatches, a small flow, one timing repeat
        data = dataclasses.replace(data, train=data.train[:256])
        repeats = 1
        layers, hidden = 2, (64, 64)
    results = {}
    for name, cls in (("maf", jaxmaf.MAF), ("iaf", jaxmaf.IAF)):
        flow = cls(DIM, layers, hidden, rngs=nnx.Rngs(args.seed))
        print(f"training {name.upper()} ({layers} layers, MADE {hidden}) ...")
        t0 = time.perf_counter()
        budget = epochs if name == "maf" else min(epochs, IAF_EPOCHS)
        history = jaxmaf.fit(
            flow,
            data.train,
            validation_data=data.validation,
            optimizer=optax.adam(LEARNING_RATE),
            batch_size=BATCH_SIZE,
            num_epochs=budget,
            patience=PATIENCE,
            seed=args.seed,
        )
        seconds = time.perf_counter() - t0
        graphdef, params = nnx.split(flow)
        log_prob = jax.jit(lambda p, x, g=graphdef: nnx.merge(g, p).log_prob(x))
        sample = jax.jit(lambda p, k, g=graphdef: nnx.merge(g, p).sample(k, (1000,)))
        nll = -float(log_prob(params, data.test).mean())
        pix = pixel_space_nll(flow, np.asarray(data.test))
        results[name] = dict(
            flow=flow,
            drawn=np.asarray(sample(params, jax.random.key(1))[:16]),  # the timed program's
            history=history,
            epochs=len(history.train_loss),
            train_seconds=seconds,
            test_nll_logit=nll,
            test_nll_pixels=pix,
            bits_per_dim=pix / (DIM * math.log(2)),
            log_prob_1000_ms=1e3 * timed(log_prob, params, data.test[:1000], repeats=repeats),
            sample_1000_ms=1e3 * timed(sample, params, jax.random.key(0), repeats=repeats),
        )

    rows = [("real (test)", datasets.digits_to_pixels(np.asarray(data.test[:16])))]
    for name in results:
        drawn = results[name]["drawn"]
        rows.append((f"{name.upper()} samples", datasets.digits_to_pixels(drawn)))
    fig, ax = plotting.subplots(2 * len(rows), 8, 1.0)
    for r, (tag, images) in enumerate(rows):
        for k in range(16):
            a = ax[2 * r + k // 8, k % 8]
            a.imshow(images[k].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
            a.set_xticks([])
            a.set_yticks([])
        ax[2 * r, 0].set_ylabel(tag, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("Digits: 16 test images, then 16 samples of each flow", fontsize=9)
    plotting.save(fig, os.path.join(args.out, "samples_vs_real.png"))
    fig, ax = plotting.subplots(1, 2, 4)
    for i, name in enumerate(results):
        plotting.plot_losses(ax[0, i], results[name]["history"], f"{name.upper()} on digits")
    plotting.save(fig, os.path.join(args.out, "loss_curves.png"))

    keys = (
        "epochs",
        "test_nll_logit",
        "test_nll_pixels",
        "bits_per_dim",
        "log_prob_1000_ms",
        "sample_1000_ms",
        "train_seconds",
    )
    metrics = {k: {n: r[k] for n, r in results.items()} for k in keys}
    metrics["test_nll"] = metrics["test_nll_pixels"]
    metrics["best_epoch"] = {n: r["history"].best_epoch for n, r in results.items()}
    metrics["backend"] = jax.default_backend()
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(
        f"\n{'':<5} {'test NLL logit':>15} {'pixels (nats)':>14} {'bits/dim':>9} "
        f"{'log_prob 1k (ms)':>17} {'sample 1k (ms)':>15} {'epochs':>7} {'best':>5}"
    )
    for n, r in results.items():
        print(
            f"{n.upper():<5} {r['test_nll_logit']:>15.2f} {r['test_nll_pixels']:>14.2f} "
            f"{r['bits_per_dim']:>9.3f} {r['log_prob_1000_ms']:>17.2f} "
            f"{r['sample_1000_ms']:>15.2f} {r['epochs']:>7d} {r['history'].best_epoch:>5d}"
        )
    return metrics


if __name__ == "__main__":
    main()
