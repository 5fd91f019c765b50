"""Figures: density contours, samples, loss curves and layer-by-layer pushforwards."""

from __future__ import annotations

from collections.abc import Callable

import distrax
import jax
import jax.numpy as jnp
import numpy as np

try:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as e:  # the core install leaves matplotlib out
    raise ImportError(
        "jaxmaf.plotting needs matplotlib, which the core install leaves out: "
        "pip install 'jaxmaf[examples]' (or pip install matplotlib)."
    ) from e

from jaxmaf.training import History


def density_on_grid(
    log_prob: Callable[[jax.Array], jax.Array], lim: float = 2.5, n: int = 160
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluates ``exp(log_prob)`` on an ``n x n`` grid over ``[-lim, lim]^2``.

    Args:
      log_prob: a function ``(M, 2) -> (M,)``.
      lim: half-width of the square.
      n: grid points per axis.

    Returns:
      ``(X, Y, density)``, each ``(n, n)``.
    """
    g = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    dens = np.exp(np.asarray(jax.jit(log_prob)(pts))).reshape(n, n)
    return xx, yy, dens


def plot_density(
    ax,
    log_prob: Callable[[jax.Array], jax.Array],
    title: str,
    lim: float = 2.5,
    data: np.ndarray | None = None,
) -> None:
    """Filled contours of a 2-D density on ``ax``, optionally with data points on top."""
    xx, yy, dens = density_on_grid(log_prob, lim)
    filled = ax.contourf(xx, yy, dens, levels=30, cmap="viridis")
    ax.figure.colorbar(filled, ax=ax, label="density", fraction=0.046, pad=0.04)
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=1, c="white", alpha=0.3)
    ax.set(title=title, xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.set(xlabel="$x_1$", ylabel="$x_2$")


def plot_samples(
    ax, samples: np.ndarray, title: str, lim: float = 2.5, color: str = "tab:blue"
) -> None:
    """Scatter of 2-D samples on ``ax``."""
    samples = np.asarray(samples)
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, c=color)
    ax.set(title=title, xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.set(xlabel="$x_1$", ylabel="$x_2$")


def plot_losses(ax, history: History, title: str) -> None:
    """Training and validation NLL per epoch (whole epochs on the axis), the best epoch marked."""
    ax.plot(history.train_loss, label="train")
    if history.val_loss:
        ax.plot(history.val_loss, label="validation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if history.best_epoch >= 0:
        ax.axvline(history.best_epoch, color="grey", ls="--", lw=0.8, label="best epoch")
    ax.set(title=title, xlabel="epoch", ylabel="NLL (nats)")
    ax.legend()


def pushforward_stages(bijector: distrax.Bijector, u: jax.Array) -> list[tuple[str, np.ndarray]]:
    """Base samples pushed through a chain, one stage per bijector.

    Args:
      bijector: a :class:`distrax.Chain` (or a single bijector), base -> data.
      u: base samples ``(n, D)``.

    Returns:
      ``[(name, points)]`` starting with the base samples.
    """
    parts = bijector.bijectors[::-1] if isinstance(bijector, distrax.Chain) else [bijector]
    stages = [("base samples", np.asarray(u))]
    x = u
    layer = 0
    for b in parts:
        x = b.forward(x)
        if b.name == "Permute":
            name = "then permuted"
        elif b.name == "MaskedAutoregressive":
            layer += 1
            name = f"after MAF layer {layer}"
        else:
            name = f"after {b.name}"
        stages.append((name, np.asarray(x)))
    return stages


def save(fig: Figure, path: str) -> None:
    """Saves a figure as PNG."""
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def subplots(nrows: int, ncols: int, size: float = 3.2) -> tuple[Figure, np.ndarray]:
    """A figure with square panels of ``size`` inches and a 2-D array of its axes.

    Uses :class:`matplotlib.figure.Figure` directly (no pyplot, no global
    backend switch), so it works headless and inside notebooks alike.
    """
    fig = Figure(figsize=(size * ncols, size * nrows))
    return fig, np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
