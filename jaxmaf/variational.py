"""Variational inference: fit a flow to an unnormalised log-density by maximising the ELBO."""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxmaf.elbo import elbo as estimate_elbo
from jaxmaf.elbo import uses_jacobian
from jaxmaf.optimizers import check_optimizer
from jaxmaf.programs import bind
from jaxmaf.progress import progress_bar
from jaxmaf.train_state import check_checkpoint_dir, load_state, save_best, save_state
from jaxmaf.validation import check_context, check_int

Array = jax.Array


@dataclasses.dataclass
class VariationalHistory:
    """What :func:`fit_variational` did.

    Attributes:
      elbo: per block of ``steps_per_block`` steps, the ELBO (nats) of the
        parameters at the end of the block, estimated with the same
        ``eval_samples`` draws every time (common random numbers, so blocks
        compare without the noise of fresh draws).
      train_elbo: per block, the mean of the ELBO estimates the optimizer saw.
      best_block: the block whose parameters the flow ends with (-1: none
        finished with a finite ELBO; the flow keeps its initial parameters).
      best_elbo: ``elbo[best_block]``.
      steps: optimizer steps taken.
      wall_time: total seconds (the first block includes compilation).
      stop_reason: ``"completed"``, ``"non_finite"`` or ``"interrupted"``.
    """

    elbo: list[float] = dataclasses.field(default_factory=list)
    train_elbo: list[float] = dataclasses.field(default_factory=list)
    best_block: int = -1
    best_elbo: float = -math.inf
    steps: int = 0
    wall_time: float = 0.0
    stop_reason: str = "completed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the history."""
        return dataclasses.asdict(self)


VARIATIONAL_STATE = "variational_state.msgpack"


NOISE_BUDGET = 1 << 21  # base-noise numbers drawn at once for a group of steps (8 MB in f32)


