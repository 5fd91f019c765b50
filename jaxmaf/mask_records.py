"""A flow's masks as its files record them, and their checks on load.

A file stores every MADE's input degrees and masks; loading compares them
with those the configuration (or the ``like`` flow) defines, so an altered
mask, which could break the autoregressive property, is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmaf.fileformat import expect
from jaxmaf.masked_linear import Constant
from jaxmaf.masks import connectivity

__all__ = ["adopt_checked_masks", "check_masks", "masks"]


def masks(flow: Any) -> dict[str, Any]:
    """Every layer's input degrees and masks, as stored in a flow file.

    Args:
      flow: a flow (its ``conditioners``, the MADEs).

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
        for i, made in enumerate(flow.conditioners)
    }


def check_masks(flow: Any, stored: Any, source: str = "<bytes>") -> None:
    """Refuses stored masks that differ from those of ``flow`` (its MADEs' masks and degrees).

    Args:
      flow: the flow rebuilt from the file's configuration (or ``like``).
      stored: the file's masks, as :func:`masks` wrote them.
      source: file name for error messages.

    Raises:
      ValueError: other layers, a missing or different mask (the file was altered).

    Examples:
      >>> flow = jaxmaf.MAF(2, 1, (4,), rngs=nnx.Rngs(0))
      >>> check_masks(flow, masks(flow))  # the same: nothing raised
    """
    expected = masks(flow)
    expect(
        isinstance(stored, dict) and sorted(stored) == sorted(expected),
        source,
        f"expected masks for layers {sorted(expected)}.",
    )
    for i, layer in expected.items():
        got = stored[i]
        expect(isinstance(got, dict), source, f"layer {i}: expected its masks as a map.")
        expect(
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


def adopt_checked_masks(flow: Any, stored: Any, source: str = "<bytes>") -> None:
    """Takes version-1 random-degree masks after checking shapes and the autoregressive rule.

    Args:
      flow: the flow rebuilt from the file's configuration.
      stored: the file's masks.
      source: file name for error messages.

    Raises:
      ValueError: a mask of another shape or type, or masks that break the
        autoregressive property.
    """
    expect(isinstance(stored, dict), source, "expected the masks as a map.")
    for i, made in enumerate(flow.conditioners):
        layer = stored.get(str(i))
        expect(isinstance(layer, dict), source, f"layer {i}: expected its masks as a map.")
        hidden = layer.get("hidden", {})
        new = [np.asarray(hidden.get(str(j))) for j in range(len(made.hidden))]
        new.append(np.asarray(layer.get("output")))
        old = [lin.mask.array for lin in made.hidden] + [made.output.mask.array]
        for j, (m, o) in enumerate(zip(new, old, strict=True)):
            expect(m.shape == o.shape and m.dtype == bool, source, f"layer {i}: mask {j}.")
        degrees = made.degrees.array
        reach = connectivity(new, made.num_params)  # (D out, D in)
        allowed = degrees[None, :] < degrees[:, None]
        expect(
            not np.any(reach & ~allowed),
            source,
            f"layer {i}: its masks break the autoregressive property.",
        )
        for lin, m in zip(made.hidden, new[:-1], strict=True):
            lin.mask = Constant(m)
        made.output.mask = Constant(new[-1])
