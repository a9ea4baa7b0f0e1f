"""``uns["cellucid"]`` of what :func:`~cellucid.ex.read` returns, in types h5ad stores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def cellucid_uns(
    identity: dict,
    centroids: dict[str, dict[int, pd.DataFrame]],
    outliers: dict[str, np.ndarray],
    layout: str,
) -> dict:
    """Return ``uns["cellucid"]``, which ``write_h5ad`` writes as is.

    h5ad stores no JSON null, no list of objects and no integer key, so the identity is
    kept as its JSON text, centroid dimensions are keyed ``"1"``/``"2"``/``"3"`` (as the
    manifest's ``centroidsByDim``), export settings that are off (null) are left out, and a
    centroid table whose categories mix types gets them as strings.
    """
    uns = {
        "identity": json.dumps(identity, indent=2, ensure_ascii=False),
        "centroids": {
            key: {str(dim): _storable_frame(frame) for dim, frame in by_dim.items()}
            for key, by_dim in centroids.items()
        },
        "outlier_quantiles": outliers,
        "layout": layout,
    }
    settings = identity.get("export_settings")
    if isinstance(settings, dict):
        uns["export_settings"] = {k: v for k, v in settings.items() if v is not None}
    return uns


def _storable_frame(frame: pd.DataFrame) -> pd.DataFrame:
    category = frame["category"]
    if category.dtype == object and pd.api.types.infer_dtype(category) != "string":
        return frame.assign(category=category.astype(str))
    return frame
