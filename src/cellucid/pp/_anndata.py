"""Small shared helpers of the AnnData-level ``pp`` functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

UNS_KEY = "cellucid"


def obs_column(adata: AnnData, key: str) -> pd.Series:
    """Return ``adata.obs[key]`` or raise an error naming the columns there are."""
    if key not in adata.obs.columns:
        msg = f"{key!r} is not a column of adata.obs; columns are {list(adata.obs.columns)}."
        raise KeyError(msg)
    return adata.obs[key]


def obsm_array(adata: AnnData, key: str) -> np.ndarray:
    """Return ``adata.obsm[key]`` as a dense 2-D array or raise an error naming the keys there are."""
    if key not in adata.obsm:
        msg = f"{key!r} is not a key of adata.obsm; keys are {list(adata.obsm.keys())}."
        raise KeyError(msg)
    value = adata.obsm[key]
    value = value.toarray() if hasattr(value, "toarray") else np.asarray(value)
    return value.reshape(value.shape[0], -1)


def store_uns(adata: AnnData, section: str, key: str, value: Any) -> None:
    """Store ``value`` at ``adata.uns["cellucid"][section][key]``."""
    adata.uns.setdefault(UNS_KEY, {}).setdefault(section, {})[key] = value
