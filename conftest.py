"""Names every docstring example may use (``pytest --doctest-modules jaxmaf``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmaf


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(jax=jax, jnp=jnp, np=np, nnx=nnx, jaxmaf=jaxmaf)
