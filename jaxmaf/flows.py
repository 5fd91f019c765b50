"""MAF and IAF: stacks of MADE-conditioned autoregressive layers over a base distribution."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf.activations import get_activation
from jaxmaf.bases import BASES, make_base, standard_normal_log_prob
from jaxmaf.batch_norm import BatchNorm
from jaxmaf.config import FlowConfig, check_num_components
from jaxmaf.flow import Flow
from jaxmaf.layers import AutoregressiveLayer, Permutation
from jaxmaf.made import MADE
from jaxmaf.masks import HIDDEN_DEGREES, PERMUTATIONS, layer_permutations
from jaxmaf.preprocessing import (
    Standardization,
    UnitsAndSupport,
    box_bijector,
    check_support,
)
from jaxmaf.transformers import Transformer, get_transformer
from jaxmaf.validation import (
    check_choice,
    check_context,
    check_float,
    check_hidden_dims,
    check_int,
    check_param_dtype,
    check_rngs,
    constructor_signature,
    host_seed,
)

Array = jax.Array
__all__ = ["BASES", "IAF", "MAF", "PERMUTATIONS", "FlowConfig", "standard_normal_log_prob"]


class _AutoregressiveFlow(UnitsAndSupport, Flow):
    """MAF and IAF: MADE-conditioned layers, the permutations between them, a base.

    Builds the layers from the constructor arguments (see :class:`MAF`) and
    chains them into :meth:`bijector`; density, sampling and chunking are
    :class:`jaxmaf.flow.Flow`'s.
    """

    default_init = "uniform"  # what init=None means (the class's measured choice)

    @staticmethod
    def default_output_init_scale(dim: int, context_dim: int) -> float:
        """What ``output_init_scale=None`` means: zero, the exact identity flow."""
        return 0.0

    @staticmethod
    def default_base(dim: int, context_dim: int) -> str:
        """What ``base=None`` means: the standard normal."""
        return "gaussian"

    def __init__(
        self,
        dim: int,
        num_layers: int,
        hidden_dims: Sequence[int],
        *,
        activation: str | Callable[[Array], Array] = "relu",
        context_dim: int = 0,
        permutation: str | Sequence[Sequence[int]] = "auto",
        hidden_degrees: str = "equal",
        transformer: str | Transformer = "affine",
        residual: bool = False,
        base: str | None = None,
        num_components: int | None = None,
        batch_norm: bool = False,
        init: str | None = None,
        output_init_scale: float | None = None,
        param_dtype: jnp.dtype | None = None,
        mask_seed: int | None = None,
        standardize: bool = False,
        support: tuple[Any, Any] | None = None,
        rngs: nnx.Rngs,
    ):
        dim = check_int("dim", dim, minimum=1)
        num_layers = check_int("num_layers", num_layers, minimum=1)
        hidden_dims = check_hidden_dims(hidden_dims)
        context_dim = check_int("context_dim", context_dim, minimum=0)
        base = self.default_base(dim, context_dim) if base is None else base
        check_choice("base", base, BASES)
        num_components = check_num_components(num_components, base)
        init = self.default_init if init is None else init
        if output_init_scale is None:
            output_init_scale = self.default_output_init_scale(dim, context_dim)
        output_init_scale = check_float("output_init_scale", output_init_scale)
        support = check_support(support, dim)
        flags = (("residual", residual), ("batch_norm", batch_norm), ("standardize", standardize))
        for name, flag in flags:
            if not isinstance(flag, bool | np.bool_):
                raise ValueError(f"Expected {name} to be True or False, got {flag!r}.")
        check_rngs(rngs)
        get_activation(activation)
        self.transformer = get_transformer(transformer)
        self.dim, self.num_layers, self.context_dim = dim, num_layers, context_dim
        self.hidden_dims = hidden_dims
        self.param_dtype = jnp.dtype(check_param_dtype(param_dtype))
        if mask_seed is not None:
            mask_seed = check_int("mask_seed", mask_seed, minimum=0)
        permutations = layer_permutations(
            permutation, dim, num_layers, mask_seed if mask_seed is not None else rngs
        )
        check_choice("hidden_degrees", hidden_degrees, HIDDEN_DEGREES)
        if mask_seed is None and hidden_degrees == "random":
            mask_seed = host_seed(rngs)
        layer_seeds = (
            [int(s) for s in np.random.default_rng(mask_seed).integers(2**31, size=num_layers)]
            if hidden_degrees == "random"
            else [None] * num_layers
        )
        mades = [
            MADE(
                dim,
                hidden_dims,
                self.transformer.num_params,
                context_dim=context_dim,
                activation=activation,
                hidden_degrees=hidden_degrees,
                residual=residual,
                init=init,
                output_init_scale=output_init_scale,
                param_dtype=self.param_dtype,
                mask_seed=seed,
                rngs=rngs,
            )
            for seed in layer_seeds
        ]
        layers: list[nnx.Module] = []
        for k, made in enumerate(mades):
            layers.append(AutoregressiveLayer(made, self.transformer, inverted=self.inverted))
            if k < num_layers - 1:
                if batch_norm:
                    layers.append(BatchNorm(dim, param_dtype=self.param_dtype))
                layers.append(Permutation(permutations[k]))
        self._config = FlowConfig(
            dim=int(dim),
            num_layers=int(num_layers),
            hidden_dims=self.hidden_dims,
            activation=activation if isinstance(activation, str) else None,
            context_dim=int(context_dim),
            permutation=None,  # state, not structure: read back by the config property
            hidden_degrees=hidden_degrees,
            transformer=self.transformer,
            output_init_scale=float(output_init_scale),
            param_dtype=self.param_dtype.name,
            residual=bool(residual),
            base=base,
            num_components=num_components,
            batch_norm=bool(batch_norm),
            mask_seed=mask_seed if hidden_degrees == "random" else None,
            standardize=bool(standardize),
            support=support,
        )
        self.support = support
        self.standardization = nnx.data(  # a data attribute even when None (set later by fit)
            Standardization(dim, context_dim, self.param_dtype) if standardize else None
        )
        # built last, so that the layers' initial values do not depend on the base
        base_module = make_base(base, dim, num_components, self.param_dtype, rngs)
        super().__init__(base_module, layers, context_dim=context_dim)

    @property
    def permutations(self) -> tuple[tuple[int, ...], ...]:
        """The permutations between consecutive layers, as held in the flow's state.

        Returns:
          ``num_layers - 1`` tuples of ints (values read from the device).
        """
        return tuple(
            tuple(int(i) for i in np.asarray(layer.permutation[...]))
            for layer in self.layers
            if isinstance(layer, Permutation)
        )

    @property
    def config(self) -> FlowConfig:
        """The constructor arguments that rebuild this flow, its permutations included."""
        return dataclasses.replace(self._config, permutation=self.permutations)

    @config.setter
    def config(self, value: FlowConfig) -> None:
        self._config = dataclasses.replace(value, permutation=None)

    def bijector(
        self,
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        update_batch_stats: bool = False,
    ) -> distrax.Bijector:
        """The flow as a distrax bijector mapping base noise to data.

        The layers' chain (:meth:`jaxmaf.Flow.bijector`), then the stored
        standardisation and the map onto the support, when the flow has them.

        Args:
          context: ``(..., context_dim)`` for a conditional flow, else None.
          method: as in :meth:`jaxmaf.Flow.bijector`.
          tol: as in :meth:`jaxmaf.Flow.bijector`.
          update_batch_stats: as in :meth:`jaxmaf.Flow.bijector`.

        Returns:
          a :class:`distrax.Chain` (base side last); event_ndims_in = 1.

        Raises:
          ValueError: context missing, unexpected, or of the wrong width.
        """
        check_context(context, self.context_dim)
        if self.standardization is not None:
            context = self.standardization.context(context)
        parts = [
            super().bijector(context, method=method, tol=tol, update_batch_stats=update_batch_stats)
        ]
        if self.standardization is not None:
            parts.append(self.standardization.bijector())
        if self.support is not None:
            parts.append(box_bijector(*self.support, self.param_dtype))
        return parts[0] if len(parts) == 1 else distrax.Chain(parts[::-1])


@constructor_signature
class MAF(_AutoregressiveFlow):
    """Masked autoregressive flow (Papamakarios et al. 2017).

    ``num_layers`` MADE-conditioned affine autoregressive layers with a fixed
    permutation between consecutive layers (none after the last, as in the
    TensorFlow MAF tutorial). Density (``log_prob``) is one MADE pass per layer;
    sampling is D sequential passes per layer (``lax.fori_loop``).

    Args:
      dim: data dimension D >= 1.
      num_layers: number of autoregressive layers >= 1.
      hidden_dims: widths of each MADE's hidden layers, each >= 1.
      activation: MADE activation, by name (``"relu"``, ``"sigmoid"``,
        ``"tanh"``, ``"gelu"``, ``"elu"``, ``"silu"``, ...) or callable.
      context_dim: width of the conditioning input (0: unconditional).
      permutation: between layers: ``"auto"`` (default: the reversal for
        ``dim <= 2``; above, orders in which every input comes last, given
        all the others, and first, as a marginal, once in any ``dim``
        consecutive layers: cyclic shifts in 3-d, from 4-d random orders drawn
        per flow; :func:`jaxmaf.masks.balanced_permutations`), ``"reverse"``
        (or ``"reversed"``, MADE's spelling), ``"random"`` (independent
        uniform draws at any ``dim``, as flowjax's), ``"none"``, or an
        explicit list of ``num_layers - 1`` permutations. Random draws come
        from ``mask_seed`` when it is given (numpy, no device value), else
        from ``rngs``. The permutations are state
        (:class:`jaxmaf.PermutationIndex`, saved with the flow), not
        structure: flows with different draws share one graph definition,
        so ensembles stack them and ``nnx.eval_shape`` works. Varied orders
        learn better than the alternating reversal above two dimensions
        (1.7-2.8 nats on 10-, 30- and 64-d data). Independent draws are a
        lottery in few dimensions: in 3-d, flows whose draw left one input
        last in every layer scored 0.6-1.0 nats worse. With the balanced
        orders, jaxmaf's mean test NLL against flowjax's over nine 3-8-d
        data sets went from -0.026 to -0.122 nats, and none is worse
        (``benchmarks/accuracy.py``, docs/benchmarks.md).
      hidden_degrees: MADE hidden-degree rule, ``"equal"`` or ``"random"``.
      transformer: ``"affine"``, ``"spline"``, or an :class:`jaxmaf.Affine` /
        :class:`jaxmaf.Spline` instance (scale parameterisation, bins, tail
        bound).
      residual: residual MADEs (masked residual blocks; all hidden widths equal).
      base: ``"gaussian"`` (standard normal) or ``"mog"`` (a learnable
        mixture of ``num_components`` diagonal Gaussians: MAF MoG). None: the
        measured choice, ``"mog"`` for a MAF of up to three dimensions, with
        a context or without, else ``"gaussian"`` (always for IAF, whose
        samples must be reparameterised). On the ten 2-d sets of
        ``benchmarks/accuracy.py`` the mixture lowered the mean test NLL by
        0.05 nats (10 seeds; 0.18 on a grid of 25 Gaussians, 0.17 on the
        swiss roll, none worse beyond 0.01), and by 0.04 on four 3-d sets;
        from four dimensions up it cost 0.02-6 nats on five of seven sets.
        As a posterior estimator (``benchmarks/npe_base.py``) it lowered
        KL(p || q) by 0.09-1.2 nats on three multimodal 2-3-d posteriors and
        raised it by 0.001-0.003 on three unimodal ones (docs/benchmarks.md).
      num_components: mixture components for ``base="mog"`` (None: 8); any
        other base has one, and a larger number is refused.
      batch_norm: a :class:`jaxmaf.BatchNorm` bijection between consecutive
        layers (batch statistics in train mode, running averages after
        ``flow.eval()``; :func:`jaxmaf.fit` updates them and returns the flow
        in eval mode).
      init: how each MADE's hidden layers are drawn: ``"uniform"``
        (PyTorch's and flowjax's ``U(+-1/sqrt(fan_in))`` kernels and biases)
        or ``"lecun_normal"`` (see :class:`jaxmaf.MADE`). None: the flow's
        measured choice, ``"uniform"`` for MAF (lower test NLL at equal
        budget on the accuracy suite, by 0.2-2 nats on its tabular and 64-d
        sets: ``benchmarks/accuracy.py``) and ``"lecun_normal"`` for IAF
        (what its variational-inference results were measured with; uniform
        learned the context dependence of an amortised guide more slowly).
      output_init_scale: initial scale of each MADE's output layer, a
        multiple of the hidden layers' draw (0: the flow starts exactly at
        the identity; 1: drawn like the hidden ones, as flowjax does). None:
        the measured choice for an unconditional MAF: 0.3 with ``dim <= 2``,
        1 with ``dim`` 3 or 4, and 0 above (always 0 with a context, and for
        IAF). In two dimensions the identity start left holes in the learned
        density: single test points at 30-110 nats, where the density falls
        by hundreds of nats within 0.05 of the point. A third of the random
        draw avoided them and lowered the test NLL on 6 of 8 2-d data sets
        of ``benchmarks/accuracy.py`` (10 seeds, -0.017 nats on average). In
        three and four dimensions the full draw lowered it by 0.02-0.17 nats
        on 3 of 6 data sets and was neutral on the others (10 seeds, with the
        default permutations); it was neutral in 5 and 6 dimensions and cost
        0.15-1.6 nats from 8 up (docs/benchmarks.md).
      param_dtype: parameter dtype (float32; float64 under
        ``jax_enable_x64``).
      mask_seed: numpy seed of the random hidden degrees (with
        ``hidden_degrees="random"``; recorded in ``config`` so a saved flow's
        masks are recomputed on load) and of random permutations (``"random"``,
        and ``"auto"`` above 2-d). None: drawn from ``rngs`` (random hidden
        degrees then need a concrete ``rngs``: pass a seed to build such a
        flow under ``jit`` or ``nnx.eval_shape``).
      standardize: hold a :class:`jaxmaf.preprocessing.Standardization`
        (identity until :meth:`standardize_from` or ``fit(...,
        standardize=True)`` sets it from data): the layers then model
        z-scored data and contexts while the flow speaks the data's units.
      support: ``(low, high)`` (numbers or ``(dim,)`` each): the flow lives
        on this box, its last bijection ``x = low + (high - low) *
        sigmoid(y)``; samples never leave it, and ``log_prob`` outside it
        is ``-inf``. None: all of R^D.
      rngs: NNX random streams.

    Raises:
      ValueError: at construction, naming the argument: ``dim``,
        ``num_layers``, a hidden width, ``context_dim``, ``num_components`` or
        ``mask_seed`` not an integer in range (numpy integers are accepted);
        unknown activation / permutation / hidden-degree / transformer / base
        name; non-finite ``output_init_scale``; a ``support`` that is not
        ``(low, high)`` with finite ``low < high``; a non-floating
        ``param_dtype`` (or float64 without ``jax_enable_x64``); ``rngs``
        that is not an ``nnx.Rngs``; unequal hidden widths with
        ``residual=True``.

    Examples:
      >>> flow = jaxmaf.MAF(dim=2, num_layers=4, hidden_dims=(128, 128), rngs=nnx.Rngs(0))
      >>> x = flow.sample(jax.random.key(1), (1000,))      # (1000, 2)
      >>> lp = flow.log_prob(x)                            # (1000,)
      >>> dist = flow.distribution()                       # distrax.Transformed
    """

    inverted = False

    @staticmethod
    def default_output_init_scale(dim: int, context_dim: int) -> float:
        """What ``output_init_scale=None`` means without context: 0.3 up to 2-d, 1 in 3-4-d.

        Above four dimensions, and with a context, 0 (the identity start).
        """
        if context_dim:
            return 0.0
        return 0.3 if dim <= 2 else 1.0 if dim <= 4 else 0.0

    @staticmethod
    def default_base(dim: int, context_dim: int) -> str:
        """What ``base=None`` means: 8 Gaussians up to 3-d (with a context too), else the normal."""
        return "mog" if dim <= 3 else "gaussian"


@constructor_signature
class IAF(_AutoregressiveFlow):
    """Inverse autoregressive flow (Kingma et al. 2016): the inverted MAF layers.

    Same signature as :class:`MAF`. Each layer is
    ``distrax.Inverse(MaskedAutoregressive(...))``: sampling (and
    ``sample_and_log_prob``) is one MADE pass per layer, ``log_prob`` of
    arbitrary points needs D sequential passes per layer.

    Examples:
      >>> flow = jaxmaf.IAF(dim=2, num_layers=4, hidden_dims=(64, 64), rngs=nnx.Rngs(0))
      >>> x, lp = flow.sample_and_log_prob(jax.random.key(1), (1000,))
    """

    inverted = True
    default_init = "lecun_normal"
