"""Saving and loading flows: :func:`save`, :func:`load` and the configuration they record.

A flow file is the checked container of :mod:`jaxmaf.fileformat` (magic,
SHA-256 digest, header) holding the flow's configuration as JSON, its masks
and its parameters by path. Loading rebuilds the flow from the
configuration (every field checked), recomputes its masks and compares them
with the stored ones, then restores each parameter after checking its name,
shape and dtype. A generic :class:`jaxmaf.Flow` has no configuration to
record (``null``): ``load(path, like=flow)`` takes its structure from a flow
built the same way, and checks masks and parameters against it. The masks'
records are :mod:`jaxmaf.mask_records`; format-version-1 files (no digest)
still load, with a warning (:mod:`jaxmaf.legacy` reads them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any

from flax import nnx

from jaxmaf.config import FlowConfig
from jaxmaf.fileformat import (
    FORMAT_VERSION,
    KINDS,
    MAGIC,
    atomic_write,
    decode,
    encode,
    expect,
    expect_keys,
    flat_params,
    from_named_arrays,
    named_leaves,
    read,
    set_flat_params,
    to_named_arrays,
)
from jaxmaf.flow import Flow
from jaxmaf.flows import IAF, MAF
from jaxmaf.layers import Permutation, PermutationIndex
from jaxmaf.legacy import current_names, upgrade_version_1, with_permutations
from jaxmaf.mask_records import adopt_checked_masks, check_masks, masks
from jaxmaf.transformers import TRANSFORMERS

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "MAGIC",
    "atomic_write",
    "check_permutations",
    "check_savable",
    "config_of",
    "decode",
    "encode",
    "flat_params",
    "flow_from_config",
    "flow_from_payload",
    "flow_payload",
    "from_named_arrays",
    "load",
    "masks",
    "named_leaves",
    "read",
    "save",
    "set_flat_params",
    "to_named_arrays",
]

_CLASSES = {"MAF": MAF, "IAF": IAF}


def config_of(flow: nnx.Module) -> dict[str, Any] | None:
    """A flow's class name and JSON-ready configuration (None for other modules).

    Args:
      flow: any NNX module.

    Returns:
      ``{"class": "MAF", **config}`` for a MAF or IAF, else None.

    Examples:
      >>> config_of(jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0)))["hidden_dims"]
      [4]
    """
    name = type(flow).__name__
    if name not in _CLASSES or not isinstance(getattr(flow, "config", None), FlowConfig):
        return None
    return {"class": name, **flow.config.to_dict()}


def _structure(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A configuration without its permutations' values (state: the file's are loaded)."""
    if not isinstance(config, dict):
        return config
    return {**config, "permutation": [len(p) for p in config.get("permutation", [])]}


def flow_from_config(config: Any, source: str = "<bytes>") -> MAF | IAF:
    """Builds a flow from a configuration written by :func:`config_of`, checking every field.

    Args:
      config: the map.
      source: file name for error messages.

    Returns:
      a new flow (fresh parameters; masks from the configuration).

    Raises:
      ValueError: unknown class or transformer name, missing or unknown
        fields, values the constructors refuse (the message names the field).

    Examples:
      >>> flow = flow_from_config(config_of(jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0))))
      >>> type(flow).__name__
      'MAF'
    """
    expect(isinstance(config, dict), source, "expected the configuration as a map.")
    config = dict(config)
    cls = config.pop("class", None)
    expect(
        cls in _CLASSES, source, f"unknown flow class {cls!r}: expected one of {sorted(_CLASSES)}."
    )
    fields = {f.name: f for f in dataclasses.fields(FlowConfig)}
    required = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
    missing, extra = sorted(required - set(config)), sorted(set(config) - set(fields))
    expect(
        not missing and not extra,
        source,
        f"unexpected configuration fields: missing {missing}, unknown {extra}.",
    )
    transformer = config.pop("transformer")
    expect(isinstance(transformer, dict), source, "expected the transformer as a map.")
    transformer = dict(transformer)
    name = transformer.pop("name", None)
    expect(
        name in TRANSFORMERS,
        source,
        f"unknown transformer {name!r}: expected one of {sorted(TRANSFORMERS)}.",
    )
    t_fields = {f.name for f in dataclasses.fields(TRANSFORMERS[name])}
    expect(
        set(transformer) <= t_fields,
        source,
        f"unknown {name} transformer fields {sorted(set(transformer) - t_fields)}.",
    )
    activation = config.get("activation")
    expect(
        isinstance(activation, str),
        source,
        f"expected the activation by name, got {activation!r}.",
    )
    permutation = config.get("permutation")
    expect(
        isinstance(permutation, list) and all(isinstance(p, list) for p in permutation),
        source,
        f"expected the permutations as lists of integers, got {permutation!r}.",
    )
    try:
        config["transformer"] = TRANSFORMERS[name](**transformer)
        return _CLASSES[cls](**config, rngs=nnx.Rngs(0))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source}: invalid configuration: {e}") from None


