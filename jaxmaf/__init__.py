"""jaxmaf: masked autoregressive flows (MADE, MAF, IAF) in JAX with Flax NNX and distrax.

Examples:
  >>> import jax, jaxmaf
  >>> from flax import nnx
  >>> flow = jaxmaf.MAF(dim=2, num_layers=4, hidden_dims=(128, 128), rngs=nnx.Rngs(0))
  >>> x = flow.sample(jax.random.key(0), (1000,))
  >>> lp = flow.log_prob(x)
"""

from jaxmaf import masks
from jaxmaf.activations import ACTIVATIONS, get_activation
from jaxmaf.bases import MixtureOfGaussians, StandardNormal, standard_normal_log_prob
from jaxmaf.batch_norm import BatchNorm
from jaxmaf.bijectors import MaskedAutoregressive, Permute
from jaxmaf.calibration import Calibration, sbc
from jaxmaf.config import FlowConfig
from jaxmaf.diagnostics import ImportanceDiagnostics, importance_diagnostics, pareto_k
from jaxmaf.ensemble import fit_ensemble
from jaxmaf.epochs import check_data
from jaxmaf.flow import Flow
from jaxmaf.flows import IAF, MAF
from jaxmaf.for_numpyro import as_numpyro, numpyro_flow, update_from_numpyro
from jaxmaf.functional import split
from jaxmaf.history import History
from jaxmaf.layers import AutoregressiveLayer, Permutation, PermutationIndex
from jaxmaf.logdet import dense_jacobian, dense_log_det, is_autoregressive, jacobian_nonzero
from jaxmaf.made import MADE
from jaxmaf.masked_linear import MaskedLinear
from jaxmaf.serialization import load, save
from jaxmaf.splines import Spline
from jaxmaf.training import fit
from jaxmaf.transformers import Affine
from jaxmaf.variational import VariationalHistory, fit_variational
from jaxmaf.version import __version__ as __version__

__all__ = [
    "ACTIVATIONS",
    "IAF",
    "MADE",
    "MAF",
    "Affine",
    "AutoregressiveLayer",
    "BatchNorm",
    "Calibration",
    "Flow",
    "FlowConfig",
    "History",
    "ImportanceDiagnostics",
    "MaskedAutoregressive",
    "MaskedLinear",
    "MixtureOfGaussians",
    "Permutation",
    "PermutationIndex",
    "Permute",
    "Spline",
    "StandardNormal",
    "VariationalHistory",
    "as_numpyro",
    "check_data",
    "dense_jacobian",
    "dense_log_det",
    "fit",
    "fit_ensemble",
    "fit_variational",
    "get_activation",
    "importance_diagnostics",
    "is_autoregressive",
    "jacobian_nonzero",
    "load",
    "masks",
    "numpyro_flow",
    "pareto_k",
    "save",
    "sbc",
    "split",
    "standard_normal_log_prob",
    "update_from_numpyro",
]
