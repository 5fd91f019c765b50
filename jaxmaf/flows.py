"""MAF and IAF: stacks of MADE-conditioned autoregressive layers as NNX modules."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf.bijectors import SEQUENTIAL_METHODS, BatchNorm, MaskedAutoregressive, Permute
from jaxmaf.made import (
    MADE,
    check_context,
    check_event,
    check_hidden_dims,
    get_activation,
    host_seed,
)
from jaxmaf.masks import HIDDEN_DEGREES, check_permutation
from jaxmaf.transformers import TRANSFORMERS, Transformer, get_transformer
from jaxmaf.validation import (
    check_choice,
    check_float,
    check_int,
    check_key,
    check_param_dtype,
    check_rngs,
    constructor_signature,
)

Array = jax.Array
PERMUTATIONS = ("auto", "reverse", "random", "none")
BASES = ("gaussian", "mog")


def _map_chunks(fn: Callable[..., Array], arrays: Sequence[Array], chunk: int) -> Array:
    """``fn(*arrays)`` computed ``chunk`` rows at a time (``lax.map``); rows are axis 0.

    The last chunk is padded with zeros, and the padded rows are dropped from
    the result (every row is computed independently of the others).
    """
    n = arrays[0].shape[0]
    pad = (-n) % chunk
    blocks = [
        jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape((-1, chunk) + a.shape[1:])
        for a in arrays
    ]
    out = jax.lax.map(lambda args: fn(*args), blocks)
    return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:n], out)


def standard_normal_log_prob(u: Array) -> Array:
    """Log-density of a standard normal over the last axis: ``(..., D) -> (...)``."""
    dim = u.shape[-1]
    return -0.5 * jnp.sum(jnp.square(u), axis=-1) - 0.5 * dim * math.log(2 * math.pi)


try:  # JAX's own test of "no transformation is tracing now" (private, hence the fallback)
    from jax._src.core import trace_state_clean as _eager
except ImportError:  # pragma: no cover - a JAX without it: every call runs uncompiled

    def _eager() -> bool:
        return False


@functools.cache
def _modules_are_pytrees() -> bool:
    """Whether this flax registers NNX modules as JAX pytrees (flax >= 0.11 does).

    Asked on the first eager call, not at import: ``import jaxmaf`` must not start a JAX
    backend (``jax.distributed.initialize`` has to come first in multi-process runs).
    """

    class Probe(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros(()))

    return len(jax.tree.leaves(Probe())) == 1


@functools.lru_cache(maxsize=256)
def _compiled(name: str, statics: tuple, writes_state: bool) -> Callable[..., object]:
    """A compiled ``module.<name>(*arrays, *statics)``, one per method and static arguments.

    The module is an argument, not a constant: a parameter update reuses the program, and
    its structure (graph definition, static attributes such as batch norm's mode) is part
    of the cache key, so a structural change compiles anew instead of running a stale
    program. Read-only calls pass the module as a pytree to ``jax.jit`` (0.15 ms of Python
    per call for a 4-layer flow); :meth:`update_batch_stats`, the one call that writes state,
    goes through ``nnx.jit``, which writes it back (1.6 ms of graph traversal).
    """

    def call(module, *arrays):
        return getattr(module, name)(*arrays, *statics)

    return nnx.jit(call) if writes_state or not _modules_are_pytrees() else jax.jit(call)


def _hashable(statics: tuple) -> bool:
    try:
        hash(statics)
    except TypeError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """The constructor arguments that rebuild a flow (saved by :func:`jaxmaf.save`).

    Random permutations are recorded explicitly; ``activation`` is None when
    it was given as a callable (such a flow cannot be saved by name).
    """

    dim: int
    num_layers: int
    hidden_dims: tuple[int, ...]
    activation: str | None
    context_dim: int
    permutation: tuple[tuple[int, ...], ...]
    hidden_degrees: str
    transformer: Transformer
    output_init_scale: float
    param_dtype: str
    residual: bool = False
    base: str = "gaussian"
    num_components: int = 1
    batch_norm: bool = False
    mask_seed: int | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable constructor keyword arguments (the transformer as a dict)."""
        names = {v: k for k, v in TRANSFORMERS.items()}
        if type(self.transformer) not in names:
            raise ValueError(
                f"This flow's transformer, a {type(self.transformer).__name__}, is not one of the "
                f"built-in {sorted(TRANSFORMERS)} that a file can name: keep its parameters with "
                "nnx.state(flow) and rebuild the flow with the same constructor instead."
            )
        d = dataclasses.asdict(self)
        name = names[type(self.transformer)]
        d["transformer"] = {"name": name, **dataclasses.asdict(self.transformer)}
        d["permutation"] = [list(p) for p in self.permutation]
        d["hidden_dims"] = list(self.hidden_dims)
        return d


class _AutoregressiveFlow(nnx.Module):
    """Shared machinery of :class:`MAF` and :class:`IAF` (see their docstrings)."""

    inverted: ClassVar[bool] = False

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
        base: str = "gaussian",
        num_components: int = 8,
        batch_norm: bool = False,
        output_init_scale: float = 0.0,
        param_dtype: jnp.dtype | None = None,
        mask_seed: int | None = None,
        rngs: nnx.Rngs,
    ):
        dim = check_int("dim", dim, minimum=1)
        num_layers = check_int("num_layers", num_layers, minimum=1)
        hidden_dims = check_hidden_dims(hidden_dims)
        context_dim = check_int("context_dim", context_dim, minimum=0)
        check_choice("base", base, BASES)
        num_components = check_int("num_components", num_components, minimum=1)
        output_init_scale = check_float("output_init_scale", output_init_scale)
        for name, flag in (("residual", residual), ("batch_norm", batch_norm)):
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
        self.permutations = self._make_permutations(permutation, rngs, mask_seed)
        check_choice("hidden_degrees", hidden_degrees, HIDDEN_DEGREES)
        if mask_seed is None and hidden_degrees == "random":
            mask_seed = host_seed(rngs)
        layer_seeds = (
            [int(s) for s in np.random.default_rng(mask_seed).integers(2**31, size=num_layers)]
            if hidden_degrees == "random"
            else [None] * num_layers
        )
        self.layers = nnx.List(
            [
                MADE(
                    dim,
                    hidden_dims,
                    self.transformer.num_params,
                    context_dim=context_dim,
                    activation=activation,
                    hidden_degrees=hidden_degrees,
                    residual=residual,
                    output_init_scale=output_init_scale,
                    param_dtype=self.param_dtype,
                    mask_seed=seed,
                    rngs=rngs,
                )
                for seed in layer_seeds
            ]
        )
        self.config = FlowConfig(
            dim=int(dim),
            num_layers=int(num_layers),
            hidden_dims=self.hidden_dims,
            activation=activation if isinstance(activation, str) else None,
            context_dim=int(context_dim),
            permutation=tuple(self.permutations),
            hidden_degrees=hidden_degrees,
            transformer=self.transformer,
            output_init_scale=float(output_init_scale),
            param_dtype=self.param_dtype.name,
            residual=bool(residual),
            base=base,
            num_components=int(num_components) if base == "mog" else 1,
            batch_norm=bool(batch_norm),
            mask_seed=mask_seed if hidden_degrees == "random" else None,
        )
        self.batch_norms = nnx.List(
            [BatchNorm(dim, param_dtype=self.param_dtype) for _ in range(num_layers - 1)]
            if batch_norm
            else []
        )
        self.base = base
        if base == "mog":  # the MAF paper's MAF MoG: a learnable mixture of diagonal Gaussians
            k = int(num_components)
            self.base_logits = nnx.Param(jnp.zeros((k,), self.param_dtype))
            self.base_means = nnx.Param(
                jax.random.normal(rngs.params(), (k, dim), self.param_dtype)
            )
            self.base_log_scales = nnx.Param(jnp.zeros((k, dim), self.param_dtype))

    def _make_permutations(
        self, permutation: str | Sequence[Sequence[int]], rngs: nnx.Rngs, mask_seed: int | None
    ) -> tuple[tuple[int, ...], ...]:
        n = self.num_layers - 1
        if isinstance(permutation, str) and permutation == "reversed":  # the MADE order's name
            permutation = "reverse"
        if isinstance(permutation, str):
            if permutation == "auto" and self.dim > 2:
                rng = np.random.default_rng(self.dim)  # fixed by the shape, not by rngs
                perms = [rng.permutation(self.dim) for _ in range(n)]
            elif permutation in ("reverse", "auto"):
                perms = [np.arange(self.dim)[::-1]] * n
            elif permutation == "none":
                perms = [np.arange(self.dim)] * n
            elif permutation == "random":
                # With mask_seed, a stream of its own (not the hidden degrees'), no device value.
                rng = np.random.default_rng(
                    host_seed(rngs) if mask_seed is None else [mask_seed, 1]
                )
                perms = [rng.permutation(self.dim) for _ in range(n)]
            else:
                raise ValueError(
                    f"Unknown permutation {permutation!r}: expected one of {PERMUTATIONS} or a "
                    f"list of num_layers - 1 = {n} permutations."
                )
        else:
            if len(permutation) != n:
                raise ValueError(
                    f"Expected num_layers - 1 = {n} permutations, got {len(permutation)}."
                )
            perms = [check_permutation(p, self.dim) for p in permutation]
        return tuple(tuple(int(i) for i in p) for p in perms)

    # ------------------------------------------------------------------ bijector
    def bijector(
        self,
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        update_batch_stats: bool = False,
    ) -> distrax.Bijector:
        """The flow as a distrax bijector mapping base noise to data.

        Args:
          context: ``(..., context_dim)`` for a conditional flow, else None.
          method: sequential direction (MAF sampling, IAF density):
            ``"exact"`` or ``"jacobi"`` (see
            :meth:`jaxmaf.MaskedAutoregressive.forward_jacobi`).
          tol: Jacobi stopping threshold (0: the exact fixed point).
          update_batch_stats: batch norm in train mode also moves its running
            averages when the density direction (``inverse``) runs (see
            :meth:`update_batch_stats`); off, evaluating changes nothing.

        Returns:
          a :class:`distrax.Chain` of the layers (base side last) and the
          permutations between them; event_ndims_in = 1.

        Raises:
          ValueError: context missing, unexpected, or of the wrong width.
        """
        check_context(context, self.context_dim)
        parts: list[distrax.Bijector] = []
        for k, made in enumerate(self.layers):
            conditioner = made if context is None else made.bind(context)
            layer = MaskedAutoregressive(conditioner, self.transformer, method=method, tol=tol)
            parts.append(distrax.Inverse(layer) if self.inverted else layer)
            if k < self.num_layers - 1:
                if self.batch_norms:
                    parts.append(self.batch_norms[k].bijector(update_batch_stats))
                parts.append(Permute(self.permutations[k]))
        return parts[0] if len(parts) == 1 else distrax.Chain(parts[::-1])

    def base_distribution(self) -> distrax.Distribution:
        """The base distribution with event shape ``(dim,)``.

        A standard normal, or for ``base="mog"`` the learnable mixture of
        diagonal Gaussians (``distrax.MixtureSameFamily``).
        """
        if self.base == "mog":
            return distrax.MixtureSameFamily(
                distrax.Categorical(logits=self.base_logits[...]),
                distrax.MultivariateNormalDiag(
                    self.base_means[...], jnp.exp(self.base_log_scales[...])
                ),
            )
        zeros = jnp.zeros((self.dim,), self.param_dtype)
        return distrax.MultivariateNormalDiag(zeros, jnp.ones_like(zeros))

    def base_log_prob(self, u: Array) -> Array:
        """Log-density of the base distribution: ``(..., dim) -> (...)``."""
        if self.base != "mog":
            return standard_normal_log_prob(u)
        log_w = jax.nn.log_softmax(self.base_logits[...])
        ls = self.base_log_scales[...]
        z = (u[..., None, :] - self.base_means[...]) * jnp.exp(-ls)
        comp = standard_normal_log_prob(z) - jnp.sum(ls, axis=-1)
        return jax.scipy.special.logsumexp(comp + log_w, axis=-1)

    def distribution(self, context: Array | None = None) -> distrax.Distribution:
        """The flow as ``distrax.Transformed(standard normal, self.bijector(context))``.

        Args:
          context: ``(context_dim,)`` for a conditional flow (a batch of
            contexts gives a batch of bijectors: prefer the flow's own
            ``log_prob``/``sample`` for batched contexts), else None.

        Returns:
          a :class:`distrax.Transformed` with event shape ``(dim,)``.

        Raises:
          ValueError: as :meth:`bijector`.
        """
        return distrax.Transformed(self.base_distribution(), self.bijector(context))

    # ------------------------------------------------------------------ chunking
    def chunk_rows(self, chunk_size: int | None, rows: int) -> int | None:
        """Validates ``chunk_size`` for a batch of ``rows`` points; None means run whole.

        Evaluating a batch ``chunk_size`` points at a time (``lax.map``) bounds
        the memory of the MADE activations by the chunk instead of the batch
        (a 64-d flow with 512-wide MADEs holds 2 KiB per point and hidden
        layer in float32: 2 GiB for a million points). Every point is
        computed independently, so the result equals the whole-batch one up
        to floating-point rounding. Speed on a 2-core CPU, 10k points: no
        measurable change (235 ms either way, interleaved medians).

        Args:
          chunk_size: points per chunk (>= 1), or None for the whole batch.
          rows: number of points in the batch.

        Returns:
          the points per chunk, or None when the batch fits in one chunk.

        Raises:
          ValueError: ``chunk_size`` neither None nor an int >= 1; a chunk
            size on a flow whose batch norm is in train mode (its statistics
            are over the whole batch: call ``flow.eval()`` first).

        Examples:
          >>> flow = jaxmaf.MAF(2, 4, (32, 32), rngs=nnx.Rngs(0))
          >>> flow.chunk_rows(1024, 10_000), flow.chunk_rows(1024, 500)
          (1024, None)
        """
        if chunk_size is None:
            return None
        if (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, int | np.integer)
            or (chunk_size < 1)
        ):
            raise ValueError(f"Expected chunk_size None or an int >= 1, got {chunk_size!r}.")
        if any(not bn.use_running_average for bn in self.batch_norms):
            raise ValueError(
                "chunk_size splits the batch, but this flow's batch norm is in train mode "
                "(statistics over the whole batch): call flow.eval() first or pass "
                "chunk_size=None."
            )
        return int(chunk_size) if rows > chunk_size else None

    def _chunked(
        self,
        fn: Callable[..., Array],
        x: Array,
        context: Array | None,
        chunk_size: int | None,
    ):
        """``fn(x, context)`` over the batch axes of ``x (..., D)``, chunked per ``chunk_rows``."""
        batch = x.shape[:-1]
        if context is not None:
            batch = jnp.broadcast_shapes(batch, jnp.shape(context)[:-1])
        chunk = self.chunk_rows(chunk_size, math.prod(batch))
        if chunk is None:
            return fn(x, context)
        flat = [jnp.broadcast_to(x, batch + x.shape[-1:]).reshape(-1, x.shape[-1])]
        if context is None:
            fn = functools.partial(fn, context=None)
        else:
            width = jnp.shape(context)[-1]
            flat.append(jnp.broadcast_to(context, batch + (width,)).reshape(-1, width))
        out = _map_chunks(fn, flat, chunk)
        return jax.tree.map(lambda o: o.reshape(batch + o.shape[1:]), out)

    def _call(self, name: str, statics: tuple, *arrays, writes_state: bool = False):
        """``self.<name>(*arrays, *statics)``: compiled and cached when called eagerly."""
        if _eager() and _hashable(statics):
            return _compiled(name, statics, writes_state)(self, *arrays)
        return getattr(self, name)(*arrays, *statics)

    def _density_inputs(self, x: Array, context: Array | None) -> tuple[Array, Array | None]:
        """Checks ``x`` and ``context`` against the flow and makes them arrays."""
        check_event(x, self.dim, "x")
        check_context(context, self.context_dim)
        return jnp.asarray(x), None if context is None else jnp.asarray(context)

    # ------------------------------------------------------------------ density
    def log_prob(
        self,
        x: Array,
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        chunk_size: int | None = None,
    ) -> Array:
        """Log-density of ``x``.

        Args:
          x: points of shape ``(..., dim)``.
          context: ``(..., context_dim)`` for a conditional flow (batch
            dimensions broadcast with those of ``x``), else None.
          method: for an IAF (sequential density), ``"exact"`` or
            ``"jacobi"``; a MAF's density is one pass either way.
          tol: Jacobi stopping threshold.
          chunk_size: evaluate the batch this many points at a time, which
            bounds memory (see :meth:`chunk_rows`); None: all at once.

        Returns:
          log-densities of shape ``broadcast(...)``. Points so far out that the
          computation overflows (``|x|`` around ``1e19`` in float32, or
          infinite) get ``-inf`` (density 0 in floating point); NaN comes out
          only where NaN went in (in ``x``, the context or the parameters).

        Raises:
          ValueError: wrong event dimension of ``x``; context missing,
            unexpected, or of the wrong width; a bad ``chunk_size``.

        Examples:
          >>> flow = jaxmaf.MAF(2, 4, (32, 32), rngs=nnx.Rngs(0))
          >>> flow.log_prob(jnp.zeros((10, 2))).shape
          (10,)
        """
        x, context = self._density_inputs(x, context)
        return self._call("_log_prob", (method, tol, chunk_size, False), x, context)

    def update_batch_stats(self, x: Array, context: Array | None = None) -> Array:
        """Log-density of a training batch, moving batch norm's running averages towards it.

        The one call that changes a flow's statistics (``log_prob`` and
        ``sample`` never do): in train mode each batch norm normalises ``x``
        with the batch's statistics and moves its running averages by
        ``1 - momentum`` towards them. :func:`jaxmaf.fit` calls it on every
        minibatch. In eval mode, or without batch norm, it is ``log_prob``.

        Args:
          x: a batch ``(..., dim)``.
          context: ``(..., context_dim)`` for a conditional flow, else None.

        Returns:
          log-densities ``(...)`` under the batch's statistics.

        Raises:
          ValueError: as :meth:`log_prob`.

        Examples:
          >>> flow = jaxmaf.MAF(2, 2, (8,), batch_norm=True, rngs=nnx.Rngs(0))
          >>> x = 3.0 + jax.random.normal(jax.random.key(0), (64, 2))
          >>> _ = flow.log_prob(x); float(flow.batch_norms[0].mean[0])  # unchanged
          0.0
          >>> _ = flow.update_batch_stats(x); float(flow.batch_norms[0].mean[0]) > 0
          True
        """
        x, context = self._density_inputs(x, context)
        writes = any(not bn.use_running_average for bn in self.batch_norms)
        return self._call("_log_prob", ("exact", 0.0, None, True), x, context, writes_state=writes)

    def _log_prob(
        self,
        x: Array,
        context: Array | None,
        method: str,
        tol: float,
        chunk_size: int | None,
        update_batch_stats: bool,
    ) -> Array:
        def log_prob(x, context):
            bijector = self.bijector(
                context, method=method, tol=tol, update_batch_stats=update_batch_stats
            )
            u, log_det = bijector.inverse_and_log_det(x)
            lp = self.base_log_prob(u) + log_det
            # Far out (|x| ~ 1e19 and beyond in float32) the conditioner overflows and
            # inf - inf or 0 * inf gives NaN where the density has underflowed to 0.
            # NaN stays NaN where it came in: from x, the context or the parameters.
            nan_in = jnp.isnan(x).any(-1)
            if context is not None:
                nan_in = nan_in | jnp.isnan(context).any(-1)
            for leaf in jax.tree.leaves(nnx.state(self, nnx.Param)):
                nan_in = nan_in | jnp.isnan(leaf).any()
            return jnp.where(jnp.isnan(lp) & ~nan_in, -jnp.inf, lp)

        return self._chunked(log_prob, x, context, chunk_size)

    def sample(
        self,
        key: Array,
        sample_shape: Sequence[int] | int = (),
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        return_iterations: bool = False,
        chunk_size: int | None = None,
    ) -> Array | tuple[Array, Array]:
        """Draws samples.

        Args:
          key: a JAX PRNG key.
          sample_shape: leading shape of the samples.
          context: ``(..., context_dim)`` for a conditional flow, else None.
          method: for a MAF (sequential sampling): ``"exact"`` (D passes per
            layer) or ``"jacobi"`` (fixed-point iteration, at most D passes,
            stopping when the largest update is at most ``tol``; ``tol=0``
            gives the exact samples up to floating-point rounding). An IAF
            samples in one pass either way.
          tol: Jacobi stopping threshold (>= 0).
          return_iterations: also return the conditioner passes used by each
            layer, an int array ``(num_layers,)`` (base side first; with
            chunking, the most any chunk used).
          chunk_size: transform the noise this many points at a time, which
            bounds memory (see :meth:`chunk_rows`); the noise is drawn for
            the whole batch first, so the samples do not depend on it.

        Returns:
          samples of shape ``sample_shape + context.shape[:-1] + (dim,)``
          (and the iterations, with ``return_iterations``).

        Raises:
          ValueError: context missing, unexpected, or of the wrong width;
            unknown method; a bad ``chunk_size``.

        Examples:
          >>> flow = jaxmaf.MAF(2, 4, (32, 32), rngs=nnx.Rngs(0))
          >>> flow.sample(jax.random.key(0), (100,)).shape
          (100, 2)
          >>> x, iters = flow.sample(jax.random.key(1), (100,), method="jacobi",
          ...                        return_iterations=True)
          >>> x.shape, iters.shape
          ((100, 2), (4,))
        """
        if method not in SEQUENTIAL_METHODS:
            raise ValueError(f"Unknown method {method!r}: expected one of {SEQUENTIAL_METHODS}.")
        shape, context = self._check_sampling(key, sample_shape, context)
        statics = (shape, method, tol, bool(return_iterations), chunk_size)
        return self._call("_sample", statics, key, context)

    def _sample(
        self,
        key: Array,
        context: Array | None,
        shape: tuple[int, ...],
        method: str,
        tol: float,
        return_iterations: bool,
        chunk_size: int | None,
    ) -> Array | tuple[Array, Array]:
        u = self._base_noise(key, shape, context)
        if not return_iterations:
            return self._chunked(
                lambda u, context: self.bijector(context, method=method, tol=tol).forward(u),
                u,
                context,
                chunk_size,
            )

        def with_iterations(u, context):  # the iterations repeated per row, to chunk alike
            x, iterations = self._forward_counting(u, context, method, tol)
            return x, jnp.broadcast_to(iterations, u.shape[:-1] + iterations.shape)

        x, iterations = self._chunked(with_iterations, u, context, chunk_size)
        return x, iterations.reshape(-1, iterations.shape[-1]).max(axis=0)

    def _forward_counting(
        self, u: Array, context: Array | None, method: str, tol: float
    ) -> tuple[Array, Array]:
        """Sampling-direction map and the conditioner passes of each layer (base side first)."""
        bijector = self.bijector(context, method=method, tol=tol)
        parts = bijector.bijectors[::-1] if isinstance(bijector, distrax.Chain) else [bijector]
        iterations = []
        for part in parts:
            if isinstance(part, MaskedAutoregressive):
                if method == "jacobi":
                    u, n = part.forward_jacobi(u, tol)
                else:
                    u, n = part.forward(u), jnp.asarray(self.dim, jnp.int32)
                iterations.append(n)
            else:
                u = part.forward(u)
                if isinstance(part, distrax.Inverse):
                    iterations.append(jnp.asarray(1, jnp.int32))
        return u, jnp.stack(iterations)

    def sample_and_log_prob(
        self,
        key: Array,
        sample_shape: Sequence[int] | int = (),
        context: Array | None = None,
        *,
        chunk_size: int | None = None,
    ) -> tuple[Array, Array]:
        """Samples and their log-densities in the sampling direction only.

        For an IAF this is one pass per layer (no sequential inverse), the
        quantity variational inference needs.

        Args:
          key: a JAX PRNG key.
          sample_shape: leading shape of the samples.
          context: ``(..., context_dim)`` for a conditional flow, else None.
          chunk_size: as in :meth:`sample`.

        Returns:
          ``(samples, log_probs)`` of shapes ``S + (dim,)`` and ``S`` with
          ``S = sample_shape + context.shape[:-1]``.

        Raises:
          ValueError: context missing, unexpected, or of the wrong width; a
            bad ``chunk_size``.
        """
        shape, context = self._check_sampling(key, sample_shape, context)
        return self._call("_sample_and_log_prob", (shape, chunk_size), key, context)

    def _sample_and_log_prob(
        self,
        key: Array,
        context: Array | None,
        shape: tuple[int, ...],
        chunk_size: int | None,
    ) -> tuple[Array, Array]:
        u = self._base_noise(key, shape, context)

        def sample_and_log_prob(u, context):
            x, log_det = self.bijector(context).forward_and_log_det(u)
            return x, self.base_log_prob(u) - log_det

        return self._chunked(sample_and_log_prob, u, context, chunk_size)

    def _check_sampling(
        self, key: Array, sample_shape: Sequence[int] | int, context: Array | None
    ) -> tuple[tuple[int, ...], Array | None]:
        """Checks a sampling call's arguments; returns the sample shape as a tuple of ints."""
        check_context(context, self.context_dim)
        check_key(key)
        if isinstance(sample_shape, int | np.integer):
            shape = (sample_shape,)
        elif isinstance(sample_shape, Sequence | np.ndarray):
            shape = tuple(sample_shape)
        else:
            shape = (None,)  # refused below
        if any(isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0 for n in shape):
            raise ValueError(
                f"Expected sample_shape to be an int >= 0 or a tuple of them, got {sample_shape!r}."
            )
        return tuple(int(n) for n in shape), None if context is None else jnp.asarray(context)

    def _base_noise(self, key: Array, shape: tuple[int, ...], context: Array | None) -> Array:
        batch = () if context is None else tuple(jnp.shape(context)[:-1])
        if self.base == "mog":
            return self.base_distribution().sample(seed=key, sample_shape=shape + batch)
        return jax.random.normal(key, shape + batch + (self.dim,), self.param_dtype)


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
        ``dim <= 2``; above, pseudo-random permutations drawn from a numpy
        generator seeded with ``dim``, so every flow of a shape has the same
        ones, ensembles stack and ``nnx.eval_shape`` works), ``"reverse"``
        (or ``"reversed"``, MADE's spelling), ``"random"`` (seeded from
        ``mask_seed``, else from ``rngs``), ``"none"``, or an explicit list of
        ``num_layers - 1`` permutations. Varied orders learn better than the
        alternating reversal above two dimensions: 1.7-2.8 nats lower test
        NLL on 10-, 30- and 64-d data (``benchmarks/accuracy.py``).
      hidden_degrees: MADE hidden-degree rule, ``"equal"`` or ``"random"``.
      transformer: ``"affine"``, ``"spline"``, or an :class:`jaxmaf.Affine` /
        :class:`jaxmaf.Spline` instance (scale parameterisation, bins, tail
        bound).
      residual: residual MADEs (masked residual blocks; all hidden widths equal).
      base: ``"gaussian"`` (standard normal) or ``"mog"`` (a learnable
        mixture of ``num_components`` diagonal Gaussians: MAF MoG).
      num_components: mixture components for ``base="mog"``.
      batch_norm: a :class:`jaxmaf.BatchNorm` bijection between consecutive
        layers (batch statistics in train mode, running averages after
        ``flow.eval()``; :func:`jaxmaf.fit` updates them).
      output_init_scale: initial scale of each MADE's output kernel (0: the
        flow starts exactly at the identity).
      param_dtype: parameter dtype (float32; float64 under
        ``jax_enable_x64``).
      mask_seed: numpy seed of the random hidden degrees (with
        ``hidden_degrees="random"``; recorded in ``config`` so a saved flow's
        masks are recomputed on load) and of ``permutation="random"``. None:
        drawn from ``rngs`` (a device value: pass a seed to build the flow
        under ``jit`` or ``nnx.eval_shape``).
      rngs: NNX random streams.

    Raises:
      ValueError: at construction, naming the argument: ``dim``,
        ``num_layers``, a hidden width, ``context_dim``, ``num_components`` or
        ``mask_seed`` not an integer in range (numpy integers are accepted);
        unknown activation / permutation / hidden-degree / transformer / base
        name; non-finite ``output_init_scale``; a non-floating
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
