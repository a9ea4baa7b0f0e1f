"""The arithmetic each layout encodes with: float64 for the current layout, the original float32 for legacy."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._format import JS_WHITESPACE
from .._layout import Layout
from ..pp import normalize_coords
from ..pp._quantize import encode_with_bounds, finite_bounds
from . import _legacy_arithmetic as _legacy

# Python's whitespace and JavaScript's (the viewer trims with the latter: U+FEFF is only there)
_UNSAFE_LABEL = re.compile(rf"^[\s{JS_WHITESPACE}]|[\s{JS_WHITESPACE}]$|[\x00-\x1f\x7f]")


def json_label(category: object, *, field: str) -> str | int | float | bool:
    """Return a category as the JSON scalar of its own type, or refuse one the viewer would mangle."""
    if isinstance(category, bool | np.bool_):
        return bool(category)
    if isinstance(category, int | np.integer):
        return int(category)
    if isinstance(category, float | np.floating):
        if not math.isfinite(category):
            msg = f"obs[{field!r}] has the category {category!r}; categories must be finite."
            raise ValueError(msg)
        return float(category)
    label = str(category)
    if _UNSAFE_LABEL.search(label):
        msg = (
            f"obs[{field!r}] has the category {label!r} with leading/trailing whitespace or control "
            "characters; clean it (e.g. .cat.rename_categories(str.strip)) before exporting."
        )
        raise ValueError(msg)
    return label


def missing_as_nan(values: np.ndarray) -> np.ndarray:
    """Return float32 values with ±Inf as NaN: an unquantized payload's missing value."""
    return np.where(np.isinf(values), np.float32(np.nan), values).astype(np.float32, copy=False)


def _normalize_current(coords: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    norm = normalize_coords(coords, name=name)
    return norm.coords.astype(np.float32), norm.coords, norm.scale


def _normalize_legacy(coords: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    with np.errstate(over="ignore", invalid="ignore"):
        payload, scale = _legacy.normalize_coords_float32(coords)
    if not (math.isfinite(scale) and scale > 0 and np.isfinite(payload).all()):
        msg = (
            f"Cannot normalize {name} in the legacy layout's float32 arithmetic: its coordinates "
            "or their range pass float32's limits (±3.4e38). Rescale them, or use layout='current'."
        )
        raise ValueError(msg)
    return payload, payload.astype(np.float64), scale


@dataclass(frozen=True)
class Arithmetic:
    """How a layout turns values into payloads."""

    #: (coords, name for messages) -> (float32 payload, float64 coordinates for centroids, scale)
    normalize: Callable[[np.ndarray, str], tuple[np.ndarray, np.ndarray, float]]
    #: (vectors, scale) -> float32 payload
    scale_vectors: Callable[[np.ndarray, float], np.ndarray]
    #: finite (min, max), NaN where none -> quantization bounds
    bounds: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    #: (values, vmin, vmax, bits=) -> codes
    encode: Callable[..., np.ndarray]
    #: (category, field=) -> JSON label
    label: Callable[..., object]


CURRENT = Arithmetic(
    normalize=_normalize_current,
    scale_vectors=lambda vectors, scale: (np.asarray(vectors, dtype=np.float64) * scale).astype(
        np.float32
    ),
    bounds=finite_bounds,
    encode=encode_with_bounds,
    label=json_label,
)
LEGACY = Arithmetic(
    normalize=_normalize_legacy,
    scale_vectors=_legacy.scale_vectors_float32,
    bounds=_legacy.bounds_float32,
    encode=_legacy.encode_with_bounds_float32,
    label=lambda category, *, field: str(category),
)


def arithmetic(layout: Layout) -> Arithmetic:
    """Return the arithmetic of ``layout``."""
    return CURRENT if layout.name == "current" else LEGACY
