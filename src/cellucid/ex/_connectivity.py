"""Writer of ``connectivity_manifest.json`` and ``connectivity/``: the kNN graph's edges."""

from __future__ import annotations

import numpy as np

from .._format import CONNECTIVITY_MANIFEST, EDGE_FORMAT, WEIGHT_DTYPE, index_dtype
from .._layout import edges_path
from ..pp import Edges
from ._payload import PayloadWriter, dumps_manifest, write_json
from ._settings import ExportSettings


def write_connectivity(
    writer: PayloadWriter, edges: Edges, *, n_cells: int, settings: ExportSettings
) -> int:
    """Write edge sources, destinations (and weights in the current layout); return the edge count."""
    dtype = index_dtype(n_cells)
    manifest = {
        "format": EDGE_FORMAT,
        "n_cells": n_cells,
        "n_edges": int(edges.src.shape[0]),
        "max_neighbors": edges.max_neighbors,
        "index_bytes": dtype.itemsize,
        "index_dtype": dtype.name,
        "sourcesPath": writer.write(edges_path("src"), _as_index(edges.src, dtype)),
        "destinationsPath": writer.write(edges_path("dst"), _as_index(edges.dst, dtype)),
    }
    if settings.layout.weighted_edges:
        manifest["weightsPath"] = writer.write(
            edges_path("weights"), edges.weights.astype(WEIGHT_DTYPE, copy=False)
        )
        manifest["weight_dtype"] = "float64"
        manifest["weight_bytes"] = WEIGHT_DTYPE.itemsize
    manifest["compression"] = settings.compression
    write_json(writer.root / CONNECTIVITY_MANIFEST, dumps_manifest(manifest))
    return manifest["n_edges"]


def _as_index(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Non-negative indices as ``dtype``; a view when only the sign differs (the bytes are the same)."""
    signed = np.dtype(dtype.str.replace("u", "i"))
    return values.view(dtype) if values.dtype == signed else values.astype(dtype)
