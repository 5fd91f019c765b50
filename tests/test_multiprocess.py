"""Training across processes on JAX's own runtime: 2 processes on localhost (gloo collectives).

Each process runs tests/multiprocess_worker.py; the results are compared with one process
given the whole data set. Checked: only process 0 writes checkpoints; after a process is
killed every process resumes from them to the one-process parameters; save and load work
from every process; process-local data (each process passes its own rows) train the same
parameters, for fit and fit_ensemble, as the whole set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

import jaxmaf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import multiprocess_worker as worker  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(out, mode: str) -> list[subprocess.Popen]:
    """Two worker processes on localhost, one CPU device each."""
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # one CPU device and one compute thread per process: two processes and the other test
    # worker share this machine's cores
    env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    script = os.path.join(HERE, "multiprocess_worker.py")
    return [
        subprocess.Popen(
            [sys.executable, script, str(port), "2", str(i), str(out), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def finish(procs: list[subprocess.Popen]) -> None:
    """Waits for the workers; fails with their logs if one failed."""
    logs = []
    for p in procs:  # a generous bound only against a hang (a peer dying mid-collective)
        try:
            logs.append(p.communicate(timeout=HANG)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the 2-process run did not finish")
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"process {i} failed:\n{log[-3000:]}"


HANG = 900


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """Two processes train; process 1 is killed (SIGKILL) mid-training, then process 0,
    which would wait for it in the next collective; both restart and resume, then train on
    process-local data (see multiprocess_worker.py)."""
    out = tmp_path_factory.mktemp("multiprocess")
    procs = launch(out, "long")
    state = out / "ckpt_0" / jaxmaf.training.TRAIN_STATE
    for _ in range(HANG * 20):  # until process 0 has checkpointed a few epochs
        if any(p.poll() is not None for p in procs):
            finish(procs)  # fails with the logs
        if state.exists() and worker.saved_next_epoch(str(out / "ckpt_0")) >= 3:
            break
        time.sleep(0.05)
    procs[1].kill()
    procs[1].wait()
    procs[0].kill()
    procs[0].wait()
    finish(launch(out, "rest"))
    return out


def load(out, name, process):
    with np.load(os.path.join(out, f"{name}_{process}.npz")) as f:
        arrays = [k for k in f.files if k.startswith("arr_")]
        return [f[k] for k in sorted(arrays, key=lambda k: int(k.split("_")[1]))]


def reference(num_epochs):
    """One process, one device, the whole data set."""
    flow = worker.new_flow()
    jaxmaf.fit(flow, worker.data(), num_epochs=num_epochs, batch_size=worker.BATCH, progress=False)
    return worker.params(flow)


def assert_close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def assert_identical_in_both(out, name):
    results = [load(out, name, i) for i in range(2)]
    for x, y in zip(*results, strict=True):
        np.testing.assert_array_equal(x, y)
    return results[0]


def test_only_process_0_writes_checkpoints(two_process_run):
    files = {jaxmaf.training.TRAIN_STATE, jaxmaf.training.BEST_FLOW}
    assert files <= set(os.listdir(two_process_run / "ckpt_0"))
    others = two_process_run / "ckpt_1"
    assert not others.exists() or not files & set(os.listdir(others))


def test_resume_after_a_process_is_killed_reaches_the_one_process_parameters(two_process_run):
    with np.load(two_process_run / "resume_0.npz") as f:
        epochs = int(f["epochs"])
    assert 5 <= epochs < worker.LONG_EPOCHS
    assert_close(assert_identical_in_both(two_process_run, "resume"), reference(epochs))


def test_save_and_load_work_from_every_process(two_process_run):
    for i in range(2):
        with np.load(two_process_run / f"saved_{i}.npz") as f:
            np.testing.assert_array_equal(f["before"], f["after"])


def test_process_local_data_train_as_the_whole_data_set(two_process_run):
    local = assert_identical_in_both(two_process_run, "local")
    assert_close(local, reference(worker.EPOCHS))


def test_process_local_data_train_an_ensemble_as_the_whole_data_set(two_process_run):
    members = assert_identical_in_both(two_process_run, "ensemble")
    flows, _ = jaxmaf.fit_ensemble(
        lambda rngs: jaxmaf.MAF(worker.DIM, 2, (16,), rngs=rngs),
        worker.data(),
        seeds=[0, 1],
        num_epochs=worker.EPOCHS,
        batch_size=worker.BATCH,
        progress=False,
    )
    assert_close(members, worker.params(flows[0]) + worker.params(flows[1]))


def test_process_local_data_needs_devices_and_refuses_standardize():
    flow = jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0))
    x = worker.data()
    with pytest.raises(ValueError, match="needs devices="):
        jaxmaf.fit(flow, x, num_epochs=1, data_is_process_local=True, progress=False)
    with pytest.raises(ValueError, match="standardise each process by its own rows"):
        jaxmaf.fit(
            flow,
            x,
            num_epochs=1,
            data_is_process_local=True,
            standardize=True,
            devices=jax.devices(),
            progress=False,
        )
