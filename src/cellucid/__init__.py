"""Export AnnData to the Cellucid WebGL viewer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cellucid")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from . import ex, logging, pp

__all__ = ["__version__", "ex", "logging", "pp"]
