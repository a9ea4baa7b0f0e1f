"""Integer codes for categorical values, with a code for missing values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import pandas as pd

from .._docs import doc_adata, doc_copy, doc_params, doc_returns_copy
from .._format import CODES_MISSING, MAX_CATEGORIES

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike

CodesDtype = Literal["auto", "uint8", "uint16"]


class CategoryCodes(NamedTuple):
    """Codes of categorical values, their categories and the code of a missing value.

    Attributes
    ----------
    codes
        One code per value: the position of its category, or ``missing``.
    categories
        The categories, in code order.
    dtype
        ``"uint8"`` or ``"uint16"``.
    missing
        The code of a missing value: 255 or 65535.
    """

    codes: np.ndarray
    categories: list
    dtype: str
    missing: int


def codes_dtype_for(n_categories: int, dtype: CodesDtype = "auto", *, name: str = "values") -> str:
    """Return the codes dtype for ``n_categories`` categories, or raise if they do not fit."""
    if dtype not in ("auto", *MAX_CATEGORIES):
        msg = f"dtype must be 'auto', 'uint8' or 'uint16', got {dtype!r}."
        raise ValueError(msg)
    chosen = dtype
    if dtype == "auto":
        chosen = "uint8" if n_categories <= MAX_CATEGORIES["uint8"] else "uint16"
    if n_categories > MAX_CATEGORIES[chosen]:
        msg = (
            f"{name} has {n_categories:,} categories but {chosen} codes hold at most "
            f"{MAX_CATEGORIES[chosen]:,}"
            + (
                " (use dtype 'uint16' or 'auto')."
                if chosen == "uint8"
                else "; leave it out or merge categories."
            )
        )
        raise ValueError(msg)
    return chosen


def as_categorical(values: ArrayLike) -> pd.Categorical:
    """Return ``values`` as a pandas Categorical (categories: the sorted distinct values)."""
    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(values, pd.Categorical):
        return values
    return pd.Categorical(values)


def category_codes(
    values: ArrayLike, *, dtype: CodesDtype = "auto", name: str = "values"
) -> CategoryCodes:
    """Encode categorical values as ``uint8``/``uint16`` codes.

    Categorical values keep their categories and order (unused categories included);
    other values (strings, booleans, numbers) become categories of their sorted distinct
    values. Missing values get the top code of the dtype (255 or 65535).

    Parameters
    ----------
    values
        One-dimensional values: a pandas Series or Categorical, or an array.
    dtype
        ``"uint8"`` (at most 255 categories), ``"uint16"`` (at most 65535), or ``"auto"``
        for the smaller one that fits.
    name
        What to call the values in error messages.

    Returns
    -------
    Codes, categories (as pandas has them), the codes dtype and the missing code.

    Examples
    --------
    >>> import cellucid as cl
    >>> enc = cl.pp.category_codes(["b", "a", None, "b"])
    >>> enc.codes, enc.categories
    (array([  1,   0, 255,   1], dtype=uint8), ['a', 'b'])

    """
    cat = as_categorical(values)
    categories = list(cat.categories)
    chosen = codes_dtype_for(len(categories), dtype, name=name)
    missing = CODES_MISSING[chosen]
    raw = np.asarray(cat.codes)
    codes = raw.astype(chosen)
    codes[raw < 0] = missing
    return CategoryCodes(codes, categories, chosen, missing)


@doc_params(adata=doc_adata, copy=doc_copy, returns=doc_returns_copy)
def encode_categories(
    adata: AnnData,
    *,
    key: str,
    dtype: CodesDtype = "auto",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Encode an ``obs`` column as category codes, as the export does.

    Missing values get the dtype's missing code. :func:`category_codes` encodes an array.

    Parameters
    ----------
    {adata}
    key
        A column of ``adata.obs``.
    dtype
        ``"uint8"``, ``"uint16"`` or ``"auto"``.
    key_added
        Column for the codes; defaults to ``f"{key}_codes"``. The categories go to
        ``adata.uns["cellucid"]["categories"][key_added]``.
    {copy}

    {returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> cl.pp.encode_categories(adata, key="louvain")
    >>> adata.obs["louvain_codes"].dtype
    dtype('uint8')

    """
    from ._anndata import obs_column, store_uns

    adata = adata.copy() if copy else adata
    enc = category_codes(obs_column(adata, key), dtype=dtype, name=f"obs[{key!r}]")
    key_added = key_added or f"{key}_codes"
    adata.obs[key_added] = enc.codes
    store_uns(
        adata, "categories", key_added, {"categories": enc.categories, "missing": enc.missing}
    )
    return adata if copy else None
