"""Export: write an AnnData as a dataset the Cellucid viewer opens, read it back, and catalog datasets."""

from ._catalog import write_catalog
from ._export import export
from ._read import read

__all__ = ["export", "read", "write_catalog"]
