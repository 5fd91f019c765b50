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
    """Quick mode (the banana), jaxmaf and numpyro's AutoIAFNormal: KLs >= 0, Pareto k, a
    figure."""
    pytest.importorskip("numpyro")
    run_example("variational.py", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("banana",):
        row = metrics[name]
        for lib in ("jaxmaf", "numpyro"):  # a KL estimate: >= 0 up to its Monte Carlo error
            assert math.isfinite(row[f"{lib}_kl"]) and row[f"{lib}_kl"] > -3 * row[f"{lib}_kl_se"]
            assert math.isfinite(row[f"{lib}_pareto_k"])  # the importance weights' tail
        assert row["jaxmaf_steps_per_s"] > 0 and row["numpyro_steps_per_s_per_call"] > 0
    png = tmp_path / "targets_and_samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_posterior_estimation_example_quick(tmp_path):
    """Quick NPE on the bounded simulator (support and standardisation both in use): C2ST
    accuracies and KL(p || q) estimates, SBC p-values and coverage, a corner plot."""
    run_example("posterior_estimation.py", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for task in ("beta_binomial",):
        for obs in metrics[task]["observations"]:
            assert 0.3 <= obs["jaxmaf_c2st"] <= 1.0 and math.isfinite(obs["jaxmaf_kl"])
            assert obs["jaxmaf_sample_seconds"] > 0
        pvalues = metrics[task]["jaxmaf_sbc_ks_pvalues"]  # one per parameter
        assert len(pvalues) == 3 and all(0 <= p <= 1 for p in pvalues)
        assert 0 <= metrics[task]["jaxmaf_sbc_coverage_error"] <= 1
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


def load_example(name: str):
    """Imports an example file as a module (its ``main`` is not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "examples", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task_name", ["gaussian_mixture", "two_moons"])
def test_npe_reference_posteriors_agree_with_their_densities(task_name):
    """The SBI-benchmark tasks' exact samplers (simulator inversion) and exact densities
    (closed-form likelihood over its mass in the box) describe the same posterior: the density
    integrates to 1 over the prior's box, and its mean and covariance on a grid match those of
    the exact draws."""
    import numpy as np

    example = load_example("posterior_estimation")
    task = next(cls() for cls in example.TASKS if cls.name == task_name)
    rng = np.random.default_rng(5)
    low, high = task.support
    step = 0.002 if task_name == "two_moons" else 0.02  # resolves the crescents' width 0.01
    grid = np.arange(low + step / 2, high, step)
    mesh = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    for x_o in task.simulate(rng, task.prior(rng, 2)):
        density = np.exp(task.exact_log_prob(x_o, mesh)) * step**2
        assert abs(density.sum() - 1.0) < 0.01, density.sum()
        draws = task.exact_draws(rng, x_o, 100_000)
        assert np.all((draws > low) & (draws < high))
        mean = density @ mesh / density.sum()
        cov = (mesh - mean).T @ ((mesh - mean) * density[:, None]) / density.sum()
        standard_error = np.sqrt(np.diag(cov) / len(draws))
        assert np.all(np.abs(draws.mean(0) - mean) < 4 * standard_error), (draws.mean(0), mean)
        # The shape: probabilities of a 10 x 10 grid of bins at the draws' deciles.
        edges = [np.quantile(draws[:, i], np.linspace(0, 1, 11)) for i in range(2)]
        edges = [low + step * np.round((e - low) / step) for e in edges]  # on cell boundaries
        edges = [np.unique(np.concatenate([[low], e[1:-1], [high]])) for e in edges]
        p_draws = np.histogram2d(*draws.T, bins=edges)[0] / len(draws)
        p_exact = np.histogram2d(*mesh.T, bins=edges, weights=density)[0]
        tolerance = 5 * np.sqrt(p_exact * (1 - p_exact) / len(draws)) + 0.002
        assert np.all(np.abs(p_draws - p_exact) < tolerance), np.abs(p_draws - p_exact).max()
