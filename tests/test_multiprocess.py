"""Training across processes on JAX's own runtime: 2 processes on localhost (gloo collectives).

Each process runs tests/multiprocess_worker.py; the results are compared with one process
given the whole data set. Also checked: only process 0 writes checkpoints, every process
resumes from them, and process-local data (each process passes its own rows) train the
same parameters as the whole set.
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
    env.pop("XLA_FLAGS", None)  # one CPU device per process
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
    out = tmp_path_factory.mktemp("multiprocess")
    finish(launch(out, "all"))
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


def test_process_local_data_train_an_ensemble_as_the_whole_data_set(two_process_run):
    members = [load(two_process_run, "ensemble", i) for i in range(2)]
    for x, y in zip(*members, strict=True):
        np.testing.assert_array_equal(x, y)
    flows, _ = jaxmaf.fit_ensemble(
        lambda rngs: jaxmaf.MAF(worker.DIM, 2, (16,), rngs=rngs),
        worker.data(),
        seeds=[0, 1],
        num_epochs=worker.EPOCHS,
        batch_size=worker.BATCH,
        progress=False,
    )
    assert_close(members[0], worker.params(flows[0]) + worker.params(flows[1]))


def test_resume_after_a_process_is_killed(tmp_path):
    """Process 1 is killed (SIGKILL) mid-training, then process 0, which would wait for it
    in the next collective; both restart with resume=True and end where one uninterrupted
    process ends."""
    procs = launch(tmp_path, "long")
    state = tmp_path / "long" / jaxmaf.training.TRAIN_STATE
    for _ in range(HANG * 20):  # until process 0 has checkpointed a few epochs
        if any(p.poll() is not None for p in procs):
            finish(procs)  # fails with the logs
        if state.exists() and worker.saved_next_epoch(str(tmp_path / "long")) >= 3:
            break
        time.sleep(0.05)
    procs[1].kill()
    procs[1].wait()
    procs[0].kill()
    procs[0].wait()
    killed_at = worker.saved_next_epoch(str(tmp_path / "long"))
    assert 3 <= killed_at < worker.LONG_EPOCHS
    finish(launch(tmp_path, "resume"))
    with np.load(tmp_path / "resume_0.npz") as f:
        epochs = int(f["epochs"])
    assert epochs == killed_at + 2
    resumed = [load(tmp_path, "resume", i) for i in range(2)]
    for x, y in zip(*resumed, strict=True):
        np.testing.assert_array_equal(x, y)
    assert_close(resumed[0], reference(epochs))


def assert_close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def test_two_processes_train_the_one_process_parameters(two_process_run):
    full = [load(two_process_run, "full", i) for i in range(2)]
    for x, y in zip(*full, strict=True):
        np.testing.assert_array_equal(x, y)  # identical in both processes
    assert_close(full[0], reference(worker.EPOCHS))


def test_only_process_0_writes_checkpoints_and_every_process_resumes(two_process_run):
    written = set(os.listdir(two_process_run / "ckpt_0"))
    assert {jaxmaf.training.TRAIN_STATE, jaxmaf.training.BEST_FLOW} <= written
    others = two_process_run / "ckpt_1"
    assert not others.exists() or not {
        jaxmaf.training.TRAIN_STATE,
        jaxmaf.training.BEST_FLOW,
    } & set(os.listdir(others))
    resumed = [load(two_process_run, "resumed", i) for i in range(2)]
    for x, y in zip(*resumed, strict=True):
        np.testing.assert_array_equal(x, y)
    assert_close(resumed[0], reference(worker.MORE_EPOCHS))


def test_process_local_data_train_as_the_whole_data_set(two_process_run):
    local = [load(two_process_run, "local", i) for i in range(2)]
    for x, y in zip(*local, strict=True):
        np.testing.assert_array_equal(x, y)
    assert_close(local[0], reference(worker.EPOCHS))


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
