"""8/16-bit quantization of continuous values with a missing-value code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from .._docs import doc_adata, doc_copy, doc_params, doc_returns_copy
from .._format import MAX_QUANT, QUANT_DTYPE

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike

Bits = Literal[8, 16]
# a hair above zero so that values exactly on a step boundary land on that step
_STEP_EPSILON = 1e-8


class Quantized(NamedTuple):
    """Codes of quantized values and the bounds to decode them.

    Attributes
    ----------
    codes
        ``uint8`` or ``uint16`` codes; the top code means missing.
    vmin, vmax
        The bounds :func:`dequantize` needs.
    """

    codes: np.ndarray
    vmin: float
    vmax: float


def _check_bits(bits: int) -> None:
    if bits not in MAX_QUANT:
        msg = f"bits must be 8 or 16, got {bits!r}."
        raise ValueError(msg)


def finite_range(
    values: np.ndarray, *, axis: int | None = None, finite: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the minimum and maximum of the finite values along ``axis`` (NaN where there are none).

    ``finite`` is ``np.isfinite(values)`` if the caller has it already.
    """
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values) if finite is None else finite
    with np.errstate(invalid="ignore"):
        lo = np.where(finite, values, np.inf).min(axis=axis, initial=np.inf).astype(np.float64)
        hi = np.where(finite, values, -np.inf).max(axis=axis, initial=-np.inf).astype(np.float64)
    none = ~np.isfinite(lo)
    return np.where(none, np.nan, lo), np.where(none, np.nan, hi)


def finite_bounds(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn finite minima and maxima (NaN: no finite value) into quantization bounds.

    A field without finite values gets bounds (0, 0): every code is missing anyway.
    """
    none = np.isnan(lo)
    return np.where(none, 0.0, lo), np.where(none, 0.0, hi)


def encode_with_bounds(
    values: np.ndarray,
    vmin: ArrayLike,
    vmax: ArrayLike,
    *,
    bits: Bits = 8,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize float32 ``values`` against given bounds; NaN and ±Inf get the missing code.

    ``vmin`` and ``vmax`` broadcast against ``values``, so many columns are encoded at once
    (each value with the bounds of its column). With ``index`` (integer, one per value)
    they are per-column tables instead, and value ``i`` is encoded with the bounds at
    ``index[i]``.
    """
    _check_bits(bits)
    max_q = MAX_QUANT[bits]
    values = np.asarray(values, dtype=np.float32)
    vmin = np.asarray(vmin, dtype=np.float64)
    span = np.asarray(vmax, dtype=np.float64) - vmin
    constant = ~(span > 0)  # a constant field encodes every value as 0
    constant = (constant if index is None else constant[index]) if constant.any() else None
    shift = bool(vmin.any())  # 0 is common (expression) and subtracting it changes nothing
    if index is not None:
        # ``index`` was built by the caller within the tables: "clip" skips a bounds check
        span = np.take(span, index, mode="clip")
        vmin = np.take(vmin, index, mode="clip") if shift else np.float64(0.0)
    # the format's formula, term by term: floor((v - vmin) * max_q / (vmax - vmin) + 1e-8);
    # float32 values are widened first, as numpy would, but without its slow mixed-type loop
    shape = np.broadcast_shapes(values.shape, vmin.shape, span.shape)
    q = np.broadcast_to(values, shape).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if shift:
            q -= vmin
        q *= max_q
        q /= span
    if constant is not None:
        q[np.broadcast_to(constant, shape)] = 0.0
    q += _STEP_EPSILON
    np.floor(q, out=q)
    np.clip(q, 0, max_q, out=q)
    missing = ~np.isfinite(values)
    if missing.any():
        q[np.broadcast_to(missing, shape)] = max_q + 1
    return q.astype(QUANT_DTYPE[bits])


def quantize(values: ArrayLike, *, bits: Bits = 8) -> Quantized:
    """Quantize continuous values to 8 or 16 bits, keeping a code for missing values.

    Values are cast to float32 first; the bounds are the float32 minimum and maximum of
    the finite values. A value ``v`` gets the code
    ``floor((v - vmin) * max_code / (vmax - vmin) + 1e-8)``, where ``max_code`` is 254
    (8 bits) or 65534 (16 bits); NaN and ±Inf get ``max_code + 1`` (255 or 65535).

    Parameters
    ----------
    values
        One-dimensional values.
    bits
        8 (``uint8`` codes) or 16 (``uint16`` codes).

    Returns
    -------
    The codes and the bounds ``vmin``, ``vmax`` that :func:`dequantize` needs. Without any
    finite value both bounds are 0 and every code is missing.

    Examples
    --------
    >>> import numpy as np
    >>> import cellucid as cl
    >>> q = cl.pp.quantize(np.array([0.0, 0.5, 1.0, np.nan]), bits=8)
    >>> q.codes
    array([  0, 127, 254, 255], dtype=uint8)

    """
    _check_bits(bits)
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    vmin, vmax = finite_bounds(*finite_range(values))
    return Quantized(encode_with_bounds(values, vmin, vmax, bits=bits), float(vmin), float(vmax))


def dequantize(codes: ArrayLike, *, vmin: float, vmax: float, bits: Bits = 8) -> np.ndarray:
    """Decode quantized codes to float32 values as the viewer does; missing codes give NaN.

    Parameters
    ----------
    codes
        Codes from :func:`quantize`.
    vmin, vmax
        The bounds from :func:`quantize`.
    bits
        The bits the codes were made with.

    Returns
    -------
    float32 values ``vmin + code * (vmax - vmin) / max_code``.

    Examples
    --------
    >>> import numpy as np
    >>> import cellucid as cl
    >>> cl.pp.dequantize(np.array([0, 254, 255], dtype=np.uint8), vmin=0.0, vmax=2.0)
    array([ 0.,  2., nan], dtype=float32)

    """
    _check_bits(bits)
    max_q = MAX_QUANT[bits]
    codes = np.asarray(codes)
    values = vmin + codes.astype(np.float64) * ((vmax - vmin) / max_q)
    values[codes > max_q] = np.nan
    return values.astype(np.float32)


@doc_params(adata=doc_adata, copy=doc_copy, returns=doc_returns_copy)
def quantize_obs(
    adata: AnnData,
    *,
    key: str,
    bits: Bits = 8,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Quantize a continuous ``obs`` column as the export does.

    NaN and ±Inf get the missing code. :func:`quantize` takes an array and
    :func:`dequantize` decodes the codes as the viewer does.

    Parameters
    ----------
    {adata}
    key
        A numeric column of ``adata.obs``.
    bits
        8 or 16.
    key_added
        Column for the codes; defaults to ``f"{key}_q{bits}"``. The bounds go to
        ``adata.uns["cellucid"]["quantization"][key_added]``.
    {copy}

    {returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> cl.pp.quantize_obs(adata, key="percent_mito", bits=8)
    >>> adata.obs["percent_mito_q8"].dtype
    dtype('uint8')

    """
    from ._anndata import obs_column, store_uns

    adata = adata.copy() if copy else adata
    values = obs_column(adata, key).to_numpy(dtype=np.float32, na_value=np.nan)
    q = quantize(values, bits=bits)
    key_added = key_added or f"{key}_q{bits}"
    adata.obs[key_added] = q.codes
    store_uns(adata, "quantization", key_added, {"vmin": q.vmin, "vmax": q.vmax, "bits": bits})
    return adata if copy else None