def save(path: str | os.PathLike, flow: Flow) -> None:
    """Saves a flow's configuration, masks and parameters to one checksummed file.

    Args:
      path: destination file (written atomically; parent directory created).
      flow: a :class:`jaxmaf.MAF` or :class:`jaxmaf.IAF` (:func:`load`
        rebuilds it), or a generic :class:`jaxmaf.Flow` (stored without a
        configuration: ``load(path, like=...)`` reads it).

    Raises:
      ValueError: not a jaxmaf flow; a MAF/IAF whose activation was given
        as a callable (it cannot be recorded by name).

    Examples:
      >>> import os, tempfile
      >>> flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
      >>> path = os.path.join(tempfile.mkdtemp(), "flow.jaxmaf")
      >>> jaxmaf.save(path, flow)
      >>> same = jaxmaf.load(path)
      >>> x = jnp.ones((3, 2))
      >>> bool(jnp.array_equal(same.log_prob(x), flow.log_prob(x)))
      True
    """
    atomic_write(path, encode("flow", flow_payload(flow)))


def check_savable(flow: nnx.Module) -> str | None:
    """Why :func:`save` would refuse ``flow`` (None: it can be saved).

    Args:
      flow: any NNX module.

    Returns:
      the reason, or None.

    Examples:
      >>> flow = jaxmaf.MAF(2, 1, (4,), activation=jnp.tanh, rngs=nnx.Rngs(0))
      >>> check_savable(flow).startswith("This flow's activation was given as a callable")
      True
    """
    if not isinstance(flow, Flow):
        return f"Expected a jaxmaf flow (MAF, IAF or jaxmaf.Flow) to save, got {type(flow)!r}."
    config = config_of(flow)
    if config is None:  # a generic Flow: its parameters and masks, loaded with like=
        return None
    if config["hidden_degrees"] == "random" and config["mask_seed"] is None:
        return (
            "This flow's random hidden degrees came from a version-1 file and cannot be "
            "recomputed from a seed; build a new flow with mask_seed= and copy the parameters."
        )
    if config["activation"] is None:
        return (
            "This flow's activation was given as a callable; save needs it by name "
            f"(one of jaxmaf.ACTIVATIONS), got {flow.conditioners[0].activation_fn!r}."
        )
    return None


def flow_payload(flow: Flow) -> dict[str, Any]:
    """What :func:`save` stores for ``flow`` (configuration, masks, parameters, mode).

    Args:
      flow: a MAF or IAF with a named activation, or a generic
        :class:`jaxmaf.Flow` (stored without a configuration, as ``null``).

    Returns:
      the payload map.

    Raises:
      ValueError: as :func:`save`.

    Examples:
      >>> sorted(flow_payload(jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0))))
      ['config', 'eval_mode', 'masks', 'params']
    """
    reason = check_savable(flow)
    if reason is not None:
        raise ValueError(reason)
    return {
        "config": json.dumps(config_of(flow)),  # null for a generic Flow
        "masks": masks(flow),
        "params": flat_params(flow),
        "eval_mode": bool(flow.batch_norms and flow.batch_norms[0].use_running_average),
    }


def check_permutations(flow: Flow, recorded: Any, source: str = "<bytes>") -> None:
    """Refuses stored permutations that are not permutations, or not the configuration's.

    Args:
      flow: the flow, its state restored from the file.
      recorded: the configuration's permutations (lists), or None for a generic flow.
      source: file name for error messages.

    Raises:
      ValueError: see :meth:`jaxmaf.Permutation.checked`; permutations other than ``recorded``.

    Examples:
      >>> check_permutations(jaxmaf.MAF(3, 2, (4,), rngs=nnx.Rngs(0)), None)
    """
    held = [layer.checked(source) for layer in flow.layers if isinstance(layer, Permutation)]
    expect(
        recorded is None or held == recorded,
        source,
        f"the stored permutations {held} differ from the configuration's {recorded}.",
    )


