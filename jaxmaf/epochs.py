"""The compiled epoch of maximum-likelihood training, and the checks and placement before it.

Shared by :func:`jaxmaf.fit` and :func:`jaxmaf.fit_ensemble`: the inputs are
validated before any training (:func:`prepare`), the data are placed on the
device(s) once, and each epoch (shuffle, minibatch ``lax.scan``, the per-point
NLLs that judge it) is one compiled program (:func:`train_epoch`, bound by
:func:`jaxmaf.programs.bind`); its comparison with the kept parameters is
another, small one (:func:`epoch_stats`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmaf.programs import bind

Array = jax.Array


def check_data(data: Any, dim: int, name: str = "data") -> np.ndarray:
    """Validates a training array ``(N, dim)``: non-empty, right width, finite.

    Args:
      data: array-like of shape ``(N, dim)``.
      dim: expected width.
      name: name used in error messages.

    Returns:
      the data as a numpy array.

    Raises:
      ValueError: complex or non-numeric values; not 2-D, wrong
        width, empty, or with NaN/inf (the first offending rows are named).

    Examples:
      >>> check_data(np.zeros((3, 2)), 2).shape
      (3, 2)
    """
    arr = np.asarray(data)
    if np.iscomplexobj(arr):
        raise ValueError(f"Expected real {name}, got complex values (dtype {arr.dtype}).")
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"Expected numeric {name}, got dtype {arr.dtype}.")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"Expected {name} of shape (N, {dim}), got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"Expected a non-empty {name}, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64 if jax.config.jax_enable_x64 else np.float32)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        rows = ", ".join(map(str, bad[:10])) + (", ..." if bad.size > 10 else "")
        raise ValueError(
            f"{name} contains NaN or inf in {bad.size} row(s) (rows {rows}); "
            "expected finite values."
        )
    return arr


def _loss(params, rest, graphdef, x, c, w):
    """Weighted mean NLL, and the non-parameter state after the pass (batch-norm statistics)."""
    flow = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables at this trace level
    lp = flow.update_batch_stats(x, context=c)  # log_prob; batch norm moves its averages
    return -jnp.sum(w * lp) / jnp.sum(w), nnx.split(flow, nnx.Param, ...)[2]


def epoch_body(
    params,
    rest,
    opt_state,
    key,
    data,
    context,
    graphdef,
    optimizer,
    batch_size,
    num_batches,
    batch_sharding,
):
    """One epoch: shuffle on device, scan over minibatches (the last one padded and weighted)."""
    key, sub = jax.random.split(key)
    n = data.shape[0]
    perm = jax.random.permutation(sub, n)
    total = num_batches * batch_size
    idx = jnp.concatenate([perm, perm[: total - n]]) if total > n else perm
    weights = (jnp.arange(total) < n).astype(data.dtype).reshape(num_batches, batch_size)
    idx = idx.reshape(num_batches, batch_size)

    def step(carry, batch):
        params, rest, opt_state = carry
        bidx, w = batch
        x, c = data[bidx], None if context is None else context[bidx]
        if batch_sharding is not None:  # data parallel: each device takes a slice of the batch
            x, w = jax.lax.with_sharding_constraint((x, w), batch_sharding)
            c = None if c is None else jax.lax.with_sharding_constraint(c, batch_sharding)
        (loss, rest), grads = jax.value_and_grad(_loss, has_aux=True)(
            params, rest, graphdef, x, c, w
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, rest, opt_state), loss * jnp.sum(w)

    (params, rest, opt_state), losses = jax.lax.scan(
        step, (params, rest, opt_state), (idx, weights)
    )
    return params, rest, opt_state, key, jnp.sum(losses) / n


def train_epoch(
    params,
    rest,
    opt_state,
    key,
    data,
    context,
    judge_data,
    judge_context,
    *,
    graphdef,
    eval_graphdef,
    optimizer,
    batch_size,
    num_batches,
    batch_sharding=None,
    averaged=False,
):
    """One epoch and the per-point NLLs that judge it, in one program.

    Compiled by :func:`jaxmaf.programs.bind`, once per run's static choices.

    Returns the new state, the epoch's mean training loss, and ``rows``: the
    per-point NLLs on ``judge_data`` of the last iterate and (with ``averaged``)
    of the parameter average held in the optimizer state (NaN without it),
    each ``(M,)``. :func:`epoch_stats` compares them with the kept parameters'.
    """
    params, rest, opt_state, key, train_loss = epoch_body(
        params,
        rest,
        opt_state,
        key,
        data,
        context,
        graphdef,
        optimizer,
        batch_size,
        num_batches,
        batch_sharding,
    )
    rows = _rows(params, rest, eval_graphdef, judge_data, judge_context)
    rows_avg = (
        _rows(opt_state.average, rest, eval_graphdef, judge_data, judge_context)
        if averaged
        else jnp.full_like(rows, jnp.nan)
    )
    return params, rest, opt_state, key, train_loss, (rows, rows_avg)


@jax.jit
def epoch_stats(rows, kept_rows):
    """``(2, 3)``: :func:`against` ``kept_rows`` for each of an epoch's two candidates.

    A program of its own, not part of the epoch's: :func:`jaxmaf.fit` dispatches the
    next epoch before it decides whether this one's parameters are kept, and so
    before it knows the rows the epoch after that is judged against.
    """
    return jnp.stack([against(rows[0], kept_rows), against(rows[1], kept_rows)])


def _rows(params, rest, graphdef, x, c):
    """Per-point NLL ``(M,)`` (``graphdef`` in eval mode: batch norm uses running averages)."""
    flow = nnx.merge(graphdef, params, rest, copy=True)
    return -flow.update_batch_stats(x, context=c)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def judge_rows(params, rest, data, context, *, graphdef):
    """Per-point NLL ``(M,)`` of ``data``; ``graphdef`` is the eval-mode one."""
    return _rows(params, rest, graphdef, data, context)


def against(rows, kept_rows):
    """``[mean NLL, mean gain over the kept rows, its standard error]`` of a candidate.

    The gain is paired point by point (``kept_rows - rows``), so the standard
    error measures how much the two parameter sets disagree, not how spread
    the points are.
    """
    gain = kept_rows - rows
    m = gain.shape[-1]
    se = jnp.std(gain, axis=-1) / jnp.sqrt(max(m - 1, 1))
    return jnp.stack([jnp.mean(rows, axis=-1), jnp.mean(gain, axis=-1), se], axis=-1)


def split_modes(flow):
    """(train graphdef, eval graphdef, parameters, other state) of a flow; its mode is kept.

    The two graph definitions differ only for flows with batch norm, which
    trains on batch statistics and validates on running averages.
    """
    batch_norms = list(getattr(flow, "batch_norms", ()))
    modes = [bn.use_running_average for bn in batch_norms]
    flow.eval()
    eval_graphdef = nnx.split(flow, nnx.Param, ...)[0]
    flow.train()
    train_graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    for bn, mode in zip(batch_norms, modes, strict=True):
        bn.use_running_average = mode
    return train_graphdef, eval_graphdef, params, rest


@dataclasses.dataclass
class Run:
    """A validated training run: its data on the device(s) and its batching."""

    data: Array
    context: Array | None
    val_data: Array | None
    val_context: Array | None
    n: int
    batch_size: int
    num_batches: int
    batch_sharding: Any
    replicated: Any

    def bind(self, epoch, graphdef, eval_graphdef, optimizer, averaged: bool):
        """``epoch`` (:func:`train_epoch` or the ensemble's) compiled with this run's choices."""
        return bind(
            epoch,
            graphdef=graphdef,
            eval_graphdef=eval_graphdef,
            optimizer=optimizer,
            batch_size=self.batch_size,
            num_batches=self.num_batches,
            batch_sharding=self.batch_sharding,
            averaged=averaged,
        )


def prepare(
    flow,
    data,
    validation_data,
    context,
    validation_context,
    batch_size,
    num_epochs,
    patience,
    devices,
    data_is_process_local=False,
) -> Run:
    """Validates every input (before any training) and places the data on the device(s).

    With ``data_is_process_local`` each process passed its own rows (``jax.distributed``):
    the global arrays are their concatenation in process order, sharded by rows across
    ``devices``, so training sees the same data set as one process given all of it.
    """
    dim, context_dim = flow.dim, getattr(flow, "context_dim", 0)
    data = check_data(data, dim)
    context = check_context_rows(context, context_dim, len(data), "context")
    if validation_data is not None:
        validation_data = check_data(validation_data, dim, "validation_data")
        validation_context = check_context_rows(
            validation_context, context_dim, len(validation_data), "validation_context"
        )
    elif validation_context is not None:
        raise ValueError("Got validation_context without validation_data.")
    for name, value in (("batch_size", batch_size), ("num_epochs", num_epochs)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"Expected {name} to be an integer >= 1, got {value!r}.")
    if patience is not None and (
        isinstance(patience, bool) or not isinstance(patience, int | np.integer) or patience < 1
    ):
        raise ValueError(f"Expected patience to be None or an integer >= 1, got {patience!r}.")
    if not isinstance(data_is_process_local, bool):
        raise ValueError(
            f"Expected data_is_process_local to be True or False, got {data_is_process_local!r}."
        )
    n = data.shape[0]
    if data_is_process_local:
        if devices is None:
            raise ValueError(
                "data_is_process_local=True needs devices= (the global device list, "
                "jax.devices(), over which each process's rows are sharded)."
            )
        n = _global_rows(data, validation_data, devices)
    batch_size = min(int(batch_size), n)
    batch_sharding = replicated = None
    if devices is not None:
        devices = list(devices)
        if not devices:
            raise ValueError("Expected a non-empty list of devices, got [].")
        if batch_size % len(devices):
            raise ValueError(
                f"Expected batch_size divisible by the number of devices ({len(devices)}), "
                f"got {batch_size}."
            )
        mesh = Mesh(np.asarray(devices), ("data",))
        batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        replicated = NamedSharding(mesh, PartitionSpec())
    dtype = jax.tree.leaves(nnx.state(flow, nnx.Param))[0].dtype

    def put(a):
        if a is None:
            return None
        if data_is_process_local:
            return jax.make_array_from_process_local_data(batch_sharding, np.asarray(a, dtype))
        a = jnp.asarray(a, dtype)
        return a if replicated is None else jax.device_put(a, replicated)

    return Run(
        put(data),
        put(context),
        put(validation_data),
        put(validation_context),
        int(n),
        batch_size,
        -(-n // batch_size),
        batch_sharding,
        replicated,
    )


def _global_rows(data, validation_data, devices) -> int:
    """The global number of rows of process-local data; every process must hold as many."""
    from jax.experimental import multihost_utils

    local = [len(data), 0 if validation_data is None else len(validation_data)]
    counts = np.asarray(multihost_utils.process_allgather(np.asarray(local)))
    counts = counts.reshape(-1, 2)
    per_process = len(devices) // max(1, jax.process_count())
    for column, name in ((0, "data"), (1, "validation_data")):
        rows = counts[:, column]
        if np.any(rows != rows[0]) or rows[0] % per_process:
            raise ValueError(
                f"With data_is_process_local=True every process must pass the same number of "
                f"{name} rows, divisible by its {per_process} local device(s); got "
                f"{rows.tolist()} (process 0 first)."
            )
    return int(counts[:, 0].sum())


def place(tree: Any, sharding: Any) -> Any:
    """``jax.device_put(tree, sharding)``, PRNG keys included.

    A key's raw data is put and wrapped again: under ``jax.distributed`` a key array
    itself cannot be put on other processes' devices.
    """

    def put(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            data = jax.device_put(jax.random.key_data(leaf), sharding)
            return jax.random.wrap_key_data(data, impl=impl)
        return jax.device_put(leaf, sharding)

    return jax.tree.map(put, tree)


def check_context_rows(context: Any, context_dim: int, n: int, name: str) -> np.ndarray | None:
    """Validates a training context: ``(n, context_dim)`` for a conditional flow, else None.

    Args:
      context: what the caller passed.
      context_dim: the flow's context width (0: unconditional).
      n: number of data rows the context must match.
      name: argument name for the error messages.

    Returns:
      the context as a numpy array, or None for an unconditional flow.

    Raises:
      ValueError: a context for an unconditional flow, none for a conditional
        one, or one of the wrong shape, length or values (see :func:`check_data`).
    """
    if context_dim == 0:
        if context is not None:
            raise ValueError(f"Got {name}, but the flow is unconditional (context_dim=0).")
        return None
    if context is None:
        raise ValueError(
            f"The flow is conditional (context_dim={context_dim}): {name} of shape "
            f"(N, {context_dim}) is required, got None."
        )
    context = check_data(context, context_dim, name)
    if len(context) != n:
        raise ValueError(f"Expected {name} with {n} rows (one per data point), got {len(context)}.")
    return context
