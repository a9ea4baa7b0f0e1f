"""Normalization of embeddings into the viewer's [-1, 1] cube."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .._docs import doc_adata, doc_copy, doc_params, doc_returns_copy

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike


class NormalizedCoords(NamedTuple):
    """Coordinates in [-1, 1] and the transform that made them: ``(x - center) * scale``.

    Attributes
    ----------
    coords
        The normalized coordinates, float64, ``(n_cells, n_dims)``.
    center
        The middle of the bounding box, per axis.
    scale
        ``2 / max(axis ranges)``; multiply vectors living in the embedding by it.
    """

    coords: np.ndarray
    center: np.ndarray
    scale: float


def normalize_coords(coords: ArrayLike, *, name: str = "the embedding") -> NormalizedCoords:
    """Fit an embedding into [-1, 1] keeping its aspect ratio.

    The centre is the middle of the bounding box and one scale, ``2 / max(axis ranges)``,
    serves every axis, so the longest axis spans exactly [-1, 1]. A degenerate embedding
    (all points equal) gets scale 2. Computed in float64, without overflow for finite
    coordinates anywhere in float64's range; an embedding that spans less than ~1e-308 is
    refused (its scale would be infinite).

    Parameters
    ----------
    coords
        Embedding of shape ``(n_cells, n_dims)`` (or ``(n_cells,)`` for 1-D), finite.
    name
        What to call the embedding in error messages.

    Returns
    -------
    The normalized coordinates (float64, 2-D), the centre and the scale. Vectors that live
    in the embedding (e.g. RNA velocity) follow it by multiplying with ``scale``.

    Examples
    --------
    >>> import numpy as np
    >>> import cellucid as cl
    >>> norm = cl.pp.normalize_coords(np.array([[0.0, 0.0], [4.0, 1.0]]))
    >>> norm.coords
    array([[-1.  , -0.25],
           [ 1.  ,  0.25]])
    >>> norm.scale
    0.5

    """
    x = np.asarray(coords, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    if x.shape[0] == 0:
        msg = f"Cannot normalize {name}: it has zero cells."
        raise ValueError(msg)
    lo, hi = x.min(axis=0), x.max(axis=0)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # NaN and ±Inf reach them
        msg = f"Cannot normalize {name}: it has NaN or Inf coordinates."
        raise ValueError(msg)
    # halves first: lo + hi and hi - lo overflow for coordinates near float64's limits
    center = lo / 2 + hi / 2
    half_extent = float((hi / 2 - lo / 2).max())
    if not half_extent > 0:  # one point or all points equal
        half_extent = 0.5
    scale = 1.0 / half_extent
    if not np.isfinite(scale):
        msg = (
            f"Cannot normalize {name}: its coordinates span only {2 * half_extent:.3g}, too little "
            "to scale into [-1, 1] in float64. Multiply them by a large constant first."
        )
        raise ValueError(msg)
    return NormalizedCoords((x - center) * scale, center, scale)


@doc_params(adata=doc_adata, copy=doc_copy, returns=doc_returns_copy)
def normalize_embedding(
    adata: AnnData,
    *,
    key: str = "X_umap",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Normalize ``adata.obsm[key]`` into [-1, 1] as the export does.

    One scale for every dimension keeps the aspect ratio; :func:`normalize_coords` is the
    array-level form.

    Parameters
    ----------
    {adata}
    key
        The embedding in ``adata.obsm``: its key, or its basis as scanpy's plotting
        takes it (``"umap"`` reads ``obsm["X_umap"]``).
    key_added
        Where the normalized embedding goes in ``adata.obsm``; defaults to
        ``f"{key}_normalized"``. The centre and scale go to
        ``adata.uns["cellucid"]["normalization"][key_added]``.
    {copy}

    {returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> cl.pp.normalize_embedding(adata, key="X_umap")
    >>> round(float(abs(adata.obsm["X_umap_normalized"]).max()), 6)
    1.0

    """
    from ._anndata import obsm_array, obsm_key, store_uns

    adata = adata.copy() if copy else adata
    key = obsm_key(adata, key)
    norm = normalize_coords(obsm_array(adata, key))
    key_added = key_added or f"{key}_normalized"
    adata.obsm[key_added] = norm.coords
    store_uns(adata, "normalization", key_added, {"center": norm.center, "scale": norm.scale})
    return adata if copy else None
