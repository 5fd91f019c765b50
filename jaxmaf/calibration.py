"""Is an amortised posterior calibrated? Simulation-based calibration (SBC) and coverage.

For pairs ``(theta_i, x_i)`` drawn from the prior and the simulator, a
posterior estimate ``q(theta | x)`` that equals the true posterior ranks each
``theta_i`` uniformly among ``L`` draws from ``q(. | x_i)`` (Talts et al.
2018, "Validating Bayesian inference algorithms with simulation-based
calibration"). Ranks piled at both ends mean ``q`` is too narrow
(overconfident), in the middle too wide, at one end biased. The same ranks
give the coverage of central credible intervals per dimension, and the ranks
of ``q(theta_i | x_i)`` among the draws' densities the coverage of the
highest-density regions (the "expected coverage" of Hermans et al. 2022): a
calibrated ``q`` covers a level-``a`` region with frequency ``a``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf.validation import check_context, check_event, check_int

DRAW_BUDGET = 1 << 23
"""The most numbers (draws x contexts x dim) one sampling call makes (32 MB in float32)."""

LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Credibility levels of the coverage curves: 0.05, 0.10, ..., 0.95."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What :func:`sbc` measured.

    Attributes:
      ranks: ``(n, dim)`` ints in ``0..L``: how many of the ``L`` posterior draws for
        ``x_i`` fall below ``theta_i`` in each dimension.
      density_ranks: ``(n,)`` floats in ``[0, 1]``: the fraction of the draws with a
        higher density than ``theta_i`` (``theta_i`` lies in the highest-density region
        of level ``a`` when this is below ``a``).
      ks_pvalues: ``(dim,)`` Kolmogorov-Smirnov p-values of the ranks against
        uniform (randomised to break ties): small means miscalibrated. With
        ``dim`` tests at once, compare the smallest with ``alpha / dim``.
      levels: the credibility levels of the coverage curves.
      central_coverage: ``(len(levels), dim)``: how often ``theta_i`` falls in the
        central interval of each level, per dimension.
      hpd_coverage: ``(len(levels),)``: how often it falls in the highest-density
        region of each level (all dimensions together).
      num_posterior_samples: ``L``.
    """

    ranks: np.ndarray
    density_ranks: np.ndarray
    ks_pvalues: np.ndarray
    levels: np.ndarray
    central_coverage: np.ndarray
    hpd_coverage: np.ndarray
    num_posterior_samples: int

    def coverage_error(self) -> float:
        """The largest gap between a coverage and its level, central or HPD.

        Returns:
          ``max |coverage - level|`` over both curves: about ``sqrt(a (1 - a) / n)``
          for a calibrated posterior, by chance.
        """
        gaps = [np.abs(self.central_coverage - self.levels[:, None]).max()]
        gaps.append(np.abs(self.hpd_coverage - self.levels).max())
        return float(max(gaps))


