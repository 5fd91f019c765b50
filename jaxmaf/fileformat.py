"""The jaxmaf file format: one checked container for flows and training state.

A file is ``MAGIC`` (9 bytes), the SHA-256 digest (32 bytes) of what follows,
then a msgpack body ``{"format_version", "kind", "jaxmaf_version",
"payload"}``. Reading trusts nothing in it: the magic says whether it is a
jaxmaf file at all, the digest catches any changed, missing or added byte,
and the header is checked before the payload is handed on. Arrays are stored
by their path in the module or pytree (``layers/0/conditioner/hidden/1/kernel``)
and checked for name, shape and dtype when restored. No code is ever executed
from a file (msgpack holds only numbers, strings, maps and raw arrays; no
pickle).

Writes are atomic (a temporary file in the same directory, then
``os.replace``), leftovers of an interrupted write are removed by the next
write to the same path, and files get the usual permissions (``0666`` minus
the umask).

Why msgpack in one file rather than orbax: a flow is a few MB at most, so one
synchronous write with no background threads and no directory layout, with
the same bytes on every platform. What a flow file holds, and how it is
checked, is :mod:`jaxmaf.serialization`; fit's training state is
:mod:`jaxmaf.train_state`.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from jaxmaf.version import __version__

MAGIC = b"\x89JAXMAF\r\n"
FORMAT_VERSION = 2
KINDS = ("flow", "train_state")
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
    expect_keys(header, {"format_version", "kind", "jaxmaf_version", "payload"}, source, "header")
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


def expect_keys(d: Mapping, keys: set[str], source: str, what: str) -> None:
    """Raises a ValueError naming ``source`` unless ``d`` is a map with exactly ``keys``."""
    missing, extra = sorted(keys - set(d)), sorted(set(d) - keys)
    if missing or extra:
        raise ValueError(
            f"{source}: unexpected fields in {what}: missing {missing}, unknown {extra}."
        )


def expect(cond: bool, source: str, message: str) -> None:
    """Raises ``ValueError(f"{source}: {message}")`` unless ``cond``."""
    if not cond:
        raise ValueError(f"{source}: {message}")


# ---------------------------------------------------------------- named arrays


def named_leaves(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    """``([(name, leaf)], treedef)`` of a pytree; names like ``base/means``.

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
    expect(isinstance(stored, dict), source, f"expected the {what} as a map of arrays.")
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
        expect(isinstance(arr, np.ndarray | np.generic), source, f"{what} {name}: not an array.")
        arr = np.asarray(arr)
        expected = (np.dtype(leaf.dtype), tuple(leaf.shape))
        if (arr.dtype, arr.shape) != expected:
            raise ValueError(
                f"{source}: {what} {name}: expected {expected[0]}{expected[1]}, "
                f"got {arr.dtype}{arr.shape}."
            )
        leaves.append(jnp.asarray(arr))
    return jax.tree.unflatten(treedef, leaves)


def flat_params(module: nnx.Module) -> dict[str, np.ndarray]:
    """The module's state (parameters, batch statistics) as ``{name: array}`` by path.

    Args:
      module: any NNX module.

    Returns:
      the named arrays (host copies).

    Examples:
      >>> flow = jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0))
      >>> sorted(flat_params(flow))[:4]  # a 2-d MAF's default base is a mixture
      ['base/log_scales', 'base/logits', 'base/means', 'layers/0/conditioner/hidden/0/bias']
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
