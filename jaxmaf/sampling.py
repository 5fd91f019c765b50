"""Sampling from a flow: draws, draws with their log-densities, and pass counting.

:class:`Sampling` holds the sampling half of :class:`jaxmaf.flow.Flow` (the
density half is :class:`jaxmaf.density.Density`). It relies on what a flow provides: ``base``
(with ``sample``), ``dim``, ``context_dim``, ``bijector(context, method=,
tol=)``, and the flow's helpers for eager calls that compile once
(``_call``), chunked evaluation (``_chunked``) and method checks
(``_check_method``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import distrax
import jax
import jax.numpy as jnp

from jaxmaf.bijectors import MaskedAutoregressive
from jaxmaf.validation import check_context, check_key, check_sample_shape

Array = jax.Array


class Sampling:
    """The sampling methods of a flow (a mixin of :class:`jaxmaf.flow.Flow`)."""

    def sample(
        self,
        key: Array,
        sample_shape: Sequence[int] | int = (),
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        chunk_size: int | None = None,
        return_iterations: bool = False,
    ) -> Array:
        """Draws samples.

        Args:
          key: a JAX PRNG key.
          sample_shape: leading shape of the samples.
          context: ``(..., context_dim)`` for a conditional flow, else None.
          method: for a MAF (sequential sampling): ``"exact"`` (D passes per
            layer) or ``"jacobi"`` (fixed-point iteration, at most D passes,
            stopping when the largest update is at most ``tol``; ``tol=0``
            gives the exact samples up to floating-point rounding). An IAF
            samples in one pass and refuses any other than ``"exact"``.
          tol: Jacobi stopping threshold (>= 0).
          chunk_size: transform the noise this many points at a time, which
            bounds memory (see :meth:`chunk_rows`); the noise is drawn for
            the whole batch first, so the samples do not depend on it.
          return_iterations: deprecated: use :meth:`sample_with_iterations`
            (True still returns its tuple, with a ``DeprecationWarning``).

        Returns:
          samples of shape ``sample_shape + context.shape[:-1] + (dim,)``.

        Raises:
          ValueError: context missing, unexpected, or of the wrong width;
            unknown method, or ``method``/``tol`` on an IAF (one pass); a
            bad ``chunk_size``.

        Examples:
          >>> flow = jaxmaf.MAF(2, 4, (32, 32), rngs=nnx.Rngs(0))
          >>> flow.sample(jax.random.key(0), (100,)).shape
          (100, 2)
        """
        if return_iterations:
            warnings.warn(
                "sample(..., return_iterations=True) is deprecated: call "
                "flow.sample_with_iterations(...), which returns (samples, iterations).",
                DeprecationWarning,
                stacklevel=2,
            )
            return self.sample_with_iterations(
                key, sample_shape, context, method=method, tol=tol, chunk_size=chunk_size
            )
        self._check_method("sample", method, tol)
        shape, context = self._check_sampling(key, sample_shape, context)
        return self._call("_sample", (shape, method, tol, False, chunk_size), key, context)

    def sample_with_iterations(
        self,
        key: Array,
        sample_shape: Sequence[int] | int = (),
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        chunk_size: int | None = None,
    ) -> tuple[Array, Array]:
        """Draws samples, and counts the conditioner passes each layer used.

        The same samples as :meth:`sample` with the same arguments. Useful to
        see what Jacobi sampling saves: a MAF layer takes ``dim`` passes
        exactly, Jacobi at most ``dim`` and often far fewer; an IAF layer one.

        Args:
          key: a JAX PRNG key.
          sample_shape: leading shape of the samples.
          context: ``(..., context_dim)`` for a conditional flow, else None.
          method: as in :meth:`sample`.
          tol: as in :meth:`sample`.
          chunk_size: as in :meth:`sample`.

        Returns:
          ``(samples, iterations)``: samples as :meth:`sample` returns them and
          an int array ``(num_layers,)`` of passes per layer, base side first
          (with chunking, the most any chunk used).

        Raises:
          ValueError: as :meth:`sample`.

        Examples:
          >>> flow = jaxmaf.MAF(2, 4, (32, 32), rngs=nnx.Rngs(0))
          >>> x, iters = flow.sample_with_iterations(jax.random.key(1), (100,), method="jacobi")
          >>> x.shape, iters.shape
          ((100, 2), (4,))
        """
        self._check_method("sample", method, tol)
        shape, context = self._check_sampling(key, sample_shape, context)
        return self._call("_sample", (shape, method, tol, True, chunk_size), key, context)

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
        return self._chunked(self._from_noise, u, context, chunk_size)

    def _from_noise(self, u: Array, context: Array | None) -> tuple[Array, Array]:
        """Base draws ``u`` pushed through the flow: the samples and their log-densities."""
        x, log_det = self.bijector(context).forward_and_log_det(u)
        return x, self.base_log_prob(u) - log_det

    def _check_sampling(
        self, key: Array, sample_shape: Sequence[int] | int, context: Array | None
    ) -> tuple[tuple[int, ...], Array | None]:
        """Checks a sampling call's arguments; returns the sample shape as a tuple of ints."""
        check_context(context, self.context_dim)
        check_key(key)
        shape = check_sample_shape(sample_shape)
        return shape, None if context is None else jnp.asarray(context)

    def _base_noise(self, key: Array, shape: tuple[int, ...], context: Array | None) -> Array:
        batch = () if context is None else tuple(jnp.shape(context)[:-1])
        return self.base.sample(key, shape + batch)