def sbc(
    flow: nnx.Module,
    theta: Any,
    context: Any,
    *,
    num_posterior_samples: int = 1000,
    seed: int = 0,
) -> Calibration:
    """Simulation-based calibration of a conditional flow ``q(theta | x)``.

    Each ``theta_i`` (from the prior) and ``x_i`` (simulated from it) is
    checked against ``L = num_posterior_samples`` draws from ``q(. | x_i)``,
    all pairs at once in compiled calls of the flow's
    ``sample_and_log_prob`` and ``log_prob`` (a MAF samples ``dim`` passes
    per layer). Use pairs the flow was not trained on.

    Args:
      flow: a conditional flow (``context_dim > 0``) over ``theta``.
      theta: ``(n, dim)`` parameters drawn from the prior.
      context: ``(n, context_dim)`` the data (or summaries) simulated from them.
      num_posterior_samples: ``L`` draws per pair (at least 10).
      seed: the draws' seed (the randomised ranks of the KS test use it too).

    Returns:
      a :class:`Calibration`.

    Raises:
      ValueError: an unconditional flow; ``theta`` not ``(n, dim)`` or
        ``context`` not ``(n, context_dim)`` with the same ``n``; fewer than
        10 draws; a non-finite ``theta``.

    Examples:
      >>> flow = jaxmaf.MAF(2, 2, (16,), context_dim=1, output_init_scale=0.0,
      ...                   base="gaussian", rngs=nnx.Rngs(0))  # q(theta | x) = N(0, I)
      >>> theta = jax.random.normal(jax.random.key(1), (500, 2))  # the prior: N(0, I)
      >>> x = jnp.zeros((500, 1))  # data that say nothing: the posterior is the prior
      >>> cal = sbc(flow, theta, x, num_posterior_samples=200)
      >>> cal.ranks.shape, bool(cal.ks_pvalues.min() > 0.01), cal.coverage_error() < 0.1
      ((500, 2), True, True)
    """
    if not flow.context_dim:
        raise ValueError(
            "Expected a conditional flow (context_dim > 0): simulation-based calibration "
            "checks q(theta | x) over simulated x."
        )
    num_posterior_samples = check_int("num_posterior_samples", num_posterior_samples, 10)
    seed = check_int("seed", seed, minimum=0)
    check_event(theta, flow.dim, "theta")
    check_context(context, flow.context_dim)
    theta, context = np.asarray(theta), np.asarray(context)  # blocks are cut on the host
    if theta.ndim != 2 or context.ndim != 2 or theta.shape[0] != context.shape[0]:
        raise ValueError(
            f"Expected theta of shape (n, {flow.dim}) and context of shape "
            f"(n, {flow.context_dim}) with the same n, got {theta.shape} and {context.shape}."
        )
    if not np.all(np.isfinite(theta)):
        raise ValueError("Expected finite theta, got NaN or infinity.")
    n, dim, draws = theta.shape[0], flow.dim, num_posterior_samples
    block = max(1, min(n, DRAW_BUDGET // (draws * dim)))
    ranks, density_ranks = [], []
    key = jax.random.key(seed)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = np.minimum(np.arange(start, start + block), n - 1)  # the last block padded:
        t, c = theta[rows], context[rows]  # every call the same shape, one compiled program
        key, sub = jax.random.split(key)
        r, d = _ranks(flow, sub, draws, t, c)
        ranks.append(np.asarray(r)[: stop - start])
        density_ranks.append(np.asarray(d)[: stop - start])
    ranks_np = np.concatenate(ranks)
    density = np.concatenate(density_ranks)
    return _summarise(ranks_np, density, draws, seed)


def _ranks(flow, key, draws, theta, context):
    samples, log_q = flow.sample_and_log_prob(key, (draws,), context)  # (L, B, dim), (L, B)
    log_q_theta = flow.log_prob(theta, context)  # (B,)
    ranks = jnp.sum(samples < theta[None], axis=0)
    return ranks, jnp.mean(log_q > log_q_theta[None], axis=0)


def _summarise(ranks: np.ndarray, density: np.ndarray, draws: int, seed: int) -> Calibration:
    from scipy import stats  # (a dependency of JAX's; loaded only here)

    rng = np.random.default_rng(seed)
    pit = (ranks + rng.uniform(size=ranks.shape)) / (draws + 1)  # exactly uniform if calibrated
    ks = np.array([stats.kstest(pit[:, j], "uniform").pvalue for j in range(ranks.shape[1])])
    levels = np.array(LEVELS)
    u = ranks / draws  # the posterior CDF at theta_i, per dimension
    low, high = (1 - levels) / 2, (1 + levels) / 2
    central = np.mean((u[None] >= low[:, None, None]) & (u[None] <= high[:, None, None]), axis=1)
    hpd = np.mean(density[None, :] < levels[:, None], axis=1)
    return Calibration(
        ranks=ranks.astype(np.int64),
        density_ranks=density,
        ks_pvalues=ks,
        levels=levels,
        central_coverage=central,
        hpd_coverage=hpd,
        num_posterior_samples=draws,
    )
