"""Writer of ``connectivity_manifest.json`` and ``connectivity/``: the kNN graph's edges."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._compiled import load_kernels
from .._format import CONNECTIVITY_MANIFEST, EDGE_FORMAT, WEIGHT_DTYPE, index_dtype
from .._layout import edges_path
from ..pp import Edges
from ..pp._graph import UpperEdges
from ._payload import PayloadWriter, dumps_manifest, gzip_header, write_json
from ._settings import ExportSettings

#: graphs with fewer edges have their weights gzipped by zlib: loading the compiled
#: encoder (:mod:`cellucid.ex._weights_gzip`, numba, 0.6-2 s from its cache) costs more
#: than it saves (~300 ns an edge against zlib-ng's level 6, see benchmarks/README.md)
WEIGHTS_KERNEL_MIN_EDGES = 2**23
#: the same where the gene stage loads numba's compiler anyway
#: (:func:`~cellucid.ex._genes.compiled_blocks`): the encoder then loads in ~0.05 s
WEIGHTS_KERNEL_MIN_EDGES_COMPILER_LOADED = 2**17


def write_connectivity(
    writer: PayloadWriter,
    edges: Edges | UpperEdges,
    *,
    n_cells: int,
    settings: ExportSettings,
    compiler_loaded: bool = False,
) -> int:
    """Write edge weights (in the current layout), sources and destinations; return the edge count.

    Edges in parts (:class:`~cellucid.pp._graph.UpperEdges`) have their weights made and
    written before their ends are made: never all of them in memory at once.
    ``compiler_loaded``: the export loads numba's compiler anyway (for its genes), so the
    compiled weights encoder pays for smaller graphs.
    """
    parts = isinstance(edges, UpperEdges)
    weighted = {}
    if settings.layout.weighted_edges:
        weights = (edges.weights() if parts else edges.weights).astype(WEIGHT_DTYPE, copy=False)
        path = writer.write_many(
            [(edges_path("weights"), weights)],
            encode=_weights_encoder(
                writer,
                WEIGHTS_KERNEL_MIN_EDGES_COMPILER_LOADED
                if compiler_loaded
                else WEIGHTS_KERNEL_MIN_EDGES,
            ),
        )[0]
        del weights
        if parts:
            writer.wait_for(writer.mark())
        weighted = {
            "weightsPath": path,
            "weight_dtype": "float64",
            "weight_bytes": WEIGHT_DTYPE.itemsize,
        }
    src, dst = edges.ends() if parts else (edges.src, edges.dst)
    dtype = index_dtype(n_cells)
    manifest = {
        "format": EDGE_FORMAT,
        "n_cells": n_cells,
        "n_edges": int(src.shape[0]),
        "max_neighbors": edges.max_neighbors,
        "index_bytes": dtype.itemsize,
        "index_dtype": dtype.name,
        "sourcesPath": writer.write(edges_path("src"), _as_index(src, dtype)),
        "destinationsPath": writer.write(edges_path("dst"), _as_index(dst, dtype)),
        **weighted,
        "compression": settings.compression,
    }
    write_json(writer.root / CONNECTIVITY_MANIFEST, dumps_manifest(manifest))
    return manifest["n_edges"]


def _as_index(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Non-negative indices as ``dtype``; a view when only the sign differs (the bytes are the same)."""
    signed = np.dtype(dtype.str.replace("u", "i"))
    return values.view(dtype) if values.dtype == signed else values.astype(dtype)


def _weights_encoder(
    writer: PayloadWriter, min_edges: int
) -> Callable[[np.ndarray], bytes | bytearray | memoryview]:
    """Return the writer's encoder, or from ``min_edges`` gzipped below level 9 the compiled weights encoder.

    The compiled encoder's member decodes to the same bytes; it takes over only where every
    weight widens a float32 (and falls back to the writer's encoder otherwise).
    """
    default = writer.encoder()
    level = writer.compression
    if not level or level == 9:
        return default

    def encode(weights: np.ndarray) -> bytes | bytearray | memoryview:
        kernels = load_kernels(f"{__package__}._weights_gzip", weights.shape[0], min_edges)
        member = None if kernels is None else kernels.gzip_weights(weights, gzip_header(level))
        return default(weights) if member is None else member

    return encode
