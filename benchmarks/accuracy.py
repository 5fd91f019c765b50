"""Accuracy at equal budget: jaxmaf's defaults against flowjax's MAF on a public suite.

Both libraries get the same train/validation/test split of each data set, the
same architecture (MAF layers, MADE depth and width, ReLU), the same optimizer
(Adam, one learning rate), batch size, epoch cap and patience, and both keep
the parameters of their best validation epoch. Each data set is fitted with
several seeds (initialisation and shuffling; the split is fixed), and the
script reports the test NLL (nats per point) per library as mean and standard
deviation, the paired per-seed difference (jaxmaf - flowjax; negative: jaxmaf
better) with its standard error, and the fit time.

flowjax is trained by the loop of its ``fit_to_data`` written out here with
flowjax's own ``MaximumLikelihoodLoss`` and jitted ``step``: ``fit_to_data``
draws its validation set from the data it is given, and the comparison needs
the SAME validation set for both. The loop keeps ``fit_to_data``'s
per-step calls and its batching (the last partial batch of an epoch is
dropped) and validates on the whole validation set every epoch, as
``jaxmaf.fit`` does. flowjax stops once ``patience`` epochs pass without a
new best validation loss; jaxmaf with its own rule, which counts only epochs
evidently worse than the best (``fit(patience_se=1.0)``, measured against the
classic rule by ``--variants patience_classic``). Both share the epoch cap.

``--variants`` fits jaxmaf variants that change one factor from the defaults
(the ablation behind the defaults); ``perm_draw_M`` swaps the default
permutations for one fixed draw, the same for every seed (``mask_seed=M``), and ``A+B`` makes the
changes of A and B together. ``--no-flowjax`` skips flowjax. ``flowjax_twin``
is flowjax's MAF inside jaxmaf (``jaxmaf_twin``: its initial weights and
permutations copied into a ``jaxmaf.MAF`` that computes the same density),
trained by ``jaxmaf.fit`` with flowjax's rules: what two identical learners
score against each other, the comparison's own noise.

``--shuffle-columns`` reorders each data set's columns per seed, the same
order for both libraries. Which orders suit a data set moves a tabular set's
NLL by more than the seeds do. Both libraries draw their permutations per
seed above 2-d (flowjax independently, jaxmaf's ``permutation="auto"`` in
balanced orders that give every input both ends of the order in turn; until
2026-11-27 it was one fixed draw per dimension); with the columns reordered,
the mean over seeds is also a mean over column arrangements (and, in 2-d, over
which axis comes first).

Data sets (``--datasets suite``, the default): the circles of the examples
(the circles example's split), pinwheel, two spirals, four rings, the swiss
roll (2-d, 2000/500/500), scikit-learn's diabetes (10-d) and breast cancer
(30-d) features (dequantized, standardized, 70/15/15), and the 64-d digits
(dequantized, logit space). ``--datasets heldout`` runs sets that were never
used to choose a default at first: moons, checkerboard, eight Gaussians, wine,
iris (the 2-d start was later chosen on all eight 2-d sets). ``--datasets
fresh`` runs sets added after every default was chosen: banana and a 5 x 5
grid of Gaussians (2-d), the S curve and a helix (3-d, 2000/500/500).
``--datasets lowdim`` runs six sets of 3 to 8 dimensions written on 2026-11-27
to test the 3-4-d defaults (``benchmarks/_lowdim_sets.py``).

``--jobs N`` runs the (data set, seed) jobs in N processes with one XLA thread
each: on a many-core machine a 10-seed run of every set takes minutes. The
NLLs do not depend on it; the fit times then share the machine.

Run: python benchmarks/accuracy.py [--quick] [--out DIR] [--seeds N] [--jobs N]
       [--datasets suite|heldout|fresh|all|NAME,...] [--variants NAME,...] [--no-flowjax]
       [--shuffle-columns]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/out", help="writes DIR/accuracy.json")
    p.add_argument(
        "--quick", action="store_true", help="CI smoke run: 2 seeds, 3 epochs, smaller data"
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--datasets",
        default="suite",
        help="suite, heldout, fresh, lowdim, all, or a comma-separated list of names",
    )
    p.add_argument(
        "--variants",
        default="default",
        help="comma-separated jaxmaf variants, each one change from the defaults (the names "
        "are the keys of VARIANTS in this file, e.g. ema_off,patience_none; perm_draw_M for "
        "the permutations of mask_seed=M; init_S for output_init_scale=S; A+B for two "
        "changes together)",
    )
    p.add_argument("--no-flowjax", action="store_true")
    p.add_argument(
        "--shuffle-columns",
        action="store_true",
        help="reorder each data set's columns per seed (the same order for both libraries), "
        "so that the mean is over column arrangements as well as seeds",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="fit (data set, seed) jobs in this many processes at once, each with one XLA "
        "thread (the NLLs are the same as with --jobs 1; the fit times then share the machine)",
    )
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--depth", type=int, default=2, help="MADE hidden layers")
    p.add_argument("--width", type=int, default=256, help="MADE width above 2 dimensions")
    p.add_argument("--width-2d", type=int, default=64, help="MADE width for 2-d data")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--patience", type=int, default=20)
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"argument --jobs: expected a number of processes >= 1, got {args.jobs}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads


import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxmaf
from jaxmaf import datasets

# The benchmark's own data module sits beside it (also when loaded from its path, as the tests do).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _lowdim_sets  # noqa: E402

SUITE = (
    "circles",
    "pinwheel",
    "two_spirals",
    "rings",
    "swiss_roll",
    "diabetes",
    "breast_cancer",
    "digits",
)
HELDOUT = ("moons", "checkerboard", "eight_gaussians", "wine", "iris")
# Added after every default was chosen (2026-11-26), to check that they generalise.
FRESH = ("banana", "grid", "s_curve", "helix")
# Added 2026-11-27, 3 to 8 dimensions, to test a start chosen on the S curve, helix and iris.
LOWDIM = tuple(_lowdim_sets.LOWDIM)


def load(name: str, quick: bool) -> datasets.Split:
    """The fixed split of a data set (smaller in --quick mode)."""
    if name == "circles":
        return datasets.circles()
    if name == "digits":
        return datasets.digits((400, 100, 100) if quick else (1297, 250, 250))
    if name in datasets.TOY_2D:
        return datasets.toy_2d(name, 600, (400, 100, 100)) if quick else datasets.toy_2d(name)
    if name in LOWDIM:
        return _lowdim_sets.load_lowdim(name, quick)
    if name in datasets.TOY_3D:
        return datasets.toy_3d(name, 600, (400, 100, 100)) if quick else datasets.toy_3d(name)
    return datasets.tabular(name)


def linear_warmup(lr: float, steps: int) -> optax.Schedule:
    return optax.linear_schedule(lr / 100, lr, steps)


def zero_bias(flow, seed):
    """Zero hidden biases (jaxmaf's initialisation before the accuracy work)."""
    for made in flow.conditioners:
        for layer in made.hidden:
            layer.bias[...] = jnp.zeros_like(layer.bias[...])


def zero_base_means(flow, seed):
    """A mixture base's means at zero: with one component, flowjax's trainable Normal base."""
    flow.base.means[...] = jnp.zeros_like(flow.base.means[...])


# Ablation: each variant changes ONE factor of jaxmaf's defaults (flow kwargs, or a function
# of the dimension returning them; fit kwargs, or the optimizer); "default" is the library as
# shipped.
VARIANTS: dict[str, tuple] = {
    "default": ("jaxmaf's defaults", {}, {}),
    "init_lecun": (
        "the former default: LeCun-normal hidden kernels (zero output layer)",
        {"init": "lecun_normal", "output_init_scale": 0.0},
        {},
    ),
    "init_zero": (
        "output layer exactly zero (the default above 2-d)",
        {"output_init_scale": 0.0},
        {},
    ),
    "init_0.3": (
        "output layer 0.3 x its uniform draw (the default in 2-d)",
        {"output_init_scale": 0.3},
        {},
    ),
    "init_flowjax": (
        "flowjax's: the output layer drawn like the hidden ones",
        {"output_init_scale": 1.0},
        {},
    ),
    "init_sqrt2_over_d": (
        "output layer sqrt(2 / D) x its uniform draw (flowjax's scale in 2-d, less above)",
        lambda dim: {"output_init_scale": min(1.0, math.sqrt(2.0 / dim))},
        {},
    ),
    "init_0.3_sqrt2_over_d": (
        "output layer 0.3 sqrt(2 / D) x its uniform draw",
        lambda dim: {"output_init_scale": 0.3 * min(1.0, math.sqrt(2.0 / dim))},
        {},
    ),
    "bias_zero": ("hidden biases zero", {}, {}, zero_bias),
    "scale_exp": ("scale exp(a)", {"transformer": jaxmaf.Affine(scale="exp")}, {}),
    "scale_softclamp": (
        "scale exp(5 tanh(a / 5))",
        {"transformer": jaxmaf.Affine(scale="exp_softclamp")},
        {},
    ),
    "softplus_min_1e-2": (
        "softplus scale, min 1e-2",
        {"transformer": jaxmaf.Affine(min_scale=1e-2)},
        {},
    ),
    # flowjax itself in jaxmaf: its initial weights and permutations copied (jaxmaf_twin),
    # trained by jaxmaf.fit with flowjax's rules (no parameter average, classic patience).
    # Only the shuffling differs from flowjax's run: the paired differences are the noise
    # of the comparison, what two identical learners score against each other.
    "flowjax_twin": (
        "flowjax's MAF and rules in jaxmaf.fit (its weights copied)",
        {},
        {"ema_epochs": None, "patience_se": None},
    ),
    "base_diag": (
        "a trainable diagonal Gaussian base (flowjax's; one mixture component at 0)",
        {"base": "mog", "num_components": 1},
        {},
        zero_base_means,
    ),
    "base_mog": (
        "a trainable mixture of 8 diagonal Gaussians as the base (the MAF paper's MAF MoG)",
        {"base": "mog", "num_components": 8},
        {},
    ),
    "base_mog_4": (
        "a trainable mixture of 4 diagonal Gaussians as the base",
        {"base": "mog", "num_components": 4},
        {},
    ),
    "batch_norm": (
        "batch norm between layers (the MAF paper's)",
        {"batch_norm": True},
        {},
    ),
    "residual": ("residual MADEs (masked residual blocks)", {"residual": True}, {}),
    "degrees_random": ("hidden degrees random", {"hidden_degrees": "random"}, {}),
    "perm_reverse": ("reverse permutations", {"permutation": "reverse"}, {}),
    "perm_random": (
        "independent random permutations from rngs (flowjax's; the default draws balanced ones)",
        {"permutation": "random"},
        {},
    ),
    "ema_off": ("no parameter average (last iterate only)", {}, {"ema_epochs": None}),
    "ema_3": ("parameter average over 3 epochs", {}, {"ema_epochs": 3.0}),
    "ema_16": ("parameter average over 16 epochs", {}, {"ema_epochs": 16.0}),
    "patience_none": ("no early stopping (best epoch of all)", {}, {"patience": None}),
    "patience_classic": (
        "every epoch without a new best counts towards patience (the former rule)",
        {},
        {"patience_se": None},
    ),
    "patience_se_2": (
        "patience counts epochs worse than the best by two standard errors",
        {},
        {"patience_se": 2.0},
    ),
    "patience_10": ("patience 10", {}, {"patience": 10}),
    "clip_5": (
        "Adam after clipping the gradient norm at 5",
        {},
        {
            "optimizer": lambda lr, steps: optax.chain(
                optax.clip_by_global_norm(5.0), optax.adam(lr)
            )
        },
    ),
    "warmup": (
        "learning rate warm-up over the first 2 epochs",
        {},
        {"optimizer": lambda lr, steps: optax.adam(linear_warmup(lr, 2 * steps))},
    ),
}


def variant_spec(name: str) -> tuple:
    """``(description, flow kwargs or a function of the dimension, fit kwargs, *hooks)``.

    Besides the keys of VARIANTS: ``perm_draw_M``, the permutations of
    ``permutation="random", mask_seed=M`` (one fixed draw, the same for every
    seed, as ``"auto"``'s is), ``init_S`` (S a number), the output layer's
    start ``output_init_scale=S``, and ``A+B``, the changes of A and B together.

    Raises:
      KeyError: an unknown name.
    """
    if "+" in name:
        parts = [variant_spec(part) for part in name.split("+")]
        flow_parts = [part[1] for part in parts]

        def flow_kwargs(dim):
            merged = {}
            for kw in flow_parts:
                merged |= kw(dim) if callable(kw) else kw
            return merged

        fit_kwargs = {}
        for part in parts:
            fit_kwargs |= part[2]
        hooks = [hook for part in parts for hook in part[3:]]
        return (" and ".join(part[0] for part in parts), flow_kwargs, fit_kwargs, *hooks)
    if name.startswith("perm_draw_") and name[len("perm_draw_") :].isdigit():
        m = int(name[len("perm_draw_") :])
        return (
            f"permutations of one other fixed draw (mask_seed={m})",
            {"permutation": "random", "mask_seed": m},
            {},
        )
    scale = name[len("init_") :] if name.startswith("init_") else ""
    if name not in VARIANTS and scale.replace(".", "", 1).isdigit():
        return (
            f"output layer {scale} x its uniform draw",
            {"output_init_scale": float(scale)},
            {},
        )
    return VARIANTS[name]


def fit_jaxmaf(data, dim, args, seed, variant):
    _, flow_kwargs, fit_kwargs, *hook = variant_spec(variant)
    if callable(flow_kwargs):  # a function of the dimension
        flow_kwargs = flow_kwargs(dim)
    fit_kwargs = dict(fit_kwargs)
    steps = -(-len(data.train) // args.batch_size)
    make_opt = fit_kwargs.pop("optimizer", lambda lr, steps: optax.adam(lr))
    patience = fit_kwargs.pop("patience", args.patience)
    t0 = time.perf_counter()
    if "flowjax_twin" in variant.split("+"):
        if flow_kwargs:
            raise ValueError(f"flowjax_twin takes no flow changes, got {flow_kwargs}")
        flow = jaxmaf_twin(flowjax_maf(dim, args, flowjax_keys(seed)[1]))
    else:
        flow = jaxmaf.MAF(
            dim,
            args.layers,
            (hidden_width(dim, args),) * args.depth,
            activation="relu",
            rngs=nnx.Rngs(seed),
            **flow_kwargs,
        )
    for h in hook:
        h(flow, seed)
    history = jaxmaf.fit(
        flow,
        data.train,
        validation_data=data.validation,
        optimizer=make_opt(args.lr, steps),
        batch_size=args.batch_size,
        num_epochs=args.epochs,
        patience=patience,
        seed=seed,
        progress=False,
        **fit_kwargs,
    )
    elapsed = time.perf_counter() - t0
    nll = -float(jnp.mean(nnx.jit(lambda f, x: f.log_prob(x))(flow, data.test)))
    return nll, elapsed, history.best_epoch


def flowjax_maf(dim, args, init_key):
    """The MAF of flowjax at the benchmark's settings (layers, width, depth, ReLU)."""
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    return masked_autoregressive_flow(
        init_key,
        base_dist=Normal(jnp.zeros(dim)),
        flow_layers=args.layers,
        nn_width=hidden_width(dim, args),
        nn_depth=args.depth,
        nn_activation=jax.nn.relu,
    )


def flowjax_keys(seed):
    """(training key, initialisation key) of flowjax's fit for ``seed``."""
    return jax.random.split(jax.random.key(seed))


def jaxmaf_twin(dist, trainable_base: bool = True) -> jaxmaf.MAF:
    """A jaxmaf MAF computing exactly the density of flowjax's MAF ``dist``.

    flowjax's settings in jaxmaf's terms: hidden layers of ``dist``'s depth and
    width with ReLU, the output layer drawn like the hidden ones
    (``output_init_scale=1``), the softplus scale floored at 1e-2
    (``Affine(min_scale=1e-2)``), and ``dist``'s permutations (the reversal in
    2-d); its weights are copied in. flowjax applies its layers to the data
    first-to-last, each followed by a permutation (the last one acts on the
    isotropic base and changes nothing); jaxmaf's density direction runs
    its layer list from the data side, the last entry.

    flowjax's base is a trainable diagonal Gaussian (a location and a softplus
    scale per dimension, starting at 0 and 1); with ``trainable_base`` the twin's
    is one too, a one-component mixture at 0 with scale 1 (the scale through
    ``exp``: the same start, not quite the same steps); without, a standard
    normal, like a flowjax base wrapped in ``paramax.non_trainable``.
    """
    import paramax
    from flowjax.bijections import Permute

    chain = dist.bijection.bijection.bijection  # Invert(Scan(Chain([MAF, permutation])))
    made, perm = chain.bijections
    mlp = made.masked_autoregressive_mlp
    num_layers, width = mlp.layers[0].bias.shape
    dim = dist.shape[-1]
    if isinstance(perm, Permute):  # stacked (layers, D); density direction x -> x[p]
        stacked = np.asarray(perm.permutation[0])  # a tuple of index arrays, one per axis
        permutation = [np.argsort(stacked[k]).tolist() for k in range(num_layers - 1)][::-1]
    else:  # Flip in 2-d
        permutation = "reverse"
    flow = jaxmaf.MAF(
        dim,
        num_layers,
        (width,) * (len(mlp.layers) - 1),
        activation="relu",
        output_init_scale=1.0,
        transformer=jaxmaf.Affine(min_scale=1e-2),
        permutation=permutation,
        base="mog" if trainable_base else "gaussian",
        num_components=1 if trainable_base else None,
        rngs=nnx.Rngs(0),
    )
    if trainable_base:
        zero_base_means(flow, 0)
    for k, conditioner in enumerate(flow.conditioners):
        src = num_layers - 1 - k  # jaxmaf's data-side layer is flowjax's first
        for ours, theirs in zip([*conditioner.hidden, conditioner.output], mlp.layers, strict=True):
            assert isinstance(theirs.weight, paramax.Parameterize)  # where(mask, weight, 0)
            mask, weight = theirs.weight.args[0][src], theirs.weight.args[1][src]
            ours.kernel[...] = jnp.where(mask, weight, 0).T
            ours.bias[...] = theirs.bias[src]
    return flow


def fit_flowjax(data, dim, args, seed):
    import equinox as eqx
    import paramax
    from flowjax.train.losses import MaximumLikelihoodLoss
    from flowjax.train.train_utils import get_batches, step

    t0 = time.perf_counter()
    key, init_key = flowjax_keys(seed)
    dist = flowjax_maf(dim, args, init_key)
    params, static = eqx.partition(
        dist, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
    )
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init(params)
    loss_fn = MaximumLikelihoodLoss()
    val_loss = eqx.filter_jit(loss_fn)
    train, val = jnp.asarray(data.train), jnp.asarray(data.validation)
    best, best_loss, best_epoch, since_best = params, math.inf, -1, 0
    for epoch in range(args.epochs):
        if since_best >= args.patience:
            break
        key, perm_key = jax.random.split(key)
        for (batch,) in zip(
            *get_batches((jax.random.permutation(perm_key, train),), args.batch_size), strict=True
        ):
            key, sub = jax.random.split(key)
            params, opt_state, _ = step(
                params,
                static,
                batch,
                optimizer=optimizer,
                opt_state=opt_state,
                loss_fn=loss_fn,
                key=sub,
            )
        key, sub = jax.random.split(key)
        loss = float(val_loss(params, static, val, key=sub))
        if math.isfinite(loss) and loss < best_loss:
            best, best_loss, best_epoch, since_best = params, loss, epoch, 0
        else:
            since_best += 1
    elapsed = time.perf_counter() - t0
    flow = eqx.combine(best, static)
    nll = -float(jnp.mean(eqx.filter_jit(lambda f, x: f.log_prob(x))(flow, jnp.asarray(data.test))))
    return nll, elapsed, best_epoch


def hidden_width(dim, args):
    return args.width_2d if dim <= 2 else args.width


def summarise(a, b):
    """Mean/std of each and the paired difference a - b with its standard error."""
    diff = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return statistics.fmean(diff), se


def std(values):
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def markdown(result, use_flowjax, variants):
    """The comparison (and the ablation) as markdown tables, for the README."""
    rows = [
        "| data set | D | jaxmaf | flowjax | jaxmaf - flowjax (paired, +- s.e.) | fit time "
        "jaxmaf / flowjax |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in result["datasets"].items():
        cells = [
            name,
            str(e["dim"]),
            f"{statistics.fmean(e['jaxmaf']):.3f} +- {std(e['jaxmaf']):.3f}",
        ]
        if use_flowjax:
            cells += [
                f"{statistics.fmean(e['flowjax']):.3f} +- {std(e['flowjax']):.3f}",
                f"{e['paired_diff']:+.3f} +- {e['paired_se']:.3f} ({e['verdict']})",
                f"{statistics.fmean(e['jaxmaf_time']):.1f} s / "
                f"{statistics.fmean(e['flowjax_time']):.1f} s",
            ]
        else:
            cells += ["", "", f"{statistics.fmean(e['jaxmaf_time']):.1f} s"]
        rows.append("| " + " | ".join(cells) + " |")
    if len(variants) > 1:
        names = list(result["datasets"])
        rows += [
            "",
            "| variant (one change from the defaults) | " + " | ".join(names) + " | mean |",
            "|---" * (len(names) + 2) + "|",
        ]
        for v in variants[1:]:
            d = [result["datasets"][n]["variants"][v]["diff_vs_default"] for n in names]
            cells = [f"{m:+.3f} +- {se:.3f}" for m, se in d]
            rows.append(
                f"| {variant_spec(v)[0]} | "
                + " | ".join(cells)
                + f" | {statistics.fmean(m for m, _ in d):+.3f} |"
            )
    return "\n".join(rows)


def main():
    args = parse_args()
    if args.quick:
        args.seeds, args.epochs = min(args.seeds, 2), 3
    names = {
        "suite": SUITE,
        "heldout": HELDOUT,
        "fresh": FRESH,
        "lowdim": LOWDIM,
        "all": SUITE + HELDOUT + FRESH + LOWDIM,
    }.get(args.datasets, tuple(args.datasets.split(",")))
    known = set(SUITE + HELDOUT + FRESH + LOWDIM)
    for name in names:
        if name not in known:
            raise SystemExit(
                "accuracy.py: error: "
                f"unknown data set {name!r}: expected suite, heldout, fresh, lowdim, all, or "
                f"names from {', '.join(SUITE + HELDOUT + FRESH + LOWDIM)}"
            )
    variants = args.variants.split(",")
    for v in variants:
        try:
            variant_spec(v)
        except KeyError:
            raise SystemExit(
                f"accuracy.py: error: unknown variant {v!r}: expected one of "
                f"{', '.join(VARIANTS)}, perm_draw_M (M an integer), init_S (S a number) or A+B"
            ) from None
    if "default" not in variants:
        variants.insert(0, "default")
    use_flowjax = not args.no_flowjax
    if use_flowjax:
        try:
            import flowjax  # noqa: F401
        except ImportError:
            raise SystemExit(
                "accuracy.py: error: flowjax is not installed: pip install -e '.[bench]', "
                "or pass --no-flowjax"
            ) from None

    print(
        f"backend={jax.default_backend()} devices={jax.devices()} "
        f"python={platform.python_version()} jax={jax.__version__}"
    )
    print(
        f"{args.layers} MAF layers, MADE {args.depth}x{args.width_2d} (2-d) / "
        f"{args.depth}x{args.width} (above), ReLU, Adam {args.lr}, batch {args.batch_size}, "
        f"<= {args.epochs} epochs, patience {args.patience}, {args.seeds} seeds"
    )
    result = {
        "settings": vars(args) | {"datasets": list(names), "variants": variants},
        "backend": jax.default_backend(),
        "datasets": {},
    }
    jobs = [(name, seed) for name in names for seed in range(args.seeds)]
    fits = run_jobs(jobs, args, variants, use_flowjax)  # in job order, as each is done
    for name in names:
        data = load(name, args.quick)
        dim = data.train.shape[1]
        entry = {
            "dim": dim,
            "sizes": [len(data.train), len(data.validation), len(data.test)],
            "variants": {},
        }
        for _ in range(args.seeds):
            for fitter, (nll, elapsed, best_epoch) in next(fits).items():
                if fitter == "flowjax":
                    rec = entry.setdefault("flowjax_fit", {"nll": [], "time": [], "best_epoch": []})
                else:
                    rec = entry["variants"].setdefault(
                        fitter, {"nll": [], "time": [], "best_epoch": []}
                    )
                rec["nll"].append(nll)
                rec["time"].append(elapsed)
                rec["best_epoch"].append(best_epoch)
        entry["jaxmaf"] = entry["variants"]["default"]["nll"]
        entry["jaxmaf_time"] = entry["variants"]["default"]["time"]
        line = f"{name:16s} D={dim:3d} jaxmaf {statistics.fmean(entry['jaxmaf']):9.4f}"
        line += f" +- {std(entry['jaxmaf']):.4f} ({statistics.fmean(entry['jaxmaf_time']):5.1f} s)"
        if use_flowjax:
            entry["flowjax"] = entry["flowjax_fit"]["nll"]
            entry["flowjax_time"] = entry["flowjax_fit"]["time"]
            diff, se = summarise(entry["jaxmaf"], entry["flowjax"])
            entry["paired_diff"], entry["paired_se"] = diff, se
            entry["verdict"] = "better" if diff < -se else "worse" if diff > se else "tie"
            line += (
                f" | flowjax {statistics.fmean(entry['flowjax']):9.4f} +- "
                f"{std(entry['flowjax']):.4f} "
                f"({statistics.fmean(entry['flowjax_time']):5.1f} s) | diff {diff:+.4f}"
                f" +- {se:.4f} {entry['verdict']}"
            )
        print(line, flush=True)
        for variant in variants[1:]:
            diff, se = summarise(entry["variants"][variant]["nll"], entry["jaxmaf"])
            entry["variants"][variant]["diff_vs_default"] = [diff, se]
            print(
                f"    {variant:18s} {statistics.fmean(entry['variants'][variant]['nll']):9.4f}"
                f"  vs default {diff:+.4f} +- {se:.4f}",
                flush=True,
            )
        result["datasets"][name] = entry
        write_json(result, args.out)  # after every data set: a long run that dies keeps its part

    if use_flowjax:
        diffs = [e["paired_diff"] for e in result["datasets"].values()]
        result["mean_paired_diff"] = statistics.fmean(diffs)
        counts = {
            v: sum(e["verdict"] == v for e in result["datasets"].values())
            for v in ("better", "tie", "worse")
        }
        result["verdicts"] = counts
        print(
            f"mean paired difference over {len(diffs)} data sets: "
            f"{result['mean_paired_diff']:+.4f} nats (negative: jaxmaf better); {counts}"
        )
    if len(variants) > 1:
        print("\nablation: mean over data sets of (variant - default), nats")
        result["ablation"] = {}
        for variant in variants[1:]:
            d = [e["variants"][variant]["diff_vs_default"][0] for e in result["datasets"].values()]
            worse = sum(x > 0 for x in d)
            result["ablation"][variant] = {"mean_diff": statistics.fmean(d), "per_dataset": d}
            print(
                f"  {variant:18s} {statistics.fmean(d):+.4f}  (worse than default on "
                f"{worse}/{len(d)}) {variant_spec(variant)[0]}"
            )
    print("\n" + markdown(result, use_flowjax, variants))
    print(f"wrote {write_json(result, args.out)}")


def shuffle_columns(data: datasets.Split, seed: int) -> datasets.Split:
    """The split with its columns in the order of seed ``seed``'s draw (the same for every row).

    A flow with fixed orders (jaxmaf's ``permutation="auto"``) fits a data set's
    columns in one arrangement for every seed; reordering them per seed makes the
    mean over seeds an average over arrangements as well.
    """
    perm = np.random.default_rng([seed, 7]).permutation(data.train.shape[1])
    return datasets.Split(data.train[:, perm], data.validation[:, perm], data.test[:, perm])


def fit_job(name, seed, args, variants, use_flowjax):
    """Every fit of one (data set, seed): {variant or "flowjax": (nll, seconds, best_epoch)}."""
    data = load(name, args.quick)
    if args.shuffle_columns:
        data = shuffle_columns(data, seed)
    dim = data.train.shape[1]
    fits = {v: fit_jaxmaf(data, dim, args, seed, v) for v in variants}
    if use_flowjax:
        fits["flowjax"] = fit_flowjax(data, dim, args, seed)
    return fits


def run_jobs(jobs, args, variants, use_flowjax):
    """Yields the fits in job order: here, or from ``args.jobs`` processes (one XLA thread each)."""
    if args.jobs <= 1:
        for name, seed in jobs:
            yield fit_job(name, seed, args, variants, use_flowjax)
        return
    import multiprocessing

    # Inherited by the spawned workers, which import JAX afresh.
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    )
    # A worker that keeps compiling runs out of memory maps (LLVM's code sections: a
    # 16-set, 10-seed run died after about 160 fits per worker), so each one is replaced
    # after a few jobs (multiprocessing's Pool: concurrent.futures' max_tasks_per_child
    # hung on Python 3.11).
    with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=4) as pool:
        tasks = [(name, seed, args, variants, use_flowjax) for name, seed in jobs]
        yield from pool.imap(_fit_job_star, tasks)


def _fit_job_star(task):
    return fit_job(*task)


def write_json(result, out):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "accuracy.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


if __name__ == "__main__":
    main()
