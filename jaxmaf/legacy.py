"""Files from earlier releases: format version 1 and parameters that were renamed.

Version-1 flow files are a bare msgpack map tagged ``jaxmaf-flow``, without a
checksum. :func:`upgrade_version_1` turns one into today's payload, which
:func:`jaxmaf.serialization.flow_from_payload` then checks field by field
like any other; :func:`current_names` maps parameter names that changed
since, in files of either version (the mixture base's parameters, and the
layout before a flow's layers were modules).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flax import serialization

from jaxmaf.fileformat import expect, expect_keys

VERSION_1_FORMAT = "jaxmaf-flow"

# Parameters that moved: the mixture base's were flow attributes before it became a module.
RENAMED = {
    "base_logits": "base/logits",
    "base_means": "base/means",
    "base_log_scales": "base/log_scales",
}


def before_layer_modules(names: Iterable[str]) -> bool:
    """Whether parameter names are of the layout before a flow's layers were modules.

    Then a flow's MADEs were ``layers/k/...`` and its batch norms
    ``batch_norms/k/...``; today every layer is an entry of ``layers`` and an
    autoregressive layer's MADE is ``layers/j/conditioner/...``.

    Args:
      names: parameter names (paths joined by ``/``).

    Returns:
      True for the old layout.

    Examples:
      >>> before_layer_modules(["layers/0/hidden/0/bias"])
      True
      >>> before_layer_modules(["layers/0/conditioner/hidden/0/bias", "layers/1/beta"])
      False
    """
    names = list(names)
    if any("/conditioner/" in n for n in names):
        return False
    return any(n.startswith(("layers/", "batch_norms/")) for n in names)


def current_names(params: Any, batch_norm: bool = False) -> Any:
    """Stored parameters with names from earlier releases mapped to today's.

    Maps :data:`RENAMED`, and the layout before layers were modules (see
    :func:`before_layer_modules`): MADE ``k`` moves to
    ``layers/{j}/conditioner`` and batch norm ``k`` to ``layers/{j + 1}``,
    where ``j`` is ``3 k`` with batch norm (layer, batch norm, permutation)
    and ``2 k`` without.

    Args:
      params: the stored ``{name: array}`` map (anything else is returned as
        it is, to be refused by name where it is read).
      batch_norm: whether the flow has batch norm between its layers.

    Returns:
      the map with every renamed key replaced.

    Examples:
      >>> sorted(current_names({"base_logits": 0, "layers/1/output/bias": 1}))
      ['base/logits', 'layers/2/conditioner/output/bias']
      >>> sorted(current_names({"batch_norms/0/beta": 0, "layers/1/output/bias": 1}, True))
      ['layers/1/beta', 'layers/3/conditioner/output/bias']
    """
    if not isinstance(params, dict):
        return params
    params = {RENAMED.get(name, name): value for name, value in params.items()}
    if not before_layer_modules(name for name in params if isinstance(name, str)):
        return params
    block = 3 if batch_norm else 2
    moved = {}
    for name, value in params.items():
        head, _, rest = name.partition("/") if isinstance(name, str) else ("", "", "")
        k, _, tail = rest.partition("/")
        if head == "layers" and k.isdigit():
            name = f"layers/{block * int(k)}/conditioner/{tail}"
        elif head == "batch_norms" and k.isdigit():
            name = f"layers/{block * int(k) + 1}/{tail}"
        moved[name] = value
    return moved


def with_permutations(params: Any, permutations: dict[str, Any]) -> Any:
    """Stored parameters of a file written before permutations were state, completed.

    Such a file holds no permutation arrays: its flow's permutations are in
    the configuration (or, for a generic flow, in ``like``), from which the
    rebuilt flow took them. A file that holds any of them is returned as it
    is (a partial set is refused by name where it is read).

    Args:
      params: the stored ``{name: array}`` map.
      permutations: the rebuilt flow's permutation state by name.

    Returns:
      ``params``, with the rebuilt flow's permutations added when it had none.

    Examples:
      >>> sorted(with_permutations({"w": 0}, {"layers/1/permutation": 1}))
      ['layers/1/permutation', 'w']
      >>> with_permutations({"layers/1/permutation": 2}, {"layers/1/permutation": 1})
      {'layers/1/permutation': 2}
    """
    if not isinstance(params, dict) or any(name in params for name in permutations):
        return params
    return {**params, **permutations}


def upgrade_version_1(data: bytes, source: str = "<bytes>") -> dict[str, Any] | None:
    """A version-1 flow file as today's flow payload, or None when ``data`` is not one.

    Args:
      data: the file's bytes.
      source: file name for error messages.

    Returns:
      ``{"config", "masks", "params", "eval_mode"}`` (the configuration as
      JSON text, its class included), or None.

    Raises:
      ValueError: a version-1 file with missing or unknown fields, another
        version, or a configuration that is not JSON.

    Examples:
      >>> upgrade_version_1(b"not a jaxmaf file") is None
      True
    """
    if VERSION_1_FORMAT.encode() not in data:
        return None
    try:
        payload = serialization.msgpack_restore(data)
    except Exception:  # noqa: BLE001 - then it is not a version-1 file
        return None
    if not (isinstance(payload, dict) and payload.get("format") == VERSION_1_FORMAT):
        return None
    expect_keys(
        payload,
        {"format", "version", "class", "config", "masks", "params", "eval_mode"},
        source,
        "the version-1 flow",
    )
    expect(payload["version"] == 1, source, f"unknown version {payload['version']!r}.")
    expect(isinstance(payload["config"], str), source, "expected the configuration as JSON.")
    try:
        config = {"class": payload["class"], **json.loads(payload["config"])}
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{source}: the configuration is not valid JSON ({e}).") from None
    return {
        "config": json.dumps(config),
        "masks": payload["masks"],
        "params": payload["params"],
        "eval_mode": payload["eval_mode"] is True,
    }
