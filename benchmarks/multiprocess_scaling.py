"""Data-parallel scaling across processes: examples/s of fit for 1, 2, 4 processes on localhost.

Each process owns one CPU device and its own rows of the data
(``fit(..., data_is_process_local=True, devices=jax.devices())`` under
``jax.distributed``, gloo collectives); the global batch is fixed, so each
process computes ``batch / P`` rows per step and the gradient (one float per
parameter) is all-reduced every step. Reported per process count: the median
epoch time over the epochs after the first (which compiles), examples per
second, the all-reduce bytes per step and per epoch, and the step time against
the one-process step divided by P, whose excess is the price of the
collectives (and, past the number of cores, of sharing them).

Run: python benchmarks/multiprocess_scaling.py [--processes 1,2,4] [--epochs N]
     [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/out/multiprocess_scaling")
    p.add_argument("--processes", default="1,2,4", help="comma-separated process counts")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n", type=int, default=16_384, help="global training rows")
    p.add_argument("--batch", type=int, default=512, help="global batch")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--width", type=int, default=256)
    p.add_argument(
        "--whole-data",
        action="store_true",
        help="every process passes the whole data set (default: each its own rows)",
    )
    p.add_argument("--quick", action="store_true", help="1 and 2 processes, 2 epochs (smoke)")
    p.add_argument(
        "--worker", nargs=3, type=int, metavar=("PORT", "P", "I"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    args.process_counts = [int(v) for v in args.processes.split(",")]
    if args.quick:
        args.process_counts, args.epochs, args.n = [1, 2], 2, 4096
    for count in args.process_counts:
        if count < 1 or args.n % count or args.batch % count:
            p.error(f"--n and --batch must be divisible by every process count, got {count}")
    return args


def worker(args: argparse.Namespace) -> None:
    """One process of a run: trains on its own rows, process 0 writes the epoch times."""
    port, count, index = args.worker
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if count > 1:
        jax.distributed.initialize(f"localhost:{port}", count, index)
    import numpy as np
    from flax import nnx

    import jaxmaf

    rng = np.random.default_rng(0)
    data = (rng.standard_normal((args.n, args.dim)) @ rng.standard_normal((args.dim,) * 2)).astype(
        np.float32
    )
    rows = args.n // count
    flow = jaxmaf.MAF(args.dim, args.layers, (args.width, args.width), rngs=nnx.Rngs(0))
    local = not args.whole_data
    history = jaxmaf.fit(
        flow,
        data[index * rows : (index + 1) * rows] if local else data,
        data_is_process_local=local,
        devices=jax.devices(),
        batch_size=args.batch,
        num_epochs=args.epochs,
        progress=False,
    )
    params = int(sum(x.size for x in jax.tree.leaves(nnx.state(flow, nnx.Param))))
    allreduce = time_allreduce(params)
    if index == 0:
        record = {
            "processes": count,
            "epoch_time": history.epoch_time,
            "params": params,
            "allreduce_ms": allreduce,
        }
        with open(os.path.join(args.out, f"processes_{count}.json"), "w") as f:
            json.dump(record, f)
    if count > 1:
        jax.distributed.shutdown()


def time_allreduce(size: int, rounds: int = 30) -> float:
    """Median milliseconds of one all-reduce of ``size`` float32 values over every device.

    A sum over a row-sharded ``(devices, size)`` array into a replicated result: the
    collective a train step runs on its gradient.
    """
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()), ("d",))
    rows = NamedSharding(mesh, PartitionSpec("d"))
    local = np.ones((jax.local_device_count(), size), np.float32)
    x = jax.make_array_from_process_local_data(rows, local)
    reduce = jax.jit(lambda a: a.sum(0), out_shardings=NamedSharding(mesh, PartitionSpec()))
    reduce(x).block_until_ready()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        reduce(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace, count: int) -> dict:
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    flags = [
        f"--{k}={getattr(args, k)}"
        for k in ("out", "epochs", "n", "batch", "dim", "layers", "width")
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *flags, "--worker", str(port), str(count), str(i)],
            env=env,
        )
        for i in range(count)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker of the {count}-process run failed: exit codes {codes}")
    with open(os.path.join(args.out, f"processes_{count}.json")) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    os.makedirs(args.out, exist_ok=True)
    steps = -(-args.n // args.batch)
    print(
        f"MAF {args.layers} x MADE {args.width}x{args.width} on {args.dim}-d data, "
        f"{args.n:,} rows, global batch {args.batch} ({steps} steps per epoch), "
        f"{args.epochs} epochs; one CPU device per process, gloo; "
        f"{'whole data in every process' if args.whole_data else 'process-local data'}; "
        f"{os.cpu_count()} CPU cores on this machine"
    )
    results = []
    for count in args.process_counts:
        t0 = time.perf_counter()
        record = run(args, count)
        times = record["epoch_time"][1:] or record["epoch_time"]
        median = statistics.median(times)
        spread = (max(times) - min(times)) / median if len(times) > 1 else float("nan")
        record |= {
            "median_epoch_s": median,
            "epoch_spread": spread,
            "examples_per_s": args.n / median,
            "step_ms": 1e3 * median / steps,
            "allreduce_bytes_per_step": 4 * record["params"],
            "allreduce_bytes_per_epoch": 4 * record["params"] * steps,
            "wall_s": time.perf_counter() - t0,
        }
        results.append(record)
    base = results[0]
    print(
        f"\n{'processes':>9} {'epoch (s)':>10} {'examples/s':>11} {'step (ms)':>10} "
        f"{'ideal step':>11} {'excess/step':>12} {'all-reduce/step':>16} {'all-reduce (ms)':>16}"
    )
    for r in results:
        ideal = base["step_ms"] * base["processes"] / r["processes"]
        r["ideal_step_ms"], r["excess_step_ms"] = ideal, r["step_ms"] - ideal
        warn = "  WARNING: epochs spread > 20%" if r["epoch_spread"] > 0.2 else ""
        print(
            f"{r['processes']:>9} {r['median_epoch_s']:>10.3f} {r['examples_per_s']:>11,.0f} "
            f"{r['step_ms']:>10.2f} {ideal:>11.2f} {r['excess_step_ms']:>12.2f} "
            f"{r['allreduce_bytes_per_step'] / 1e6:>13.2f} MB {r['allreduce_ms']:>16.2f}{warn}"
        )
    with open(os.path.join(args.out, "multiprocess_scaling.json"), "w") as f:
        json.dump(
            {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "rows": results},
            f,
            indent=2,
        )
    print(f"wrote {args.out}/multiprocess_scaling.json")


if __name__ == "__main__":
    main()
