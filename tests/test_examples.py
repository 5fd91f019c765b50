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
    env = dict(os.environ, MPLBACKEND="Agg")  # (digits' quick run too: 21-23 s, 28-30 with them)
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


def test_variational_example_quick(tmp_path):
    """Quick mode (the banana), jaxmaf and numpyro's AutoIAFNormal: KLs >= 0, a figure."""
    pytest.importorskip("numpyro")
    run_example("variational.py", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("banana",):
        row = metrics[name]
        for lib in ("jaxmaf", "numpyro"):  # a KL estimate: >= 0 up to its Monte Carlo error
            assert math.isfinite(row[f"{lib}_kl"]) and row[f"{lib}_kl"] > -3 * row[f"{lib}_kl_se"]
        assert row["jaxmaf_steps_per_s"] > 0 and row["numpyro_steps_per_s_per_call"] > 0
    png = tmp_path / "targets_and_samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_posterior_estimation_example_quick(tmp_path):
    """Quick NPE on the bounded simulator (support and standardisation both in use): C2ST
    accuracies and KL(p || q) estimates, a corner plot."""
    run_example("posterior_estimation.py", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for task in ("beta_binomial",):
        for obs in metrics[task]["observations"]:
            assert 0.3 <= obs["jaxmaf_c2st"] <= 1.0 and math.isfinite(obs["jaxmaf_kl"])
            assert obs["jaxmaf_sample_seconds"] > 0
        png = tmp_path / f"{task}_corner.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_every_script_answers_help_before_importing_jax():
    """``--help`` and bad flags of every example and benchmark return before JAX is imported."""
    scripts = sorted(
        os.path.join(folder, f)
        for folder in ("examples", "benchmarks")
        for f in os.listdir(os.path.join(ROOT, folder))
        if f.endswith(".py") and not f.startswith("_")
    )
    code = (
        "import os, runpy, sys\n"
        "results = []\n"
        "for path in sys.argv[1:]:\n"
        "    sys.path.insert(0, os.path.dirname(path))\n"
        "    for flags in (['--help'], ['--no-such-flag']):\n"
        "        sys.argv = [path, *flags]\n"
        "        try:\n"
        "            runpy.run_path(path, run_name='__main__')\n"
        "        except SystemExit as e:\n"
        "            results.append((path, flags[0], e.code, 'jax' in sys.modules))\n"
        "print(results)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *scripts], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    results = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printout
    assert len(results) == 2 * len(scripts), out.stdout
    for path, flag, code_, jax_loaded in results:
        expected = 0 if flag == "--help" else 2  # argparse: 0 for help, 2 for a bad flag
        assert code_ == expected, (path, flag, code_)
        assert not jax_loaded, f"{path} {flag} imported JAX first"
