"""A flow's configuration: the constructor arguments that rebuild it (saved with the flow)."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxmaf.transformers import TRANSFORMERS, Transformer
from jaxmaf.validation import check_int

DEFAULT_NUM_COMPONENTS = 8


def check_num_components(num_components: Any, base: str) -> int:
    """The number of mixture components of a flow's base: one rule for flows and configurations.

    A mixture base (``"mog"``) has ``DEFAULT_NUM_COMPONENTS`` (8) unless told
    otherwise; any other base has one component, and saying more is refused
    (it would be ignored: most likely ``base="mog"`` was meant).

    Args:
      num_components: what the caller passed (None: the default for ``base``).
      base: the base's name.

    Returns:
      the number of components, an int >= 1.

    Raises:
      ValueError: ``num_components`` < 1 or not an integer, or other than 1 for a
        base that is not a mixture.

    Examples:
      >>> check_num_components(None, "mog"), check_num_components(None, "gaussian")
      (8, 1)
    """
    if num_components is None:
        return DEFAULT_NUM_COMPONENTS if base == "mog" else 1
    num_components = check_int("num_components", num_components, minimum=1)
    if base != "mog" and num_components != 1:
        raise ValueError(
            f"num_components={num_components} applies to a mixture base only, and base is "
            f"{base!r}: pass base='mog' for a mixture of {num_components} Gaussians, or leave "
            "num_components out."
        )
    return num_components


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """The constructor arguments that rebuild a flow (saved by :func:`jaxmaf.save`).

    Random permutations are recorded explicitly; ``activation`` is None when
    it was given as a callable (such a flow cannot be saved by name).
    ``num_components`` follows the flows' rule: None means 8 for
    ``base="mog"`` and 1 otherwise.
    """

    dim: int
    num_layers: int
    hidden_dims: tuple[int, ...]
    activation: str | None
    context_dim: int
    permutation: tuple[tuple[int, ...], ...] | None
    hidden_degrees: str
    transformer: Transformer
    output_init_scale: float
    param_dtype: str
    residual: bool = False
    base: str = "gaussian"
    num_components: int | None = None
    batch_norm: bool = False
    mask_seed: int | None = None
    standardize: bool = False
    support: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self):
        # the flows' rule: 8 components for a mixture base unless told, 1 for any other
        components = check_num_components(self.num_components, self.base)
        object.__setattr__(self, "num_components", components)

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
        if self.support is not None:
            d["support"] = [list(b) for b in self.support]
        return d
