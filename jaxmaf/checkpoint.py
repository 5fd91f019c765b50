"""Deprecated module name: saving and loading live in :mod:`jaxmaf.serialization`."""

from jaxmaf.serialization import atomic_write, flat_params, load, save, set_flat_params

__all__ = ["atomic_write", "flat_params", "load", "save", "set_flat_params"]
