"""Progress bars for training: tqdm on a terminal or in a notebook, none under CI."""

from __future__ import annotations

import os
import sys


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Jupyter, VS Code, Colab): tqdm draws a widget."""
    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # noqa: BLE001 - a broken IPython install is not ours to report
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(total: int, initial: int = 0):
    """A tqdm bar on a terminal or in a notebook; None under CI or when output is captured."""
    if os.environ.get("CI") or not (sys.stderr.isatty() or in_notebook()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, initial=initial, desc="fit", unit="epoch", leave=False)
