"""Export: write an AnnData as a dataset the Cellucid viewer opens, check it, read it back, catalog datasets."""

from ._catalog import write_catalog
from ._export import export
from ._read import read
from ._validate import Problem, ValidationReport, validate

__all__ = ["Problem", "ValidationReport", "export", "read", "validate", "write_catalog"]
