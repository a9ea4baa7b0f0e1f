"""Small shared helpers of the AnnData-level ``pp`` functions."""

from __future__ import annotations

from collections.abc import Collection
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


def basis_key(keys: Collection[str], basis: str, *, suffixes: Collection[str] = ("",)) -> str:
    """Return the ``obsm`` key an embedding name stands for, as scanpy's plotting reads it.

    ``basis`` itself when a key ``basis + suffix`` exists (``"X_umap"``, squidpy's
    ``"spatial"``), else ``"X_" + basis`` (``"umap"`` means ``"X_umap"``), which may not
    exist: the caller says what was looked for.
    """
    if any(basis + suffix in keys for suffix in suffixes):
        return basis
    return f"X_{basis}"


def obsm_key(adata: AnnData, key: str) -> str:
    """Return the ``obsm`` key ``key`` stands for (see :func:`basis_key`), or raise naming the keys there are."""
    resolved = basis_key(adata.obsm.keys(), key)
    if resolved not in adata.obsm:
        also = "" if key.startswith("X_") else f" (nor is {resolved!r})"
        msg = f"{key!r} is not a key of adata.obsm{also}; keys are {list(adata.obsm.keys())}."
        raise KeyError(msg)
    return resolved


def obsm_array(adata: AnnData, key: str) -> np.ndarray:
    """Return ``adata.obsm[key]`` (or ``obsm["X_" + key]``) as a dense 2-D array."""
    value = adata.obsm[obsm_key(adata, key)]
    value = value.toarray() if hasattr(value, "toarray") else np.asarray(value)
    return value.reshape(value.shape[0], -1)


def store_uns(adata: AnnData, section: str, key: str, value: Any) -> None:
    """Store ``value`` at ``adata.uns["cellucid"][section][key]``."""
    adata.uns.setdefault(UNS_KEY, {}).setdefault(section, {})[key] = value