def flow_from_payload(
    payload: Any,
    source: str = "<bytes>",
    *,
    adopt_random_masks: bool = False,
    like: Flow | None = None,
) -> Flow:
    """Rebuilds a flow from :func:`flow_payload`'s map, checking every field.

    Args:
      payload: the map.
      source: file name for error messages.
      adopt_random_masks: take the stored masks of a flow with random hidden
        degrees after checking their shapes and the autoregressive property
        (version-1 files drew those degrees from ``rngs``, so no seed
        recomputes them; the flow then records no ``mask_seed``).
      like: a flow built as the saved one was: required for a generic
        :class:`jaxmaf.Flow` (stored without a configuration), whose copy
        receives the parameters; for a MAF or IAF, its configuration must
        equal the stored one.

    Returns:
      the flow (``like`` itself is left unchanged).

    Raises:
      ValueError: any field missing, unknown, of the wrong type or value; masks
        that differ from those the configuration (or ``like``) defines; a
        generic flow without ``like``, or a ``like`` of another configuration.

    Examples:
      >>> flow = jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(3))
      >>> same = flow_from_payload(flow_payload(flow))
      >>> bool(jnp.array_equal(same.log_prob(jnp.ones(2)), flow.log_prob(jnp.ones(2))))
      True
    """
    expect(isinstance(payload, dict), source, "expected the payload as a map.")
    expect_keys(payload, {"config", "masks", "params", "eval_mode"}, source, "the flow")
    expect(isinstance(payload["config"], str), source, "expected the configuration as JSON text.")
    try:
        config = json.loads(payload["config"])
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: the configuration is not valid JSON ({e}).") from None
    if like is not None and not isinstance(like, Flow):
        raise ValueError(f"Expected like to be a jaxmaf flow, got {type(like)!r}.")
    params = payload["params"]
    if config is None:  # a generic Flow: the structure comes from like
        if like is None:
            raise ValueError(
                f"{source} holds a generic jaxmaf.Flow, saved without a configuration: pass "
                "like=, a flow built the same way, to load its parameters into a copy of it."
            )
        flow = nnx.clone(like)
    else:
        flow = flow_from_config(config, source)
        if like is not None and _structure(config_of(like)) != _structure(config):
            raise ValueError(
                f"{source} holds a {config.get('class')} whose configuration differs from "
                "like's: leave like out (the file rebuilds its flow) or pass a matching flow."
            )
        params = current_names(params, flow.config.batch_norm)
        if adopt_random_masks and config.get("hidden_degrees") == "random":
            adopt_checked_masks(flow, payload["masks"], source)
            flow.config = dataclasses.replace(flow.config, mask_seed=None)  # not reproducible
    check_masks(flow, payload["masks"], source)
    params = with_permutations(params, to_named_arrays(nnx.state(flow, PermutationIndex)))
    set_flat_params(flow, params, source)
    check_permutations(flow, None if config is None else config["permutation"], source)
    expect(isinstance(payload["eval_mode"], bool), source, "expected eval_mode to be a bool.")
    if payload["eval_mode"]:
        flow.eval()
    return flow


def load(path: str | os.PathLike, *, like: Flow | None = None) -> Flow:
    """Loads a flow written by :func:`save`, trusting nothing in the file.

    The checksum, every field, the parameter names, shapes and dtypes are
    checked, and the masks are recomputed from the configuration and compared
    with the stored ones. Files of format version 1 (no checksum) still load,
    with a warning. A generic :class:`jaxmaf.Flow` is stored without a
    configuration: ``like`` supplies its structure.

    Args:
      path: the file.
      like: a flow built as the saved one was (required for a generic
        ``jaxmaf.Flow``; optional for a MAF or IAF, whose configuration it
        must match). It is copied, not changed.

    Returns:
      a new flow with the saved configuration, masks, parameters and batch
      statistics, in the saved train/eval mode (its ``log_prob`` equals the
      saved flow's exactly).

    Raises:
      ValueError: not a jaxmaf file (empty, another format, random bytes); a
        corrupted or truncated file; a training state rather than a flow; an
        unknown format version, class or transformer; any field of the wrong
        type or value (named); masks that differ from the configuration's.
      FileNotFoundError: no such file.

    Examples:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "flow.jaxmaf")
      >>> jaxmaf.save(path, jaxmaf.IAF(2, 2, (8,), rngs=nnx.Rngs(0)))
      >>> type(jaxmaf.load(path)).__name__
      'IAF'
    """
    source = repr(os.fspath(path))
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        payload = upgrade_version_1(data, source)
        if payload is not None:
            flow = flow_from_payload(payload, source, adopt_random_masks=True, like=like)
            warnings.warn(
                f"{source} is a version-1 jaxmaf file without a checksum; save it again to "
                "protect it.",
                UserWarning,
                stacklevel=2,
            )
            return flow
    return flow_from_payload(decode(data, "flow", source), source, like=like)
