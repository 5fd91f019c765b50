"""Maximum-likelihood training with Optax: :func:`fit`, one compiled program per epoch.

The pieces live in their own modules: the compiled epoch and the input checks
(:mod:`jaxmaf.epochs`), parameter averaging (:mod:`jaxmaf.averaging`),
checkpoints (:mod:`jaxmaf.train_state`), ensembles (:mod:`jaxmaf.ensemble`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxmaf.averaging import (
    DEFAULT_EMA_EPOCHS,
    AveragedState,
    ema_decay,
    with_parameter_average,
)
from jaxmaf.ensemble import fit_ensemble
from jaxmaf.epochs import (
    check_data,
    epoch_stats,
    judge_rows,
    place,
    prepare,
    split_modes,
    train_epoch,
)
from jaxmaf.history import History
from jaxmaf.optimizers import check_optimizer
from jaxmaf.progress import progress_bar
from jaxmaf.train_state import (
    BEST_FLOW,
    TRAIN_STATE,
    check_checkpoint_dir,
    load_state,
    save_best,
    save_state,
)
from jaxmaf.validation import check_float, check_int

__all__ = [
    "BEST_FLOW",
    "DEFAULT_EMA_EPOCHS",
    "TRAIN_STATE",
    "AveragedState",
    "History",
    "check_data",
    "fit",
    "fit_ensemble",
    "with_parameter_average",
]


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
    patience_se: float | None = 1.0,
    ema_epochs: float | None = DEFAULT_EMA_EPOCHS,
    seed: int = 0,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    standardize: bool = False,
    data_is_process_local: bool = False,
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
      patience: stop after this many epochs that did not improve on the best
        one (None: never). The loss that judges them is the validation NLL,
        else the training-set NLL; see ``patience_se`` for which epochs count.
      patience_se: an epoch counts towards ``patience`` only if its loss is
        above the best epoch's by more than this many standard errors of
        their per-point difference (paired over the judged points): an epoch
        within noise of the best is a plateau, not a sign of overfitting, and
        training goes on (at most ``num_epochs``). None: every epoch without
        a new best counts. Over 6 seeds on ``benchmarks/accuracy.py`` the
        default 1.0 lowered the test NLL on five 2-d data sets (circles by
        0.08 nats, four others by 0.01-0.02) and changed nothing on the
        others, where the validation loss rises clearly once training
        overfits (docs/benchmarks.md). With many validation points the
        standard error is small and the rule is the classic one.
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
      standardize: first set the flow's standardisation from ``data`` and
        ``context`` (their column means and standard deviations, see
        :meth:`jaxmaf.MAF.standardize_from`): the flow learns z-scored
        units while its density and samples stay in the data's units. Off,
        a standardisation the flow already has is kept as it is.
      data_is_process_local: in a multi-process run (``jax.distributed``),
        each process passes only its own rows of ``data`` (and
        ``validation_data``, and their contexts), the same number in every
        process; the global data set is their concatenation in process
        order, sharded by rows over ``devices`` (required), and training
        equals a one-process run on that whole set (same shuffles, same
        parameters). Without it, every process passes the whole data set.
        Checkpoints are written by process 0 alone in either case.

    Returns:
      a :class:`History`. The flow is left with its kept parameters and, if it
      has batch norm, in eval mode (running averages, as it was validated):
      its density no longer depends on which points are evaluated together.
      ``flow.train()`` switches back.

    Raises:
      ValueError: before any training, for data of the wrong shape, empty,
        or with NaN/inf; context missing, unexpected, mismatched in length or
        width; ``batch_size < 1``; ``num_epochs < 1``; ``patience < 1``
        (bools are refused for all three); ``patience_se`` negative or not
        finite; ``seed`` not an integer >= 0; an
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
    run = prepare(
        flow,
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
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir= (where the training state is).")
    seed = check_int("seed", seed, minimum=0)
    if ema_epochs is not None:
        ema_epochs = check_float("ema_epochs", ema_epochs, low=0.0)
    if patience_se is not None:
        patience_se = check_float("patience_se", patience_se, low=0.0, low_open=False)
    optimizer = check_optimizer(optimizer)
    decay = ema_decay(ema_epochs, run.num_batches)
    if decay is not None:
        optimizer = with_parameter_average(optimizer, decay)
    if not isinstance(standardize, bool):
        raise ValueError(f"Expected standardize to be True or False, got {standardize!r}.")
    if standardize:
        if data_is_process_local:
            raise ValueError(
                "standardize=True with data_is_process_local=True would standardise each "
                "process by its own rows: compute the global statistics and call "
                "flow.standardize_from on data with those (or pre-scale the data) instead."
            )
        if not hasattr(flow, "standardize_from"):
            raise ValueError(
                f"standardize=True needs a flow with standardize_from (MAF, IAF); got a "
                f"{type(flow).__name__}."
            )
        flow.standardize_from(data, context)
    graphdef, eval_graphdef, params, rest = split_modes(flow)
    opt_state = optimizer.init(params)
    key = jax.random.key(seed)
    history = History()
    best, since_best, start_epoch = (params, rest), 0, 0
    fingerprint = dict(
        n=run.n, batch_size=run.batch_size, seed=seed, dim=flow.dim, ema_epochs=ema_epochs
    )
    ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, TRAIN_STATE)
    if ckpt is not None:
        check_checkpoint_dir(checkpoint_dir, flow)
    if resume and os.path.exists(ckpt):
        (params, rest), opt_state, key, best, history, since_best, start_epoch = load_state(
            ckpt, flow, (params, rest), opt_state, key, fingerprint
        )
    if run.replicated is not None:  # the key too: each epoch's inputs as its outputs are placed,
        # so the second epoch runs the first one's program instead of compiling another
        params, rest, opt_state, best, key = place(
            (params, rest, opt_state, best, key), run.replicated
        )

    judge = (run.data, run.context) if run.val_data is None else (run.val_data, run.val_context)
    # the per-point NLL of the kept parameters, against which patience_se judges each epoch
    if history.best_epoch >= 0:
        kept_rows = judge_rows(*best, *judge, graphdef=eval_graphdef)
    else:
        kept_rows = jnp.full(judge[0].shape[0], jnp.inf, judge[0].dtype)
        if run.replicated is not None:
            kept_rows = place(kept_rows, run.replicated)
    run_epoch = run.bind(train_epoch, graphdef, eval_graphdef, optimizer, decay is not None)
    bar = progress_bar(num_epochs, start_epoch) if progress else None
    start = time.perf_counter() - history.wall_time
    try:
        pending = None  # an epoch dispatched before the last one's judgement was read
        for epoch in range(start_epoch, num_epochs):
            if patience is not None and since_best >= patience:
                history.stop_reason = "early_stopping"
                break
            t0 = time.perf_counter()
            if pending is None:
                pending = run_epoch(params, rest, opt_state, key, run.data, run.context, *judge)
            new_params, new_rest, new_opt_state, new_key, train_loss, rows = pending
            stats = epoch_stats(rows, kept_rows)  # queued before the next epoch, so read first
            # The next epoch is dispatched before this one is read, so the device does not wait
            # for the bookkeeping below; not when this epoch's judgement could stop training
            # (and dropped unread if this epoch fails).
            pending = None
            if epoch + 1 < num_epochs and (patience is None or since_best + 1 < patience):
                pending = run_epoch(
                    new_params, new_rest, new_opt_state, new_key, run.data, run.context, *judge
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
            stats = np.asarray(stats)
            loss, loss_avg = float(stats[0, 0]), float(stats[1, 0])
            candidate, averaged, which = (params, rest), False, 0
            if math.isfinite(loss_avg) and not loss_avg >= loss:  # NaN raw: take the average
                loss, candidate, averaged, which = loss_avg, (opt_state.average, rest), True, 1
            gain, se = float(stats[which, 1]), float(stats[which, 2])
            history.averaged.append(averaged)
            if run.val_data is not None:
                history.val_loss.append(loss)
            history.epoch_time.append(time.perf_counter() - t0)
            if math.isfinite(loss) and loss < history.best_loss:
                history.best_loss, history.best_epoch, best = loss, epoch, candidate
                kept_rows, since_best = rows[which], 0
            elif patience_se is None or not gain > -patience_se * se:
                since_best += 1  # evidently worse than the kept parameters (or the classic rule)
            history.wall_time = time.perf_counter() - start
            if ckpt is not None:
                save_state(
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
                    save_best(checkpoint_dir, flow, best)
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
        flow.eval()  # as validated: batch norm by its running averages
        history.wall_time = time.perf_counter() - start
    return history
