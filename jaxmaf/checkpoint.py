"""Saving and loading flows: configuration + masks + parameters in one msgpack file.

Format: ``flax.serialization`` msgpack (a single file written atomically via a
temporary file and ``os.replace``). Chosen over orbax-checkpoint because a flow
is a few MB at most: one synchronous file, no background threads, no
directory layout, and the same bytes on every platform.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from jaxmaf.flows import IAF, MAF
from jaxmaf.made import Constant
from jaxmaf.transformers import TRANSFORMERS

FORMAT = "jaxmaf-flow"
VERSION = 1
_CLASSES = {"MAF": MAF, "IAF": IAF}


def _named_leaves(module: nnx.Module):
    """``([(name, leaf)], treedef)`` of the module's whole state, names like ``layers/0/...``."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(nnx.state(module))
    named = []
    for path, leaf in with_path:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        named.append(("/".join(k for k in keys if k != "value"), leaf))
    return named, treedef


def flat_params(module: nnx.Module) -> dict[str, np.ndarray]:
    """The module's state (parameters, batch statistics) as ``{"layers/0/hidden/0/bias": a}``."""
    return {name: np.asarray(leaf) for name, leaf in _named_leaves(module)[0]}


def set_flat_params(module: nnx.Module, flat: dict[str, Any]) -> None:
    """Writes the state produced by :func:`flat_params` back into ``module``.

    Raises:
      ValueError: names, shapes or dtypes that do not match the module's.
    """
    named, treedef = _named_leaves(module)
    names = [name for name, _ in named]
    if sorted(names) != sorted(flat):
        raise ValueError(
            f"Parameter names do not match: expected {sorted(names)}, got {sorted(flat)}."
        )
    new = []
    for name, leaf in named:
        arr = np.asarray(flat[name])
        if arr.shape != leaf.shape or arr.dtype != leaf.dtype:
            raise ValueError(
                f"Parameter {name}: expected {leaf.dtype}{leaf.shape}, got {arr.dtype}{arr.shape}."
            )
        new.append(jnp.asarray(arr))
    nnx.update(module, jax.tree.unflatten(treedef, new))


def _masks(flow) -> list[dict[str, Any]]:
    return [
        {
            "degrees": made.degrees.array,
            "hidden": {str(i): lin.mask.array for i, lin in enumerate(made.hidden)},
            "output": made.output.mask.array,
        }
        for made in flow.layers
    ]


def save(path: str | os.PathLike, flow: MAF | IAF) -> None:
    """Saves a flow's configuration, masks and parameters to one file.

    Args:
      path: destination file (written atomically; parent directory created).
      flow: a :class:`jaxmaf.MAF` or :class:`jaxmaf.IAF`.

    Raises:
      ValueError: a flow that is not a MAF/IAF, or whose activation was given
        as a callable (it cannot be recorded by name).

    Example:
      >>> import os, tempfile
      >>> flow = jaxmaf.MAF(2, 2, (8,), rngs=nnx.Rngs(0))
      >>> path = os.path.join(tempfile.mkdtemp(), "flow.jaxmaf")
      >>> jaxmaf.save(path, flow)
      >>> same = jaxmaf.load(path)
      >>> x = jnp.ones((3, 2))
      >>> bool(jnp.array_equal(same.log_prob(x), flow.log_prob(x)))
      True
    """
    name = type(flow).__name__
    if name not in _CLASSES:
        raise ValueError(f"Expected a MAF or IAF to save, got {type(flow)!r}.")
    config = flow.config.to_dict()
    if config["activation"] is None:
        raise ValueError(
            "This flow's activation was given as a callable; save needs it by name "
            f"(one of jaxmaf.ACTIVATIONS), got {flow.layers[0].activation_fn!r}."
        )
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "class": name,
        "config": json.dumps(config),
        "masks": {str(i): m for i, m in enumerate(_masks(flow))},
        "params": flat_params(flow),
        "eval_mode": bool(flow.batch_norms and flow.batch_norms[0].use_running_average),
    }
    atomic_write(path, serialization.msgpack_serialize(payload))


def load(path: str | os.PathLike) -> MAF | IAF:
    """Loads a flow written by :func:`save`.

    Args:
      path: the file.

    Returns:
      a new flow with the saved configuration, masks, parameters and batch
      statistics, in the saved train/eval mode (its ``log_prob`` equals the
      saved flow's exactly).

    Raises:
      ValueError: not a jaxmaf flow file, or an unknown format version.
      FileNotFoundError: no such file.
    """
    with open(path, "rb") as f:
        payload = serialization.msgpack_restore(f.read())
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"Expected a {FORMAT} file, got {path!r} without that format tag.")
    if payload["version"] != VERSION:
        raise ValueError(f"Expected format version {VERSION}, got {payload['version']}.")
    config = json.loads(payload["config"])
    transformer = config.pop("transformer")
    config["transformer"] = TRANSFORMERS[transformer.pop("name")](**transformer)
    config["param_dtype"] = jnp.dtype(config["param_dtype"])
    flow = _CLASSES[payload["class"]](**config, rngs=nnx.Rngs(0))
    for made, m in zip(
        flow.layers, [payload["masks"][str(i)] for i in range(len(flow.layers))], strict=True
    ):
        made.degrees = Constant(m["degrees"])
        for i, lin in enumerate(made.hidden):
            lin.mask = Constant(m["hidden"][str(i)])
        made.output.mask = Constant(m["output"])
    set_flat_params(flow, payload["params"])
    if payload.get("eval_mode"):
        flow.eval()
    return flow


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and ``os.replace`` (no torn files)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
