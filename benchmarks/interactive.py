"""Interactive (eager) calls against the same calls compiled, for jaxmaf and flowjax; import times.

What a notebook user meets: ``flow.log_prob(x)`` and ``flow.sample(key, n)``
called at the top level, not inside a jitted function. For each call this
prints:
  - the first eager call (tracing and compilation included);
  - the traces and backend compilations the *second* eager call caused
    (0 and 0 when nothing recompiles);
  - the median eager call and the median of the same call under ``nnx.jit``
    (``equinox.filter_jit`` for flowjax), and their ratio: the median over
    interleaved rounds of the per-round ratio, with its quartiles.
Then the time of ``import jaxmaf`` against ``import distrax`` (which jaxmaf
imports), ``import jax`` and ``import flowjax.flows``, each in fresh processes,
interleaved, medians. Then the time to build a flow in a fresh process:
the first one, and a sweep of new shapes after it (with the programs each
build compiled), jaxmaf against flowjax. Last, one train step with the flow's state handed to the
compiled step five ways (flat leaf lists, plain dicts from ``jaxmaf.split``,
``nnx.State``, the module itself, ``nnx.jit`` with ``nnx.Optimizer``) and a
jitted ``log_prob`` given the parameters three ways: the Python cost around
each call.

Workload: 2-d flows, 4 layers, MADE 64x64 (the circles example's), 1000
points; a conditional MAF with 2 context dimensions.

Run: python benchmarks/interactive.py [--out DIR] [--quick] [--build-rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/out/interactive")
    p.add_argument("--rounds", type=int, default=30, help="interleaved eager/jit rounds per call")
    p.add_argument(
        "--import-rounds", type=int, default=5, help="fresh processes per import (0: skip)"
    )
    p.add_argument(
        "--build-rounds", type=int, default=5, help="fresh processes per flow build (0: skip)"
    )
    p.add_argument("--no-peers", action="store_true", help="jaxmaf's calls only (no flowjax)")
    p.add_argument("--no-train-step", action="store_true", help="skip the train-step table")
    p.add_argument("--quick", action="store_true", help="3 rounds, 1 import round (CI smoke)")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads


import jax
import jax.numpy as jnp
import optax
from flax import nnx

import jaxmaf

N = 1000
TRACE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileCounter:
    """Counts JAX traces and backend compilations while active (``jax.monitoring`` events)."""

    def __init__(self):
        self.counts = dict.fromkeys(TRACE_EVENTS, 0)

    def __call__(self, event, duration, **kwargs):
        """The listener: counts the events it knows."""
        if event in self.counts:
            self.counts[event] += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)

    @property
    def traces(self):
        """Traces seen."""
        return self.counts[TRACE_EVENTS[0]]

    @property
    def compiles(self):
        """Backend compilations seen."""
        return self.counts[TRACE_EVENTS[1]]


def quartiles(values):
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def jaxmaf_cases():
    x = jax.random.normal(jax.random.key(0), (N, 2))
    c = jax.random.normal(jax.random.key(1), (N, 2))
    key = jax.random.key(2)
    maf = jaxmaf.MAF(2, 4, (64, 64), rngs=nnx.Rngs(0))
    iaf = jaxmaf.IAF(2, 4, (64, 64), rngs=nnx.Rngs(0))
    cmaf = jaxmaf.MAF(2, 4, (64, 64), context_dim=2, rngs=nnx.Rngs(0))
    # (name, eager call, the same call under nnx.jit)
    specs = [
        ("MAF log_prob", maf, lambda f, x, c, k: f.log_prob(x)),
        ("MAF sample", maf, lambda f, x, c, k: f.sample(k, (N,))),
        ("MAF sample jacobi", maf, lambda f, x, c, k: f.sample(k, (N,), method="jacobi")),
        ("MAF sample_and_log_prob", maf, lambda f, x, c, k: f.sample_and_log_prob(k, (N,))),
        ("IAF log_prob", iaf, lambda f, x, c, k: f.log_prob(x)),
        ("IAF log_prob jacobi", iaf, lambda f, x, c, k: f.log_prob(x, method="jacobi")),
        ("IAF sample", iaf, lambda f, x, c, k: f.sample(k, (N,))),
        ("IAF sample_and_log_prob", iaf, lambda f, x, c, k: f.sample_and_log_prob(k, (N,))),
        ("conditional MAF log_prob", cmaf, lambda f, x, c, k: f.log_prob(x, c)),
        ("conditional MAF sample", cmaf, lambda f, x, c, k: f.sample(k, (), c)),
    ]
    cases = []
    for name, flow, call in specs:
        jitted = nnx.jit(call)
        cases.append(
            (
                f"jaxmaf {name}",
                lambda flow=flow, call=call: call(flow, x, c, key),
                lambda flow=flow, jitted=jitted: jitted(flow, x, c, key),
            )
        )
    return cases


def flowjax_cases():
    try:
        import equinox as eqx
        from flowjax.distributions import Normal
        from flowjax.flows import masked_autoregressive_flow
    except ImportError as e:
        print(f"flowjax: skipped ({e}); pip install -e '.[bench]'")
        return []
    x = jax.random.normal(jax.random.key(0), (N, 2))
    key = jax.random.key(2)
    flow = masked_autoregressive_flow(
        jax.random.key(0), base_dist=Normal(jnp.zeros(2)), flow_layers=4, nn_width=64, nn_depth=2
    )
    log_prob = eqx.filter_jit(lambda f, x: f.log_prob(x))
    sample = eqx.filter_jit(lambda f, k: f.sample(k, (N,)))
    return [
        ("flowjax MAF log_prob", lambda: flow.log_prob(x), lambda: log_prob(flow, x)),
        ("flowjax MAF sample", lambda: flow.sample(key, (N,)), lambda: sample(flow, key)),
    ]


def measure(cases, rounds):
    rows = []
    for name, eager, jitted in cases:
        t0 = time.perf_counter()
        jax.block_until_ready(eager())
        first = time.perf_counter() - t0
        jax.block_until_ready(jitted())  # compile the reference outside the timed rounds
        with CompileCounter() as counter:
            jax.block_until_ready(eager())
        eager_t, jit_t, ratios = [], [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            jax.block_until_ready(eager())
            t1 = time.perf_counter()
            jax.block_until_ready(jitted())
            t2 = time.perf_counter()
            eager_t.append(t1 - t0)
            jit_t.append(t2 - t1)
            ratios.append((t1 - t0) / (t2 - t1))
        q1, ratio, q3 = quartiles(ratios)
        row = dict(
            name=name,
            first_call_ms=1e3 * first,
            second_call_traces=counter.traces,
            second_call_compiles=counter.compiles,
            eager_median_ms=1e3 * statistics.median(eager_t),
            jit_median_ms=1e3 * statistics.median(jit_t),
            ratio=ratio,
            ratio_quartiles=(q1, q3),
        )
        rows.append(row)
        warn = []
        if counter.traces or counter.compiles:
            warn.append("RECOMPILES on the second call")
        if q3 - q1 > 0.3 * ratio:
            warn.append("noisy: quartiles wider than 30% of the ratio")
        print(
            f"{name:<34} {1e3 * first:9.0f} {counter.traces:4d}/{counter.compiles:<3d} "
            f"{row['eager_median_ms']:10.2f} {row['jit_median_ms']:10.2f} "
            f"{ratio:7.2f} [{q1:.2f}, {q3:.2f}]" + (f"  WARNING: {'; '.join(warn)}" if warn else "")
        )
    return rows


def interleaved(calls, rounds, label):
    """Times each of ``calls`` (name -> zero-argument call) in interleaved rounds.

    Prints and returns each call's median and the median, over rounds, of its ratio to the
    first call's time in the same round, with quartiles; warns where they spread over 30%.
    Also returns the mean of each call's last result: calls that compute the same thing
    the same number of times agree.
    """
    for call in calls.values():  # compile and warm up
        jax.block_until_ready(call())
        jax.block_until_ready(call())
    times = {n: [] for n in calls}
    last = {}
    for _ in range(rounds):
        for n, call in calls.items():
            t0 = time.perf_counter()
            last[n] = jax.block_until_ready(call())
            times[n].append(time.perf_counter() - t0)
    base_name = next(iter(calls))
    result = {}
    for n in calls:
        q1, ratio, q3 = quartiles([a / b for a, b in zip(times[n], times[base_name], strict=True)])
        result[n] = dict(
            median_ms=1e3 * statistics.median(times[n]),
            ratio=ratio,
            quartiles=(q1, q3),
            last_value=float(jnp.mean(last[n])),  # every call made the same calls: equal
        )
        noisy = q3 - q1 > 0.3 * ratio
        print(
            f"{label}, {n:<34} median {1e3 * statistics.median(times[n]):6.2f} ms   "
            f"vs {base_name} {ratio:5.2f} [{q1:.2f}, {q3:.2f}]"
            + ("  WARNING: noisy, quartiles wider than 30% of the ratio" if noisy else "")
        )
    return result


def train_step_paths(rounds):
    """One Adam step of a 2-d flow (4x128x128, batch 256), its state handed over five ways.

    Flat leaf lists; plain dicts from ``jaxmaf.split``; ``nnx.State`` to ``jax.jit`` (the
    ``nnx.split``/``nnx.merge`` way); the module itself to ``jax.jit`` (a pytree); ``nnx.jit``
    with ``nnx.Optimizer``. Same program work; the differences are the Python handling of the
    arguments around each call. Then ``log_prob`` of 1000 points from outside, the
    parameters handed over the first three ways.
    """
    x = jax.random.normal(jax.random.key(0), (256, 2))
    opt = optax.adam(1e-3)

    def new_flow():
        return jaxmaf.MAF(2, 4, (128, 128), rngs=nnx.Rngs(0))

    graphdef, params, rest = nnx.split(new_flow(), nnx.Param, ...)
    _, plain, plain_rest = jaxmaf.split(new_flow())
    leaves, treedef = jax.tree.flatten(params)

    def nll(p, r):
        return -nnx.merge(graphdef, p, r).log_prob(x).mean()

    def adam(loss):
        @jax.jit
        def step(p, o):
            v, g = jax.value_and_grad(loss)(p)
            u, o = opt.update(g, o, p)
            return optax.apply_updates(p, u), o, v

        return step

    flat = adam(lambda ls: nll(jax.tree.unflatten(treedef, ls), rest))
    dicts = adam(lambda p: nll(p, plain_rest))
    state = adam(lambda p: nll(p, rest))

    @jax.jit
    def module(f, o):  # the module a pytree; its integer state (permutations) is no parameter
        v, g = nnx.value_and_grad(lambda f: -f.log_prob(x).mean())(f)
        p = nnx.state(f, nnx.Param)
        u, o = opt.update(g, o, p)
        nnx.update(f, optax.apply_updates(p, u))
        return f, o, v

    flow_d = new_flow()
    optimizer = nnx.Optimizer(flow_d, opt, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(f, optimizer):
        v, g = nnx.value_and_grad(lambda f: -f.log_prob(x).mean())(f)
        optimizer.update(f, g)
        return v

    flow_c = new_flow()
    carry = {
        "flat leaves": [flat, leaves, opt.init(leaves)],
        "plain dicts (jaxmaf.split)": [dicts, plain, opt.init(plain)],
        "nnx.State to jax.jit": [state, params, opt.init(params)],
        "module to jax.jit": [module, flow_c, opt.init(nnx.state(flow_c, nnx.Param))],
    }

    def call(name):
        fn, a, o = carry[name]
        carry[name][1], carry[name][2], v = fn(a, o)
        return v

    calls = {n: (lambda n=n: call(n)) for n in carry}
    calls["nnx.jit + nnx.Optimizer"] = lambda: nnx_step(flow_d, optimizer)
    steps = interleaved(calls, max(rounds, 3) * 5, "train step")
    print()
    points = jax.random.normal(jax.random.key(1), (N, 2))
    log_prob = jax.jit(lambda p, r, x: nnx.merge(graphdef, p, r).log_prob(x))
    flat_log_prob = jax.jit(
        lambda ls, r, x: nnx.merge(graphdef, jax.tree.unflatten(treedef, ls), r).log_prob(x)
    )
    log_probs = interleaved(
        {
            "flat leaves": lambda: flat_log_prob(leaves, rest, points),
            "plain dicts (jaxmaf.split)": lambda: log_prob(plain, plain_rest, points),
            "nnx.State to jax.jit": lambda: log_prob(params, rest, points),
        },
        max(rounds, 3) * 5,
        f"log_prob {N}",
    )
    return dict(train_step=steps, log_prob=log_probs)


def import_times(rounds):
    if rounds < 1:
        return {}
    modules = ["jax", "distrax", "jaxmaf", "flowjax.flows"]  # flowjax itself imports lazily
    code = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"
    times = {m: [] for m in modules}
    for _ in range(rounds):
        for m in modules:
            out = subprocess.run(
                [sys.executable, "-c", code.format(m)], capture_output=True, text=True
            )
            if out.returncode == 0:
                times[m].append(float(out.stdout.strip().splitlines()[-1]))
    result = {}
    for m, ts in times.items():
        if not ts:
            print(f"import {m:<13} unavailable")
            continue
        result[m] = dict(median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts))
        spread = max(ts) - min(ts)
        note = (
            "  WARNING: spread over 30% of the median"
            if spread > 0.3 * result[m]["median_s"]
            else ""
        )
        print(
            f"import {m:<13} median {statistics.median(ts):6.2f} s "
            f"(min {min(ts):.2f}, max {max(ts):.2f}; {len(ts)} fresh processes){note}"
        )
    return result


# A first flow (the circles example's), then a sweep of new shapes: MAF (dim, 5 layers, width x2)
BUILD_SWEEP = [(4, 32), (4, 64), (8, 48), (8, 96), (16, 64), (16, 128), (32, 128), (32, 256)]
BUILD_SCRIPT = """
import json, time
import jax, jax.numpy as jnp
{imports}
compiles = [0]
jax.monitoring.register_event_duration_secs_listener(
    lambda e, d, **k: compiles.__setitem__(0, compiles[0] + (e == {event!r})))
