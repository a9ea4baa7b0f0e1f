"""Writer of ``obs_manifest.json`` and ``obs/``: continuous values, category codes, outlier quantiles."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._format import EXT, MANIFEST_FORMAT, MAX_CATEGORIES, OBS_MANIFEST, QUANT_DTYPE
from .._warn import user_stacklevel
from ..pp import category_centroids, category_codes, outlier_quantiles
from ..pp._categories import as_categorical
from ..pp._quantize import finite_range
from ._arithmetic import Arithmetic, missing_as_nan
from ._collect import ObsField
from ._payload import PayloadWriter, dumps_manifest, write_json
from ._points import NormalizedEmbedding
from ._settings import ExportSettings


@dataclass
class EncodedField:
    """One ``obs`` field encoded for writing: payload arrays and its manifest entry."""

    source: ObsField
    payloads: dict[str, np.ndarray] = field(default_factory=dict)
    entry_tail: list = field(default_factory=list)
    n_categories: int = 0
    codes_dtype: str | None = None
    warnings: list[str] = field(default_factory=list)


def non_finite_warning(values: np.ndarray, what: str, *, n_overflow: int = 0) -> str | None:
    """Return the warning about values written as missing (NaN, ±Inf, beyond float32's range), if any.

    ``values`` are float32; ``n_overflow`` of their ±Inf were finite numbers float32 cannot hold.
    """
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum()) - n_overflow
    if not (n_nan or n_inf or n_overflow):
        return None
    counts = f"{n_nan:,} NaN and {n_inf:,} ±Inf"
    if n_overflow:
        limit = float(np.finfo(np.float32).max)
        counts = (
            f"{n_nan:,} NaN, {n_inf:,} ±Inf and {n_overflow:,} finite values beyond float32's "
            f"range (|v| > {limit:.3g})"
        )
    return f"{what} has {counts} of {values.size:,} values; they are exported as missing."


def encode_values(
    values: np.ndarray, bits: int | None, arith: Arithmetic
) -> tuple[np.ndarray, list]:
    """Return a continuous payload and the bounds to put in its manifest entry (none when float32)."""
    if bits is None:
        return missing_as_nan(values), []
    vmin, vmax = arith.bounds(*finite_range(values))
    return arith.encode(values, vmin, vmax, bits=bits), [float(vmin), float(vmax)]


def continuous_values(series: pd.Series) -> tuple[np.ndarray, int]:
    """Return a numeric column as float32 with missing values as NaN, and how many finite values overflowed.

    A finite value beyond float32's range becomes ±Inf (then missing): it is counted, so
    that the warning says what happened.
    """
    wide = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(over="ignore"):
        values = wide.astype(np.float32)
    overflow = np.isinf(values)
    n_overflow = int(np.isfinite(wide[overflow]).sum()) if overflow.any() else 0
    return values, n_overflow


def _codes_dtype(cats: dict[int, pd.Categorical], chosen: str) -> str:
    """Return the codes dtype of every categorical field: with "auto", uint16 when one field needs it.

    The viewer's folder picker wants every field's codes in the dtype the identity's
    ``export_settings`` declares, so one dtype serves all fields.
    """
    if chosen != "auto":
        return chosen
    most = max((len(c.categories) for c in cats.values()), default=0)
    return "uint8" if most <= MAX_CATEGORIES["uint8"] else "uint16"


def _one_per_cell_warning(codes: np.ndarray, n_categories: int, what: str) -> str | None:
    """Warn about a field whose every cell has its own category (barcodes, ids): rarely worth a legend."""
    n = codes.shape[0]
    if n_categories <= MAX_CATEGORIES["uint8"] or n_categories < n:
        return None
    counts = np.bincount(codes.astype(np.intp), minlength=n_categories + 1)[:n_categories]
    if counts.max(initial=0) != 1 or int(counts.sum()) != n:
        return None
    return (
        f"{what} has a different value in every cell ({n:,} categories), like cell barcodes or "
        "ids; it is exported as a categorical field. Leave it out with obs_keys= if it is an identifier."
    )


def encode_obs(
    fields: list[ObsField],
    *,
    embeddings: dict[int, NormalizedEmbedding],
    latent: np.ndarray | None,
    settings: ExportSettings,
    executor: Executor,
    on_encoded: Callable[[ObsField], None] = lambda field: None,
) -> list[EncodedField]:
    """Encode every field in memory (codes, centroids, quantiles); raises before anything is written.

    Fields are independent and numpy's sorts and sums release the GIL: they are encoded
    on ``executor`` (the payload writer's pool). ``on_encoded`` is called with each field
    once it is encoded (for progress).
    """
    bits = settings.obs_continuous_quantization
    arith = settings.arithmetic
    categorical = [f for f in fields if f.kind != "continuous"]
    cats = dict(
        zip((f.index for f in categorical), executor.map(_categorical, categorical), strict=True)
    )
    codes_dtype = _codes_dtype(cats, settings.obs_categorical_dtype)

    def encode(f: ObsField) -> EncodedField:
        enc = _encode(f)
        on_encoded(f)
        return enc

    def _encode(f: ObsField) -> EncodedField:
        enc = EncodedField(f)
        what = f"obs[{f.key!r}]"
        if f.kind == "continuous":
            values, n_overflow = continuous_values(f.values)
            warning = non_finite_warning(values, what, n_overflow=n_overflow)
            enc.warnings += [warning] if warning else []
            enc.payloads["values"], enc.entry_tail = encode_values(values, bits, arith)
            return enc
        codes = category_codes(cats[f.index], dtype=codes_dtype, name=what)
        warning = _one_per_cell_warning(codes.codes, len(codes.categories), what)
        enc.warnings += [warning] if warning else []
        labels = [arith.label(c, field=f.key) for c in codes.categories]
        centroids = _centroids(codes.codes, len(labels), labels, embeddings, settings)
        quantiles = (
            np.full(codes.codes.shape[0], np.nan, dtype=np.float32)
            if latent is None
            else outlier_quantiles(
                latent,
                codes.codes,
                n_categories=len(labels),
                min_points=settings.centroid_min_points,
            )
        )
        enc.payloads["codes"] = codes.codes
        enc.payloads["outliers"], outlier_bounds = encode_values(quantiles, bits, arith)
        enc.entry_tail = [labels, codes.dtype, codes.missing, centroids, *outlier_bounds]
        enc.n_categories, enc.codes_dtype = len(labels), codes.dtype
        return enc

    encoded = list(executor.map(encode, fields))
    for enc in encoded:  # warned here, in the caller's thread, so they point at the export call
        for warning in enc.warnings:
            warnings.warn(warning, UserWarning, stacklevel=user_stacklevel())
    return encoded


def _categorical(f: ObsField) -> pd.Categorical:
    return as_categorical(f.values)


def _centroids(
    codes: np.ndarray,
    n_categories: int,
    labels: list,
    embeddings: dict[int, NormalizedEmbedding],
    settings: ExportSettings,
) -> dict[str, list]:
    if settings.centroid_outlier_quantile is None:
        return {str(dim): [] for dim in embeddings}
    out = {}
    for dim, emb in embeddings.items():
        result = category_centroids(
            emb.coords,
            codes,
            n_categories=n_categories,
            quantile=settings.centroid_outlier_quantile,
            min_points=settings.centroid_min_points,
        )
        out[str(dim)] = [
            {
                "category": labels[i],
                "position": result.positions[i].tolist(),
                "n_points": int(result.n_points[i]),
            }
            for i in np.flatnonzero(result.n_points > 0)
        ]
    return out


def write_obs(
    writer: PayloadWriter,
    encoded: list[EncodedField],
    *,
    n_cells: int,
    latent_key: str | None,
    settings: ExportSettings,
) -> list[dict]:
    """Write the obs payloads and manifest; return the identity's ``obs_fields``.

    The current layout lists continuous fields first (the manifest's order); the legacy
    layout keeps the ``obs_keys`` order.
    """
    layout, comp = settings.layout, settings.compression
    bits = settings.obs_continuous_quantization
    ext = EXT[QUANT_DTYPE[bits]] if bits else EXT["float32"]
    continuous, categorical = [], []
    for enc in encoded:
        f = enc.source
        head = layout.entry_head(f.index, f.key)
        if f.kind == "continuous":
            path = layout.field_path("obs_values", f.index, f.key, ext)
            writer.write(path, enc.payloads["values"], run_length=bits is not None)
            continuous.append([*head, *enc.entry_tail])
        else:
            path = layout.field_path("obs_codes", f.index, f.key, EXT[enc.codes_dtype])
            writer.write(path, enc.payloads["codes"], run_length=True)
            path = layout.field_path("obs_outliers", f.index, f.key, ext)
            writer.write(path, enc.payloads["outliers"], run_length=bits is not None)
            categorical.append([*head, *enc.entry_tail])
    schemas: dict[str, dict] = {}
    if continuous:
        schemas["continuous"] = {
            "pathPattern": layout.pattern("obs_values", ext, comp),
            "ext": ext,
            "dtype": QUANT_DTYPE[bits] if bits else "float32",
            "quantized": bits is not None,
            **({"quantizationBits": bits} if bits else {}),
        }
    if categorical:
        schemas["categorical"] = {
            "codesPathPattern": layout.pattern("obs_codes", None, comp),
            "outlierPathPattern": layout.pattern("obs_outliers", ext, comp),
            "outlierExt": ext,
            "outlierDtype": QUANT_DTYPE[bits] if bits else "float32",
            "outlierQuantized": bits is not None,
        }
    manifest = {
        "_format": MANIFEST_FORMAT,
        "n_points": n_cells,
        "centroid_outlier_quantile": settings.centroid_outlier_quantile,
        "latent_key": latent_key,
        "compression": comp,
        "_obsSchemas": schemas,
        "_continuousFields": continuous,
        "_categoricalFields": categorical,
    }
    write_json(writer.root / OBS_MANIFEST, dumps_manifest(manifest))
    fields = [
        {"key": e.source.key, "kind": "continuous"}
        if e.source.kind == "continuous"
        else {"key": e.source.key, "kind": "category", "n_categories": e.n_categories}
        for e in encoded
    ]
    if layout.name == "legacy":  # the original kept obs_keys order: its manifests have no indices
        return fields
    return [f for f in fields if f["kind"] == "continuous"] + [
        f for f in fields if f["kind"] == "category"
    ]
