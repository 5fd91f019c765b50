"""Neural posterior estimation with a conditional MAF, scored against exact posteriors.

Four simulators whose posterior is known exactly:

- ``linear_gaussian``: theta ~ N(0, I_5), x = 50 + 10 (A theta + 0.5 eps) in
  10 dimensions (A fixed, eps ~ N(0, I)): a Gaussian posterior. The offset and
  scale of x are what ``standardize=True`` removes.
- ``beta_binomial``: theta_i ~ Beta(2, 2) on (0, 1), i = 1..3, and x_i the
  number of successes in 20 Bernoulli(theta_i) trials: posterior
  Beta(2 + x_i, 22 - x_i), on a bounded support (the flow is built with
  ``support=(0, 1)``).
- ``gaussian_mixture`` and ``two_moons``: two tasks of the SBI benchmark
  (sbibm; Lueckmann et al. 2021), 2-d, with box priors (``support=``). The
  first's posterior is a broad and a sharp Gaussian around the observation,
  cut to the box; the second's is two thin crescents. Their exact draws come
  from inverting the simulator, as sbibm's reference posteriors do, and their
  exact densities from the likelihood in closed form over its mass in the box.

Training follows sbi's defaults for NPE with a MAF: 5 layers, MADE 2 x 50
tanh, Adam 5e-4, batch 200, gradient-norm clipping at 5, 10% of the
simulations for validation, patience 20 epochs; 10,000 simulations.

For each of several observations the flow's posterior is scored against the
exact one by:

- C2ST: a classifier two-sample test, as sbi's ``c2st``: scikit-learn's
  ``MLPClassifier`` (two hidden layers of 10 * dim units, here with early
  stopping on a tenth of each training fold) on z-scored samples, 5-fold
  cross-validated accuracy between 10,000 flow draws and
  10,000 exact draws (0.5: indistinguishable; 1.0: disjoint);
- KL(p || q) = E_p[log p(theta | x) - log q(theta | x)] over the exact draws,
  exact up to Monte Carlo error because both densities are known.

It reports training time and the time of 10,000 posterior draws (after the
first call), and writes ``metrics.json`` and a corner plot per task into
``--out``. When the ``sbi`` package is installed, its NPE with the same
settings is timed and scored too; otherwise that column is skipped with its
reason.

Run: python examples/posterior_estimation.py [--out DIR] [--quick] [--seed N]
[--tasks NAMES] [--transformer affine|spline]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

SIMULATIONS, QUICK_SIMULATIONS = 10_000, 1_000
OBSERVATIONS, QUICK_OBSERVATIONS = 3, 1
DRAWS, QUICK_DRAWS = 10_000, 1_000
LAYERS, HIDDEN, LEARNING_RATE, BATCH, CLIP, PATIENCE = 5, (50, 50), 5e-4, 200, 5.0, 20
MAX_EPOCHS, QUICK_EPOCHS = 1000, 2
TASK_NAMES = ("linear_gaussian", "beta_binomial", "gaussian_mixture", "two_moons")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (parsed before JAX is imported, so --help answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/out/posterior_estimation")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the bounded task, jaxmaf only, 1,000 simulations, 2 epochs, 1 observation (CI smoke)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tasks",
        default=",".join(TASK_NAMES),
        help=f"comma-separated tasks among {', '.join(TASK_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--transformer",
        choices=("affine", "spline"),
        default="affine",
        help="jaxmaf's layers: affine (sbi's MAF; the default) or spline (a neural spline "
        "MAF); the peers keep their affine MAF",
    )
    args = parser.parse_args(argv)
    args.tasks = args.tasks.split(",")
    for name in args.tasks:
        if name not in TASK_NAMES:
            parser.error(f"--tasks: unknown task {name!r}: expected names among {TASK_NAMES}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and argument errors answer here, before JAX loads

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy import stats

import jaxmaf
from jaxmaf import plotting


# ------------------------------------------------------------------ simulators
class LinearGaussian:
    """theta ~ N(0, I_5); x = 50 + 10 (A theta + 0.5 eps), 10-d: posterior N(mu, S)."""

    name, dim, context_dim, support = "linear_gaussian", 5, 10, None
    noise, offset, scale = 0.5, 50.0, 10.0

    def __init__(self):
        self.a = np.random.default_rng(1234).normal(size=(10, 5)) / math.sqrt(5)
        precision = np.eye(5) + self.a.T @ self.a / self.noise**2
        self.cov = np.linalg.inv(precision)

    def prior(self, rng, n):
        """Draws n parameters from the prior, (n, dim)."""
        return rng.normal(size=(n, self.dim))

    def simulate(self, rng, theta):
        """One simulation per parameter row, (n, context_dim)."""
        y = theta @ self.a.T + self.noise * rng.normal(size=(len(theta), 10))
        return self.offset + self.scale * y

    def posterior(self, x):
        """The exact posterior given one observation, a scipy distribution."""
        y = (x - self.offset) / self.scale
        mean = self.cov @ self.a.T @ y / self.noise**2
        return stats.multivariate_normal(mean, self.cov)

    def exact_draws(self, rng, x, n):
        """Draws n samples of the exact posterior given one observation, (n, dim)."""
        return self.posterior(x).rvs(n, random_state=rng).reshape(n, self.dim)

    def exact_log_prob(self, x, theta):
        """The exact posterior log-density of theta (n, dim) given one observation."""
        return self.posterior(x).logpdf(theta)

    def torch_prior(self):
        """The prior as a torch distribution (for sbi)."""
        import torch

        return torch.distributions.MultivariateNormal(torch.zeros(self.dim), torch.eye(self.dim))


class BetaBinomial:
    """theta_i ~ Beta(2, 2), x_i ~ Binomial(20, theta_i), i = 1..3: posterior Beta."""

    name, dim, context_dim, support = "beta_binomial", 3, 3, (0.0, 1.0)
    trials, a, b = 20, 2.0, 2.0

    def prior(self, rng, n):
        """Draws n parameters from the prior, (n, dim)."""
        return rng.beta(self.a, self.b, size=(n, self.dim))

    def simulate(self, rng, theta):
        """One simulation per parameter row, (n, context_dim)."""
        return rng.binomial(self.trials, theta).astype(np.float64)

    def _params(self, x):
        return self.a + x, self.b + self.trials - x

    def exact_draws(self, rng, x, n):
        """Draws n samples of the exact posterior given one observation, (n, dim)."""
        a, b = self._params(x)
        return rng.beta(a, b, size=(n, self.dim))

    def exact_log_prob(self, x, theta):
        """The exact posterior log-density of theta (n, dim) given one observation."""
        a, b = self._params(x)
        return stats.beta(a, b).logpdf(theta).sum(-1)

    def torch_prior(self):
        """The prior as a torch distribution (for sbi)."""
        import torch

        beta = torch.distributions.Beta(
            torch.full((self.dim,), self.a), torch.full((self.dim,), self.b)
        )
        return torch.distributions.Independent(beta, 1)


class BoxPriorTask:
    """A task with a uniform prior on the box ``support`` (sbibm's 2-d tasks).

    Subclasses give ``_proposals(rng, x, n) -> (theta, ok)``: draws whose kept
    part (``ok``) is distributed as the exact posterior given ``x``.
    """

    name, dim, support = "", 0, (0.0, 1.0)

    def prior(self, rng, n):
        """Draws n parameters from the prior, (n, dim)."""
        return rng.uniform(*self.support, size=(n, self.dim))

    def inside(self, theta):
        """Whether each row of theta (..., dim) lies inside the prior's box."""
        return np.all((theta > self.support[0]) & (theta < self.support[1]), axis=-1)

    def exact_draws(self, rng, x, n):
        """Draws n samples of the exact posterior given one observation, (n, dim)."""
        out = np.empty((0, self.dim))
        while len(out) < n:
            theta, ok = self._proposals(rng, x, 2 * n)
            out = np.concatenate([out, theta[ok]])
        return out[:n]

    def torch_prior(self):
        """The prior as a torch distribution (for sbi)."""
        import torch
        from sbi.utils import BoxUniform

        low, high = (torch.full((self.dim,), float(b)) for b in self.support)
        return BoxUniform(low, high)


class GaussianMixture(BoxPriorTask):
    """sbibm's Gaussian mixture: theta ~ U(-10, 10)^2, x ~ N(theta, I) / 2 + N(theta, I / 100) / 2.

    The posterior is the same two-scale mixture centred on the observation and cut
    to the prior's box: a broad and a sharp component, on a bounded support.
    """

    name, dim, context_dim, support = "gaussian_mixture", 2, 2, (-10.0, 10.0)
    scales = (1.0, 0.1)

    def simulate(self, rng, theta):
        """One simulation per parameter row, (n, context_dim)."""
        scale = np.where(rng.random((len(theta), 1)) < 0.5, *self.scales)
        return theta + scale * rng.normal(size=theta.shape)

    def _proposals(self, rng, x, n):
        """Draws of the uncut mixture around x; those inside the box are the posterior's."""
        scale = np.where(rng.random((n, 1)) < 0.5, *self.scales)
        theta = x + scale * rng.normal(size=(n, self.dim))
        return theta, self.inside(theta)

    def exact_log_prob(self, x, theta):
        """The exact posterior log-density of theta (n, dim) given one observation.

        The mixture's density divided by its mass inside the box (a product of
        normal CDFs per component).
        """
        low, high = self.support
        logs, masses = [], []
        for s in self.scales:
            logs.append(np.log(0.5) + stats.norm(x, s).logpdf(theta).sum(-1))
            masses.append(0.5 * np.prod(stats.norm(x, s).cdf(high) - stats.norm(x, s).cdf(low)))
        log_p = np.logaddexp(*logs) - np.log(sum(masses))
        return np.where(self.inside(theta), log_p, -np.inf)


class TwoMoons(BoxPriorTask):
    """sbibm's two moons: theta ~ U(-1, 1)^2, x a noisy crescent moved by |theta1 + theta2|.

    x = (r cos a + 1/4, r sin a) + (-|theta1 + theta2| / sqrt 2, (theta2 - theta1) / sqrt 2)
    with a ~ U(-pi/2, pi/2) and r ~ N(0.1, 0.01^2). The posterior is two thin
    crescents, mirror images across theta1 + theta2 = 0.
    """

    name, dim, context_dim, support = "two_moons", 2, 2, (-1.0, 1.0)
    radius, radius_sd, shift = 0.1, 0.01, 0.25

    def _noise(self, rng, n):
        a = rng.uniform(-np.pi / 2, np.pi / 2, size=n)
        r = rng.normal(self.radius, self.radius_sd, size=n)
        return np.stack([r * np.cos(a) + self.shift, r * np.sin(a)], axis=1)

    @staticmethod
    def _mean(theta):
        s = math.sqrt(2.0)
        return np.stack(
            [-np.abs(theta[..., 0] + theta[..., 1]) / s, (theta[..., 1] - theta[..., 0]) / s],
            axis=-1,
        )

    def simulate(self, rng, theta):
        """One simulation per parameter row, (n, context_dim)."""
        return self._mean(theta) + self._noise(rng, len(theta))

    def _proposals(self, rng, x, n):
        """Parameters that give x with fresh noise: half on each side of theta1 + theta2 = 0.

        theta -> mean(theta) is linear with |det| = 1 on each side, so these are
        distributed as the likelihood p(x | theta) / 2 over R^2 (with mass lost
        where no theta solves it); keeping those in the box gives the posterior.
        """
        p = x - self._noise(rng, n)
        s = math.sqrt(2.0)
        total = -s * p[:, 0] * np.where(rng.random(n) < 0.5, 1.0, -1.0)  # theta1 + theta2
        diff = s * p[:, 1]  # theta2 - theta1
        theta = np.stack([(total - diff) / 2, (total + diff) / 2], axis=1)
        return theta, (p[:, 0] <= 0) & self.inside(theta)

    def _log_likelihood(self, x, theta):
        m = x - self._mean(theta) - np.array([self.shift, 0.0])  # r (cos a, sin a)
        r = np.hypot(m[..., 0], m[..., 1])
        with np.errstate(divide="ignore"):
            log_p = (
                stats.norm(self.radius, self.radius_sd).logpdf(r) - np.log(np.pi) - np.log(r)
            )  # polar coordinates: p(r) p(a) / r
        return np.where(m[..., 0] > 0, log_p, -np.inf)

    def exact_log_prob(self, x, theta, n_mass=1_000_000):
        """The exact posterior log-density of theta (n, dim) given one observation.

        The likelihood in closed form, divided by its integral over the box: the
        acceptance rate of :meth:`_proposals` times 2, from ``n_mass`` draws
        (relative error about 1e-3; a fixed seed, so the same x gives the same
        normaliser).
        """
        _, ok = self._proposals(np.random.default_rng(0), x, n_mass)
        log_mass = np.log(2.0 * ok.mean())
        return np.where(self.inside(theta), self._log_likelihood(x, theta) - log_mass, -np.inf)


TASKS = (LinearGaussian, BetaBinomial, GaussianMixture, TwoMoons)
assert TASK_NAMES == tuple(t.name for t in TASKS)  # (--tasks is parsed before they exist)


# ------------------------------------------------------------------ scores
def c2st(p, q, seed=0):
    """The classifier two-sample test of sbi: 5-fold CV accuracy of an MLP telling p from q."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neural_network import MLPClassifier

    x = np.concatenate([p, q])
    x = (x - x.mean(0)) / x.std(0)
    y = np.concatenate([np.zeros(len(p)), np.ones(len(q))])
    width = 10 * p.shape[1]
    clf = MLPClassifier(  # sbi's, but stopping early on a held-out tenth (5x faster here)
        hidden_layer_sizes=(width, width),
        max_iter=1000,
        solver="adam",
        early_stopping=True,
        random_state=seed,
    )
    return float(np.mean(cross_val_score(clf, x, y, cv=5, scoring="accuracy")))


# ------------------------------------------------------------------ jaxmaf
def train_jaxmaf(task, theta, x, seed, epochs, transformer="affine", base=None):
    n_val = len(theta) // 10
    flow = jaxmaf.MAF(
        task.dim,
        LAYERS,
        HIDDEN,
        transformer=transformer,
        activation="tanh",
        context_dim=task.context_dim,
        support=task.support,
        base=base,
        rngs=nnx.Rngs(seed),
    )
    optimizer = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LEARNING_RATE))
    t0 = time.perf_counter()
    history = jaxmaf.fit(
        flow,
        theta[n_val:],
        context=x[n_val:],
        validation_data=theta[:n_val],
        validation_context=x[:n_val],
        optimizer=optimizer,
        batch_size=BATCH,
        num_epochs=epochs,
        patience=PATIENCE,
        patience_se=None,  # sbi's rule: every epoch without a new best counts
        standardize=True,
        seed=seed,
        progress=False,
    )
    return flow, time.perf_counter() - t0, history


def draw_timed(flow, key, n, x_o):
    """Posterior draws for one observation, and the time of a second call (no compilation)."""
    flow.sample(key, (n,), x_o).block_until_ready()  # first call of this shape compiles
    t0 = time.perf_counter()
    draws = flow.sample(jax.random.fold_in(key, 1), (n,), x_o).block_until_ready()
    return np.asarray(draws, np.float64), time.perf_counter() - t0


# ------------------------------------------------------------------ flowjax (optional)
def flowjax_available():
    try:
        import flowjax  # noqa: F401
    except ImportError:
        return False, "flowjax is not installed (pip install -e '.[bench]'): its column is skipped"
    return True, ""


def train_flowjax(task, theta, x, seed, epochs):
    """A conditional MAF of flowjax trained by its ``fit_to_data``.

    With the preprocessing a flowjax user writes by hand (it has none built in): the
    logit for a box prior, z-scoring of both sides.
    """
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow
    from flowjax.train import fit_to_data

    u = to_unconstrained(theta, task.support)
    units = (u.mean(0), u.std(0), x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0))
    t0 = time.perf_counter()
    key, init_key = jax.random.split(jax.random.key(seed))
    dist = masked_autoregressive_flow(
        init_key,
        base_dist=Normal(jnp.zeros(task.dim)),
        cond_dim=task.context_dim,
        flow_layers=LAYERS,
        nn_width=HIDDEN[0],
        nn_depth=len(HIDDEN),
        nn_activation=jnp.tanh,
    )
    optimizer = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LEARNING_RATE))
    data = ((u - units[0]) / units[1], (x - units[2]) / units[3])
    dist, _ = fit_to_data(
        key,
        dist,
        tuple(jnp.asarray(d, jnp.float32) for d in data),
        optimizer=optimizer,
        max_epochs=epochs,
        max_patience=PATIENCE,
        batch_size=BATCH,
        val_prop=0.1,
        show_progress=False,
    )
    return (dist, units), time.perf_counter() - t0


def flowjax_draws(task, trained, key, n, x_o):
    import equinox as eqx

    dist, (u_mean, u_std, x_mean, x_std) = trained
    sample = eqx.filter_jit(lambda d, k, c: d.sample(k, (n,), condition=c))
    c = jnp.asarray((x_o - x_mean) / x_std, jnp.float32)
    sample(dist, key, c).block_until_ready()  # compile
    t0 = time.perf_counter()
    z = np.asarray(sample(dist, jax.random.fold_in(key, 1), c).block_until_ready(), np.float64)
    seconds = time.perf_counter() - t0
    return from_unconstrained(z * u_std + u_mean, task.support), seconds


def to_unconstrained(theta, support):
    if support is None:
        return theta
    low, high = support
    p = (theta - low) / (high - low)
    return np.log(p) - np.log1p(-p)


def from_unconstrained(u, support):
    if support is None:
        return u
    low, high = support
    return low + (high - low) / (1.0 + np.exp(-u))


# ------------------------------------------------------------------ sbi (optional)
def sbi_available():
    try:
        import sbi  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        return False, f"sbi is not installed ({e.name}): its column is skipped"
    return True, ""


def train_sbi(task, theta, x, seed, epochs):
    """NPE of sbi with its defaults (MAF, z-scoring, the prior's support enforced)."""
    import torch
    from sbi.inference import NPE

    torch.manual_seed(seed)
    inference = NPE(prior=task.torch_prior(), density_estimator="maf")
    t0 = time.perf_counter()
    inference.append_simulations(
        torch.as_tensor(theta, dtype=torch.float32), torch.as_tensor(x, dtype=torch.float32)
    ).train(
        training_batch_size=BATCH,
        learning_rate=LEARNING_RATE,
        stop_after_epochs=PATIENCE,
        max_num_epochs=epochs,
        show_train_summary=False,
    )
    seconds = time.perf_counter() - t0
    return inference.build_posterior(), seconds


def sbi_draws(posterior, n, x_o):
    import torch

    x_o = torch.as_tensor(np.asarray(x_o), dtype=torch.float32)
    t0 = time.perf_counter()
    draws = posterior.sample((n,), x=x_o, show_progress_bars=False)
    return draws.numpy().astype(np.float64), time.perf_counter() - t0


# ------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    quick = args.quick
    n_sims = QUICK_SIMULATIONS if quick else SIMULATIONS
    n_obs = QUICK_OBSERVATIONS if quick else OBSERVATIONS
    n_draws = QUICK_DRAWS if quick else DRAWS
    n_sbc = 200 if quick else 1000  # fresh (theta, x) pairs for simulation-based calibration
    epochs = QUICK_EPOCHS if quick else MAX_EPOCHS
    os.makedirs(args.out, exist_ok=True)
    use_sbi, why = sbi_available() if not quick else (False, "quick: sbi not run")
    use_flowjax, why_flowjax = (
        flowjax_available() if not quick else (False, "quick: flowjax not run")
    )
    print(
        f"JAX backend: {jax.default_backend()}; {n_sims:,} simulations, MAF {LAYERS} layers "
        f"(jaxmaf's {args.transformer}), MADE {HIDDEN} tanh, Adam {LEARNING_RATE}, batch "
        f"{BATCH}, clip {CLIP}, patience {PATIENCE}; C2ST and KL(p || q) from {n_draws:,} "
        "draws per observation"
    )
    for used, reason in ((use_sbi, why), (use_flowjax, why_flowjax)):
        if not used:
            print(reason)
    metrics: dict = {
        "simulations": n_sims,
        "draws": n_draws,
        "seed": args.seed,
        "jaxmaf_transformer": args.transformer,
    }
    tasks = [cls for cls in TASKS if cls.name in args.tasks]
    for task_cls in (BetaBinomial,) if quick else tasks:  # quick: the bounded task only
        task = task_cls()
        rng = np.random.default_rng(args.seed)
        theta = task.prior(rng, n_sims)
        x = task.simulate(rng, theta)
        flow, seconds, history = train_jaxmaf(
            task,
            theta.astype(np.float32),
            x.astype(np.float32),
            args.seed,
            epochs,
            args.transformer,
        )
        observations = task.simulate(rng, task.prior(rng, n_obs))
        row: dict = {
            "jaxmaf_train_seconds": seconds,
            "jaxmaf_epochs": len(history.train_loss),
            "observations": [],
        }
        sbi_posterior = flowjax_trained = None
        if use_flowjax:
            flowjax_trained, row["flowjax_train_seconds"] = train_flowjax(
                task, theta, x, args.seed, epochs
            )
        if use_sbi:
            sbi_posterior, row["sbi_train_seconds"] = train_sbi(task, theta, x, args.seed, epochs)
        trained = (
            f"{task.name}: jaxmaf trained in {seconds:.1f} s ({len(history.train_loss)} epochs)"
        )
        for lib in ("flowjax", "sbi"):
            if f"{lib}_train_seconds" in row:
                trained += f", {lib} in {row[f'{lib}_train_seconds']:.1f} s"
        print(trained)
        corner = None
        for i, x_o in enumerate(observations):
            x_o32 = jnp.asarray(x_o, jnp.float32)
            draws, draw_seconds = draw_timed(flow, jax.random.key(100 + i), n_draws, x_o32)
            exact = task.exact_draws(rng, x_o, n_draws)
            log_q = np.asarray(flow.log_prob(jnp.asarray(exact, jnp.float32), x_o32), np.float64)
            kl = float(np.mean(task.exact_log_prob(x_o, exact) - log_q))
            obs = {
                "x_o": x_o.tolist(),
                "jaxmaf_c2st": c2st(draws, exact, args.seed),
                "jaxmaf_kl": kl,
                "jaxmaf_sample_seconds": draw_seconds,
            }
            line = (
                f"  observation {i}: jaxmaf C2ST {obs['jaxmaf_c2st']:.3f}, KL(p || q) {kl:.4f}, "
                f"{n_draws:,} draws in {draw_seconds * 1e3:.1f} ms"
            )
            if flowjax_trained is not None:
                fdraws, fseconds = flowjax_draws(
                    task, flowjax_trained, jax.random.key(200 + i), n_draws, x_o
                )
                obs |= {
                    "flowjax_c2st": c2st(fdraws, exact, args.seed),
                    "flowjax_sample_seconds": fseconds,
                }
                line += f" | flowjax C2ST {obs['flowjax_c2st']:.3f}"
            if sbi_posterior is not None:
                sdraws, sseconds = sbi_draws(sbi_posterior, n_draws, x_o)
                obs |= {"sbi_c2st": c2st(sdraws, exact, args.seed), "sbi_sample_seconds": sseconds}
                line += f" | sbi C2ST {obs['sbi_c2st']:.3f}, draws in {sseconds * 1e3:.1f} ms"
            print(line)
            row["observations"].append(obs)
            if corner is None:
                corner = (draws, exact)
        # Calibration on fresh pairs, from a stream of its own (the other draws stay as they were)
        sbc_rng = np.random.default_rng([args.seed, 7])
        theta_sbc = task.prior(sbc_rng, n_sbc)
        x_sbc = task.simulate(sbc_rng, theta_sbc)
        cal = jaxmaf.sbc(
            flow,
            theta_sbc.astype(np.float32),
            x_sbc.astype(np.float32),
            num_posterior_samples=200,
            seed=args.seed,
        )
        row["jaxmaf_sbc_ks_pvalues"] = cal.ks_pvalues.tolist()
        row["jaxmaf_sbc_coverage_error"] = cal.coverage_error()
        print(
            f"  SBC on {n_sbc} new pairs: KS p-values "
            + ", ".join(f"{p:.3f}" for p in cal.ks_pvalues)
            + f"; largest coverage gap {cal.coverage_error():.3f}"
        )
        scores = [o["jaxmaf_c2st"] for o in row["observations"]]
        row["jaxmaf_c2st_mean"] = float(np.mean(scores))
        for lib in ("flowjax", "sbi"):
            if f"{lib}_c2st" in row["observations"][0]:
                row[f"{lib}_c2st_mean"] = float(
                    np.mean([o[f"{lib}_c2st"] for o in row["observations"]])
                )
        metrics[task.name] = row
        corner_plot(task, *corner, os.path.join(args.out, f"{task.name}_corner.png"))
    metrics["sbi"] = "compared" if use_sbi else why
    metrics["flowjax"] = "compared" if use_flowjax else why_flowjax
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {args.out}/metrics.json and corner plots")


def corner_plot(task, draws, exact, path, dims=3):
    """Pairwise scatter (below the diagonal) and marginal histograms of the first dims."""
    k = min(dims, task.dim)
    fig, axes = plotting.subplots(k, k, size=2.4)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
            elif i == j:
                ax.hist(exact[:, i], bins=50, density=True, alpha=0.5, label="exact")
                ax.hist(draws[:, i], bins=50, density=True, alpha=0.5, label="jaxmaf")
                if i == 0:
                    ax.legend(fontsize=7)
            else:
                ax.scatter(exact[:2000, j], exact[:2000, i], s=1, alpha=0.3, label="exact")
                ax.scatter(draws[:2000, j], draws[:2000, i], s=1, alpha=0.3, label="jaxmaf")
            if i == k - 1:
                ax.set_xlabel(f"theta{j + 1}")
    fig.suptitle(f"{task.name}: posterior for one observation")
    plotting.save(fig, path)


if __name__ == "__main__":
    main()
