"""A flow's configuration: the constructor arguments that rebuild it (saved with the flow)."""

from __future__ import annotations

import dataclasses

from jaxmaf.transformers import TRANSFORMERS, Transformer


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """The constructor arguments that rebuild a flow (saved by :func:`jaxmaf.save`).

    Random permutations are recorded explicitly; ``activation`` is None when
    it was given as a callable (such a flow cannot be saved by name).
    """

    dim: int
    num_layers: int
    hidden_dims: tuple[int, ...]
    activation: str | None
    context_dim: int
    permutation: tuple[tuple[int, ...], ...]
    hidden_degrees: str
    transformer: Transformer
    output_init_scale: float
    param_dtype: str
    residual: bool = False
    base: str = "gaussian"
    num_components: int = 1
    batch_norm: bool = False
    mask_seed: int | None = None
    standardize: bool = False
    support: tuple[tuple[float, ...], tuple[float, ...]] | None = None

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
