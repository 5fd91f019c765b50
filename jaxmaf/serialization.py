"""Saving and loading: the one checked file format for flows and training state.

A file is ``MAGIC`` (9 bytes), the SHA-256 digest (32 bytes) of what follows,
then a msgpack body ``{"format_version", "kind", "jaxmaf_version",
"payload"}``. Loading trusts nothing in it: the magic says whether it is a
jaxmaf file at all, the digest catches any changed, missing or added byte,
and every field is checked against a schema before use; a flow's masks are
recomputed from its configuration and compared with the stored ones. No code
is ever executed from a file (msgpack holds only numbers, strings, maps and
raw arrays; no pickle).

Writes are atomic (a temporary file in the same directory, then
``os.replace``), leftovers of an interrupted write are removed by the next
write to the same path, and files get the usual permissions (``0666`` minus
the umask).

Why msgpack in one file rather than orbax: a flow is a few MB at most, so one
synchronous write with no background threads and no directory layout, with
the same bytes on every platform.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from jaxmaf.flows import IAF, MAF, FlowConfig
from jaxmaf.made import Constant
from jaxmaf.transformers import TRANSFORMERS

MAGIC = b"\x89JAXMAF\r\n"
FORMAT_VERSION = 2
KINDS = ("flow", "train_state")
_LEGACY_FORMAT = "jaxmaf-flow"  # version-1 flow files: a bare msgpack map without a digest
_CLASSES = {"MAF": MAF, "IAF": IAF}
_DIGEST = 32


# ---------------------------------------------------------------- the container


def encode(kind: str, payload: dict[str, Any]) -> bytes:
    """The bytes of a jaxmaf file holding ``payload`` (numbers, strings, arrays, maps).

    Args:
      kind: ``"flow"`` or ``"train_state"``.
      payload: a msgpack-serialisable map (numpy arrays allowed).

    Returns:
      ``MAGIC + sha256(body) + body``.

    Examples:
      >>> data = encode("flow", {"x": np.arange(3)})
      >>> decode(data, "flow")["x"].tolist()
      [0, 1, 2]
    """
    from jaxmaf import __version__

    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}: expected one of {KINDS}.")
    body = serialization.msgpack_serialize(
        {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "jaxmaf_version": __version__,
            "payload": payload,
        }
    )
    return MAGIC + hashlib.sha256(body).digest() + body


def decode(data: bytes, kind: str, source: str = "<bytes>") -> dict[str, Any]:
    """The payload of a jaxmaf file, after checking its magic, digest and header.

    Args:
      data: the file's bytes.
      kind: the kind expected (``"flow"`` or ``"train_state"``).
      source: the file's name, for error messages.

    Returns:
      the payload map.

    Raises:
      ValueError: not a jaxmaf file (empty, too short, another format); a
        digest mismatch (a truncated or corrupted file); an unknown format
        version; a file of another kind.

    Examples:
      >>> decode(b"GIF89a", "flow")
      Traceback (most recent call last):
      ...
      ValueError: <bytes> is not a jaxmaf file (it does not start with the jaxmaf marker).
    """
    if not data.startswith(MAGIC):
        if data.startswith(MAGIC[:7]):
            raise ValueError(
                f"{source} is a damaged jaxmaf file: its marker is altered "
                "(written or copied in text mode?)."
            )
        raise ValueError(
            f"{source} is not a jaxmaf file (it does not start with the jaxmaf marker)."
        )
    digest, body = data[len(MAGIC) : len(MAGIC) + _DIGEST], data[len(MAGIC) + _DIGEST :]
    if len(digest) < _DIGEST or hashlib.sha256(body).digest() != digest:
        raise ValueError(
            f"{source} is corrupted or truncated: its SHA-256 checksum does not match "
            f"its contents ({len(data)} bytes)."
        )
    try:
        header = serialization.msgpack_restore(body)
    except Exception as e:  # noqa: BLE001 - a checksummed body that does not parse
        raise ValueError(f"{source}: the body does not parse as msgpack ({e}).") from None
    if not isinstance(header, dict):
        raise ValueError(f"{source}: expected a map at the top level, got {type(header).__name__}.")
    _expect_keys(header, {"format_version", "kind", "jaxmaf_version", "payload"}, source, "header")
    if header["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{source}: expected format version {FORMAT_VERSION}, got "
            f"{header['format_version']!r} (written by jaxmaf {header['jaxmaf_version']!r})."
        )
    if header["kind"] != kind:
        hints = {
            "flow": "a saved flow (read it with jaxmaf.load)",
            "train_state": "a training state (fit(..., checkpoint_dir=, resume=True) reads it)",
        }
        raise ValueError(
            f"{source} holds {hints.get(header['kind'], repr(header['kind']))}, "
            f"not {'a saved flow' if kind == 'flow' else 'a training state'}."
        )
    if not isinstance(header["payload"], dict):
        raise ValueError(f"{source}: expected the payload to be a map.")
    return header["payload"]


def read(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Reads and checks a jaxmaf file (see :func:`decode`).

    Args:
      path: the file.
      kind: ``"flow"`` or ``"train_state"``.

    Returns:
      the payload map.

    Raises:
      FileNotFoundError: no such file.
      ValueError: as :func:`decode`.

    Examples:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "state")
      >>> atomic_write(path, encode("train_state", {"step": 3}))
      >>> read(path, "train_state")
      {'step': 3}
    """
    with open(path, "rb") as f:
        data = f.read()
    return decode(data, kind, repr(os.fspath(path)))


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and ``os.replace`` (no torn files).

    Leftover temporary files of an interrupted earlier write to the same
    ``path`` are removed first. The file gets ``0666`` minus the umask, like
    any file ``open`` creates. One writer per path at a time.

    Args:
      path: destination (its directory is created if missing).
      data: the bytes.

    Examples:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "out", "x.bin")
      >>> atomic_write(path, b"abc")
      >>> open(path, "rb").read()
      b'abc'
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = f".{name}.tmp-"
    for stale in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*")):
        try:
            os.remove(stale)
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _expect_keys(d: Mapping, keys: set[str], source: str, what: str) -> None:
    missing, extra = sorted(keys - set(d)), sorted(set(d) - keys)
    if missing or extra:
        raise ValueError(
            f"{source}: unexpected fields in {what}: missing {missing}, unknown {extra}."
        )


