"""Every Python block of README.md runs as written, in order, in one namespace (as a reader would
paste them into one notebook), in an empty working directory."""

from __future__ import annotations

import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks(path):
    with open(path) as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    blocks = python_blocks(os.path.join(ROOT, "README.md"))
    assert len(blocks) >= 4, "README.md lost its examples"
    monkeypatch.chdir(tmp_path)  # the blocks write flow.jaxmaf and ckpt/ here
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"README.md python block {i + 1} failed: {e!r}\n{block}") from e
    # What the blocks promise, checked on the objects they built.
    assert namespace["lp"].shape == (400 * 25,)
    assert namespace["xs"].shape == (1000, 2)
    assert namespace["x"].shape == (1000, 8)
    assert len(namespace["flows"]) == 4
    draws = np.asarray(namespace["draws"])
    assert draws.shape == (10_000, 2) and np.all(np.abs(draws) <= 2.0)
    assert namespace["per_obs"].shape == (1000, 8, 2)
    # The negative ELBO is at least -log Z = -log(pi) for the banana (a Monte Carlo estimate over
    # 256 samples may dip below by noise); the IAF family holds the target, so it gets close.
    assert abs(float(namespace["value"]) + np.log(np.pi)) < 0.1
