"""jaxmaf: masked autoregressive flows (MADE, MAF, IAF) in JAX with Flax NNX and distrax.

Examples:
  >>> import jax, jaxmaf
  >>> from flax import nnx
  >>> flow = jaxmaf.MAF(dim=2, num_layers=4, hidden_dims=(128, 128), rngs=nnx.Rngs(0))
  >>> x = flow.sample(jax.random.key(0), (1000,))
  >>> lp = flow.log_prob(x)
"""

from jaxmaf import masks
from jaxmaf.bijectors import BatchNorm, MaskedAutoregressive, Permute
from jaxmaf.flows import IAF, MAF, FlowConfig, standard_normal_log_prob
from jaxmaf.logdet import dense_jacobian, dense_log_det, is_autoregressive, jacobian_nonzero
from jaxmaf.made import ACTIVATIONS, MADE, MaskedLinear, get_activation
from jaxmaf.serialization import load, save
from jaxmaf.training import History, check_data, fit, fit_ensemble
from jaxmaf.transformers import Affine, Spline

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "IAF",
    "MADE",
    "MAF",
    "Affine",
    "BatchNorm",
    "FlowConfig",
    "History",
    "MaskedAutoregressive",
    "MaskedLinear",
    "Permute",
    "Spline",
    "check_data",
    "dense_jacobian",
    "dense_log_det",
    "fit",
    "fit_ensemble",
    "get_activation",
    "is_autoregressive",
    "jacobian_nonzero",
    "load",
    "masks",
    "save",
    "standard_normal_log_prob",
]