def _expect(cond: bool, source: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{source}: {message}")


# ---------------------------------------------------------------- named arrays


def named_leaves(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    """``([(name, leaf)], treedef)`` of a pytree; names like ``layers/0/hidden/0/bias``.

    Args:
      tree: any pytree (an NNX state, an Optax state).

    Returns:
      the leaves with their paths joined by ``/``, and the tree definition.

    Examples:
      >>> named_leaves({"a": [1, 2]})[0]
      [('a/0', 1), ('a/1', 2)]
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    named = []
    for path, leaf in with_path:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        named.append(("/".join(k for k in keys if k != "value"), leaf))
    return named, treedef


def to_named_arrays(tree: Any) -> dict[str, np.ndarray]:
    """A pytree's leaves as ``{name: numpy array}`` (see :func:`named_leaves`).

    Args:
      tree: any pytree of arrays.

    Returns:
      the map from leaf names to host arrays.

    Examples:
      >>> to_named_arrays({"w": jnp.ones(2)})
      {'w': array([1., 1.], dtype=float32)}
    """
    return {name: np.asarray(leaf) for name, leaf in named_leaves(tree)[0]}


def from_named_arrays(
    template: Any, stored: Any, source: str = "<bytes>", what: str = "parameters"
) -> Any:
    """Rebuilds ``template``'s pytree from stored named arrays, checking every leaf.

    Args:
      template: a pytree with the expected structure, shapes and dtypes.
      stored: the map written by :func:`to_named_arrays`.
      source: file name for error messages.
      what: what the arrays are, for error messages.

    Returns:
      the pytree with the stored values (JAX arrays).

    Raises:
      ValueError: a missing or unexpected name, a shape or dtype mismatch, or
        a value that is not an array; the message names the leaf.

    Examples:
      >>> from_named_arrays({"w": jnp.zeros(2)}, {"w": np.ones(2, np.float32)})
      {'w': Array([1., 1.], dtype=float32)}
    """
    named, treedef = named_leaves(template)
    _expect(isinstance(stored, dict), source, f"expected the {what} as a map of arrays.")
    names = [name for name, _ in named]
    missing, extra = sorted(set(names) - set(stored)), sorted(set(stored) - set(names))
    if missing or extra:
        raise ValueError(
            f"{source}: the stored {what} do not match: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
            f"{' ...' if len(extra) > 5 else ''}."
        )
    leaves = []
    for name, leaf in named:
        arr = stored[name]
        _expect(isinstance(arr, np.ndarray | np.generic), source, f"{what} {name}: not an array.")
        arr = np.asarray(arr)
        expected = (np.dtype(leaf.dtype), tuple(leaf.shape))
        if (arr.dtype, arr.shape) != expected:
            raise ValueError(
                f"{source}: {what} {name}: expected {expected[0]}{expected[1]}, "
                f"got {arr.dtype}{arr.shape}."
            )
        leaves.append(jnp.asarray(arr))
    return jax.tree.unflatten(treedef, leaves)


# ---------------------------------------------------------------- flows


def flat_params(module: nnx.Module) -> dict[str, np.ndarray]:
    """The module's state (parameters, batch statistics) as ``{"layers/0/hidden/0/bias": a}``.

    Args:
      module: any NNX module.

    Returns:
      the named arrays (host copies).

    Examples:
      >>> flow = jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0))
      >>> sorted(flat_params(flow))[:2]
      ['layers/0/hidden/0/bias', 'layers/0/hidden/0/kernel']
    """
    return to_named_arrays(nnx.state(module))


def set_flat_params(module: nnx.Module, flat: dict[str, Any], source: str = "<bytes>") -> None:
    """Writes the state produced by :func:`flat_params` back into ``module``.

    Args:
      module: the NNX module to update in place.
      flat: the named arrays.
      source: file name for error messages.

    Raises:
      ValueError: names, shapes or dtypes that do not match the module's.

    Examples:
      >>> a = jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0))
      >>> b = jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(1))
      >>> set_flat_params(b, flat_params(a))
      >>> bool(jnp.array_equal(a.log_prob(jnp.ones(2)), b.log_prob(jnp.ones(2))))
      True
    """
    nnx.update(module, from_named_arrays(nnx.state(module), flat, source))


def masks(flow: MAF | IAF) -> dict[str, Any]:
    """Every layer's input degrees and masks, as stored in a flow file.

    Args:
      flow: a MAF or IAF.

    Returns:
      ``{"0": {"degrees", "hidden": {"0": mask, ...}, "output"}, ...}``.

    Examples:
      >>> m = masks(jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0)))
      >>> m["0"]["output"].shape
      (4, 4)
    """
    return {
        str(i): {
            "degrees": made.degrees.array,
            "hidden": {str(j): lin.mask.array for j, lin in enumerate(made.hidden)},
            "output": made.output.mask.array,
        }
        for i, made in enumerate(flow.layers)
    }


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
    _expect(isinstance(config, dict), source, "expected the configuration as a map.")
    config = dict(config)
    cls = config.pop("class", None)
    _expect(
        cls in _CLASSES, source, f"unknown flow class {cls!r}: expected one of {sorted(_CLASSES)}."
    )
    fields = {f.name: f for f in dataclasses.fields(FlowConfig)}
    required = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
    missing, extra = sorted(required - set(config)), sorted(set(config) - set(fields))
    _expect(
        not missing and not extra,
        source,
        f"unexpected configuration fields: missing {missing}, unknown {extra}.",
    )
    transformer = config.pop("transformer")
    _expect(isinstance(transformer, dict), source, "expected the transformer as a map.")
    transformer = dict(transformer)
    name = transformer.pop("name", None)
    _expect(
        name in TRANSFORMERS,
        source,
        f"unknown transformer {name!r}: expected one of {sorted(TRANSFORMERS)}.",
    )
    t_fields = {f.name for f in dataclasses.fields(TRANSFORMERS[name])}
    _expect(
        set(transformer) <= t_fields,
        source,
        f"unknown {name} transformer fields {sorted(set(transformer) - t_fields)}.",
    )
    activation = config.get("activation")
    _expect(
        isinstance(activation, str),
        source,
        f"expected the activation by name, got {activation!r}.",
    )
    permutation = config.get("permutation")
    _expect(
        isinstance(permutation, list) and all(isinstance(p, list) for p in permutation),
        source,
        f"expected the permutations as lists of integers, got {permutation!r}.",
    )
    try:
        config["transformer"] = TRANSFORMERS[name](**transformer)
        return _CLASSES[cls](**config, rngs=nnx.Rngs(0))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source}: invalid configuration: {e}") from None


def _check_masks(flow: MAF | IAF, stored: Any, source: str) -> None:
    expected = masks(flow)
    _expect(
        isinstance(stored, dict) and sorted(stored) == sorted(expected),
        source,
        f"expected masks for layers {sorted(expected)}.",
    )
    for i, layer in expected.items():
        got = stored[i]
        _expect(isinstance(got, dict), source, f"layer {i}: expected its masks as a map.")
        _expect(
            isinstance(got.get("hidden"), dict)
            and sorted(got["hidden"]) == sorted(layer["hidden"]),
            source,
            f"layer {i}: expected hidden masks {sorted(layer['hidden'])}.",
        )
        pairs = [("degrees", layer["degrees"], got.get("degrees"))]
        pairs += [(f"hidden mask {j}", m, got["hidden"][j]) for j, m in layer["hidden"].items()]
        pairs.append(("output mask", layer["output"], got.get("output")))
        for what, want, have in pairs:
            if not (isinstance(have, np.ndarray) and np.array_equal(have, want)):
                raise ValueError(
                    f"{source}: layer {i}'s {what} differs from the one its configuration "
                    "defines: the file was altered (a changed mask breaks the "
                    "autoregressive property)."
                )


def save(path: str | os.PathLike, flow: MAF | IAF) -> None:
    """Saves a flow's configuration, masks and parameters to one checksummed file.

    Args:
      path: destination file (written atomically; parent directory created).
      flow: a :class:`jaxmaf.MAF` or :class:`jaxmaf.IAF`.

    Raises:
      ValueError: a flow that is not a MAF/IAF, or whose activation was given
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
    config = config_of(flow)
    if config is None:
        return f"Expected a MAF or IAF to save, got {type(flow)!r}."
    if config["hidden_degrees"] == "random" and config["mask_seed"] is None:
        return (
            "This flow's random hidden degrees came from a version-1 file and cannot be "
            "recomputed from a seed; build a new flow with mask_seed= and copy the parameters."
        )
    if config["activation"] is None:
        return (
            "This flow's activation was given as a callable; save needs it by name "
            f"(one of jaxmaf.ACTIVATIONS), got {flow.layers[0].activation_fn!r}."
        )
    return None


