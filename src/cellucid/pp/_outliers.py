"""Per-cell outlier quantiles within each category, measured in a latent space."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._docs import doc_adata, doc_copy, doc_groupby, doc_params, doc_returns_copy
from .._format import DEFAULT_CENTROID_MIN_POINTS
from ._groups import compiled, group_means, rank_fraction, valid_codes

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike

# rows per block when measuring distances, so a wide latent space needs no full-size copy
_BLOCK_ROWS = 65536


def latent_distances(
    latent: np.ndarray, centers: np.ndarray, codes: np.ndarray, *, rows: np.ndarray | None = None
) -> np.ndarray:
    """Return the float32 Euclidean distance of each row of ``latent`` to ``centers[codes]``.

    With ``rows``, only those rows (distances in their order), without a copy of them.
    """
    kernels = compiled(latent.shape[0])
    if kernels is None and rows is not None:
        latent, codes, rows = latent[rows], codes[rows], None
    elif kernels is not None and rows is None:
        rows = np.arange(latent.shape[0])
    n = latent.shape[0] if rows is None else rows.shape[0]
    out = np.empty(n, dtype=np.float32)
    diff = None
    for start in range(0, n, _BLOCK_ROWS):
        block = slice(start, start + _BLOCK_ROWS)
        if kernels is None:
            diff = latent[block] - centers[codes[block]]
        else:  # the same float32 differences, gathered in one pass into a reused buffer
            if diff is None or diff.shape[0] != min(_BLOCK_ROWS, n - start):
                diff = np.empty((min(_BLOCK_ROWS, n - start), latent.shape[1]), np.float32)
            kernels.center_differences(latent, centers, codes, rows[block], diff)
        out[block] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def outlier_quantiles(
    latent: ArrayLike,
    codes: ArrayLike,
    *,
    n_categories: int,
    min_points: int = DEFAULT_CENTROID_MIN_POINTS,
) -> np.ndarray:
    """Rank each cell by its distance to its category's mean in a latent space.

    A cell's value is the fraction of its category's cells at that distance or closer
    (``rank / n``), so 1 marks the category's most outlying cell. Distances are float32,
    as is the latent space (e.g. ``X_pca``).

    Parameters
    ----------
    latent
        Latent coordinates of shape ``(n_cells, n_latent)``.
    codes
        Category code of each cell; codes outside ``0..n_categories-1`` are missing.
    n_categories
        Number of categories.
    min_points
        Categories with fewer cells get NaN.

    Returns
    -------
    float32 values in (0, 1]; NaN for missing codes and small categories.

    Examples
    --------
    >>> import numpy as np
    >>> import cellucid as cl
    >>> latent = np.arange(10, dtype=np.float32)[:, None]
    >>> cl.pp.outlier_quantiles(latent, np.zeros(10, int), n_categories=1, min_points=5)
    array([1. , 0.8, 0.6, 0.4, 0.2, 0.2, 0.4, 0.6, 0.8, 1. ], dtype=float32)

    """
    x = np.asarray(latent, dtype=np.float32)
    x = x.reshape(x.shape[0], -1)
    codes = np.asarray(codes)
    out = np.full(x.shape[0], np.nan, dtype=np.float32)
    valid = valid_codes(codes, n_categories)
    counts = np.bincount(codes[valid].astype(np.int64), minlength=n_categories)
    valid &= np.isin(codes, np.flatnonzero(counts >= min_points))
    if not valid.any():
        return out
    every = bool(valid.all())
    all_codes = codes.astype(np.intp)  # those of the cells left out are not read
    c = all_codes if every else all_codes[valid]
    counts = np.bincount(c, minlength=n_categories)
    if not every and compiled(x.shape[0]) is None:  # numpy: one copy of the rows that count
        x, all_codes, every = np.compress(valid, x, axis=0), c, True
    # the kernels skip the cells left out instead of copying a large latent space
    centers = group_means(x, all_codes, counts, keep=None if every else valid)
    rows = None if every else np.flatnonzero(valid)
    dist = latent_distances(x, centers.astype(np.float32), all_codes, rows=rows)
    out[valid] = rank_fraction(c, dist, counts)
    return out


@doc_params(adata=doc_adata, groupby=doc_groupby, copy=doc_copy, returns=doc_returns_copy)
def outlier_quantiles_obs(
    adata: AnnData,
    *,
    groupby: str,
    use_rep: str = "X_pca",
    min_points: int = DEFAULT_CENTROID_MIN_POINTS,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Compute per-cell outlier quantiles of an ``obs`` grouping, as the export does.

    A cell's value is the rank of its distance to its category's mean in ``use_rep``, from
    0 (nearest) to 1 (farthest); :func:`outlier_quantiles` works on arrays.

    Parameters
    ----------
    {adata}
    {groupby}
    use_rep
        The latent space in ``adata.obsm`` (``"pca"`` reads ``obsm["X_pca"]``).
    min_points
        Categories with fewer cells get NaN.
    key_added
        Column of ``adata.obs`` for the values; defaults to ``f"{groupby}_outlier_quantile"``.
    {copy}

    {returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> cl.pp.outlier_quantiles_obs(adata, groupby="bulk_labels")
    >>> float(adata.obs["bulk_labels_outlier_quantile"].max())
    1.0

    """
    from ._anndata import obs_column, obsm_array
    from ._categories import as_categorical

    adata = adata.copy() if copy else adata
    cat = as_categorical(obs_column(adata, groupby))
    values = outlier_quantiles(
        obsm_array(adata, use_rep),
        cat.codes,
        n_categories=len(cat.categories),
        min_points=min_points,
    )
    adata.obs[key_added or f"{groupby}_outlier_quantile"] = values
    return adata if copy else None
