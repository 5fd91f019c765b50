"""One process of a 2-process ``jax.distributed`` run on localhost (gloo), for test_multiprocess.

Usage: python multiprocess_worker.py PORT NUM_PROCESSES PROCESS_ID OUT_DIR

Runs, in this order, and writes each result's parameters to OUT_DIR/<name>_<process>.npz:
``full`` (every process passes the whole data set, EPOCHS epochs, checkpoints in
OUT_DIR/ckpt_<process>), ``resumed`` (every process resumes from process 0's
checkpoint directory to MORE_EPOCHS epochs) and ``local`` (each process passes its own
half of the data, EPOCHS epochs).
"""

from __future__ import annotations

import os
import sys

import numpy as np

N, DIM, EPOCHS, MORE_EPOCHS, BATCH = 512, 2, 2, 4, 64


def data() -> np.ndarray:
    """The global data set (the same in every process, and in the test's reference run)."""
    return np.random.default_rng(0).normal(size=(N, DIM)).astype(np.float32) * [1.0, 2.0]


def new_flow():
    from flax import nnx

    import jaxmaf

    return jaxmaf.MAF(DIM, 2, (16,), rngs=nnx.Rngs(0))


def params(flow) -> list[np.ndarray]:
    import jax
    from flax import nnx

    return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(flow, nnx.Param))]


def main(port: int, num_processes: int, process_id: int, out: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id)
    import jaxmaf

    x = data()
    run = dict(batch_size=BATCH, devices=jax.devices(), progress=False)
    flow = new_flow()
    own_dir = os.path.join(out, f"ckpt_{process_id}")
    jaxmaf.fit(flow, x, num_epochs=EPOCHS, checkpoint_dir=own_dir, **run)
    np.savez(os.path.join(out, f"full_{process_id}.npz"), *params(flow))

    flow = new_flow()  # every process resumes from the files process 0 wrote
    ckpt = os.path.join(out, "ckpt_0")
    jaxmaf.fit(flow, x, num_epochs=MORE_EPOCHS, checkpoint_dir=ckpt, resume=True, **run)
    np.savez(os.path.join(out, f"resumed_{process_id}.npz"), *params(flow))

    flow = new_flow()
    rows = N // num_processes
    mine = x[process_id * rows : (process_id + 1) * rows]
    jaxmaf.fit(flow, mine, num_epochs=EPOCHS, data_is_process_local=True, **run)
    np.savez(os.path.join(out, f"local_{process_id}.npz"), *params(flow))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
