"""jaxmaf flows inside numpyro: as a distribution, and as a guide trained by numpyro's SVI.

numpyro is an optional extra (``pip install "jaxmaf[numpyro]"``); it is imported
when one of these functions is first called, not with ``import jaxmaf``.

Why a thin wrapper of our own rather than ``numpyro.contrib.module.nnx_module``:
that helper calls the module (``module(x)``), whereas a flow is used through
``sample_and_log_prob`` and ``log_prob``; and the distribution below hands
numpyro each sample's log-density as an *intermediate*, so an IAF guide's
ELBO costs one pass per layer instead of a sequential inverse.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmaf.validation import check_context

Array = jax.Array


def _numpyro():
    try:
        import numpyro
        import numpyro.distributions  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised where numpyro is absent
        raise ImportError(
            'jaxmaf.as_numpyro needs numpyro: pip install "jaxmaf[numpyro]" (or pip install '
            "numpyro)."
        ) from e
    return numpyro


@functools.cache
def _distribution_class() -> type:
    """The numpyro ``Distribution`` subclass, defined once numpyro is imported."""
    dist = _numpyro().distributions

    class FlowDistribution(dist.Distribution):
        """A jaxmaf flow as a numpyro distribution over ``R^dim`` (see :func:`as_numpyro`)."""

        support = dist.constraints.real_vector
        pytree_data_fields = ("flow", "context")

        def __init__(self, flow: nnx.Module, context: Array | None = None, *, validate_args=None):
            self.flow, self.context = flow, context
            batch_shape = () if context is None else tuple(jnp.shape(context)[:-1])
            super().__init__(batch_shape, (flow.dim,), validate_args=validate_args)

        @property
        def has_rsample(self) -> bool:
            # a mixture base's draws are not reparameterised in its weights
            return getattr(self.flow.base, "reparameterised", True)

        def sample_with_intermediates(self, key, sample_shape=()):
            x, log_q = self.flow.sample_and_log_prob(key, tuple(sample_shape), self.context)
            return x, [log_q]

        def sample(self, key, sample_shape=()):
            return self.flow.sample(key, tuple(sample_shape), self.context)

        def rsample(self, key, sample_shape=()):
            return self.sample(key, sample_shape)

        def log_prob(self, value, intermediates=None):
            if intermediates:  # the log-density computed with the sample: no inverse pass
                return intermediates[0]
            return self.flow.log_prob(value, self.context)

    return FlowDistribution


def as_numpyro(flow: nnx.Module, context: Any = None) -> Any:
    """The flow as a ``numpyro.distributions.Distribution`` (support: real vectors).

    Usable wherever numpyro takes a distribution: a prior or likelihood in a
    model (``numpyro.sample("x", as_numpyro(flow))``), or a guide with fixed
    parameters. ``sample`` draws from the flow, ``log_prob`` is the flow's;
    samples are reparameterised (``has_rsample``), except with a mixture base
    (``base="mog"``, the default of a MAF of up to three dimensions), and a
    sample drawn at a site carries its log-density, so numpyro's ELBO never
    inverts an IAF. To let numpyro's SVI train the flow, use
    :func:`numpyro_flow` in the guide.

    Args:
      flow: a :class:`jaxmaf.MAF` or :class:`jaxmaf.IAF`.
      context: for a conditional flow, ``(..., context_dim)``; its batch axes
        become the distribution's batch shape.

    Returns:
      a numpyro distribution with event shape ``(dim,)``.

    Raises:
      ImportError: numpyro is not installed.
      ValueError: a context missing, unexpected or of the wrong width.

    Examples:
      >>> import numpyro
      >>> d = jaxmaf.as_numpyro(jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0)))
      >>> x = d.sample(jax.random.key(0), (5,))
      >>> d.event_shape, x.shape, d.log_prob(x).shape
      ((2,), (5, 2), (5,))
    """
    check_context(context, getattr(flow, "context_dim", 0))
    return _distribution_class()(flow, None if context is None else jnp.asarray(context))


def numpyro_flow(name: str, flow: nnx.Module, context: Any = None) -> Any:
    """Inside a numpyro guide: the flow as a distribution whose parameters SVI trains.

    The flow's parameters are registered as one ``numpyro.param(name, ...)``
    site (a dict of arrays keyed like ``nnx.state(flow, nnx.Param)``),
    initialised from the flow's current values; SVI then optimises them like
    any other parameter. Afterwards :func:`update_from_numpyro` writes the
    trained values back into ``flow``.

    Args:
      name: the parameter site's name.
      flow: the flow (its structure and initial parameters; not changed here).
      context: as in :func:`as_numpyro`.

    Returns:
      a numpyro distribution (as :func:`as_numpyro`) with the site's parameters.

    Raises:
      ImportError: numpyro is not installed.
      ValueError: as :func:`as_numpyro`.

    Examples:
      >>> import numpyro, numpyro.distributions as dist, optax
      >>> from numpyro.infer import SVI, Trace_ELBO
      >>> iaf = jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0))
      >>> model = lambda: numpyro.sample("z", dist.Normal(1.0, 0.5).expand([2]).to_event(1))
      >>> guide = lambda: numpyro.sample("z", jaxmaf.numpyro_flow("q", iaf))
      >>> svi = SVI(model, guide, optax.adam(1e-2), Trace_ELBO())
      >>> result = svi.run(jax.random.key(0), 200, progress_bar=False)
      >>> jaxmaf.update_from_numpyro(iaf, result.params, "q")
      >>> bool(abs(float(iaf.sample(jax.random.key(1), (2000,)).mean()) - 1.0) < 0.1)
      True
    """
    numpyro = _numpyro()
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    values = numpyro.param(name, nnx.to_pure_dict(params))
    nnx.replace_by_pure_dict(params, values)
    return as_numpyro(nnx.merge(graphdef, params, rest, copy=True), context)


def update_from_numpyro(flow: nnx.Module, params: dict[str, Any], name: str) -> None:
    """Writes the parameters SVI trained at site ``name`` (see :func:`numpyro_flow`) into ``flow``.

    Args:
      flow: the flow given to :func:`numpyro_flow`.
      params: numpyro's parameters, e.g. ``svi.get_params(state)`` or
        ``svi.run(...).params``.
      name: the site's name.

    Raises:
      ValueError: no site ``name`` in ``params``, or one whose arrays do not
        match the flow's parameters (names, shapes, dtypes).
    """
    if name not in params:
        raise ValueError(f"No parameter site {name!r} in params (sites: {sorted(params)}).")
    state = nnx.state(flow, nnx.Param)
    expected = jax.tree.map(lambda a: (a.shape, a.dtype), nnx.to_pure_dict(state))
    got = jax.tree.map(lambda a: (jnp.shape(a), jnp.asarray(a).dtype), params[name])
    if expected != got:
        raise ValueError(
            f"The parameters at site {name!r} do not match this flow's (names, shapes or "
            "dtypes differ): was it trained for another flow?"
        )
    nnx.replace_by_pure_dict(state, params[name])
    nnx.update(flow, state)
