"""O(D) triangular log-det against the O(D^3) dense determinant, on whatever backend JAX has.

Measures, for D over a log-spaced range:
  1. linear algebra alone: ``sum(log|diag L|)`` of a triangular D x D matrix
     (``triangular``) against ``jnp.linalg.slogdet`` of a dense one
     (``dense_slogdet``); beside them the cost of a jitted call that reads one
     entry of the same matrix (``call_floor``), and the log-det from the D
     diagonal entries alone (``triangular_diag``: what a flow has, it never
     forms the matrix), continued to D = --diag-max-dim where no D x D matrix
     would fit, so that its linear term shows above the call cost;
  2. a real layer: a MAF layer's analytic log-det from ``inverse_and_log_det``
     (``layer_analytic``) against the dense Jacobian (``jax.jacfwd``) + slogdet
     of the same bijector (``layer_dense``), and the same for a 4-layer flow
     (``flow4_analytic``, ``flow4_dense``), on a batch of points;
  3. agreement: the largest |analytic - dense| log-det difference.

Jitted functions, warm-up, ``block_until_ready``, medians (min/max too) over
repeats (at least --repeats, and fast calls until --budget-s); compile time
separately. Slopes are fitted over the largest third of each method's D
range (at least 3 points). Writes a table, JSON and a log-log PNG.

Note (CPU): up to D = 2048 the triangular log-det of a matrix costs what a
jitted call costs (``call_floor``, ~6 us): reading D diagonal entries is
nanoseconds of work. From D = 512 on, XLA runs the read of the large operand
on several threads, which adds a flat 40-90 us whatever D (measured: 70 us at
512, 98 at 1024, 63 at 2048), so the ``triangular`` curve steps up once and
its fitted slope (between -0.1 and 0.6 from run to run) measures that step,
not D. The default range goes to 2048 so that the fit lies past the step.
The O(D) term itself shows in ``triangular_diag`` from D ~ 2^18 on (slope
0.92 over 2^17..2^24). The dense Jacobian methods stop at --layer-max-dim.

Run: python benchmarks/logdet_scaling.py [--out DIR] [--quick] [--x64]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/out/logdet_scaling")
    p.add_argument("--min-dim", type=int, default=2)
    p.add_argument(
        "--max-dim",
        type=int,
        default=2048,
        help="largest D for the linear-algebra pair (2048: see the note in the doc)",
    )
    p.add_argument(
        "--diag-max-dim",
        type=int,
        default=2**24,
        help="largest D for the log-det from the diagonal alone (triangular_diag)",
    )
    p.add_argument(
        "--layer-max-dim",
        type=int,
        default=512,
        help="largest D for the (slow) dense layer/flow Jacobians",
    )
    p.add_argument("--batch", type=int, default=16, help="points per layer evaluation")
    p.add_argument("--hidden", type=int, default=128, help="MADE hidden width (2 layers)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument(
        "--budget-s",
        type=float,
        default=0.25,
        help="fast calls repeat until this many seconds per (method, D)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="D up to 32, dense Jacobians to 16 (diagonal alone: 4096), 3 repeats (CI smoke)",
    )
    p.add_argument("--x64", action="store_true", help="float64 (enables jax_enable_x64)")
    args = p.parse_args(argv)
    if args.quick:
        args.max_dim, args.layer_max_dim, args.diag_max_dim, args.repeats = 32, 16, 4096, 3
        args.budget_s = 0.02
    if not args.min_dim <= args.max_dim <= args.diag_max_dim:
        p.error(
            f"expected --min-dim <= --max-dim <= --diag-max-dim, got {args.min_dim}, "
            f"{args.max_dim}, {args.diag_max_dim}"
        )
    return args


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads

import jax
from _backend import matmul_precision_note


def timed(fn, *args, repeats, budget_s):
    """Compile time, then the seconds of each blocked call after a warm-up.

    At least `repeats` calls; fast calls repeat until `budget_s` seconds (at most 2000 calls).
    """
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    budget_end = time.perf_counter() + budget_s
    while len(times) < repeats or (time.perf_counter() < budget_end and len(times) < 2000):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compiled(*args), compile_s, times


def slope(dims, values):
    """Least-squares slope of log(time) on log(D), and the RMS residual of that fit (in log units).

    A residual above 0.25 (times off the line by ~30%) says the points are not on a power law:
    noise, or a regime change inside the range.
    """
    import numpy as np

    x, y = np.log(np.asarray(dims, float)), np.log(np.asarray(values, float))
    coef = np.polyfit(x, y, 1)
    residual = float(np.sqrt(np.mean((np.polyval(coef, x) - y) ** 2)))
    return float(coef[0]), residual


def main(argv=None):
    args = parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import jaxmaf

    os.makedirs(args.out, exist_ok=True)
    dtype = jaxmaf.validation.default_dtype()
    dev = jax.devices()[0]
    print(
        f"backend: {jax.default_backend()} ({dev.device_kind}); dtype {dtype.name}; "
        f"jax {jax.__version__}"
    )
    dims = [int(d) for d in 2 ** np.arange(0, 31) if args.min_dim <= d <= args.max_dim]
    diag_dims = [int(d) for d in 2 ** np.arange(0, 31) if args.min_dim <= d <= args.diag_max_dim]
    rows, max_diff, max_scale = [], 0.0, 1e-30

    def record(dim, method, compile_s, times):
        q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
        row = dict(
            dim=int(dim),
            method=method,
            median_ms=1e3 * statistics.median(times),
            min_ms=1e3 * min(times),
            max_ms=1e3 * max(times),
            iqr_over_median=(q3 - q1) / statistics.median(times),
            compile_ms=1e3 * compile_s,
        )
        rows.append(row)
        print(
            f"D={dim:>5} {method:<16} median {row['median_ms']:10.4f} ms  "
            f"(min {row['min_ms']:.4f}, max {row['max_ms']:.4f}; "
            f"compile {row['compile_ms']:.0f} ms)",
            flush=True,
        )

    timed_ = functools.partial(timed, repeats=args.repeats, budget_s=args.budget_s)

    def log_abs_sum(v):
        return jnp.sum(jnp.log(jnp.abs(v)))

    key = jax.random.key(0)
    for dim in diag_dims:  # the diagonal alone: no D x D matrix, so D can go far higher
        d = 2.0 + jax.random.uniform(jax.random.fold_in(key, 2**31 + dim), (dim,), dtype)
        _, c, t = timed_(log_abs_sum, d)
        record(dim, "triangular_diag", c, t)
    for dim in dims:
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, int(dim)), 3)
        a = jax.random.normal(k1, (dim, dim), dtype) / np.sqrt(dim) + 2 * jnp.eye(dim, dtype=dtype)
        tri = jnp.tril(a)
        ld_tri, c, t = timed_(lambda m: log_abs_sum(jnp.diagonal(m)), tri)
        record(dim, "triangular", c, t)
        _, c, t = timed_(lambda m: m[0, 0], tri)
        record(dim, "call_floor", c, t)
        ld_dense, c, t = timed_(lambda m: jnp.linalg.slogdet(m)[1], tri)
        record(dim, "dense_slogdet", c, t)
        max_diff = max(max_diff, float(jnp.abs(ld_tri - ld_dense)))
        max_scale = max(max_scale, float(jnp.abs(ld_dense)))

        if dim > args.layer_max_dim:
            continue
        x = jax.random.normal(k2, (args.batch, dim), dtype)
        for name, layers in (("layer", 1), ("flow4", 4)):
            flow = jaxmaf.MAF(
                int(dim),
                layers,
                (args.hidden, args.hidden),
                output_init_scale=0.1,
                rngs=nnx.Rngs(int(dim)),
            )
            graphdef, params = nnx.split(flow)

            def analytic(p, x, graphdef=graphdef):
                return nnx.merge(graphdef, p).bijector().inverse_and_log_det(x)[1]

            def dense(p, x, graphdef=graphdef):
                return jaxmaf.dense_log_det(nnx.merge(graphdef, p).bijector().inverse, x)

            ld_a, c, t = timed_(analytic, params, x)
            record(dim, f"{name}_analytic", c, t)
            ld_d, c, t = timed_(dense, params, x)
            record(dim, f"{name}_dense", c, t)
            max_diff = max(max_diff, float(jnp.max(jnp.abs(ld_a - ld_d))))
            max_scale = max(max_scale, float(jnp.max(jnp.abs(ld_d))))

    methods = sorted({r["method"] for r in rows}, key=[r["method"] for r in rows].index)
    slopes, residuals = {}, {}
    for m in methods:
        pts = [(r["dim"], r["median_ms"]) for r in rows if r["method"] == m]
        upper = pts[-max(3, len(pts) // 3) :]  # the largest third of the range (>= 3 points)
        slopes[m], residuals[m] = (
            slope(*zip(*upper, strict=True)) if len(upper) >= 2 else (float("nan"), float("nan"))
        )
    print(
        "\nlog-log slopes over the largest third of the range (time ~ D^slope), "
        "with the fit's RMS residual:"
    )
    for m, s in slopes.items():
        warn = []
        if residuals[m] > 0.25:
            warn.append("points far off a power law (noise or a regime change)")
        if s < -0.2:
            warn.append("time falls with D: the machine's noise, not the method")
        noisy = [r["dim"] for r in rows if r["method"] == m and r["iqr_over_median"] > 0.5]
        if noisy:
            warn.append(f"quartiles wider than half the median at D={noisy}")
        note = f"  WARNING: {'; '.join(warn)}" if warn else ""
        print(f"  {m:<16} {s:5.2f}  (residual {residuals[m]:.2f}){note}")
    speedups = {}
    for dim in dims:
        med = {r["method"]: r["median_ms"] for r in rows if r["dim"] == dim}
        speedups[int(dim)] = {
            k: med[f"{k}_dense" if k != "linalg" else "dense_slogdet"]
            / med[f"{k}_analytic" if k != "linalg" else "triangular"]
            for k in ("linalg", "layer", "flow4")
            if f"{k}_dense" in med or k == "linalg"
        }
    print("\ndense / analytic time ratio by D:")
    for dim, s in speedups.items():
        print(f"  D={dim:>5} " + "  ".join(f"{k} {v:8.1f}x" for k, v in s.items()))
    print(
        f"\nmax |analytic - dense| log-det over the run ({dtype.name}): {max_diff:.3e} "
        f"(relative to the largest |log-det|, {max_scale:.2e}: {max_diff / max_scale:.1e})"
    )
    print(matmul_precision_note())

    result = dict(
        rows=rows,
        slopes=slopes,
        slope_fit_residuals=residuals,
        max_abs_diff_relative=max_diff / max_scale,
        speedup_dense_over_analytic=speedups,
        max_abs_logdet_diff=max_diff,
        dtype=dtype.name,
        backend=jax.default_backend(),
        device=dev.device_kind,
        batch=args.batch,
        hidden=args.hidden,
        repeats=args.repeats,
        versions=dict(
            jax=jax.__version__, jaxmaf=jaxmaf.__version__, python=platform.python_version()
        ),
    )
    with open(os.path.join(args.out, "logdet_scaling.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(rows, methods, os.path.join(args.out, "logdet_scaling.png"), result)
    print(f"wrote {args.out}/logdet_scaling.json and logdet_scaling.png")
    return result


def plot(rows, methods, path, result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def curve(method):
        d, t = zip(
            *[(r["dim"], r["median_ms"]) for r in rows if r["method"] == method], strict=True
        )
        return np.asarray(d, float), np.asarray(t)

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for m in methods:
        d, t = curve(m)
        style = dict(color="0.6", lw=1.0, ls="-", marker=".") if m == "call_floor" else {}
        ax.loglog(d, t, **({"marker": "o"} | style), label=f"{m} (slope {result['slopes'][m]:.2f})")
    # Each reference line spans its curve's range and meets the curve's largest-D point.
    for method, power, style, name in (
        ("dense_slogdet", 3, "k--", "O(D^3)"),
        ("triangular_diag", 1, "k:", "O(D)"),
    ):
        d, t = curve(method)
        ax.loglog(d, t[-1] * (d / d[-1]) ** power, style, lw=0.8, label=f"{name} through {method}")
    ax.set(
        xlabel="D",
        ylabel="median time per call (ms)",
        title=f"log-det cost on {result['backend']} ({result['device']}, {result['dtype']})",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
