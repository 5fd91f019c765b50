"""The layers of a flow: NNX modules that each give a distrax bijector.

A :class:`jaxmaf.Flow` is a base distribution and a list of layers. A layer
is any NNX module with the method of :class:`Layer`, ``bijector(context, *,
method, tol, update_batch_stats)``, which returns the layer's map from the
base side to the data side as a distrax bijector. jaxmaf's layers:

- :class:`AutoregressiveLayer`: a conditioner (a :class:`jaxmaf.MADE`) and a
  transformer; a MAF layer, or with ``inverted=True`` an IAF layer;
- :class:`Permutation`: a reordering of the dimensions (held as state);
- :class:`jaxmaf.BatchNorm`: batch normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmaf.bijectors import MaskedAutoregressive, Permute
from jaxmaf.made import MADE
from jaxmaf.masks import check_index_array, check_permutation
from jaxmaf.transformers import Transformer, get_transformer

Array = jax.Array
__all__ = ["AutoregressiveLayer", "Layer", "Permutation", "PermutationIndex"]


@runtime_checkable
class Layer(Protocol):
    """What :class:`jaxmaf.Flow` asks of a layer (an NNX module).

    Examples:
      >>> isinstance(jaxmaf.BatchNorm(2), Layer), isinstance(Permutation([1, 0]), Layer)
      (True, True)
    """

    def bijector(
        self,
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        update_batch_stats: bool = False,
    ) -> distrax.Bijector:
        """The layer's map from the base side to the data side.

        Args:
          context: ``(..., context_dim)`` for a conditional layer, else None
            (a layer without a conditioner ignores it).
          method: ``"exact"`` or ``"jacobi"``, for a layer whose one
            direction is sequential.
          tol: Jacobi stopping threshold.
          update_batch_stats: a batch norm in train mode moves its running
            averages when the density direction runs.

        Returns:
          a distrax bijector with ``event_ndims_in = 1``.
        """
        ...


class AutoregressiveLayer(nnx.Module):
    """A MADE-conditioned autoregressive layer: MAF's, or IAF's with ``inverted=True``.

    Its bijector is :class:`jaxmaf.MaskedAutoregressive` over the conditioner
    (bound to the context for a conditional flow), wrapped in
    :class:`distrax.Inverse` when ``inverted``: a MAF layer computes the
    density in one pass and samples in ``D``; an IAF layer the reverse.

    Args:
      conditioner: a :class:`jaxmaf.MADE` with ``num_params`` equal to the
        transformer's.
      transformer: ``"affine"``, ``"spline"`` or a transformer instance.
      inverted: True for an IAF layer.

    Raises:
      ValueError: a conditioner that is not a MADE, or one whose outputs per
        dimension differ from the transformer's ``num_params``.

    Examples:
      >>> made = jaxmaf.MADE(2, (8,), 2, output_init_scale=1.0, rngs=nnx.Rngs(0))
      >>> layer = AutoregressiveLayer(made)
      >>> u, log_det = layer.bijector().inverse_and_log_det(jnp.ones((5, 2)))
      >>> u.shape, log_det.shape
      ((5, 2), (5,))
    """

    def __init__(
        self, conditioner: MADE, transformer: str | Transformer = "affine", inverted: bool = False
    ):
        if not isinstance(conditioner, MADE):
            raise ValueError(
                f"Expected conditioner to be a jaxmaf.MADE, got a {type(conditioner).__name__}."
            )
        transformer = get_transformer(transformer)
        if conditioner.num_params != transformer.num_params:
            raise ValueError(
                f"Expected a conditioner with {transformer.num_params} outputs per dimension "
                f"(the transformer's num_params), got {conditioner.num_params}."
            )
        if not isinstance(inverted, bool | np.bool_):
            raise ValueError(f"Expected inverted to be True or False, got {inverted!r}.")
        self.conditioner = conditioner
        self.transformer = transformer
        self.inverted = bool(inverted)

    def bijector(
        self,
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        update_batch_stats: bool = False,
    ) -> distrax.Bijector:
        """The layer's bijector (see :class:`Layer`); ``update_batch_stats`` does nothing here."""
        made = self.conditioner if context is None else self.conditioner.bind(context)
        layer = MaskedAutoregressive(made, self.transformer, method=method, tol=tol)
        return distrax.Inverse(layer) if self.inverted else layer


class PermutationIndex(nnx.Variable):
    """An integer index held as state: a flow's permutation (not trained).

    State rather than structure, so that flows drawn with different orders
    share one graph definition (ensembles stack them; one compiled program
    serves them all). Optimizers see only :class:`flax.nnx.Param`.
    """


class Permutation(nnx.Module):
    """A reordering of the dimensions, ``y[..., i] = x[..., permutation[i]]``.

    The permutation and its inverse are state (:class:`PermutationIndex`,
    int32): saved with the flow, stacked by ensembles, never trained.

    Args:
      permutation: a permutation of ``0..D-1``: a list, a numpy array or a
        JAX integer array of shape ``(D,)`` (e.g. ``jax.random.permutation``'s;
        its values are checked unless it is abstract, as under
        ``nnx.eval_shape``).

    Raises:
      ValueError: not a permutation; a JAX array that is not integer of
        shape ``(D,)``.

    Examples:
      >>> Permutation([1, 0]).bijector().forward(jnp.array([1.0, 2.0])).tolist()
      [2.0, 1.0]
      >>> Permutation([2, 0, 1]).inverse[...].tolist()
      [1, 2, 0]
    """

    def __init__(self, permutation: Sequence[int] | np.ndarray | jax.Array):
        # Concrete values are handled on the host: eager jnp operations compile a
        # program for each new dim.
        if isinstance(permutation, jax.Array):
            perm = check_index_array(permutation)
        else:
            perm = check_permutation(permutation, len(np.asarray(permutation)))
            perm = jax.device_put(np.asarray(perm, np.int32))
        if isinstance(perm, jax.core.Tracer):
            inverse = jnp.argsort(perm).astype(jnp.int32)
        else:
            inverse = jax.device_put(np.argsort(np.asarray(perm)).astype(np.int32))
        self.permutation = PermutationIndex(perm)
        self.inverse = PermutationIndex(inverse)

    def checked(self, source: str = "<bytes>") -> list[int]:
        """The permutation as a list, once its state is checked (as after loading a file).

        Args:
          source: where the state came from, for the error message.

        Returns:
          the permutation's entries.

        Raises:
          ValueError: the state is not a permutation of ``0..D-1`` and its inverse.

        Examples:
          >>> Permutation([2, 0, 1]).checked()
          [2, 0, 1]
        """
        perm, inverse = np.asarray(self.permutation[...]), np.asarray(self.inverse[...])
        identity = np.arange(perm.shape[0])
        valid = all(np.array_equal(np.sort(p), identity) for p in (perm, inverse))
        if not (valid and np.array_equal(perm[inverse], identity)):
            raise ValueError(
                f"{source}: the stored permutation {perm.tolist()} and inverse "
                f"{inverse.tolist()} are not a permutation and its inverse."
            )
        return perm.tolist()

    def bijector(
        self,
        context: Array | None = None,
        *,
        method: str = "exact",
        tol: float = 0.0,
        update_batch_stats: bool = False,
    ) -> distrax.Bijector:
        """:class:`jaxmaf.Permute` (see :class:`Layer`; the arguments do nothing here)."""
        return Permute(self.permutation[...], self.inverse[...])
