"""The package version (one place: ``jaxmaf.__version__`` and the file headers read it)."""

__version__ = "0.1.0"
