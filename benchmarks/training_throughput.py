"""Epoch time of jaxmaf.fit against flowjax's fit_to_data and a per-step jax.jit loop.

Same architecture for all (MAF, 4 layers, MADE 64x64, affine, batch 128) on the
two-circles data (1200 train / 200 validation, validation NLL every epoch),
measured in one process after a warm-up that compiles every program. Also: an
ensemble of M flows in one program (jaxmaf.fit_ensemble) against M sequential
fits. Python's garbage is collected before each timed run: a full collection
takes 0.15-0.25 s here, and one landing inside a single timed run had made an
ensemble read 0.50 s instead of 0.32 s.

Run: python benchmarks/training_throughput.py [--out DIR] [--epochs N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/out/training_throughput")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="3 epochs (CI smoke)")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads


import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxmaf
from jaxmaf import datasets

LAYERS, HIDDEN, BATCH, LR = 4, (64, 64), 128, 1e-3


def make_flow(rngs):
    return jaxmaf.MAF(2, LAYERS, HIDDEN, rngs=rngs)


def time_jaxmaf(data, epochs):
    opt = optax.adam(LR)
    jaxmaf.fit(
        make_flow(nnx.Rngs(0)),
        data.train,
        validation_data=data.validation,
        optimizer=opt,
        batch_size=BATCH,
        num_epochs=2,
        progress=False,
    )  # compile
    gc.collect()
    h = jaxmaf.fit(
        make_flow(nnx.Rngs(0)),
        data.train,
        validation_data=data.validation,
        optimizer=opt,
        batch_size=BATCH,
        num_epochs=epochs,
        progress=False,
    )
    return statistics.median(h.epoch_time), h.wall_time / epochs


def time_step_loop(data, epochs):
    """The common hand-written loop: jitted step, host-side shuffling and batching."""
    flow = make_flow(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    opt = optax.adam(LR)
    opt_state = opt.init(params)

    def loss(p, x):
        return -nnx.merge(graphdef, p, rest).log_prob(x).mean()

    @jax.jit
    def step(p, s, x):
        val, g = jax.value_and_grad(loss)(p, x)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, val

    val_loss = jax.jit(loss)
    rng = np.random.default_rng(0)
    x_train, x_val = jnp.asarray(data.train), jnp.asarray(data.validation)
    n = len(x_train)

    def epoch(p, s):
        perm = rng.permutation(n)
        for i in range(0, n, BATCH):
            p, s, _ = step(p, s, x_train[perm[i : i + BATCH]])
        float(val_loss(p, x_val))
        return p, s

    params, opt_state = epoch(params, opt_state)  # compile (both batch shapes)
    gc.collect()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        params, opt_state = epoch(params, opt_state)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), sum(times) / epochs


def time_flowjax(data, epochs):
    try:
        from flowjax.distributions import Normal
        from flowjax.flows import masked_autoregressive_flow
        from flowjax.train import fit_to_data
    except ImportError:
        print("flowjax not installed (pip install -e '.[bench]'): skipped")
        return None
    x = np.concatenate([data.train, data.validation])
    val_prop = len(data.validation) / len(x)

    def run(n_epochs):
        flow = masked_autoregressive_flow(
            jax.random.key(0),
            base_dist=Normal(jnp.zeros(2)),
            flow_layers=LAYERS,
            nn_width=HIDDEN[0],
            nn_depth=len(HIDDEN),
        )
        gc.collect()
        t0 = time.perf_counter()
        fit_to_data(
            jax.random.key(1),
            flow,
            (x,),
            max_epochs=n_epochs,
            batch_size=BATCH,
            learning_rate=LR,
            max_patience=10**9,
            val_prop=val_prop,
            show_progress=False,
        )
        return time.perf_counter() - t0

    run(1)  # compile
    total = run(epochs)
    return total / epochs, total / epochs


def time_ensemble(data, members, epochs, make_flow=make_flow, batch=BATCH):
    seeds = list(range(members))
    kw = dict(validation_data=data.validation, batch_size=batch, progress=False)
    jaxmaf.fit_ensemble(make_flow, data.train, seeds=seeds, num_epochs=2, **kw)  # compile
    gc.collect()
    t0 = time.perf_counter()
    jaxmaf.fit_ensemble(make_flow, data.train, seeds=seeds, num_epochs=epochs, **kw)
    ensemble = time.perf_counter() - t0
    opt = optax.adam(LR)
    jaxmaf.fit(make_flow(nnx.Rngs(0)), data.train, optimizer=opt, num_epochs=2, **kw)
    gc.collect()
    t0 = time.perf_counter()
    for s in seeds:
        jaxmaf.fit(
            make_flow(nnx.Rngs(s)), data.train, optimizer=opt, num_epochs=epochs, seed=s, **kw
        )
    sequential = time.perf_counter() - t0
    return ensemble, sequential


def main(argv=None):
    args = parse_args(argv)
    epochs = 3 if args.quick else args.epochs
    os.makedirs(args.out, exist_ok=True)
    data = datasets.circles()
    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); MAF {LAYERS} "
        f"layers, MADE {HIDDEN}, batch {BATCH}, {len(data.train)} train / "
        f"{len(data.validation)} validation points, {epochs} epochs"
    )
    rows = {}
    rows["jaxmaf.fit"] = time_jaxmaf(data, epochs)
    rows["jit step loop"] = time_step_loop(data, epochs)
    fj = time_flowjax(data, epochs)
    if fj is not None:
        rows["flowjax fit_to_data"] = fj
    base = rows["jaxmaf.fit"][0]
    print(
        f"\n{'method':<22} {'median epoch (ms)':>18} {'mean epoch (ms)':>16} {'vs jaxmaf.fit':>14}"
    )
    for name, (med, mean) in rows.items():
        # A mean far above the median: some epochs ran much slower (a busy machine).
        note = "  WARNING: mean over 1.5x the median (slow outliers)" if mean > 1.5 * med else ""
        print(f"{name:<22} {1e3 * med:>18.2f} {1e3 * mean:>16.2f} {med / base:>13.1f}x{note}")
    ens = {}
    small = lambda rngs: jaxmaf.MAF(2, LAYERS, (16, 16), rngs=rngs)  # noqa: E731
    for label, make, batch in (
        ("MADE 64x64, batch 128", make_flow, BATCH),
        ("MADE 16x16, batch 64", small, 64),
    ):
        for m in (4, 8):
            e, s = time_ensemble(data, m, epochs, make, batch)
            ens[f"{label}, {m} members"] = dict(ensemble_s=e, sequential_s=s, ratio=e / s)
            print(
                f"ensemble of {m} ({label}): one program {e:.2f} s, {m} sequential fits "
                f"{s:.2f} s, ratio {e / s:.2f}"
            )
    result = dict(
        epoch_ms={k: dict(median=1e3 * v[0], mean=1e3 * v[1]) for k, v in rows.items()},
        speedup_vs_jaxmaf={k: v[0] / base for k, v in rows.items()},
        ensemble=ens,
        epochs=epochs,
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        versions=dict(
            jax=jax.__version__, jaxmaf=jaxmaf.__version__, python=platform.python_version()
        ),
    )
    with open(os.path.join(args.out, "training_throughput.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}/training_throughput.json")
    return result


if __name__ == "__main__":
    main()
