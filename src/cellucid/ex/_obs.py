"""Writer of ``obs_manifest.json`` and ``obs/``: continuous values, category codes, outlier quantiles."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._format import EXT, MANIFEST_FORMAT, OBS_DIR, OBS_MANIFEST, QUANT_DTYPE, gz
from ..pp import category_centroids, category_codes, outlier_quantiles
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
    warning: str | None = None


def non_finite_warning(values: np.ndarray, what: str) -> str | None:
    """Return the warning about NaN and ±Inf values (written as missing), if there are any."""
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum())
    if n_nan or n_inf:
        return f"{what} has {n_nan:,} NaN and {n_inf:,} ±Inf of {values.size:,} values; they are exported as missing."
    return None


def encode_values(
    values: np.ndarray, bits: int | None, arith: Arithmetic
) -> tuple[np.ndarray, list]:
    """Return a continuous payload and the bounds to put in its manifest entry (none when float32)."""
    if bits is None:
        return missing_as_nan(values), []
    vmin, vmax = arith.bounds(*finite_range(values))
    return arith.encode(values, vmin, vmax, bits=bits), [float(vmin), float(vmax)]


def continuous_values(series: pd.Series) -> np.ndarray:
    """Return a numeric column as float32 with missing values as NaN."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)


def encode_obs(
    fields: list[ObsField],
    *,
    embeddings: dict[int, NormalizedEmbedding],
    latent: np.ndarray | None,
    settings: ExportSettings,
    arith: Arithmetic,
    n_jobs: int = 1,
) -> list[EncodedField]:
    """Encode every field in memory (codes, centroids, quantiles); raises before anything is written."""
    bits = settings.obs_continuous_quantization

    def encode(f: ObsField) -> EncodedField:
        enc = EncodedField(f)
        if f.kind == "continuous":
            values = continuous_values(f.values)
            enc.warning = non_finite_warning(values, f"obs[{f.key!r}]")
            enc.payloads["values"], enc.entry_tail = encode_values(values, bits, arith)
            return enc
        codes = category_codes(
            f.values, dtype=settings.obs_categorical_dtype, name=f"obs[{f.key!r}]"
        )
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

    # fields are independent and numpy's sorts and sums release the GIL: encode them on all cores
    with ThreadPoolExecutor(max(1, n_jobs)) as pool:
        encoded = list(pool.map(encode, fields))
    for enc in encoded:  # warned here, in the caller's thread, so they point at the export call
        if enc.warning:
            warnings.warn(enc.warning, UserWarning, stacklevel=3)
    return encoded


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
        stem = f"{OBS_DIR}/{layout.stem(f.index, f.key)}"
        head = layout.entry_head(f.index, f.key)
        if f.kind == "continuous":
            writer.write(
                f"{stem}.values.{ext}", enc.payloads["values"], run_length=bits is not None
            )
            continuous.append([*head, *enc.entry_tail])
        else:
            writer.write(
                f"{stem}.codes.{EXT[enc.codes_dtype]}", enc.payloads["codes"], run_length=True
            )
            writer.write(
                f"{stem}.outliers.{ext}", enc.payloads["outliers"], run_length=bits is not None
            )
            categorical.append([*head, *enc.entry_tail])
    schemas: dict[str, dict] = {}
    pattern = f"{OBS_DIR}/{layout.placeholder}"
    if continuous:
        schemas["continuous"] = {
            "pathPattern": gz(f"{pattern}.values.{ext}", comp),
            "ext": ext,
            "dtype": QUANT_DTYPE[bits] if bits else "float32",
            "quantized": bits is not None,
            **({"quantizationBits": bits} if bits else {}),
        }
    if categorical:
        schemas["categorical"] = {
            "codesPathPattern": gz(f"{pattern}.codes.{{ext}}", comp),
            "outlierPathPattern": gz(f"{pattern}.outliers.{ext}", comp),
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
