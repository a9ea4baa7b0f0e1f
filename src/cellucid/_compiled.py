"""Compiled kernels only where they pay: one rule for loading them.

The numba kernels (:mod:`cellucid.pp._kernels`, :mod:`cellucid.ex._csr_kernels`) each
have a numpy reference that gives the same bits. Importing numba and loading cached
kernels costs about a second, so a kernel module is loaded only for inputs past its
size rule, and never where numba cannot load it: then the numpy code does the work.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def load_kernels(module: str, size: int, minimum: int) -> ModuleType | None:
    """Return the kernel module ``module`` for an input of ``size`` (rows, stored values), or None.

    None below ``minimum``, and where numba cannot load the module: not installed, or no
    cache folder it can write (numba refuses ``cache=True`` kernels on import with a
    RuntimeError, e.g. in a read-only installation without a writable home).
    """
    if size < minimum:
        return None
    try:
        return importlib.import_module(module)
    except (ImportError, RuntimeError):
        return None
