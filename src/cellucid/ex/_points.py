"""Writers of ``points_<d>d.bin`` and ``vectors/<i>_<d>d.bin``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._format import VECTOR_BASIS
from .._layout import points_path
from ._arithmetic import Arithmetic
from ._payload import PayloadWriter
from ._settings import ExportSettings


@dataclass(frozen=True)
class NormalizedEmbedding:
    """One embedding ready to write: its float32 payload, float64 coordinates and scale."""

    payload: np.ndarray
    coords: np.ndarray
    scale: float


def normalize_embeddings(
    embeddings: dict[int, np.ndarray], arith: Arithmetic, *, keys: dict[int, str] | None = None
) -> dict[int, NormalizedEmbedding]:
    """Normalize each embedding independently into [-1, 1]; ``keys`` name them in errors."""
    keys = keys or {}
    return {
        dim: NormalizedEmbedding(
            *arith.normalize(
                coords, f"adata.obsm[{keys[dim]!r}]" if dim in keys else f"the {dim}-D embedding"
            )
        )
        for dim, coords in embeddings.items()
    }


def _scaled(vectors: np.ndarray, scale: float, what: str, arith: Arithmetic) -> np.ndarray:
    """Return vectors in their embedding's units as float32, or refuse values float32 cannot hold."""
    with np.errstate(over="ignore", invalid="ignore"):
        payload = arith.scale_vectors(vectors, scale)
    bad = ~np.isfinite(payload)
    if bad.any():
        biggest = float(np.abs(vectors[bad.any(axis=1)]).max())
        msg = (
            f"{what} overflows float32 once scaled to its embedding's units (scale {scale:.3g}, "
            f"|vector| up to {biggest:.3g}, float32 holds up to {float(np.finfo(np.float32).max):.3g}) "
            f"in {int(bad.any(axis=1).sum()):,} cells. Rescale the vectors or leave the field out "
            "(vector_fields=)."
        )
        raise ValueError(msg)
    return payload


def write_points(writer: PayloadWriter, embeddings: dict[int, NormalizedEmbedding]) -> dict:
    """Write one points file per dimension; return the identity's ``embeddings`` entry."""
    files = {
        f"{dim}d": writer.write(points_path(dim), emb.payload) for dim, emb in embeddings.items()
    }
    dims = sorted(embeddings)
    return {"available_dimensions": dims, "default_dimension": max(dims), "files": files}


def write_vectors(
    writer: PayloadWriter,
    fields: dict[str, dict[int, np.ndarray]],
    embeddings: dict[int, NormalizedEmbedding],
    *,
    settings: ExportSettings,
) -> dict | None:
    """Write vector fields in their embedding's units; return the identity's ``vector_fields`` entry."""
    if not fields:
        return None
    layout, arith = settings.layout, settings.arithmetic
    payloads = {
        (field_id, dim): _scaled(
            vectors, embeddings[dim].scale, f"vector field {field_id!r} ({dim}D)", arith
        )
        for field_id, by_dim in fields.items()
        for dim, vectors in by_dim.items()
    }  # all checked before the first is written
    entries = {}
    for index, (field_id, by_dim) in enumerate(fields.items()):
        files = {}
        for dim in by_dim:
            files[f"{dim}d"] = writer.write(
                layout.vector_path(index, field_id, dim), payloads[field_id, dim]
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