def flow_payload(flow: MAF | IAF) -> dict[str, Any]:
    """What :func:`save` stores for ``flow`` (configuration, masks, parameters, mode).

    Args:
      flow: a MAF or IAF with a named activation.

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
        "config": json.dumps(config_of(flow)),
        "masks": masks(flow),
        "params": flat_params(flow),
        "eval_mode": bool(flow.batch_norms and flow.batch_norms[0].use_running_average),
    }


def flow_from_payload(payload: Any, source: str = "<bytes>") -> MAF | IAF:
    """Rebuilds a flow from :func:`flow_payload`'s map, checking every field.

    Args:
      payload: the map.
      source: file name for error messages.

    Returns:
      the flow.

    Raises:
      ValueError: any field missing, unknown, of the wrong type or value; masks
        that differ from those the configuration defines.

    Examples:
      >>> flow = jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(3))
      >>> same = flow_from_payload(flow_payload(flow))
      >>> bool(jnp.array_equal(same.log_prob(jnp.ones(2)), flow.log_prob(jnp.ones(2))))
      True
    """
    _expect(isinstance(payload, dict), source, "expected the payload as a map.")
    _expect_keys(payload, {"config", "masks", "params", "eval_mode"}, source, "the flow")
    _expect(isinstance(payload["config"], str), source, "expected the configuration as JSON text.")
    try:
        config = json.loads(payload["config"])
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: the configuration is not valid JSON ({e}).") from None
    flow = flow_from_config(config, source)
    _check_masks(flow, payload["masks"], source)
    set_flat_params(flow, payload["params"], source)
    _expect(isinstance(payload["eval_mode"], bool), source, "expected eval_mode to be a bool.")
    if payload["eval_mode"]:
        flow.eval()
    return flow


def load(path: str | os.PathLike) -> MAF | IAF:
    """Loads a flow written by :func:`save`, trusting nothing in the file.

    The checksum, every field, the parameter names, shapes and dtypes are
    checked, and the masks are recomputed from the configuration and compared
    with the stored ones. Files of format version 1 (no checksum) still load,
    with a warning.

    Args:
      path: the file.

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
        legacy = _legacy_payload(data)
        if legacy is not None:
            return _load_legacy(legacy, source)
    return flow_from_payload(decode(data, "flow", source), source)


