"""Logging and version reports.

cellucid logs through the standard :mod:`logging` module under the ``"cellucid"`` logger:
quiet by default (warnings only), more with :func:`set_verbosity`.
"""

from __future__ import annotations

import logging
import sys

_LOGGER = logging.getLogger("cellucid")
#: scanpy-like verbosity levels
_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


def set_verbosity(verbosity: int) -> None:
    """Set how much cellucid logs, as scanpy's ``sc.settings.verbosity``.

    Parameters
    ----------
    verbosity
        0: errors, 1: warnings (the default), 2: info (what was written, sizes, times),
        3: debug.

    Examples
    --------
    >>> import cellucid as cl
    >>> cl.logging.set_verbosity(2)  # log a summary of each export
    >>> cl.logging.set_verbosity(1)
    """
    level = _LEVELS[max(0, min(3, int(verbosity)))]
    _LOGGER.setLevel(level)
    if not any(getattr(h, "_cellucid", False) for h in _LOGGER.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler._cellucid = True  # type: ignore[attr-defined]
        _LOGGER.addHandler(handler)
        _LOGGER.propagate = False


def print_versions() -> None:
    """Print the versions of cellucid and the packages it depends on, for bug reports.

    Examples
    --------
    >>> import cellucid as cl
    >>> cl.logging.print_versions()  # doctest: +SKIP
    """
    from . import _versions

    _versions.show()
