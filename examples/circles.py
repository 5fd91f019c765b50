"""MAF on scikit-learn's concentric circles, the experiment of the tutorial jaxmaf started from.

1. the data; 2. the untrained single-layer MAF (MADE 2x32) with ReLU and with
sigmoid; 3. a trained single-layer MAF over the tutorial's standard normal base
(fails to capture the ring); 4. a trained 4-layer MAF (MADE 2x128, ReLU, reverse
permutations between layers, jaxmaf's default mixture base): density, samples,
and base samples pushed through the chain layer by layer; 5. loss curves. Writes
PNG figures and metrics.json into --out.

Run: python examples/circles.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time

# Hyperparameters (the tutorial's, trained for 150 epochs).
EPOCHS = 150
QUICK_EPOCHS = 3
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
SMALL_HIDDEN = (32, 32)
BIG_HIDDEN = (128, 128)
BIG_LAYERS = 4
NUM_SAMPLES = 2000
LIM = 2.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/out/circles", help="output directory")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs (CI smoke)")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {EPOCHS}")
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


def train(flow, data, epochs, seed):
    t0 = time.perf_counter()
    history = jaxmaf.fit(
        flow,
        data.train,
        validation_data=data.validation,
        optimizer=optax.adam(LEARNING_RATE),
        batch_size=BATCH_SIZE,
        num_epochs=epochs,
        seed=seed,
        progress=True,
    )
    seconds = time.perf_counter() - t0
    test_nll = -float(flow.log_prob(data.test).mean())
    return history, seconds, test_nll


def main(argv=None):
    args = parse_args(argv)
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)
    os.makedirs(args.out, exist_ok=True)
    device = jax.devices()[0]
    print(
        f"JAX backend: {jax.default_backend()} ({device.device_kind}), {jax.device_count()} "
        f"device(s); jaxmaf {jaxmaf.__version__}"
    )

    data = datasets.circles(seed=args.seed)
    key = jax.random.key(args.seed)
    figures = []

    def out(name):
        path = os.path.join(args.out, name)
        figures.append(path)
        return path

    # 1. data
    fig, ax = plotting.subplots(1, 1, 4)
    plotting.plot_samples(ax[0, 0], data.train, "circles (train, standardized)", LIM, "black")
    plotting.save(fig, out("data.png"))

    # 2. untrained single-layer MAF, ReLU vs sigmoid. The trained 2-d flows below draw their
    # output layer at 0.3 of the hidden layers' scale (jaxmaf's default in 2-d); to show what
    # an untrained MADE computes, this one draws it like its hidden ones (output_init_scale=1,
    # flowjax's initialisation).
    fig, ax = plotting.subplots(1, 2, 4)
    for i, act in enumerate(("relu", "sigmoid")):
        flow = jaxmaf.MAF(
            2,
            1,
            SMALL_HIDDEN,
            activation=act,
            base="gaussian",  # the MADE's map alone (the trained flows' base is a mixture)
            output_init_scale=1.0,
            rngs=nnx.Rngs(args.seed),
        )
        plotting.plot_density(ax[0, i], flow.log_prob, f"untrained 1-layer MAF, {act}", LIM)
    fig.suptitle(
        "Untrained, with a random output layer (output_init_scale=1; "
        "jaxmaf's 2-d default draws it at 0.3)",
        fontsize=9,
    )
    plotting.save(fig, out("untrained_density.png"))

    # 3. trained single-layer MAF; 4. trained 4-layer MAF
    results = {}
    models = {
        # the tutorial's standard normal base: what one affine layer alone can do
        "maf_1_layer": jaxmaf.MAF(2, 1, SMALL_HIDDEN, base="gaussian", rngs=nnx.Rngs(args.seed)),
        "maf_4_layers": jaxmaf.MAF(
            2, BIG_LAYERS, BIG_HIDDEN, permutation="reverse", rngs=nnx.Rngs(args.seed)
        ),
    }
    for name, flow in models.items():
        print(f"training {name} for {epochs} epochs ...")
        history, seconds, test_nll = train(flow, data, epochs, args.seed)
        results[name] = dict(flow=flow, history=history, seconds=seconds, test_nll=test_nll)

    fig, ax = plotting.subplots(2, 2, 4)
    for row, (name, r) in enumerate(results.items()):
        flow = r["flow"]
        plotting.plot_density(
            ax[row, 0], flow.log_prob, f"{name}: density (test NLL {r['test_nll']:.3f})", LIM
        )
        samples = flow.sample(jax.random.fold_in(key, row), (NUM_SAMPLES,))
        plotting.plot_samples(ax[row, 1], samples, f"{name}: {NUM_SAMPLES} samples", LIM)
    plotting.save(fig, out("trained_density_and_samples.png"))

    # base samples pushed through the 4-layer chain, layer by layer
    big = results["maf_4_layers"]["flow"]
    u = big.base.sample(jax.random.fold_in(key, 7), (NUM_SAMPLES,))  # the base's own draws
    stages = plotting.pushforward_stages(big.bijector(), u)
    cols = 4
    rows = -(-len(stages) // cols)
    fig, ax = plotting.subplots(rows, cols, 3.0)
    colors = np.arctan2(np.asarray(u)[:, 1], np.asarray(u)[:, 0])  # the base sample's angle
    for i, a in enumerate(ax.ravel()):
        if i >= len(stages):
            a.set_axis_off()
            continue
        title, pts = stages[i]
        a.scatter(pts[:, 0], pts[:, 1], s=1, c=colors, cmap="hsv")
        a.set(title=title, xlim=(-3, 3), ylim=(-3, 3), aspect="equal")
        a.set(xlabel="$x_1$", ylabel="$x_2$")
    fig.suptitle("Base samples pushed through the 4-layer MAF (colour: angle in the base)")
    plotting.save(fig, out("pushforward_layers.png"))

    fig, ax = plotting.subplots(1, 2, 4)
    for i, (name, r) in enumerate(results.items()):
        plotting.plot_losses(ax[0, i], r["history"], name)
    plotting.save(fig, out("loss_curves.png"))

    metrics = {
        "test_nll": {name: r["test_nll"] for name, r in results.items()},
        "best_val_nll": {name: r["history"].best_loss for name, r in results.items()},
        "best_epoch": {name: r["history"].best_epoch for name, r in results.items()},
        "train_seconds": {name: r["seconds"] for name, r in results.items()},
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "backend": jax.default_backend(),
        "device": device.device_kind,
        "versions": {"jax": jax.__version__, "jaxmaf": jaxmaf.__version__},
        "figures": [os.path.basename(f) for f in figures],
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)

    print(f"\n{'model':<14} {'test NLL (nats)':>16} {'best epoch':>11} {'train time (s)':>15}")
    for name, r in results.items():
        print(
            f"{name:<14} {r['test_nll']:>16.4f} {r['history'].best_epoch:>11d} "
            f"{r['seconds']:>15.2f}"
        )
    print(f"\nwrote {len(figures)} figures and metrics.json to {args.out}")
    return metrics


if __name__ == "__main__":
    main()
