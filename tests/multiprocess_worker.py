"""One process of a 2-process ``jax.distributed`` run on localhost (gloo), for test_multiprocess.

Usage: python multiprocess_worker.py PORT NUM_PROCESSES PROCESS_ID OUT_DIR MODE

MODE ``long``: every process trains on the whole data set for LONG_EPOCHS with
checkpoints in its own OUT_DIR/ckpt_<process> (the test kills the run after a few
epochs; only process 0 may have written).

MODE ``rest``, run after that, writes to OUT_DIR/<name>_<process>.npz: ``resume``
(every process resumes from process 0's checkpoints to two epochs past them, with the
number of epochs in ``epochs``), ``local`` (each process passes its own half of the
data, EPOCHS epochs), ``ensemble`` (fit_ensemble of two seeds on process-local data)
and ``saved`` (the log-densities of the resumed flow before and after a save and load
by this process).
"""

from __future__ import annotations

import os
import sys

import numpy as np

N, DIM, EPOCHS, BATCH, LONG_EPOCHS = 512, 2, 2, 64, 100_000


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


def saved_next_epoch(checkpoint_dir: str) -> int:
    """The epoch a resume of the training state in ``checkpoint_dir`` starts with."""
    from jaxmaf import fileformat, training

    path = os.path.join(checkpoint_dir, training.TRAIN_STATE)
    with open(path, "rb") as f:
        return int(fileformat.decode(f.read(), "train_state", path)["next_epoch"])


def main(port: int, num_processes: int, process_id: int, out: str, mode: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id)
    import jaxmaf

    x = data()
    run = dict(batch_size=BATCH, devices=jax.devices(), progress=False)
    if mode == "long":
        own_dir = os.path.join(out, f"ckpt_{process_id}")
        jaxmaf.fit(new_flow(), x, num_epochs=LONG_EPOCHS, checkpoint_dir=own_dir, **run)
        return
    shared = os.path.join(out, "ckpt_0")  # every process resumes from process 0's files
    epochs = saved_next_epoch(shared) + 2
    flow = new_flow()
    jaxmaf.fit(flow, x, num_epochs=epochs, checkpoint_dir=shared, resume=True, **run)
    np.savez(os.path.join(out, f"resume_{process_id}.npz"), *params(flow), epochs=epochs)

    path = os.path.join(out, f"saved_{process_id}.jaxmaf")  # save and load from any process
    jaxmaf.save(path, flow)
    before, after = flow.log_prob(x[:50]), jaxmaf.load(path).log_prob(x[:50])
    np.savez(os.path.join(out, f"saved_{process_id}.npz"), before=before, after=after)

    flow = new_flow()
    rows = N // num_processes
    mine = x[process_id * rows : (process_id + 1) * rows]
    jaxmaf.fit(flow, mine, num_epochs=EPOCHS, data_is_process_local=True, **run)
    np.savez(os.path.join(out, f"local_{process_id}.npz"), *params(flow))

    flows, _ = jaxmaf.fit_ensemble(
        lambda rngs: jaxmaf.MAF(DIM, 2, (16,), rngs=rngs),
        mine,
        seeds=[0, 1],
        num_epochs=EPOCHS,
        data_is_process_local=True,
        **run,
    )
    np.savez(os.path.join(out, f"ensemble_{process_id}.npz"), *params(flows[0]), *params(flows[1]))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
