"""Logging and version reports.

cellucid logs through the standard :mod:`logging` module under the ``"cellucid"`` logger,
to standard error, like scanpy: by default it follows scanpy's
``sc.settings.verbosity`` (warnings only until that is raised), and
:func:`set_verbosity` sets cellucid's own level instead.
"""

from __future__ import annotations

import logging
import sys

_LOGGER = logging.getLogger("cellucid")
#: scanpy-like verbosity levels
_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
# the level set by set_verbosity; None: follow scanpy's settings.verbosity
_level: int | None = None


def _scanpy_level() -> int | None:
    """Return the logging level of scanpy's ``settings.verbosity``, if scanpy was imported."""
    scanpy = sys.modules.get("scanpy")
    try:
        return int(scanpy.settings.verbosity.level)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):  # not imported (yet), or another scanpy
        return None


def level() -> int:
    """Return the logging level cellucid logs at now (see :func:`set_verbosity`)."""
    if _level is not None:
        return _level
    return _scanpy_level() or logging.WARNING


class _Threshold(logging.Filter):
    """Let records through from the level of :func:`level`, read when each is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= level()


class _StderrHandler(logging.StreamHandler):
    """Write to the ``sys.stderr`` of the moment (a notebook or pytest may replace it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr


def _install() -> None:
    """Give the ``cellucid`` logger its stderr handler and level filter, once."""
    if any(getattr(h, "_cellucid", False) for h in _LOGGER.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler._cellucid = True  # type: ignore[attr-defined]
    _LOGGER.addHandler(handler)
    _LOGGER.addFilter(_Threshold())
    # records of every level reach the filter, which decides; like scanpy's logger, they
    # do not also go to the root logger's handlers
    _LOGGER.setLevel(logging.DEBUG)
    _LOGGER.propagate = False


def set_verbosity(verbosity: int | None) -> None:
    """Set how much cellucid logs, as scanpy's ``sc.settings.verbosity`` does for scanpy.

    Until this is called, cellucid follows ``sc.settings.verbosity`` (``3`` there is
    scanpy's "hint" level, between info and debug); once called, this level wins.

    Parameters
    ----------
    verbosity
        0: errors, 1: warnings (the default), 2: info (what was written, sizes, times),
        3: debug (the time of each stage). ``None``: follow ``sc.settings.verbosity`` again.

    Examples
    --------
    >>> import cellucid as cl
    >>> cl.logging.set_verbosity(2)  # log a summary of each export
    >>> cl.logging.set_verbosity(None)  # follow sc.settings.verbosity again
    """
    global _level
    _level = None if verbosity is None else _LEVELS[max(0, min(3, int(verbosity)))]
    _install()


def print_versions() -> None:
    """Print the versions of cellucid and the packages it depends on, for bug reports.

    Examples
    --------
    >>> import cellucid as cl
    >>> cl.logging.print_versions()  # doctest: +SKIP
    """
    from . import _versions

    _versions.show()


_install()