def build(dim, layers, width):
    c, t = compiles[0], time.perf_counter()
    jax.block_until_ready(jax.tree.leaves({arrays}))
    return dict(dim=dim, width=width, s=time.perf_counter() - t, compiles=compiles[0] - c)
first = build(2, 4, 64)
print(json.dumps(dict(first=first, sweep=[build(d, 5, w) for d, w in {sweep}])))
"""
BUILDERS = {
    "jaxmaf": (
        "import jaxmaf\nfrom flax import nnx",
        "nnx.state(jaxmaf.MAF(dim, layers, (width, width), rngs=nnx.Rngs(0)))",
    ),
    "flowjax": (
        "import equinox as eqx\nfrom flowjax.distributions import Normal\n"
        "from flowjax.flows import masked_autoregressive_flow",
        "eqx.filter(masked_autoregressive_flow(jax.random.key(0), base_dist=Normal("
        "jnp.zeros(dim)), flow_layers=layers, nn_width=width, nn_depth=2), eqx.is_array)",
    ),
}


def build_times(rounds, peers=True):
    """Seconds to build a flow: the first in a fresh process, then each of a sweep of shapes.

    Every new shape used to compile its initializers (jaxmaf before 2026-11-27: 0.6 s per
    4-layer MAF on a 2-core CPU). Fresh processes, libraries interleaved, medians; the
    programs each build compiled (``jax.monitoring``).
    """
    if rounds < 1:
        return {}
    names = list(BUILDERS) if peers else ["jaxmaf"]
    runs = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            imports, arrays = BUILDERS[name]
            code = BUILD_SCRIPT.format(
                imports=imports, arrays=arrays, event=TRACE_EVENTS[1], sweep=BUILD_SWEEP
            )
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode == 0:
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            elif not runs[name]:
                print(f"build {name}: failed ({out.stderr.strip().splitlines()[-1:]})")
    result = {}
    print(f"{'build a flow (fresh processes)':<34} {'first (s)':>9} {'sweep of new shapes':>26}")
    for name, rs in runs.items():
        if not rs:
            continue
        firsts = [r["first"]["s"] for r in rs]
        sweeps = [sum(b["s"] for b in r["sweep"]) for r in rs]
        compiles = [b["compiles"] for b in rs[-1]["sweep"]]
        result[name] = dict(
            first_median_s=statistics.median(firsts),
            first_range_s=(min(firsts), max(firsts)),
            first_compiles=rs[-1]["first"]["compiles"],
            sweep=[dict(dim=d, width=w) for d, w in BUILD_SWEEP],
            sweep_total_median_s=statistics.median(sweeps),
            sweep_total_range_s=(min(sweeps), max(sweeps)),
            sweep_compiles=compiles,
            processes=len(rs),
        )
        note = ""
        if max(sweeps) - min(sweeps) > 0.3 * statistics.median(sweeps):
            note = "  WARNING: spread over 30% of the median"
        print(
            f"{name:<34} {statistics.median(firsts):9.2f} "
            f"{statistics.median(sweeps):8.2f} s for {len(BUILD_SWEEP)} "
            f"[{min(sweeps):.2f}-{max(sweeps):.2f}], {sum(compiles)} programs compiled{note}"
        )
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.import_rounds = 3, min(args.import_rounds, 1)
        args.build_rounds = min(args.build_rounds, 1)
    os.makedirs(args.out, exist_ok=True)
    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); jax {jax.__version__}"
    )
    print(
        f"\n{'call (1000 points, 2-d, 4 layers, MADE 64x64)':<34} {'1st (ms)':>9} "
        f"{'2nd: traces/compiles':>9} {'eager (ms)':>10} {'jit (ms)':>10} "
        f"{'eager/jit [quartiles]':>22}"
    )
    cases = jaxmaf_cases() + ([] if args.no_peers else flowjax_cases())
    rows = measure(cases, args.rounds)
    print()
    steps = {} if args.no_train_step else train_step_paths(args.rounds)
    print()
    imports = import_times(args.import_rounds)
    print()
    builds = build_times(args.build_rounds, peers=not args.no_peers)
    result = dict(
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        rounds=args.rounds,
        calls=rows,
        train_step_paths=steps,
        imports=imports,
        builds=builds,
        versions=dict(
            jax=jax.__version__, jaxmaf=jaxmaf.__version__, python=platform.python_version()
        ),
    )
    path = os.path.join(args.out, "interactive.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
