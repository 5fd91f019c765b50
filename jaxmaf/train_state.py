"""fit's checkpoints: the training state after every epoch and the best flow so far.

The training state is written in the one file format of
:mod:`jaxmaf.serialization` (atomic, checksummed, arrays keyed by path and
checked for shape and dtype on load) and is refused on resume when it was
written for another flow, run or optimizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf import fileformat, serialization
from jaxmaf.history import History
from jaxmaf.legacy import before_layer_modules

TRAIN_STATE = "train_state.msgpack"
BEST_FLOW = "best.jaxmaf"


def _describe_optimizer(opt_state) -> str:
    """The optimizer state's structure (its node types and leaf layout), to compare on resume."""
    return str(jax.tree.structure(opt_state))


def _state_types(description: str) -> list[str]:
    return re.findall(r"\b([A-Z]\w*State)\(", description)


def _differences(saved: dict, current: dict) -> str:
    keys = sorted(set(saved) | set(current))
    return "; ".join(
        f"{k}: saved {saved.get(k)!r}, this run {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    )


def is_writer() -> bool:
    """Whether this process writes checkpoints: process 0 (or the only process).

    Under ``jax.distributed`` the processes hold the same state, and on a shared file
    system they would otherwise race to write the same files.
    """
    return jax.process_index() == 0


def save_state(
    path, flow, params, opt_state, key, best_params, history, since_best, next_epoch, fingerprint
) -> None:
    """Writes fit's training state to ``path`` (atomically; read back by :func:`load_state`).

    Args:
      path: the file (``checkpoint_dir/train_state.msgpack``).
      flow: the flow being trained (its configuration is recorded).
      params: ``(parameters, other state)`` now.
      opt_state: the optimizer's state.
      key: the shuffling key.
      best_params: ``(parameters, other state)`` of the best epoch so far.
      history: the :class:`History` so far.
      since_best: epochs since the best one.
      next_epoch: the epoch a resumed run starts with.
      fingerprint: the run's settings that a resume must match.

    Under ``jax.distributed`` only process 0 writes (every process holds the same
    state); every process can read the file to resume.
    """
    if not is_writer():
        return
    payload = {
        "flow": json.dumps(serialization.config_of(flow)),
        "optimizer": _describe_optimizer(opt_state),
        "fingerprint": json.dumps(fingerprint),
        "params": fileformat.to_named_arrays(params),
        "opt_state": fileformat.to_named_arrays(opt_state),
        "best_params": fileformat.to_named_arrays(best_params),
        "key": np.asarray(jax.random.key_data(key)),
        "history": json.dumps(history.to_dict()),
        "since_best": since_best,
        "next_epoch": next_epoch,
    }
    fileformat.atomic_write(path, fileformat.encode("train_state", payload))


def load_state(path, flow, params, opt_state, key, fingerprint, history_cls=History):
    """Reads a training state written by :func:`save_state`, checking it against this run.

    Every mismatch is a ValueError that names it: the flow's configuration
    (architecture, transformer, dtype), the run (data size, batch size,
    seed), the optimizer's state structure, then each array's name, shape and
    dtype. ``history_cls`` is the dataclass the history is restored as
    (:class:`History` for :func:`jaxmaf.fit`).
    """
    source = repr(os.fspath(path))
    payload = fileformat.read(path, "train_state")
    fields = {
        "flow",
        "optimizer",
        "fingerprint",
        "params",
        "opt_state",
        "best_params",
        "key",
        "history",
        "since_best",
        "next_epoch",
    }
    if set(payload) != fields:
        raise ValueError(
            f"{source}: unexpected fields in the training state: missing "
            f"{sorted(fields - set(payload))}, unknown {sorted(set(payload) - fields)}."
        )
    texts = ("flow", "optimizer", "fingerprint", "history")
    for name in texts:
        if not isinstance(payload[name], str):
            raise ValueError(f"{source}: expected the training state's {name} as text.")
    try:
        saved_flow, saved_run, saved_history = (
            json.loads(payload[k]) for k in ("flow", "fingerprint", "history")
        )
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: a field of the training state is not JSON ({e}).") from None
    current = serialization.config_of(flow)
    if saved_flow != current and isinstance(saved_flow, dict) and isinstance(current, dict):
        raise ValueError(
            f"The checkpoint in {source} was written for a different flow: "
            f"{_differences(saved_flow, current)}."
        )
    if saved_flow != current:
        raise ValueError(f"The checkpoint in {source} was written for a different kind of flow.")
    if saved_run != fingerprint:
        raise ValueError(
            f"The checkpoint in {source} is from a different run: "
            f"{_differences(saved_run, fingerprint) if isinstance(saved_run, dict) else saved_run}."
        )
    stored = payload["params"] if isinstance(payload["params"], dict) else {}
    if before_layer_modules(str(name).partition("/")[2] for name in stored):
        raise ValueError(
            f"The checkpoint in {source} was written by an earlier jaxmaf, before a flow's layers "
            "became modules: its parameter names cannot resume this run. jaxmaf.load reads "
            "the best flow it saved (best.jaxmaf); start again without resume=True."
        )
    described = _describe_optimizer(opt_state)
    if payload["optimizer"] != described:
        raise ValueError(
            f"The checkpoint in {source} was written with a different optimizer: its state has "
            f"{_state_types(payload['optimizer'])}, this optimizer's has "
            f"{_state_types(described)}."
        )
    restored_params = fileformat.from_named_arrays(params, payload["params"], source, "parameters")
    restored_opt = fileformat.from_named_arrays(
        opt_state, payload["opt_state"], source, "optimizer state"
    )
    restored_best = fileformat.from_named_arrays(
        params, payload["best_params"], source, "best parameters"
    )
    key_data = jax.random.key_data(key)
    stored_key = payload["key"]
    if not (
        isinstance(stored_key, np.ndarray)
        and stored_key.shape == key_data.shape
        and stored_key.dtype == key_data.dtype
    ):
        raise ValueError(f"{source}: expected a random key of {key_data.dtype}{key_data.shape}.")
    history_fields = {f.name for f in dataclasses.fields(history_cls)}
    if not isinstance(saved_history, dict) or set(saved_history) != history_fields:
        raise ValueError(f"{source}: expected the history with fields {sorted(history_fields)}.")
    history = history_cls(**saved_history)
    counters = [payload["since_best"], payload["next_epoch"]]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counters):
        raise ValueError(f"{source}: expected non-negative integer epoch counters, got {counters}.")
    recorded = len(history.train_loss if hasattr(history, "train_loss") else history.elbo)
    if recorded != payload["next_epoch"]:
        raise ValueError(
            f"{source}: the history has {recorded} entries, the state says {payload['next_epoch']}."
        )
    return (
        restored_params,
        restored_opt,
        jax.random.wrap_key_data(jnp.asarray(stored_key)),
        restored_best,
        history,
        int(payload["since_best"]),
        int(payload["next_epoch"]),
    )


