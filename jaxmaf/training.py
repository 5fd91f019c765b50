"""Maximum-likelihood training with Optax: one compiled program per epoch."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

Array = jax.Array

_DEFAULT_OPTIMIZER = optax.adam(1e-3)


@dataclasses.dataclass
class History:
    """What :func:`fit` did.

    Attributes:
      train_loss: mean training NLL (nats per point) of each epoch.
      val_loss: validation NLL after each epoch (empty without validation data).
      best_epoch: index of the epoch whose parameters the flow ends with.
      best_loss: the loss (validation if given, else training) of that epoch.
      epoch_time: wall-clock seconds of each epoch (the first includes compilation).
      wall_time: total seconds.
      stop_reason: ``"completed"``, ``"early_stopping"``, ``"non_finite"`` or
        ``"interrupted"``.
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    epoch_time: list[float] = dataclasses.field(default_factory=list)
    wall_time: float = 0.0
    stop_reason: str = "completed"

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
      ValueError: not 2-D, wrong width, empty, or with NaN/inf (the first
        offending rows are named).

    Example:
      >>> check_data(np.zeros((3, 2)), 2).shape
      (3, 2)
    """
    arr = np.asarray(data)
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


def _loss(params, graphdef, x, c, w):
    flow = nnx.merge(graphdef, params)
    lp = flow.log_prob(x, context=c)
    return -jnp.sum(w * lp) / jnp.sum(w)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "optimizer", "batch_size", "num_batches")
)
def _train_epoch(params, opt_state, key, data, context, *, graphdef, optimizer, batch_size,
                 num_batches):
    """One epoch: shuffle on device, scan over minibatches (the last one padded and weighted)."""
    n = data.shape[0]
    perm = jax.random.permutation(key, n)
    total = num_batches * batch_size
    idx = jnp.concatenate([perm, perm[: total - n]]) if total > n else perm
    weights = (jnp.arange(total) < n).astype(data.dtype).reshape(num_batches, batch_size)
    idx = idx.reshape(num_batches, batch_size)

    def step(carry, batch):
        params, opt_state = carry
        bidx, w = batch
        c = None if context is None else context[bidx]
        loss, grads = jax.value_and_grad(_loss)(params, graphdef, data[bidx], c, w)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), loss * jnp.sum(w)

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (idx, weights))
    return params, opt_state, jnp.sum(losses) / n


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _eval_loss(params, data, context, *, graphdef):
    return _loss(params, graphdef, data, context, jnp.ones(data.shape[0], data.dtype))


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
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Trains a flow in place by maximum likelihood.

    Each epoch is one compiled program: the data live on the device, are
    shuffled with ``jax.random.permutation`` and consumed by ``lax.scan``; the
    last partial batch is kept (padded with repeated points of weight 0), so
    every point counts once per epoch. A second call with the same flow
    structure, optimizer object and shapes reuses the compiled program.

    The flow ends with the parameters of the best epoch (lowest validation NLL,
    or training NLL without validation data). A non-finite loss stops training
    with a warning; Ctrl-C stops it too; both keep the best parameters.

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
      patience: stop when the validation NLL has not improved for this many
        epochs (None: never).
      seed: seed of the shuffling.
      progress: show a progress bar (only on a terminal, never under CI).

    Returns:
      a :class:`History`.

    Raises:
      ValueError: before any training, for data of the wrong shape, empty,
        or with NaN/inf; context missing, unexpected, mismatched in length or
        width; ``batch_size < 1``; ``num_epochs < 1``; ``patience < 1``.
        A refused call leaves the flow untouched.

    Example:
      >>> flow = jaxmaf.MAF(2, 4, (64, 64), rngs=nnx.Rngs(0))
      >>> history = jaxmaf.fit(flow, x_train, validation_data=x_val, num_epochs=50)
      >>> history.best_epoch, history.val_loss[history.best_epoch]
    """
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
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"Expected {name} to be an integer >= 1, got {value!r}.")
    if patience is not None and (not isinstance(patience, int | np.integer) or patience < 1):
        raise ValueError(f"Expected patience to be None or an integer >= 1, got {patience!r}.")

    optimizer = optimizer or _DEFAULT_OPTIMIZER
    graphdef, params = nnx.split(flow, nnx.Param)
    dtype = jax.tree.leaves(params)[0].dtype
    to_dev = lambda a: None if a is None else jnp.asarray(a, dtype)  # noqa: E731
    data, context = to_dev(data), to_dev(context)
    validation_data, validation_context = to_dev(validation_data), to_dev(validation_context)
    batch_size = min(int(batch_size), data.shape[0])
    num_batches = -(-data.shape[0] // batch_size)
    opt_state = optimizer.init(params)
    key = jax.random.key(seed)

    history = History()
    best_params = params
    since_best = 0
    bar = _progress_bar(num_epochs) if progress else None
    start = time.perf_counter()
    try:
        for epoch in range(num_epochs):
            t0 = time.perf_counter()
            key, sub = jax.random.split(key)
            new_params, opt_state, train_loss = _train_epoch(
                params, opt_state, sub, data, context, graphdef=graphdef, optimizer=optimizer,
                batch_size=batch_size, num_batches=num_batches,
            )
            train_loss = float(train_loss)
            if not math.isfinite(train_loss):
                history.stop_reason = "non_finite"
                warnings.warn(
                    f"Training loss became {train_loss} at epoch {epoch}; stopped and kept the "
                    f"parameters of epoch {history.best_epoch}.", RuntimeWarning, stacklevel=2,
                )
                break
            params = new_params
            history.train_loss.append(train_loss)
            loss = train_loss
            if validation_data is not None:
                loss = float(_eval_loss(params, validation_data, validation_context,
                                        graphdef=graphdef))
                history.val_loss.append(loss)
            history.epoch_time.append(time.perf_counter() - t0)
            if math.isfinite(loss) and loss < history.best_loss:
                history.best_loss, history.best_epoch, best_params = loss, epoch, params
                since_best = 0
            else:
                since_best += 1
            if bar is not None:
                bar.update(1)
                postfix = {"train": f"{train_loss:.4f}"}
                if history.val_loss:
                    postfix["val"] = f"{history.val_loss[-1]:.4f}"
                bar.set_postfix(postfix)
            if patience is not None and since_best >= patience:
                history.stop_reason = "early_stopping"
                break
    except KeyboardInterrupt:
        history.stop_reason = "interrupted"
    finally:
        if bar is not None:
            bar.close()
        if history.best_epoch >= 0:
            nnx.update(flow, best_params)
        history.wall_time = time.perf_counter() - start
    return history


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


def _progress_bar(total: int):
    if os.environ.get("CI") or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc="fit", unit="epoch", leave=False)
