"""A conditional MAF: two moons, density and samples conditioned on the class label.

The context is the label (0 or 1) as a 1-D input; the flow learns p(x | label).
Figures: the data by class, the conditional densities side by side, samples per
context, loss curves. Writes PNGs and metrics.json into --out.

Run: python examples/conditional_moons.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/out/conditional_moons")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads


import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxmaf
from jaxmaf import datasets, plotting

EPOCHS = 150
QUICK_EPOCHS = 3
LAYERS, HIDDEN = 4, (64, 64)
BATCH_SIZE, LEARNING_RATE = 128, 1e-3
LIM = 2.5


def main(argv=None):
    args = parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    os.makedirs(args.out, exist_ok=True)
    print(f"JAX backend: {jax.default_backend()}")
    data = datasets.moons(seed=args.seed)

    flow = jaxmaf.MAF(2, LAYERS, HIDDEN, context_dim=1, rngs=nnx.Rngs(args.seed))
    t0 = time.perf_counter()
    history = jaxmaf.fit(
        flow,
        data.train,
        context=data.train_context,
        validation_data=data.validation,
        validation_context=data.validation_context,
        optimizer=optax.adam(LEARNING_RATE),
        batch_size=BATCH_SIZE,
        num_epochs=epochs,
        seed=args.seed,
    )
    seconds = time.perf_counter() - t0
    test_nll = -float(flow.log_prob(data.test, context=data.test_context).mean())
    # The label matters: the NLL with the labels swapped is far worse.
    swapped_nll = -float(flow.log_prob(data.test, context=1 - data.test_context).mean())

    fig, ax = plotting.subplots(2, 3, 3.6)
    for label in (0, 1):
        pts = data.train[data.train_context[:, 0] == label]
        plotting.plot_samples(ax[label, 0], pts, f"data, label {label}", LIM, "black")
        ctx = jnp.array([float(label)])
        plotting.plot_density(
            ax[label, 1], lambda x, c=ctx: flow.log_prob(x, context=c), f"p(x | label={label})", LIM
        )
        samples = flow.sample(jax.random.key(label), (1500,), context=ctx)
        plotting.plot_samples(
            ax[label, 2],
            samples,
            f"samples | label={label}",
            LIM,
            "tab:orange" if label else "tab:blue",
        )
    plotting.save(fig, os.path.join(args.out, "conditional_densities.png"))
    fig, ax = plotting.subplots(1, 1, 4)
    plotting.plot_losses(ax[0, 0], history, "conditional MAF")
    plotting.save(fig, os.path.join(args.out, "loss_curves.png"))

    metrics = {
        "test_nll": {"conditional_maf": test_nll},
        "test_nll_labels_swapped": swapped_nll,
        "train_seconds": seconds,
        "epochs": epochs,
        "best_epoch": history.best_epoch,
        "backend": jax.default_backend(),
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(
        f"test NLL {test_nll:.4f} nats (labels swapped: {swapped_nll:.4f}); "
        f"{seconds:.1f} s; wrote {args.out}"
    )
    return metrics


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