def _legacy_payload(data: bytes) -> dict | None:
    """The map of a format-version-1 file (a bare msgpack map tagged ``jaxmaf-flow``), or None."""
    if _LEGACY_FORMAT.encode() not in data:
        return None
    try:
        payload = serialization.msgpack_restore(data)
    except Exception:  # noqa: BLE001 - then it is not a version-1 file
        return None
    if isinstance(payload, dict) and payload.get("format") == _LEGACY_FORMAT:
        return payload
    return None


def _load_legacy(payload: dict, source: str) -> MAF | IAF:
    """Format version 1: no checksum; its fields and masks are still verified."""
    _expect_keys(
        payload,
        {"format", "version", "class", "config", "masks", "params", "eval_mode"},
        source,
        "the version-1 flow",
    )
    _expect(payload["version"] == 1, source, f"unknown version {payload['version']!r}.")
    _expect(isinstance(payload["config"], str), source, "expected the configuration as JSON.")
    try:
        config = {"class": payload["class"], **json.loads(payload["config"])}
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{source}: the configuration is not valid JSON ({e}).") from None
    flow = flow_from_config(config, source)
    stored = payload["masks"]
    if config.get("hidden_degrees") == "random":  # degrees were drawn from rngs: adopt them
        _adopt_checked_masks(flow, stored, source)
        flow.config = dataclasses.replace(flow.config, mask_seed=None)  # not reproducible
    _check_masks(flow, stored, source)
    set_flat_params(flow, payload["params"], source)
    if payload["eval_mode"] is True:
        flow.eval()
    warnings.warn(
        f"{source} is a version-1 jaxmaf file without a checksum; save it again to protect it.",
        UserWarning,
        stacklevel=3,
    )
    return flow