def check_checkpoint_dir(checkpoint_dir, flow) -> None:
    """Refuses a checkpoint directory that cannot be written, before any training."""
    path = os.fspath(checkpoint_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"Expected checkpoint_dir to be a directory, got the file {path!r}.")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(
            f"Expected a writable checkpoint_dir, got {path!r} ({e.strerror or e})."
        ) from None
    reason = serialization.check_savable(flow)
    if reason is not None:
        warnings.warn(
            f"fit will write the training state to {path!r} but not {BEST_FLOW}: {reason}",
            UserWarning,
            stacklevel=3,
        )


def save_best(checkpoint_dir, flow, best) -> None:
    """Saves ``flow`` with the best parameters as ``checkpoint_dir/best.jaxmaf`` (if savable).

    Batch norm is saved in eval mode (running averages), as it was validated.

    Args:
      checkpoint_dir: fit's checkpoint directory.
      flow: the flow being trained (its structure).
      best: ``(parameters, other state)`` of the best epoch.

    Only process 0 writes, as in :func:`save_state`.
    """
    if not is_writer() or serialization.check_savable(flow) is not None:
        return  # (an unsavable flow was warned about in check_checkpoint_dir)
    graphdef = nnx.split(flow, nnx.Param, ...)[0]
    best_flow = nnx.merge(graphdef, *best)
    best_flow.eval()  # as validated, and as fit returns it
    serialization.save(os.path.join(checkpoint_dir, BEST_FLOW), best_flow)
