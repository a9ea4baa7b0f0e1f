"""Writers of ``points_<d>d.bin`` and ``vectors/<i>_<d>d.bin``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._format import VECTOR_BASIS, VECTORS_DIR, Layout
from ._arithmetic import Arithmetic
from ._payload import PayloadWriter


@dataclass(frozen=True)
class NormalizedEmbedding:
    """One embedding ready to write: its float32 payload, float64 coordinates and scale."""

    payload: np.ndarray
    coords: np.ndarray
    scale: float


def normalize_embeddings(
    embeddings: dict[int, np.ndarray], arith: Arithmetic
) -> dict[int, NormalizedEmbedding]:
    """Normalize each embedding independently into [-1, 1]."""
    return {
        dim: NormalizedEmbedding(*arith.normalize(coords)) for dim, coords in embeddings.items()
    }


def write_points(writer: PayloadWriter, embeddings: dict[int, NormalizedEmbedding]) -> dict:
    """Write one points file per dimension; return the identity's ``embeddings`` entry."""
    files = {
        f"{dim}d": writer.write(f"points_{dim}d.bin", emb.payload)
        for dim, emb in embeddings.items()
    }
    dims = sorted(embeddings)
    return {"available_dimensions": dims, "default_dimension": max(dims), "files": files}


def write_vectors(
    writer: PayloadWriter,
    fields: dict[str, dict[int, np.ndarray]],
    embeddings: dict[int, NormalizedEmbedding],
    *,
    layout: Layout,
    arith: Arithmetic,
) -> dict | None:
    """Write vector fields in their embedding's units; return the identity's ``vector_fields`` entry."""
    if not fields:
        return None
    entries = {}
    for index, (field_id, by_dim) in enumerate(fields.items()):
        files = {}
        for dim, vectors in by_dim.items():
            payload = arith.scale_vectors(vectors, embeddings[dim].scale)
            files[f"{dim}d"] = writer.write(
                f"{VECTORS_DIR}/{layout.vector_stem(index, field_id)}_{dim}d.bin", payload
            )
        dims = sorted(by_dim)
        entries[field_id] = {
            "label": field_id,
            "basis": VECTOR_BASIS,
            "available_dimensions": dims,
            "default_dimension": max(dims),
            "files": files,
        }
    # RNA velocity is what users look for first when a dataset has several fields
    default = next((f for f in entries if f.startswith("velocity_")), next(iter(entries)))
    return {"default_field": default, "fields": entries}
