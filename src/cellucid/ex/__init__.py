"""Export: write an AnnData as a dataset the Cellucid viewer opens, and a catalog of datasets."""

from ._catalog import write_catalog
from ._export import export

__all__ = ["export", "write_catalog"]
