"""Base distributions of a flow, as NNX modules: a standard normal and a learnable mixture."""

from __future__ import annotations

import math

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

from jaxmaf.draws import draw, full, standard_normal
from jaxmaf.validation import check_choice, check_int, check_param_dtype

Array = jax.Array
BASES = ("gaussian", "mog")


def standard_normal_log_prob(u: Array) -> Array:
    """Log-density of a standard normal over the last axis: ``(..., D) -> (...)``.

    Args:
      u: points ``(..., D)``.

    Returns:
      the log-densities ``(...)``.

    Examples:
      >>> float(standard_normal_log_prob(jnp.zeros(2)))  # -log(2 pi)
      -1.8378770351409912
    """
    dim = u.shape[-1]
    return -0.5 * jnp.sum(jnp.square(u), axis=-1) - 0.5 * dim * math.log(2 * math.pi)


class StandardNormal(nnx.Module):
    """The standard normal ``N(0, I)`` on ``R^dim`` (no parameters).

    Args:
      dim: event dimension >= 1.
      param_dtype: dtype of its samples (float32; float64 under
        ``jax_enable_x64``).

    Examples:
      >>> base = StandardNormal(2)
      >>> base.sample(jax.random.key(0), (5,)).shape, base.log_prob(jnp.zeros((5, 2))).shape
      ((5, 2), (5,))
    """

    # its draws are differentiable in every parameter of the flow above it
    reparameterised = True

    def __init__(self, dim: int, param_dtype: jnp.dtype | None = None):
        self.dim = check_int("dim", dim, minimum=1)
        self.param_dtype = jnp.dtype(check_param_dtype(param_dtype))

    def log_prob(self, u: Array) -> Array:
        """Log-density ``(..., dim) -> (...)``."""
        return standard_normal_log_prob(u)

    def sample(self, key: Array, shape: tuple[int, ...]) -> Array:
        """Draws ``shape + (dim,)`` points."""
        return jax.random.normal(key, tuple(shape) + (self.dim,), self.param_dtype)

    def distribution(self) -> distrax.Distribution:
        """The same distribution as a ``distrax.MultivariateNormalDiag``."""
        zeros = jnp.zeros((self.dim,), self.param_dtype)
        return distrax.MultivariateNormalDiag(zeros, jnp.ones_like(zeros))


class MixtureOfGaussians(nnx.Module):
    """A learnable mixture of diagonal Gaussians (the base of the MAF paper's MAF MoG).

    Component ``k`` has weight ``softmax(logits)[k]``, mean ``means[k]`` and
    standard deviations ``exp(log_scales[k])``. The weights start equal, the
    scales at 1 and the means standard normal. Its draws pick a component
    at random, so they carry no gradient to the weights
    (``reparameterised = False``): :func:`jaxmaf.fit_variational` refuses
    it, and :func:`jaxmaf.as_numpyro` reports ``has_rsample=False``.

    Args:
      dim: event dimension >= 1.
      num_components: number of components >= 1.
      param_dtype: dtype of the parameters (float32; float64 under
        ``jax_enable_x64``).
      rngs: NNX random streams (``params`` draws the means).

    Examples:
      >>> base = MixtureOfGaussians(2, 4, rngs=nnx.Rngs(0))
      >>> base.means.shape, base.log_prob(jnp.zeros((3, 2))).shape
      ((4, 2), (3,))
    """

    reparameterised = False

    def __init__(
        self,
        dim: int,
        num_components: int,
        param_dtype: jnp.dtype | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.dim = check_int("dim", dim, minimum=1)
        k = check_int("num_components", num_components, minimum=1)
        dtype = jnp.dtype(check_param_dtype(param_dtype))
        self.logits = nnx.Param(full((k,), 0.0, dtype))
        self.means = nnx.Param(draw(standard_normal, rngs.params(), (k, self.dim), dtype))
        self.log_scales = nnx.Param(full((k, self.dim), 0.0, dtype))

    def log_prob(self, u: Array) -> Array:
        """Log-density ``(..., dim) -> (...)`` (a logsumexp over the components)."""
        log_w = jax.nn.log_softmax(self.logits[...])
        ls = self.log_scales[...]
        z = (u[..., None, :] - self.means[...]) * jnp.exp(-ls)
        comp = standard_normal_log_prob(z) - jnp.sum(ls, axis=-1)
        return jax.scipy.special.logsumexp(comp + log_w, axis=-1)

    def sample(self, key: Array, shape: tuple[int, ...]) -> Array:
        """Draws ``shape + (dim,)`` points."""
        return self.distribution().sample(seed=key, sample_shape=tuple(shape))

    def distribution(self) -> distrax.Distribution:
        """The same distribution as a ``distrax.MixtureSameFamily``."""
        return distrax.MixtureSameFamily(
            distrax.Categorical(logits=self.logits[...]),
            distrax.MultivariateNormalDiag(self.means[...], jnp.exp(self.log_scales[...])),
        )


def make_base(
    name: str, dim: int, num_components: int, param_dtype: jnp.dtype, rngs: nnx.Rngs
) -> StandardNormal | MixtureOfGaussians:
    """The base distribution a flow's ``base=`` names.

    Args:
      name: ``"gaussian"`` (standard normal) or ``"mog"`` (mixture).
      dim: event dimension.
      num_components: mixture components (``"mog"`` only).
      param_dtype: dtype of the parameters and samples.
      rngs: NNX random streams.

    Returns:
      a :class:`StandardNormal` or :class:`MixtureOfGaussians`.

    Raises:
      ValueError: an unknown name.

    Examples:
      >>> type(make_base("mog", 2, 3, jnp.float32, nnx.Rngs(0))).__name__
      'MixtureOfGaussians'
    """
    if check_choice("base", name, BASES) == "mog":
        return MixtureOfGaussians(dim, num_components, param_dtype, rngs=rngs)
    return StandardNormal(dim, param_dtype)
