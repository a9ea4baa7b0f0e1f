"""Preprocessing: the transforms the export applies, usable on their own.

Array-level functions take arrays and return results; AnnData-level functions take
``adata`` first and store their result under ``key_added`` (or return a copy).
"""

from ._categories import CategoryCodes, category_codes, encode_categories
from ._centroids import Centroids, category_centroids, centroids
from ._embedding import NormalizedCoords, normalize_coords, normalize_embedding
from ._graph import Edges, graph_edges, prune_graph
from ._outliers import outlier_quantiles, outlier_quantiles_obs
from ._quantize import Quantized, dequantize, quantize, quantize_obs

__all__ = [
    "CategoryCodes",
    "Centroids",
    "Edges",
    "NormalizedCoords",
    "Quantized",
    "category_centroids",
    "category_codes",
    "centroids",
    "dequantize",
    "encode_categories",
    "graph_edges",
    "normalize_coords",
    "normalize_embedding",
    "outlier_quantiles",
    "outlier_quantiles_obs",
    "prune_graph",
    "quantize",
    "quantize_obs",
]
