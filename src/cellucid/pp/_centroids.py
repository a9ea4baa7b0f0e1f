"""Per-category centroids of an embedding, robust to outlying cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from .._docs import doc_adata, doc_basis, doc_copy, doc_groupby, doc_params, doc_returns_copy
from .._format import DEFAULT_CENTROID_MIN_POINTS, DEFAULT_CENTROID_OUTLIER_QUANTILE
from ._groups import compiled, group_means, group_quantiles, valid_codes

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike


class Centroids(NamedTuple):
    """One position per category (NaN where skipped) and the cells each one averages.

    Attributes
    ----------
    positions
        ``(n_categories, n_dims)`` centroids; NaN rows for categories too small for one.
    n_points
        Cells each centroid averages (0 for skipped categories).
    """

    positions: np.ndarray
    n_points: np.ndarray


def category_centroids(
    coords: ArrayLike,
    codes: ArrayLike,
    *,
    n_categories: int,
    quantile: float = DEFAULT_CENTROID_OUTLIER_QUANTILE,
    min_points: int = DEFAULT_CENTROID_MIN_POINTS,
) -> Centroids:
    """Compute one centroid per category, trimming the cells farthest from it.

    For each category: the mean of its cells, then the mean again over the cells whose
    distance to that first mean is within the category's ``quantile`` of distances (when
    more than ``min_points`` cells are there and at least ``min_points`` stay). Categories
    with fewer than ``min_points`` cells get no centroid.

    Parameters
    ----------
    coords
        Coordinates of shape ``(n_cells, n_dims)``.
    codes
        Category code of each cell; codes outside ``0..n_categories-1`` are missing.
    n_categories
        Number of categories.
    quantile
        Fraction of each category's cells (nearest first) the second mean keeps.
    min_points
        Fewest cells a category needs for a centroid.

    Returns
    -------
    ``positions`` of shape ``(n_categories, n_dims)`` (NaN rows for skipped categories)
    and ``n_points`` (0 for skipped categories).

    Examples
    --------
    >>> import numpy as np
    >>> import cellucid as cl
    >>> coords = np.r_[np.zeros((10, 2)), np.ones((10, 2))]
    >>> cl.pp.category_centroids(coords, np.repeat([0, 1], 10), n_categories=2).positions
    array([[0., 0.],
           [1., 1.]])

    """
    if not 0 < quantile <= 1:
        msg = f"quantile must be in (0, 1], got {quantile!r}."
        raise ValueError(msg)
    x = np.asarray(coords, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    codes = np.asarray(codes)
    valid = valid_codes(codes, n_categories)
    kernels = compiled(x.shape[0])
    if kernels is None:
        c = codes[valid].astype(np.int64)
        # no copy when every cell has a category; np.compress copies rows ~2x faster than a mask
        x = x if valid.all() else np.compress(valid, x, axis=0)
        counts = np.bincount(c, minlength=n_categories)
        means = group_means(x, c, counts)
        dist = _distances(x, means, c)
    else:  # the same sums and distances, skipping the cells without a category
        all_codes = codes.astype(np.intp)  # those of the cells left out are not read
        c = all_codes[valid]
        counts = np.bincount(c, minlength=n_categories)
        means = group_means(x, all_codes, counts, keep=valid)
        dist = kernels.center_distances(x, means, all_codes, valid)
    threshold = group_quantiles(c, dist, counts, quantile)
    inlier = dist <= threshold[c]
    c_in = c[inlier]
    counts_in = np.bincount(c_in, minlength=n_categories)
    if kernels is None:
        means_in = group_means(np.compress(inlier, x, axis=0), c_in, counts_in)
    else:
        kept = valid.copy()
        kept[valid] = inlier
        means_in = group_means(x, all_codes, counts_in, keep=kept)
    trimmed = (counts > min_points) & (counts_in >= min_points)
    positions = np.where(trimmed[:, None], means_in, means)
    n_points = np.where(trimmed, counts_in, counts)
    skipped = counts < min_points
    positions[skipped] = np.nan
    n_points[skipped] = 0
    return Centroids(positions, n_points)


def _distances(x: np.ndarray, centers: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Return the Euclidean distance of each row of ``x`` to ``centers[codes]``."""
    # one dimension at a time, summed in the order a row-wise sum takes, in two reused
    # buffers instead of (n, d) temporaries (an embedding has 1 to 3 dimensions)
    squared = np.zeros(x.shape[0])
    diff = np.empty(x.shape[0])
    for dim in range(x.shape[1]):
        np.take(centers[:, dim], codes, out=diff)
        np.subtract(x[:, dim], diff, out=diff)
        np.multiply(diff, diff, out=diff)
        squared += diff
    return np.sqrt(squared, out=squared)


@doc_params(
    adata=doc_adata, groupby=doc_groupby, basis=doc_basis, copy=doc_copy, returns=doc_returns_copy
)
def centroids(
    adata: AnnData,
    *,
    groupby: str,
    basis: str = "X_umap",
    quantile: float = DEFAULT_CENTROID_OUTLIER_QUANTILE,
    min_points: int = DEFAULT_CENTROID_MIN_POINTS,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Compute per-category centroids of an embedding, as the export does.

    A centroid is the mean of the ``quantile`` of its category's cells nearest to the
    category's mean; :func:`category_centroids` works on arrays.

    Parameters
    ----------
    {adata}
    {groupby}
    {basis}
    quantile
        Fraction of each category's cells (nearest first) the trimmed mean keeps.
    min_points
        Fewest cells a category needs for a centroid.
    key_added
        Key in ``adata.uns["cellucid"]["centroids"]``; defaults to ``f"{groupby}_{key}"``
        where ``key`` is the ``obsm`` key read (``"bulk_labels_X_umap"``).
        The value is a DataFrame indexed by category with one column per dimension and
        ``n_points``.
    {copy}

    {returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> cl.pp.centroids(adata, groupby="bulk_labels")
    >>> adata.uns["cellucid"]["centroids"]["bulk_labels_X_umap"].shape
    (10, 3)

    """
    from ._anndata import obs_column, obsm_array, obsm_key, store_uns
    from ._categories import as_categorical

    adata = adata.copy() if copy else adata
    basis = obsm_key(adata, basis)
    cat = as_categorical(obs_column(adata, groupby))
    coords = obsm_array(adata, basis)
    result = category_centroids(
        coords,
        cat.codes,
        n_categories=len(cat.categories),
        quantile=quantile,
        min_points=min_points,
    )
    table = pd.DataFrame(
        result.positions,
        index=pd.Index(cat.categories, name=groupby),
        columns=[f"{basis}_{i + 1}" for i in range(coords.shape[1])],
    )
    table["n_points"] = result.n_points
    store_uns(adata, "centroids", key_added or f"{groupby}_{basis}", table)
    return adata if copy else None
