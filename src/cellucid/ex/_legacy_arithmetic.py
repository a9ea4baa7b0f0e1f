"""The float32 arithmetic of the original exporter, for the legacy layout.

The legacy layout promises payloads equal to the original design's, which normalized
and quantized in float32 and truncated quantized values (no step epsilon). The current
layout uses the float64 arithmetic of :mod:`cellucid.pp._embedding` and
:mod:`cellucid.pp._quantize`.
"""

from __future__ import annotations

import numpy as np

from .._format import MAX_QUANT, QUANT_DTYPE


def normalize_coords_float32(coords: np.ndarray) -> tuple[np.ndarray, float]:
    """Return float32 coordinates fitted into [-1, 1] in float32 arithmetic, and the scale."""
    x = np.asarray(coords, dtype=np.float32)
    lo, hi = x.min(axis=0), x.max(axis=0)
    extent = float((hi - lo).max())
    if extent < 1e-8:
        extent = 1.0
    scale = 2.0 / extent
    return (x - (lo + hi) / 2) * np.float32(scale), scale


def scale_vectors_float32(vectors: np.ndarray, scale: float) -> np.ndarray:
    """Return float32 vectors multiplied by an embedding's scale in float32 arithmetic."""
    return np.asarray(vectors, dtype=np.float32) * np.float32(scale)


def bounds_float32(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn finite minima and maxima (NaN: no finite value) into the bounds the original wrote.

    Without finite values they are (0, 1); a constant field gets ``vmax = vmin + 1``.
    """
    none = np.isnan(lo)
    vmin = np.where(none, 0.0, lo)
    vmax = np.where(none, 1.0, hi)
    return vmin, np.where(vmax == vmin, vmin + 1.0, vmax)


def encode_with_bounds_float32(
    values: np.ndarray,
    vmin: np.ndarray | float,
    vmax: np.ndarray | float,
    *,
    bits: int,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize as the original did: ``(v - vmin) * scale`` in float32, clipped and truncated.

    ``index`` looks each value's bounds up in per-column ``vmin`` and ``vmax``, as in
    :func:`~cellucid.pp._quantize.encode_with_bounds`.
    """
    max_q = MAX_QUANT[bits]
    values = np.asarray(values, dtype=np.float32)
    vmin = np.asarray(vmin, dtype=np.float64)
    scale = (max_q / (np.asarray(vmax, dtype=np.float64) - vmin)).astype(np.float32)
    if index is not None:
        vmin, scale = vmin[index], scale[index]
    finite = np.isfinite(values)
    q = np.clip((np.where(finite, values, 0) - vmin.astype(np.float32)) * scale, 0, max_q)
    out = q.astype(QUANT_DTYPE[bits])
    out[~finite] = max_q + 1
    return out
