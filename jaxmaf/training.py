"""Maximum-likelihood training with Optax: one compiled program per epoch."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmaf import serialization
from jaxmaf.validation import check_float, check_int

Array = jax.Array

_DEFAULT_OPTIMIZER = optax.adam(1e-3)
DEFAULT_EMA_EPOCHS = 8.0


class AveragedState(NamedTuple):
    """State of :func:`with_parameter_average`: the inner optimizer's, the average, the step."""

    inner: Any
    average: Any
    count: Array


@functools.lru_cache(maxsize=64)
def with_parameter_average(
    optimizer: optax.GradientTransformation, decay: float
) -> optax.GradientTransformation:
    """``optimizer`` that also tracks an exponential moving average of the parameters.

    After each update the average moves towards the new parameters,
    ``avg <- d avg + (1 - d) params`` with ``d = min(decay, (1 + t) / (10 + t))``
    at step ``t`` (the warm-up keeps the first steps from anchoring the average
    at the initial parameters). The updates themselves are the inner
    optimizer's, unchanged; the average lives in the state
    (``state.average``), so it is compiled into the training step, saved in
    checkpoints and vmapped over ensembles with everything else. One object
    per ``(optimizer, decay)``, so a second :func:`fit` reuses its program.

    Args:
      optimizer: any Optax transformation.
      decay: the average's decay per step, in ``[0, 1)``.

    Returns:
      the wrapped transformation (its state is an :class:`AveragedState`).

    Examples:
      >>> opt = with_parameter_average(optax.sgd(0.1), 0.5)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.ones(2)}, state, params)
      >>> state.average["w"].tolist()  # step 1: d = min(0.5, 2 / 11)
      [-0.08181818574666977, -0.08181818574666977]
    """

    def init(params):
        return AveragedState(optimizer.init(params), params, jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        updates, inner = optimizer.update(grads, state.inner, params)
        new_params = optax.apply_updates(params, updates)
        count = state.count + 1
        d = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
        average = jax.tree.map(
            lambda a, p: (d * a + (1.0 - d) * p).astype(a.dtype), state.average, new_params
        )
        return updates, AveragedState(inner, average, count)

    return optax.GradientTransformation(init, update)


def _ema_decay(ema_epochs: float | None, num_batches: int) -> float | None:
    """The per-step decay whose time constant is ``ema_epochs`` epochs (None: no average)."""
    if ema_epochs is None:
        return None
    return max(0.0, 1.0 - 1.0 / (ema_epochs * num_batches))


@dataclasses.dataclass
class History:
    """What :func:`fit` did.

    Attributes:
      train_loss: mean training NLL (nats per point) of each epoch.
      val_loss: validation NLL after each epoch (empty without validation data).
      best_epoch: index of the epoch whose parameters the flow ends with (-1:
        no epoch finished with a finite loss; the flow keeps its initial
        parameters).
      best_loss: the mean NLL of exactly those parameters, evaluated after
        that epoch (batch norm in eval mode): on the validation data if given,
        else on the whole training set. ``val_loss[e]`` is the validation NLL
        of epoch ``e``'s judged parameters (the better of the last iterate and
        the moving average), so ``best_loss == val_loss[best_epoch]``.
        (``train_loss`` is the mean over the epoch's minibatches, taken while
        the parameters were being updated, so it is not the loss of any one
        set of parameters.)
      epoch_time: wall-clock seconds of each epoch (the first includes compilation).
      wall_time: total seconds.
      stop_reason: ``"completed"``, ``"early_stopping"``, ``"non_finite"`` or
        ``"interrupted"``.
      averaged: per epoch, whether the parameters judged (and, at the best
        epoch, returned) were the moving average rather than the last
        iterate (see ``ema_epochs`` in :func:`fit`).
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    epoch_time: list[float] = dataclasses.field(default_factory=list)
    wall_time: float = 0.0
    stop_reason: str = "completed"
    averaged: list[bool] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the history."""
        return dataclasses.asdict(self)


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


def _epoch_body(
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


_STATIC = ("graphdef", "optimizer", "batch_size", "num_batches", "batch_sharding")


@functools.partial(jax.jit, static_argnames=(*_STATIC, "eval_graphdef", "averaged"))
def _train_epoch(
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
    """One epoch and its judgement, in one program (one dispatch and one sync per epoch).

    Returns the new state, the epoch's mean training loss and the NLL on
    ``judge_data`` of the last iterate and (with ``averaged``) of the
    parameter average held in the optimizer state (NaN without it).
    """
    params, rest, opt_state, key, train_loss = _epoch_body(
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
    ones = jnp.ones(judge_data.shape[0], judge_data.dtype)
    loss = _loss(params, rest, eval_graphdef, judge_data, judge_context, ones)[0]
    loss_avg = (
        _loss(opt_state.average, rest, eval_graphdef, judge_data, judge_context, ones)[0]
        if averaged
        else jnp.full_like(loss, jnp.nan)
    )
    return params, rest, opt_state, key, train_loss, jnp.stack([loss, loss_avg])


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _eval_loss(params, rest, data, context, *, graphdef):
    """Validation NLL; ``graphdef`` is the eval-mode one (batch norm uses running averages)."""
    return _loss(params, rest, graphdef, data, context, jnp.ones(data.shape[0], data.dtype))[0]


def _select(mask, new, old):
    """Per-member choice between two stacked pytrees (mask: (M,) bool)."""
    return jax.tree.map(
        lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old
    )


@functools.partial(jax.jit, static_argnames=(*_STATIC, "eval_graphdef", "averaged"))
def _ensemble_epoch(
    params,
    rest,
    opt_state,
    keys,
    best,
    best_loss,
    active,
    data,
    context,
    val_data,
    val_context,
    *,
    graphdef,
    eval_graphdef,
    optimizer,
    batch_size,
    num_batches,
    batch_sharding=None,
    averaged=False,
):
    """One epoch of every member (vmapped), validation, and best-parameter bookkeeping.

    With ``averaged``, the optimizer state holds a parameter average
    (:func:`with_parameter_average`) and each member's candidate is the better
    of its last iterate and its average.
    """
    body = functools.partial(
        _epoch_body,
        graphdef=graphdef,
        optimizer=optimizer,
        batch_size=batch_size,
        num_batches=num_batches,
        batch_sharding=batch_sharding,
    )
    new_params, new_rest, new_opt, keys, train_loss = jax.vmap(
        body, in_axes=(0, 0, 0, 0, None, None)
    )(params, rest, opt_state, keys, data, context)
    update = active & jnp.isfinite(train_loss)
    params, rest, opt_state = _select(
        update, (new_params, new_rest, new_opt), (params, rest, opt_state)
    )
    judge, judge_context = (data, context) if val_data is None else (val_data, val_context)
    evaluate = jax.vmap(lambda p, r: _eval_loss(p, r, judge, judge_context, graphdef=eval_graphdef))
    loss = evaluate(params, rest)
    candidate, use_average = params, jnp.zeros_like(update)
    if averaged:
        loss_avg = evaluate(opt_state.average, rest)
        use_average = jnp.isfinite(loss_avg) & ~(loss_avg >= loss)
        loss = jnp.where(use_average, loss_avg, loss)
        candidate = _select(use_average, opt_state.average, params)
    val_loss = loss if val_data is not None else jnp.full_like(train_loss, jnp.nan)
    improved = update & jnp.isfinite(loss) & (loss < best_loss)
    best = _select(improved, (candidate, rest), best)
    best_loss = jnp.where(improved, loss, best_loss)
    return params, rest, opt_state, keys, best, best_loss, train_loss, val_loss, use_average


def fit(
    flow: nnx.Module,
    data: Any,
    *,
    validation_data: Any = None,
    context: Any = None,
    validation_context: Any = None,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int = 256,
    num_epochs: int = 100,
    patience: int | None = None,
    ema_epochs: float | None = DEFAULT_EMA_EPOCHS,
    seed: int = 0,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> History:
    """Trains a flow in place by maximum likelihood.

    Each epoch is one compiled program: the data live on the device, are
    shuffled with ``jax.random.permutation`` and consumed by ``lax.scan``; the
    last partial batch is kept (padded with repeated points of weight 0), so
    every point counts once per epoch. A second call with the same flow
    structure, optimizer object and shapes reuses the compiled program.

    The flow ends with the parameters of the best epoch: lowest validation
    NLL, or without validation data the lowest NLL on the whole training set,
    each evaluated with the parameters as they are at the end of the epoch
    (``History.best_loss`` is that loss of the returned parameters; without
    validation data this costs one forward pass over the training set per
    epoch, about a third of the epoch's training work). A
    non-finite loss stops training with a warning; Ctrl-C stops it too; both
    keep the best parameters, and parameters with a non-finite loss are never
    kept.

    Args:
      flow: a :class:`jaxmaf.MAF` or :class:`jaxmaf.IAF` (any NNX module with
        ``dim``, ``context_dim`` and ``log_prob(x, context=)``).
      data: training points ``(N, dim)``.
      validation_data: optional ``(M, dim)``; its NLL is computed every epoch.
      context: ``(N, context_dim)`` for a conditional flow.
      validation_context: ``(M, context_dim)`` for a conditional flow.
      optimizer: an Optax transformation (default ``optax.adam(1e-3)``).
      batch_size: minibatch size >= 1 (capped at N).
      num_epochs: number of epochs >= 1.
      patience: stop when the loss that judges the best epoch (validation
        NLL, else training-set NLL) has not improved for this many epochs
        (None: never).
      ema_epochs: also keep an exponential moving average of the parameters
        with this time constant in epochs (see
        :func:`with_parameter_average`), and judge both it and the last
        iterate after every epoch: the better one is the epoch's candidate
        for the best parameters. None: the last iterate only. The average
        smooths minibatch noise out of the returned parameters: over 3 seeds
        on ``benchmarks/accuracy.py`` it lowered the test NLL by 2.0 nats on
        breast cancer, 0.67 on digits and 0.02-0.04 on three 2-d sets and
        iris, cost 1.5 +- 1.1 on wine (125 rows), and was within one
        standard error on the other 6 data sets (docs/benchmarks.md). The
        average's warm-up, ``d = min(decay, (1 + t) / (10 + t))`` at step
        ``t``, governs for the first ``9 * ema_epochs * batches_per_epoch``
        steps: until then the average spans roughly the last tenth of the
        steps taken, whatever ``ema_epochs`` says. Most runs of the accuracy
        suite stop before that point: ``ema_epochs=16`` returned the same
        parameters as 8 on all 8 of its data sets (3 seeds each).
      seed: seed of the shuffling.
      progress: show a progress bar (on a terminal or in a Jupyter notebook; never
        when the ``CI`` environment variable is set or output is captured).
      devices: data parallelism: each minibatch is split across these devices
        (a ``NamedSharding`` over a 1-D ``Mesh``; parameters replicated,
        gradients all-reduced by XLA). ``batch_size`` must be divisible by
        their number. Works the same for GPUs, TPUs or multi-host
        (``jax.distributed``) device lists.
      checkpoint_dir: write the training state there after every epoch
        (``train_state.msgpack``; atomic and checksummed, see
        :mod:`jaxmaf.serialization`) and the best flow (``best.jaxmaf``,
        loadable with :func:`jaxmaf.load`; a flow that cannot be saved, e.g.
        with a callable activation, gets a warning up front and no
        ``best.jaxmaf``). Created if missing; checked writable before any
        training.
      resume: continue from the training state in ``checkpoint_dir`` (if
        present) to the same result as an uninterrupted run.

    Returns:
      a :class:`History`.

    Raises:
      ValueError: before any training, for data of the wrong shape, empty,
        or with NaN/inf; context missing, unexpected, mismatched in length or
        width; ``batch_size < 1``; ``num_epochs < 1``; ``patience < 1``
        (bools are refused for all three); ``seed`` not an integer >= 0; an
        ``optimizer`` without Optax's ``init``/``update``;
        ``batch_size`` not divisible by the number of devices;
        ``checkpoint_dir`` that is a file or cannot be written; ``resume``
        without ``checkpoint_dir``; ``resume`` from a training state that is
        corrupted or truncated (the file is named), or was written for
        another flow (architecture, transformer, dtype), run (data size,
        batch size, seed) or optimizer: the message names what differs.
        A refused call leaves the flow untouched.

    Examples:
      >>> x = np.random.default_rng(0).normal(size=(512, 2)).astype(np.float32)
      >>> flow = jaxmaf.MAF(2, 4, (64, 64), rngs=nnx.Rngs(0))
      >>> history = jaxmaf.fit(flow, x[:384], validation_data=x[384:], num_epochs=3,
      ...                      progress=False)
      >>> history.best_epoch == int(np.argmin(history.val_loss))
      True
    """
    run = _prepare(
        flow,
        data,
        validation_data,
        context,
        validation_context,
        batch_size,
        num_epochs,
        patience,
        devices,
    )
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir= (where the training state is).")
    seed = check_int("seed", seed, minimum=0)
    if ema_epochs is not None:
        ema_epochs = check_float("ema_epochs", ema_epochs, low=0.0)
    if optimizer is not None and not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise ValueError(
            "Expected optimizer to be an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
            f"got {optimizer!r}."
        )
    optimizer = optimizer or _DEFAULT_OPTIMIZER
    decay = _ema_decay(ema_epochs, run.num_batches)
    if decay is not None:
        optimizer = with_parameter_average(optimizer, decay)
    graphdef, eval_graphdef, params, rest = _split_modes(flow)
    opt_state = optimizer.init(params)
    key = jax.random.key(seed)
    history = History()
    best, since_best, start_epoch = (params, rest), 0, 0
    fingerprint = dict(
        n=run.n, batch_size=run.batch_size, seed=seed, dim=flow.dim, ema_epochs=ema_epochs
    )
    ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, TRAIN_STATE)
    if ckpt is not None:
        _check_checkpoint_dir(checkpoint_dir, flow)
    if resume and os.path.exists(ckpt):
        (params, rest), opt_state, key, best, history, since_best, start_epoch = _load_state(
            ckpt, flow, (params, rest), opt_state, key, fingerprint
        )
    if run.replicated is not None:
        params, rest, opt_state, best = jax.device_put(
            (params, rest, opt_state, best), run.replicated
        )

    judge = (run.data, run.context) if run.val_data is None else (run.val_data, run.val_context)
    bar = _progress_bar(num_epochs, start_epoch) if progress else None
    start = time.perf_counter() - history.wall_time
    try:
        for epoch in range(start_epoch, num_epochs):
            if patience is not None and since_best >= patience:
                history.stop_reason = "early_stopping"
                break
            t0 = time.perf_counter()
            new_params, new_rest, new_opt_state, new_key, train_loss, losses = _train_epoch(
                params,
                rest,
                opt_state,
                key,
                run.data,
                run.context,
                *judge,
                graphdef=graphdef,
                eval_graphdef=eval_graphdef,
                optimizer=optimizer,
                batch_size=run.batch_size,
                num_batches=run.num_batches,
                batch_sharding=run.batch_sharding,
                averaged=decay is not None,
            )
            train_loss = float(train_loss)
            if not math.isfinite(train_loss):
                history.stop_reason = "non_finite"
                warnings.warn(
                    f"Training loss became {train_loss} at epoch {epoch}; stopped and kept the "
                    f"parameters of epoch {history.best_epoch}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            params, rest, opt_state, key = new_params, new_rest, new_opt_state, new_key
            history.train_loss.append(train_loss)
            # judged on the validation data, else on the whole training set (the parameters
            # kept are judged by their own loss, not by the epoch's running mean)
            loss, loss_avg = (float(v) for v in np.asarray(losses))
            candidate, averaged = (params, rest), False
            if math.isfinite(loss_avg) and not loss_avg >= loss:  # NaN raw: take the average
                loss, candidate, averaged = loss_avg, (opt_state.average, rest), True
            history.averaged.append(averaged)
            if run.val_data is not None:
                history.val_loss.append(loss)
            history.epoch_time.append(time.perf_counter() - t0)
            if math.isfinite(loss) and loss < history.best_loss:
                history.best_loss, history.best_epoch, best = loss, epoch, candidate
                since_best = 0
            else:
                since_best += 1
            history.wall_time = time.perf_counter() - start
            if ckpt is not None:
                _save_state(
                    ckpt,
                    flow,
                    (params, rest),
                    opt_state,
                    key,
                    best,
                    history,
                    since_best,
                    epoch + 1,
                    fingerprint,
                )
                if history.best_epoch == epoch:
                    _save_best(checkpoint_dir, flow, best)
            if bar is not None:
                bar.update(1)
                postfix = {"train": f"{train_loss:.4f}"}
                if history.val_loss:
                    postfix["val"] = f"{history.val_loss[-1]:.4f}"
                bar.set_postfix(postfix)
    except KeyboardInterrupt:
        history.stop_reason = "interrupted"
    finally:
        if bar is not None:
            bar.close()
        if history.best_epoch >= 0:
            nnx.update(flow, *best)
        history.wall_time = time.perf_counter() - start
    return history


def fit_ensemble(
    make_flow: Callable[[nnx.Rngs], nnx.Module],
    data: Any,
    *,
    seeds: Sequence[int],
    learning_rate: float | Sequence[float] = 1e-3,
    optimizer: Callable[..., optax.GradientTransformation] = optax.adam,
    validation_data: Any = None,
    context: Any = None,
    validation_context: Any = None,
    batch_size: int = 256,
    num_epochs: int = 100,
    patience: int | None = None,
    ema_epochs: float | None = DEFAULT_EMA_EPOCHS,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
) -> tuple[list[nnx.Module], list[History]]:
    """Trains one flow per seed, all members in ONE compiled program (``jax.vmap``).

    Member ``i`` is built with ``make_flow(nnx.Rngs(seeds[i]))``, shuffles its
    data with ``seeds[i]`` and uses ``optimizer(learning_rate=lr_i)``, so it
    matches ``fit(make_flow(nnx.Rngs(s)), ..., optimizer=optimizer(lr_i),
    seed=s)`` to float tolerance. The learning rate is a per-member array
    (``optax.inject_hyperparams``), so members may differ. Early stopping and
    divergence are handled per member (a stopped member's parameters are
    frozen at its best); the loop ends when every member has stopped.

    Args:
      make_flow: ``rngs -> flow``; every member must have the same structure.
      data: training points ``(N, dim)`` shared by all members.
      seeds: one seed per member (parameter initialisation and shuffling).
      learning_rate: a float for all members or one per member.
      optimizer: an Optax optimizer factory taking ``learning_rate=``.
      validation_data: as in :func:`fit`.
      context: as in :func:`fit`.
      validation_context: as in :func:`fit`.
      batch_size: as in :func:`fit`.
      num_epochs: as in :func:`fit`.
      patience: as in :func:`fit`, per member.
      ema_epochs: as in :func:`fit`, per member (each keeps its own average).
      progress: as in :func:`fit`.
      devices: as in :func:`fit` (every member's batch is split across them).

    Returns:
      ``(flows, histories)``: ordinary flows with each member's best
      parameters, and one :class:`History` each.

    Raises:
      ValueError: as :func:`fit`; no seeds, or a seed that is not an
        integer >= 0; a learning rate that is not finite and > 0, or a list
        of the wrong length; an ``optimizer`` that is not a factory;
        members whose structures differ.

    Examples:
      >>> x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
      >>> make = lambda rngs: jaxmaf.MAF(2, 4, (16, 16), rngs=rngs)
      >>> flows, hists = jaxmaf.fit_ensemble(make, x, seeds=range(2), num_epochs=2,
      ...                                    progress=False)
      >>> len(flows), [h.best_epoch >= 0 for h in hists]
      (2, [True, True])
    """
    seeds = [check_int("seeds entry", s, minimum=0) for s in seeds]
    if ema_epochs is not None:
        ema_epochs = check_float("ema_epochs", ema_epochs, low=0.0)
    if not seeds:
        raise ValueError("Expected at least one seed, got none.")
    lrs = [learning_rate] * len(seeds) if np.ndim(learning_rate) == 0 else list(learning_rate)
    lrs = [check_float("learning_rate", v, low=0.0) for v in lrs]
    if not callable(optimizer):
        raise ValueError(
            f"Expected optimizer to be an Optax factory taking learning_rate= (e.g. optax.adam), "
            f"got {optimizer!r}."
        )
    if len(lrs) != len(seeds):
        raise ValueError(f"Expected {len(seeds)} learning rates (one per seed), got {len(lrs)}.")
    flows = [make_flow(nnx.Rngs(s)) for s in seeds]
    run = _prepare(
        flows[0],
        data,
        validation_data,
        context,
        validation_context,
        batch_size,
        num_epochs,
        patience,
        devices,
    )
    splits = [_split_modes(f) for f in flows]
    graphdef, eval_graphdef = splits[0][:2]
    for i, (g, *_) in enumerate(splits):
        if g != graphdef:
            raise ValueError(
                f"Ensemble member {i} (seed {seeds[i]}) differs in structure from "
                "member 0 (e.g. random orders or masks); members must match."
            )
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    params, rest = stack([p for *_, p, _ in splits]), stack([r for *_, r in splits])
    opt = _with_learning_rate_state(optimizer)
    decay = _ema_decay(ema_epochs, run.num_batches)
    if decay is not None:
        opt = with_parameter_average(opt, decay)
    opt_state = jax.vmap(opt.init)(params)
    hyperparams = (opt_state if decay is None else opt_state.inner).hyperparams
    hyperparams["learning_rate"] = jnp.asarray(lrs, jax.tree.leaves(params)[0].dtype)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    m = len(seeds)
    best, best_loss = (params, rest), jnp.full((m,), jnp.inf, jax.tree.leaves(params)[0].dtype)
    active = np.ones(m, bool)
    histories = [History() for _ in seeds]
    since_best = np.zeros(m, int)
    if run.replicated is not None:
        params, rest, opt_state, best = jax.device_put(
            (params, rest, opt_state, best), run.replicated
        )
    bar = _progress_bar(num_epochs) if progress else None
    start = time.perf_counter()
    try:
        for epoch in range(num_epochs):
            t0 = time.perf_counter()
            params, rest, opt_state, keys, best, best_loss, tl, vl, avg = _ensemble_epoch(
                params,
                rest,
                opt_state,
                keys,
                best,
                best_loss,
                jnp.asarray(active),
                run.data,
                run.context,
                run.val_data,
                run.val_context,
                graphdef=graphdef,
                eval_graphdef=eval_graphdef,
                optimizer=opt,
                batch_size=run.batch_size,
                num_batches=run.num_batches,
                batch_sharding=run.batch_sharding,
                averaged=decay is not None,
            )
            tl, vl, bl, avg = (np.asarray(a) for a in (tl, vl, best_loss, avg))
            dt = time.perf_counter() - t0
            for i, h in enumerate(histories):
                if not active[i]:
                    continue
                if not math.isfinite(tl[i]):
                    h.stop_reason, active[i] = "non_finite", False
                    warnings.warn(
                        f"Ensemble member {i}: training loss became {tl[i]} at epoch "
                        f"{epoch}; kept its epoch {h.best_epoch}.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    continue
                h.train_loss.append(float(tl[i]))
                h.averaged.append(bool(avg[i]))
                if run.val_data is not None:
                    h.val_loss.append(float(vl[i]))
                h.epoch_time.append(dt)
                if bl[i] < h.best_loss:
                    h.best_loss, h.best_epoch, since_best[i] = float(bl[i]), epoch, 0
                else:
                    since_best[i] += 1
                if patience is not None and since_best[i] >= patience and epoch < num_epochs - 1:
                    h.stop_reason, active[i] = "early_stopping", False
            if bar is not None:
                bar.update(1)
                bar.set_postfix({"active": int(active.sum()), "best": f"{np.nanmin(bl):.4f}"})
            if not active.any():
                break
    except KeyboardInterrupt:
        for h in histories:
            h.stop_reason = "interrupted" if h.stop_reason == "completed" else h.stop_reason
    finally:
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - start
        for i, (flow, h) in enumerate(zip(flows, histories, strict=True)):
            h.wall_time = wall
            if h.best_epoch >= 0:
                nnx.update(flow, *jax.tree.map(lambda a, i=i: a[i], best))
    return flows, histories


@functools.lru_cache(maxsize=32)
def _with_learning_rate_state(optimizer: Callable[..., optax.GradientTransformation]):
    """``optimizer`` with its learning rate held in the optimizer state.

    One object per factory, so the compiled ensemble program is reused across calls.
    """
    return optax.inject_hyperparams(optimizer)(learning_rate=1e-3)


def _split_modes(flow):
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
class _Run:
    data: Array
    context: Array | None
    val_data: Array | None
    val_context: Array | None
    n: int
    batch_size: int
    num_batches: int
    batch_sharding: Any
    replicated: Any


def _prepare(
    flow,
    data,
    validation_data,
    context,
    validation_context,
    batch_size,
    num_epochs,
    patience,
    devices,
) -> _Run:
    """Validates every input (before any training) and places the data on the device(s)."""
    dim, context_dim = flow.dim, getattr(flow, "context_dim", 0)
    data = check_data(data, dim)
    context = _check_context(context, context_dim, len(data), "context")
    if validation_data is not None:
        validation_data = check_data(validation_data, dim, "validation_data")
        validation_context = _check_context(
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
    batch_size = min(int(batch_size), data.shape[0])
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
        a = jnp.asarray(a, dtype)
        return a if replicated is None else jax.device_put(a, replicated)

    return _Run(
        put(data),
        put(context),
        put(validation_data),
        put(validation_context),
        int(data.shape[0]),
        batch_size,
        -(-data.shape[0] // batch_size),
        batch_sharding,
        replicated,
    )


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


def _save_state(
    path, flow, params, opt_state, key, best_params, history, since_best, next_epoch, fingerprint
):
    payload = {
        "flow": json.dumps(serialization.config_of(flow)),
        "optimizer": _describe_optimizer(opt_state),
        "fingerprint": json.dumps(fingerprint),
        "params": serialization.to_named_arrays(params),
        "opt_state": serialization.to_named_arrays(opt_state),
        "best_params": serialization.to_named_arrays(best_params),
        "key": np.asarray(jax.random.key_data(key)),
        "history": json.dumps(history.to_dict()),
        "since_best": since_best,
        "next_epoch": next_epoch,
    }
    serialization.atomic_write(path, serialization.encode("train_state", payload))


def _load_state(path, flow, params, opt_state, key, fingerprint):
    """Reads a training state written by :func:`_save_state`, checking it against this run.

    Every mismatch is a ValueError that names it: the flow's configuration
    (architecture, transformer, dtype), the run (data size, batch size,
    seed), the optimizer's state structure, then each array's name, shape and
    dtype.
    """
    source = repr(os.fspath(path))
    payload = serialization.read(path, "train_state")
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
    described = _describe_optimizer(opt_state)
    if payload["optimizer"] != described:
        raise ValueError(
            f"The checkpoint in {source} was written with a different optimizer: its state has "
            f"{_state_types(payload['optimizer'])}, this optimizer's has "
            f"{_state_types(described)}."
        )
    restored_params = serialization.from_named_arrays(
        params, payload["params"], source, "parameters"
    )
    restored_opt = serialization.from_named_arrays(
        opt_state, payload["opt_state"], source, "optimizer state"
    )
    restored_best = serialization.from_named_arrays(
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
    history_fields = {f.name for f in dataclasses.fields(History)}
    if not isinstance(saved_history, dict) or set(saved_history) != history_fields:
        raise ValueError(f"{source}: expected the history with fields {sorted(history_fields)}.")
    history = History(**saved_history)
    counters = [payload["since_best"], payload["next_epoch"]]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counters):
        raise ValueError(f"{source}: expected non-negative integer epoch counters, got {counters}.")
    if len(history.train_loss) != payload["next_epoch"]:
        raise ValueError(
            f"{source}: the history has {len(history.train_loss)} epochs, the state says "
            f"{payload['next_epoch']}."
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


def _check_checkpoint_dir(checkpoint_dir, flow) -> None:
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


def _save_best(checkpoint_dir, flow, best):
    if serialization.check_savable(flow) is not None:  # warned about in _check_checkpoint_dir
        return
    graphdef = nnx.split(flow, nnx.Param, ...)[0]
    serialization.save(os.path.join(checkpoint_dir, BEST_FLOW), nnx.merge(graphdef, *best))


def _check_context(context: Any, context_dim: int, n: int, name: str) -> np.ndarray | None:
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


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Jupyter, VS Code, Colab): tqdm draws a widget."""
    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # noqa: BLE001 - a broken IPython install is not ours to report
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _progress_bar(total: int, initial: int = 0):
    """A tqdm bar on a terminal or in a notebook; None under CI or when output is captured."""
    if os.environ.get("CI") or not (sys.stderr.isatty() or _in_notebook()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, initial=initial, desc="fit", unit="epoch", leave=False)
