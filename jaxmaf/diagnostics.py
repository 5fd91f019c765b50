"""Did variational inference work? Importance weights of the fitted flow against its target.

A trained flow ``q`` and an unnormalised target ``p`` give importance weights
``w = p(x) / q(x)`` at draws ``x ~ q``. Their mean estimates the normaliser
``Z`` (so ``log Z - ELBO``, the KL divergence ``KL(q || p)``, can be read off
without knowing ``Z``), their spread the effective sample size, and the
shape of their largest values the Pareto ``k`` of Vehtari et al. (2024,
"Pareto smoothed importance sampling", JMLR), the diagnostic Yao et al. (2018,
"Yes, but did it work?") proposed for variational inference: ``q`` is
trustworthy for importance sampling and its expectations when ``k`` is below
``min(1 - 1 / log10(S), 0.7)`` for ``S`` draws. Above 1 the weights have no
mean: ``q`` misses mass the target has.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxmaf.validation import check_context, check_int
from jaxmaf.variational import check_target

Array = jax.Array

MIN_SAMPLES = 25
"""The fewest weights :func:`pareto_k` fits (its tail is then 5 long)."""


def pareto_k(log_weights: Any, *, tol: float = 0.0) -> float:
    """The Pareto shape ``k`` of the largest importance weights (PSIS's ``k``).

    The largest ``M = min(S / 5, 3 sqrt(S))`` of ``S`` weights, less the next
    largest, are fitted by a generalised Pareto distribution with Zhang and
    Stephens' (2009) empirical Bayes estimate, its shape shrunk towards 0.5
    as a weak prior of 10 observations (as in Vehtari et al. 2024). The
    weights have ``1 / k`` finite moments: below 0.5 a finite variance; at
    1 and above, no finite mean.

    Args:
      log_weights: ``S >= 25`` log importance weights, any shape (flattened);
        ``-inf`` (zero weight) allowed.
      tol: log-weights within ``tol`` of the tail's threshold count as equal
        to it (the rounding of the log-densities they came from).

    Returns:
      the estimate of ``k``; ``-inf`` when the largest weights are all equal,
      to ``tol`` (no tail at all, as when ``q`` is the target); ``inf`` when a
      weight is infinite.

    Raises:
      ValueError: fewer than 25 weights, or a NaN among them.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> x = rng.pareto(2.0, size=20000)  # a Pareto tail of index 2: k = 1/2
      >>> round(pareto_k(np.log1p(x)), 1)
      0.5
      >>> pareto_k(np.zeros(100))  # equal weights
      -inf
    """
    lw = np.asarray(log_weights, np.float64).ravel()
    if lw.size < MIN_SAMPLES:
        raise ValueError(
            f"Expected at least {MIN_SAMPLES} log_weights to fit a tail, got {lw.size}."
        )
    if np.isnan(lw).any():
        raise ValueError("Expected log_weights without NaN, got a NaN.")
    if np.isposinf(lw).any():
        return math.inf
    tail_length = int(min(lw.size / 5, 3 * math.sqrt(lw.size)))
    ordered = np.sort(lw)
    tail, cutoff = ordered[-tail_length:], ordered[-tail_length - 1]
    if not tail[-1] - cutoff > tol:
        return -math.inf
    excess = np.exp(tail - tail[-1]) - np.exp(cutoff - tail[-1])  # scaled: k is scale-free
    return _gpd_shape(excess)


def _gpd_shape(x: np.ndarray) -> float:
    """Zhang and Stephens' (2009) estimate of a generalised Pareto shape; ``x`` ascending.

    The posterior mean of ``theta = -k / sigma`` over a grid of ``30 + sqrt(n)``
    points (each weighted by its profile likelihood), then ``k`` given it.
    """
    n = x.size
    grid = 30 + int(math.sqrt(n))
    quartile = x[int(n / 4 + 0.5) - 1]
    if not quartile > 0:  # a quarter of the tail ties with its threshold: scale by the least
        quartile = np.min(x[x > 0])
    theta = 1 / x[-1] + (1 - np.sqrt(grid / (np.arange(1, grid + 1) - 0.5))) / (3 * quartile)
    k = np.mean(np.log1p(-theta[:, None] * x[None, :]), axis=1)
    log_lik = n * (np.log(-theta / k) - k - 1)
    weights = np.exp(log_lik - np.max(log_lik))  # each grid point's posterior weight
    theta_mean = np.sum(theta * weights) / np.sum(weights)
    k_mean = float(np.mean(np.log1p(-theta_mean * x)))
    prior = 10  # observations of a weak prior at k = 0.5
    return (n * k_mean + prior * 0.5) / (n + prior)


@dataclasses.dataclass(frozen=True)
class ImportanceDiagnostics:
    """What :func:`importance_diagnostics` measured (floats, or arrays per context).

    Attributes:
      elbo: ``mean(log p - log q)``, the evidence lower bound.
      log_evidence: ``log mean(p / q)``: the importance-sampled ``log Z``.
      log_evidence_se: its standard error (delta method).
      kl: ``log_evidence - elbo``: an estimate of ``KL(q || p)`` (at least 0).
      ess: the effective sample size over ``num_samples`` (1: ``q`` is the target).
      pareto_k: :func:`pareto_k` of the weights.
      threshold: ``min(1 - 1 / log10(num_samples), 0.7)``, Vehtari et al.'s bound.
      reliable: ``pareto_k < threshold``.
      num_samples: draws per context.
    """

    elbo: Any
    log_evidence: Any
    log_evidence_se: Any
    kl: Any
    ess: Any
    pareto_k: Any
    threshold: float
    reliable: Any
    num_samples: int


def importance_diagnostics(
    flow: nnx.Module,
    log_target: Callable[..., Array],
    *,
    num_samples: int = 10_000,
    seed: int = 0,
    context: Any = None,
) -> ImportanceDiagnostics:
    """Importance weights of ``flow`` (the ``q`` of variational inference) against a target.

    Draws ``num_samples`` points from the flow with their log-densities
    (``sample_and_log_prob``: one pass per layer for an IAF), evaluates the
    target there, and summarises ``log w = log_target(x) - log q(x)``: the
    ELBO, ``log Z`` by importance sampling and the KL between them, the
    effective sample size, and the Pareto ``k`` of the weights' tail with the
    verdict it gives (see the module docstring).

    Args:
      flow: a trained flow (MAF or IAF; any ``Flow``).
      log_target: ``log_target(x)`` with ``x`` of shape ``(n, dim)`` giving
        ``(n,)``, or ``log_target(x, context)`` for a conditional flow
        (as for :func:`jaxmaf.fit_variational`); unnormalised.
      num_samples: draws per context (at least 25).
      seed: the draws' seed.
      context: ``(context_dim,)``, or ``(m, context_dim)`` for ``m``
        diagnostics at once, for a conditional flow; else None.

    Returns:
      an :class:`ImportanceDiagnostics`: floats, or arrays of shape ``(m,)``
      for ``m`` contexts.

    Raises:
      ValueError: ``num_samples`` below 25; a context that does not fit the
        flow; a ``log_target`` that does not map ``(n, dim)`` to ``(n,)``; a
        NaN among the log-weights (named with how many).

    Examples:
      >>> flow = jaxmaf.IAF(2, 2, (16,), output_init_scale=0.0, base="gaussian",
      ...                   rngs=nnx.Rngs(0))  # untrained: q = N(0, I)
      >>> d = importance_diagnostics(flow, lambda x: -0.5 * jnp.sum(x**2, -1), num_samples=1000)
      >>> round(d.log_evidence, 4), round(d.kl, 6), round(d.ess, 6), d.reliable  # log(2 pi)
      (1.8379, 0.0, 1.0, True)
    """
    num_samples = check_int("num_samples", num_samples, minimum=MIN_SAMPLES)
    seed = check_int("seed", seed, minimum=0)
    check_context(context, flow.context_dim)
    batch = () if context is None else tuple(np.shape(context)[:-1])
    if len(batch) > 1:
        raise ValueError(
            "Expected context of shape (context_dim,) or (m, context_dim), got "
            f"{np.shape(context)}."
        )
    check_target(log_target, flow, num_samples, context)
    x, log_q = flow.sample_and_log_prob(jax.random.key(seed), (num_samples,), context)
    log_p = _target_program(log_target)(x, context)
    log_p, log_q = np.asarray(log_p, np.float64), np.asarray(log_q, np.float64)
    lw = log_p - log_q  # (num_samples, *batch)
    if np.isnan(lw).any():
        raise ValueError(
            f"log_target(x) - log q(x) is NaN at {int(np.isnan(lw).sum())} of {lw.size} draws: "
            "is log_target defined on the whole real space?"
        )
    threshold = min(1 - 1 / math.log10(num_samples), 0.7)
    # Weights that differ by no more than the rounding of the log-densities are equal.
    eps = float(np.finfo(x.dtype).eps)
    size = [np.max(np.abs(np.where(np.isfinite(v), v, 0.0)), axis=0) for v in (log_p, log_q)]
    rounding = 16 * eps * (1 + size[0] + size[1])
    rounding = np.broadcast_to(rounding, batch)
    columns = [
        _summary(lw[:, i], rounding[i]) if batch else _summary(lw, float(rounding))
        for i in range(batch[0] if batch else 1)
    ]
    fields = {name: np.array([c[name] for c in columns]) for name in columns[0]}
    if not batch:
        fields = {name: float(value[0]) for name, value in fields.items()}
    reliable = fields["pareto_k"] < threshold
    return ImportanceDiagnostics(
        **fields,
        threshold=threshold,
        reliable=reliable if batch else bool(reliable),
        num_samples=num_samples,
    )


def _summary(lw: np.ndarray, rounding: float) -> dict[str, float]:
    """The weights' summaries for one context; ``lw`` of shape ``(S,)``, float64.

    The largest weights, if their logs lie within ``rounding``, are equal: ``k`` is ``-inf``.
    """
    n = lw.size
    top = np.max(lw)
    if not np.isfinite(top):  # every weight 0 (-inf), or one infinite
        mean_w = -math.inf if top < 0 else math.inf
        return dict(
            elbo=float(np.mean(lw)),
            log_evidence=mean_w,
            log_evidence_se=math.nan,
            kl=math.inf,
            ess=math.nan,
            pareto_k=pareto_k(lw),
        )
    w = np.exp(lw - top)
    elbo = float(np.mean(lw))
    log_evidence = float(top + np.log(np.mean(w)))
    return dict(
        elbo=elbo,
        log_evidence=log_evidence,
        log_evidence_se=float(np.std(w) / (np.mean(w) * math.sqrt(n))),
        kl=max(log_evidence - elbo, 0.0),
        ess=float(np.sum(w) ** 2 / np.sum(w**2) / n),
        pareto_k=pareto_k(lw, tol=rounding),
    )


def _target_program(log_target: Callable[..., Array]) -> Callable:
    return jax.jit(lambda x, c: log_target(x) if c is None else log_target(x, c))
