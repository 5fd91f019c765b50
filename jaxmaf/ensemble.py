"""Ensembles: many flows trained in one compiled program (``jax.vmap`` over members)."""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxmaf.averaging import DEFAULT_EMA_EPOCHS, ema_decay, with_parameter_average
from jaxmaf.epochs import against, epoch_body, judge_rows, place, prepare, split_modes
from jaxmaf.history import History
from jaxmaf.optimizers import is_transformation
from jaxmaf.progress import progress_bar
from jaxmaf.validation import check_float, check_int


def _select(mask, new, old):
    """Per-member choice between two stacked pytrees (mask: (M,) bool)."""
    return jax.tree.map(
        lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old
    )


def _ensemble_epoch(
    params,
    rest,
    opt_state,
    keys,
    kept,
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
    of its last iterate and its average. ``kept`` is ``(best, best_rows)``: the
    parameters kept so far and their per-point NLL on the judged data, against
    which each candidate's gain and its standard error are returned (for
    ``patience_se``).
    """
    best, best_rows = kept
    body = functools.partial(
        epoch_body,
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
    evaluate = jax.vmap(lambda p, r: judge_rows(p, r, judge, judge_context, graphdef=eval_graphdef))
    rows = evaluate(params, rest)
    stats = against(rows, best_rows)  # (members, 3): mean NLL, gain, standard error
    candidate, use_average = params, jnp.zeros_like(update)
    if averaged:
        rows_avg = evaluate(opt_state.average, rest)
        stats_avg = against(rows_avg, best_rows)
        use_average = jnp.isfinite(stats_avg[:, 0]) & ~(stats_avg[:, 0] >= stats[:, 0])
        rows, stats = _select(use_average, (rows_avg, stats_avg), (rows, stats))
        candidate = _select(use_average, opt_state.average, params)
    loss, gain, se = jnp.moveaxis(stats, -1, 0)
    val_loss = loss if val_data is not None else jnp.full_like(train_loss, jnp.nan)
    improved = update & jnp.isfinite(loss) & (loss < best_loss)
    best, best_rows = _select(improved, ((candidate, rest), rows), (best, best_rows))
    best_loss = jnp.where(improved, loss, best_loss)
    return (
        params,
        rest,
        opt_state,
        keys,
        (best, best_rows),
        best_loss,
        train_loss,
        val_loss,
        use_average,
        jnp.stack([gain, se]),
    )


def fit_ensemble(
    make_flow: Callable[[nnx.Rngs], nnx.Module],
    data: Any,
    *,
    seeds: Sequence[int],
    learning_rate: float | Sequence[float] | None = None,
    optimizer: optax.GradientTransformation
    | Callable[..., optax.GradientTransformation] = optax.adam,
    validation_data: Any = None,
    context: Any = None,
    validation_context: Any = None,
    batch_size: int = 256,
    num_epochs: int = 100,
    patience: int | None = None,
    patience_se: float | None = 1.0,
    ema_epochs: float | None = DEFAULT_EMA_EPOCHS,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    data_is_process_local: bool = False,
) -> tuple[list[nnx.Module], list[History]]:
    """Trains one flow per seed, all members in ONE compiled program (``jax.vmap``).

    Member ``i`` is built with ``make_flow(nnx.Rngs(seeds[i]))`` and shuffles
    its data with ``seeds[i]``. ``optimizer`` is what :func:`fit` takes (an
    Optax transformation, the same for every member), or a factory such as
    ``optax.adam`` with one learning rate per member:
    ``optimizer(learning_rate=lr_i)``, the rates held as a per-member array
    (``optax.inject_hyperparams``). Either way member ``i`` matches
    ``fit(make_flow(nnx.Rngs(s)), ..., optimizer=..., seed=s)`` to float
    tolerance. Early stopping and
    divergence are handled per member (a stopped member's parameters are
    frozen at its best); the loop ends when every member has stopped.

    Args:
      make_flow: ``rngs -> flow``; every member must have the same structure.
      data: training points ``(N, dim)`` shared by all members.
      seeds: one seed per member (parameter initialisation and shuffling).
      learning_rate: with a factory ``optimizer``, a float for all members or
        one per member (default 1e-3); None with a transformation.
      optimizer: an Optax transformation (as in :func:`fit`), or a factory
        taking ``learning_rate=`` (default ``optax.adam``).
      validation_data: as in :func:`fit`.
      context: as in :func:`fit`.
      validation_context: as in :func:`fit`.
      batch_size: as in :func:`fit`.
      num_epochs: as in :func:`fit`.
      patience: as in :func:`fit`, per member.
      patience_se: as in :func:`fit`, per member.
      ema_epochs: as in :func:`fit`, per member (each keeps its own average).
      progress: as in :func:`fit`.
      devices: as in :func:`fit` (every member's batch is split across them).
      data_is_process_local: as in :func:`fit`: in a multi-process run each
        process passes its own rows.

    Returns:
      ``(flows, histories)``: ordinary flows with each member's best
      parameters (batch norm in eval mode, as in :func:`fit`), and one
      :class:`History` each.

    Raises:
      ValueError: as :func:`fit`; no seeds, or a seed that is not an
        integer >= 0; a learning rate that is not finite and > 0, or a list
        of the wrong length, or one given with a transformation (whose rate
        is fixed); an ``optimizer`` that is neither a transformation nor a
        factory;
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
    if patience_se is not None:
        patience_se = check_float("patience_se", patience_se, low=0.0, low_open=False)
    if not seeds:
        raise ValueError("Expected at least one seed, got none.")
    shared = is_transformation(optimizer)
    if shared and learning_rate is not None:
        raise ValueError(
            f"Got learning_rate={learning_rate!r} with an optimizer transformation, whose rate is "
            "fixed: pass a factory (optimizer=optax.adam, learning_rate=...) for rates per "
            "member, or leave learning_rate out."
        )
    if not shared and not callable(optimizer):
        raise ValueError(
            "Expected optimizer to be an Optax transformation (e.g. optax.adam(1e-3)) or a "
            f"factory taking learning_rate= (e.g. optax.adam), got {optimizer!r}."
        )
    learning_rate = 1e-3 if learning_rate is None else learning_rate
    lrs = [learning_rate] * len(seeds) if np.ndim(learning_rate) == 0 else list(learning_rate)
    lrs = [check_float("learning_rate", v, low=0.0) for v in lrs]
    if len(lrs) != len(seeds):
        raise ValueError(f"Expected {len(seeds)} learning rates (one per seed), got {len(lrs)}.")
    flows = [make_flow(nnx.Rngs(s)) for s in seeds]
    run = prepare(
        flows[0],
        data,
        validation_data,
        context,
        validation_context,
        batch_size,
        num_epochs,
        patience,
        devices,
        data_is_process_local,
    )
    splits = [split_modes(f) for f in flows]
    graphdef, eval_graphdef = splits[0][:2]
    for i, (g, *_) in enumerate(splits):
        if g != graphdef:
            raise ValueError(
                f"Ensemble member {i} (seed {seeds[i]}) differs in structure from "
                "member 0 (e.g. random orders or masks); members must match."
            )
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    params, rest = stack([p for *_, p, _ in splits]), stack([r for *_, r in splits])
    opt = optimizer if shared else _with_learning_rate_state(optimizer)
    decay = ema_decay(ema_epochs, run.num_batches)
    if decay is not None:
        opt = with_parameter_average(opt, decay)
    opt_state = jax.vmap(opt.init)(params)
    if not shared:
        hyperparams = (opt_state if decay is None else opt_state.inner).hyperparams
        hyperparams["learning_rate"] = jnp.asarray(lrs, jax.tree.leaves(params)[0].dtype)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    m = len(seeds)
    dtype = jax.tree.leaves(params)[0].dtype
    best_loss = jnp.full((m,), jnp.inf, dtype)
    judged = run.data if run.val_data is None else run.val_data
    best = ((params, rest), jnp.full((m, judged.shape[0]), jnp.inf, dtype))
    active = np.ones(m, bool)
    histories = [History() for _ in seeds]
    since_best = np.zeros(m, int)
    if run.replicated is not None:  # every epoch input placed as its output will be (no recompile)
        params, rest, opt_state, best, keys, best_loss = place(
            (params, rest, opt_state, best, keys, best_loss), run.replicated
        )
    run_epoch = run.bind(_ensemble_epoch, graphdef, eval_graphdef, opt, decay is not None)
    bar = progress_bar(num_epochs) if progress else None
    start = time.perf_counter()

    def dispatch():
        return run_epoch(
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
        )

    try:
        pending = None  # an epoch dispatched before the last one was read
        for epoch in range(num_epochs):
            t0 = time.perf_counter()
            out = dispatch() if pending is None else pending
            params, rest, opt_state, keys, best, best_loss, tl, vl, avg, gain_se = out
            # As in fit: the next epoch runs while this one is read, unless a member could
            # stop by patience after it. A member that stops by a non-finite loss gets one
            # more epoch there, which changes nothing kept (its best is already chosen).
            pending = None
            if epoch + 1 < num_epochs and (
                patience is None or bool(np.all(since_best[active] + 1 < patience))
            ):
                pending = dispatch()
            tl, vl, bl, avg, (gain, se) = (np.asarray(a) for a in (tl, vl, best_loss, avg, gain_se))
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
                elif patience_se is None or not gain[i] > -patience_se * se[i]:
                    since_best[i] += 1  # as fit: an epoch within noise of the best is not counted
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
                nnx.update(flow, *jax.tree.map(lambda a, i=i: a[i], best[0]))
            flow.eval()  # as validated: batch norm by its running averages
    return flows, histories


@functools.lru_cache(maxsize=32)
def _with_learning_rate_state(optimizer: Callable[..., optax.GradientTransformation]):
    """``optimizer`` with its learning rate held in the optimizer state.

    One object per factory, so the compiled ensemble program is reused across calls.
    """
    return optax.inject_hyperparams(optimizer)(learning_rate=1e-3)