def _steps_per_draw(steps: int, numbers_per_step: int) -> int:
    """The most steps, a divisor of ``steps``, whose base noise is drawn in one call.

    Noise drawn inside a step was recomputed there: XLA fused the normal's inverse error
    function into every operation that read it (9 in the 10-d funnel's step, whose time
    fell from 245 to 157 us on a CPU when the noise came in drawn). The bound keeps a
    draw's memory at ``NOISE_BUDGET`` numbers.
    """
    bound = min(steps, max(1, NOISE_BUDGET // numbers_per_step))
    return next(c for c in range(bound, 0, -1) if steps % c == 0)


def _block(
    params,
    rest,
    opt_state,
    key,
    eval_noise,
    context,
    *,
    graphdef,
    optimizer,
    log_target,
    batch_size,
    steps,
    steps_per_draw,
    score,
):
    """``steps`` optimizer steps in one program, then the ELBO of the result on fixed draws.

    Compiled by :func:`jaxmaf.programs.bind`, once per run's static choices. The base
    noise of ``steps_per_draw`` steps is drawn at once, and the steps scan it.
    ``score``: None for the plain gradient, else how sticking the landing gets its score.
    """

    def step(carry, u):
        params, opt_state = carry
        value, grads = jax.value_and_grad(estimate_elbo)(
            params, rest, graphdef, u, log_target, context, score is not None, score or "auto"
        )
        grads = jax.tree.map(jnp.negative, grads)  # maximise
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    flow = nnx.merge(graphdef, params, rest)

    def draw_then_step(carry, draw_key):
        u = flow._base_noise(draw_key, (steps_per_draw, batch_size), context)
        return jax.lax.scan(step, carry, u)

    key, sub = jax.random.split(key)
    draw_keys = jax.random.split(sub, steps // steps_per_draw)
    (params, opt_state), elbos = jax.lax.scan(draw_then_step, (params, opt_state), draw_keys)
    judged = estimate_elbo(params, rest, graphdef, eval_noise, log_target, context)
    # A non-finite step poisons what follows: report it even if the last estimate is finite.
    train = jnp.where(jnp.all(jnp.isfinite(elbos)), jnp.mean(elbos), jnp.nan)
    return params, opt_state, key, train, judged


def check_target(
    log_target: Callable[..., Array], flow: nnx.Module, batch_size: int, context: Any
) -> None:
    """Refuses, before any work, a ``log_target`` that does not map ``(n, dim)`` to ``(n,)``.

    Traced abstractly (``jax.eval_shape``): nothing is computed.

    Args:
      log_target: ``log_target(x)``, or ``log_target(x, context)`` for a context.
      flow: the flow whose draws it will be given (its ``dim`` and dtype).
      batch_size: the ``n`` of the draws.
      context: ``(..., context_dim)`` or None.

    Raises:
      ValueError: not callable, failing on such inputs (its error named), or
        returning another shape or a non-float dtype.

    Examples:
      >>> flow = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
      >>> check_target(lambda x: x, flow, 16, None)
      Traceback (most recent call last):
      ...
      ValueError: Expected log_target(x) to return one log-density per point, shape (16,), \
for x of shape (16, 2); got (16, 2).
    """
    if not callable(log_target):
        raise ValueError(f"Expected log_target to be a function of x, got {log_target!r}.")
    dtype = jax.tree.leaves(nnx.state(flow, nnx.Param))[0].dtype
    batch = (batch_size,) if context is None else (batch_size,) + tuple(np.shape(context)[:-1])
    x = jax.ShapeDtypeStruct(batch + (flow.dim,), dtype)
    args = (x,) if context is None else (x, jax.ShapeDtypeStruct(np.shape(context), dtype))
    what = "log_target(x)" if context is None else "log_target(x, context)"
    try:
        out = jax.eval_shape(log_target, *args)
    except Exception as e:  # noqa: BLE001 - reported with the shapes it was called with
        shapes = ", ".join(str(a.shape) for a in args)
        raise ValueError(
            f"{what} failed on inputs of shape {shapes}: {type(e).__name__}: {e}"
        ) from None
    if not hasattr(out, "shape") or tuple(out.shape) != batch:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"Expected {what} to return one log-density per point, shape {batch}, for x of "
            f"shape {x.shape}; got {got}."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"Expected {what} to return floats, got dtype {out.dtype}.")


def fit_variational(
    flow: nnx.Module,
    log_target: Callable[..., Array],
    *,
    num_steps: int,
    batch_size: int = 256,
    optimizer: optax.GradientTransformation | None = None,
    seed: int = 0,
    context: Any = None,
    steps_per_block: int = 100,
    eval_samples: int = 4096,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    stick_the_landing: bool = False,
) -> VariationalHistory:
    """Fits ``flow`` to ``exp(log_target)`` in place by maximising the ELBO (reverse KL).

    Each step draws ``batch_size`` reparameterised samples with their
    log-densities (``flow.sample_and_log_prob``: one pass per layer for an
    IAF, the exact sequential pass for a MAF) and ascends
    ``mean(log_target(x) - log q(x))``, the evidence lower bound: for a
    target with normaliser ``Z``, ``log Z - ELBO = KL(q || p) >= 0``. Steps
    run ``steps_per_block`` at a time in one compiled program
    (``lax.scan``), which draws the base noise of many steps at once (at
    most 2**21 numbers per draw). After each block the ELBO of the current
    parameters is estimated on the same ``eval_samples`` draws every time,
    and the flow ends with the parameters of the best block. A non-finite
    ELBO (a target that overflows, a step too large) stops training with a
    warning and keeps the best parameters; so does Ctrl-C.

    Args:
      flow: a :class:`jaxmaf.IAF` (the usual variational family) or
        :class:`jaxmaf.MAF`.
      log_target: a JAX function mapping points ``(..., dim)`` to their
        unnormalised log-density ``(...)``; with ``context``, a function
        ``log_target(x, context)`` (amortised inference: ``x`` has the batch
        shape ``(batch_size,) + context.shape[:-1]``).
      num_steps: optimizer steps >= 1 (rounded up to whole blocks).
      batch_size: samples per step >= 1.
      optimizer: an Optax transformation (default ``optax.adam(1e-3)``).
      seed: seed of the samples.
      context: for a conditional flow, ``(context_dim,)`` or a batch
        ``(..., context_dim)`` of contexts fitted together.
      steps_per_block: steps per compiled program (and per history entry).
      eval_samples: samples of the fixed ELBO estimate after each block.
      progress: show a progress bar (as in :func:`jaxmaf.fit`).
      checkpoint_dir: write the state after every block
        (``variational_state.msgpack``, the checked format of
        :mod:`jaxmaf.fileformat`) and the best flow (``best.jaxmaf``).
      resume: continue from the state in ``checkpoint_dir`` (if present) to
        the same result as an uninterrupted run; ``num_steps`` may grow.
      stick_the_landing: the path-derivative gradient of Roeder et al. (2017):
        ``log q`` of each sample is evaluated with the parameters held
        constant, which drops a zero-mean term from the gradient, so its
        variance falls to zero as ``q`` approaches the target (measured in
        ``examples/variational.py``). It needs the score ``grad_x log q`` of
        the samples, which costs more per step. For an IAF of 3 or more
        dimensions it comes from the sampling pass's Jacobian (one pass with
        ``dim`` tangents and a ``dim x dim`` solve per sample; see
        :mod:`jaxmaf.elbo`), otherwise from ``log_prob``, the sequential
        direction of an IAF (``dim`` passes per layer).

    Returns:
      a :class:`VariationalHistory`.

    Raises:
      ValueError: before any training: ``num_steps``, ``batch_size``,
        ``steps_per_block`` or ``eval_samples`` not an integer >= 1;
        ``seed`` not an integer >= 0; an ``optimizer`` without Optax's
        ``init``/``update``; a context missing, unexpected or of the wrong
        width; a flow with a mixture base (not reparameterisable in its
        weights: pass ``base="gaussian"``); a ``log_target`` that fails on,
        or does not return one real per point for, a batch of the flow's
        samples (the message names the shapes); ``resume`` without
        ``checkpoint_dir``, or from a state written for another flow, run
        (batch size, block length, seed) or optimizer.

    Examples:
      >>> flow = jaxmaf.IAF(2, 2, (16,), rngs=nnx.Rngs(0))
      >>> log_target = lambda x: -0.5 * jnp.sum(((x - 1.0) / 0.5) ** 2, -1)
      >>> h = jaxmaf.fit_variational(flow, log_target, num_steps=200, batch_size=64,
      ...                            optimizer=optax.adam(1e-2), progress=False)
      >>> len(h.elbo), h.best_block >= 0
      (2, True)
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    steps_per_block = check_int("steps_per_block", steps_per_block, minimum=1)
    eval_samples = check_int("eval_samples", eval_samples, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(stick_the_landing, bool):
        raise ValueError(
            f"Expected stick_the_landing to be True or False, got {stick_the_landing!r}."
        )
    optimizer = check_optimizer(optimizer)
    check_context(context, getattr(flow, "context_dim", 0))
    if not getattr(getattr(flow, "base", None), "reparameterised", True):
        raise ValueError(
            "Expected flow to have a standard normal base (base='gaussian'), got a mixture "
            "base: a mixture's draws carry no gradient to its weights, so the ELBO's gradient "
            "would be biased. Build the variational flow with base='gaussian' (a MAF of up to "
            "three dimensions has a mixture base by default; an IAF never does)."
        )
    check_target(log_target, flow, batch_size, context)
    dtype = jax.tree.leaves(nnx.state(flow, nnx.Param))[0].dtype
    context = None if context is None else jnp.asarray(context, dtype)

    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir= (where the state is).")

    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    opt_state = optimizer.init(params)
    key, eval_key = jax.random.split(jax.random.key(seed))
    eval_noise = flow._base_noise(eval_key, (eval_samples,), context)  # the same every block
    numbers_per_step = math.prod(eval_noise.shape[1:]) * batch_size
    steps_per_draw = _steps_per_draw(steps_per_block, numbers_per_step)
    score = None  # decided here, not while tracing: a static argument of the compiled block
    if stick_the_landing:
        u = jax.ShapeDtypeStruct((batch_size,) + eval_noise.shape[1:], eval_noise.dtype)
        score = "jacobian" if uses_jacobian(flow, u, context) else "log_prob"
    history = VariationalHistory()
    best, start_block = params, 0
    fingerprint = dict(
        kind="variational",
        batch_size=batch_size,
        steps_per_block=steps_per_block,
        eval_samples=eval_samples,
        seed=seed,
        context_shape=None if context is None else list(context.shape),
    )
    if stick_the_landing:  # only when on, so states written before the option still resume
        fingerprint["stick_the_landing"] = True
    ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, VARIATIONAL_STATE)
    if ckpt is not None:
        check_checkpoint_dir(checkpoint_dir, flow)
    if resume and os.path.exists(ckpt):
        (params, _), opt_state, key, (best, _), history, _, start_block = load_state(
            ckpt, flow, (params, rest), opt_state, key, fingerprint, VariationalHistory
        )
    num_blocks = -(-num_steps // steps_per_block)
    run_block = bind(
        _block,
        graphdef=graphdef,
        optimizer=optimizer,
        log_target=log_target,
        batch_size=batch_size,
        steps=steps_per_block,
        steps_per_draw=steps_per_draw,
        score=score,
    )
    bar = progress_bar(num_blocks, min(start_block, num_blocks)) if progress else None
    start = time.perf_counter() - history.wall_time
    try:
        if start_block < num_blocks:
            pending = run_block(params, rest, opt_state, key, eval_noise, context)
        for block in range(start_block, num_blocks):
            new_params, new_opt_state, new_key, train, judged = pending
            # The next block is dispatched from this one's result before it is read back, so
            # the device does not wait for the bookkeeping below; if this block failed, the
            # next one is dropped unread.
            if block + 1 < num_blocks:
                pending = run_block(new_params, rest, new_opt_state, new_key, eval_noise, context)
            train, judged = float(train), float(judged)
            if not (math.isfinite(train) and math.isfinite(judged)):
                history.stop_reason = "non_finite"
                warnings.warn(
                    f"The ELBO became non-finite in block {block} (steps "
                    f"{history.steps + 1}-{history.steps + steps_per_block}); stopped and kept "
                    f"the parameters of block {history.best_block}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            params, opt_state, key = new_params, new_opt_state, new_key
            history.steps += steps_per_block
            history.train_elbo.append(train)
            history.elbo.append(judged)
            if judged > history.best_elbo:
                history.best_elbo, history.best_block, best = judged, block, params
            history.wall_time = time.perf_counter() - start
            if ckpt is not None:
                save_state(
                    ckpt,
                    flow,
                    (params, rest),
                    opt_state,
                    key,
                    (best, rest),
                    history,
                    0,
                    block + 1,
                    fingerprint,
                )
                if history.best_block == block:
                    save_best(checkpoint_dir, flow, (best, rest))
            if bar is not None:
                bar.update(1)
                bar.set_postfix({"elbo": f"{judged:.4f}"})
    except KeyboardInterrupt:
        history.stop_reason = "interrupted"
    finally:
        if bar is not None:
            bar.close()
        if history.best_block >= 0:
            nnx.update(flow, best)
        history.wall_time = time.perf_counter() - start
    return history
