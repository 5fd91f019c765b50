"""Every example runs end to end in --quick mode (the CI smoke test) and writes its outputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name: str, out: str) -> None:
    env = dict(os.environ, MPLBACKEND="Agg")
    if name == "digits.py":  # long-running programs: XLA's optimisations pay for themselves
        env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name), "--quick", "--out", out],
        check=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "name,nll_keys,min_pngs",
    [
        ("circles.py", ["maf_1_layer", "maf_4_layers"], 4),
        ("conditional_moons.py", ["conditional_maf"], 2),
        ("digits.py", ["maf", "iaf"], 2),
    ],
)
def test_example_quick(tmp_path, name, nll_keys, min_pngs):
    run_example(name, str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in nll_keys:
        assert math.isfinite(metrics["test_nll"][key])
    pngs = [p for p in tmp_path.iterdir() if p.suffix == ".png"]
    assert len(pngs) >= min_pngs
    for p in pngs:  # real PNG files, not empty placeholders
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
