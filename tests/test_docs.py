"""The API reference builds from the docstrings (mkdocs + mkdocstrings, strict: a broken
reference or a docstring mkdocstrings cannot parse fails the build)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_api_reference_builds(tmp_path):
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    page = (site / "api" / "flows" / "index.html").read_text()
    for text in ("MAF", "IAF", "log_prob", "sample_and_log_prob", "Log-density of"):
        assert text in page, f"{text!r} missing from the built API page"
    assert (site / "benchmarks" / "index.html").exists()
