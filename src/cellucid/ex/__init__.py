"""Export: write an AnnData as a dataset the Cellucid viewer opens, check it, read it back, catalog, serve and show datasets."""

from ._catalog import write_catalog
from ._export import export
from ._read import read
from ._serve import Server, serve
from ._show import Viewer, show
from ._validate import Problem, ValidationReport, validate
from ._viewer_cache import update_viewer

__all__ = [
    "Problem",
    "Server",
    "ValidationReport",
    "Viewer",
    "export",
    "read",
    "serve",
    "show",
    "update_viewer",
    "validate",
    "write_catalog",
]
