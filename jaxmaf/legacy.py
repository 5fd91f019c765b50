"""Files from earlier releases: format version 1 and parameters that were renamed.

Version-1 flow files are a bare msgpack map tagged ``jaxmaf-flow``, without a
checksum. :func:`upgrade_version_1` turns one into today's payload, which
:func:`jaxmaf.serialization.flow_from_payload` then checks field by field
like any other; :func:`current_names` maps parameter names that changed
since.
"""

from __future__ import annotations

import json
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


def current_names(params: Any) -> Any:
    """Stored parameters with names from earlier releases mapped to today's (:data:`RENAMED`).

    Args:
      params: the stored ``{name: array}`` map (anything else is returned as
        it is, to be refused by name where it is read).

    Returns:
      the map with every renamed key replaced.

    Examples:
      >>> sorted(current_names({"base_logits": 0, "layers/0/output/bias": 1}))
      ['base/logits', 'layers/0/output/bias']
    """
    if not isinstance(params, dict):
        return params
    return {RENAMED.get(name, name): value for name, value in params.items()}


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