def _adopt_checked_masks(flow: MAF | IAF, stored: Any, source: str) -> None:
    """Takes version-1 random-degree masks after checking shapes and the autoregressive rule."""
    from jaxmaf.masks import connectivity

    _expect(isinstance(stored, dict), source, "expected the masks as a map.")
    for i, made in enumerate(flow.layers):
        layer = stored.get(str(i))
        _expect(isinstance(layer, dict), source, f"layer {i}: expected its masks as a map.")
        hidden = layer.get("hidden", {})
        new = [np.asarray(hidden.get(str(j))) for j in range(len(made.hidden))]
        new.append(np.asarray(layer.get("output")))
        old = [lin.mask.array for lin in made.hidden] + [made.output.mask.array]
        for j, (m, o) in enumerate(zip(new, old, strict=True)):
            _expect(m.shape == o.shape and m.dtype == bool, source, f"layer {i}: mask {j}.")
        degrees = made.degrees.array
        reach = connectivity(new, made.params_per_dim)  # (D out, D in)
        allowed = degrees[None, :] < degrees[:, None]
        _expect(
            not np.any(reach & ~allowed),
            source,
            f"layer {i}: its masks break the autoregressive property.",
        )
        for lin, m in zip(made.hidden, new[:-1], strict=True):
            lin.mask = Constant(m)
        made.output.mask = Constant(new[-1])
