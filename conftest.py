"""Test-session settings, and the names every docstring example may use.

The suite compiles hundreds of small programs and runs each once or twice, so
XLA's optimisation passes cost more than they save: they are turned off for
the tests (``JAX_DISABLE_MOST_OPTIMIZATIONS``, also inherited by the example
and benchmark subprocesses), which cuts the suite's time by about a third.
Numerics are unchanged in kind (every comparison is between two programs
compiled the same way). Set ``JAXMAF_TEST_OPTIMIZED=1`` to test with the
optimisations users get.

Matrix products run in full float32 (``JAX_DEFAULT_MATMUL_PRECISION=highest``):
on NVIDIA GPUs since Ampere JAX's default is TF32, under which the exact
float32 comparisons of this suite fail (69 of 570 on an H200; docs/benchmarks.md). On a
CPU the setting changes nothing.

Compiled programs are shared through a persistent compilation cache in a
temporary directory for the run (``JAX_COMPILATION_CACHE_DIR``, unless one is
set): the xdist workers and the example and benchmark subprocesses compile many
identical programs (the same flows in different tests). It saved about 10% of
the flow tests' time. The directory is removed when the run ends.
"""

import atexit
import os
import shutil
import tempfile

if not os.environ.get("JAXMAF_TEST_OPTIMIZED"):
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # set once, inherited by workers
    _cache = tempfile.mkdtemp(prefix="jaxmaf-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import jax  # noqa: E402  (after the environment is set)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import jaxmaf  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(jax=jax, jnp=jnp, np=np, nnx=nnx, jaxmaf=jaxmaf)


# Tests that run for tens of seconds (subprocesses, a whole README, a multi-process run): run
# first, so that xdist's work stealing (``--dist worksteal`` in pyproject) fills the other
# worker with short tests meanwhile instead of leaving one of them running alone at the end.
_LONG_FIRST = (
    "tests/test_readme.py",
    "tests/test_multiprocess.py",
    "tests/test_examples.py",
    "tests/test_benchmarks.py",
)


def pytest_collection_modifyitems(config, items):
    """Moves the long tests of ``_LONG_FIRST`` to the front, keeping every other order."""

    def rank(item):
        path = item.nodeid.split("::")[0]
        return _LONG_FIRST.index(path) if path in _LONG_FIRST else len(_LONG_FIRST)

    items.sort(key=rank)  # stable: the order within each group is kept
