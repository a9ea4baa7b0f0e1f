"""Compiled passes over an in-memory canonical CSR matrix's stored values, for large exports.

Why they exist: at 100k cells x 20k genes (99 M stored values) the numpy gene stage made
one pass over the stored values per step (gather, quantize, scatter, summaries, row runs),
each with temporaries; a loop over the values in a compiled kernel does the same work in
one pass per step, without them. Each kernel computes exactly what its numpy reference
does (same float operations in the same order, so the same bits): the numpy code stays
in :mod:`cellucid.ex._genes` and :mod:`cellucid.ex._var` as the tested reference, and
every other input (CSC, backed, dask, dense) only goes through it.

numba compiles the kernels once (``cache=True``: later processes load them from its
cache); loading them costs a fraction of a second, so small exports never import this
module (:data:`cellucid.ex._genes.COMPILED_MIN_STORED`). The kernels release the GIL: the
export's pool runs them in parallel, row range by row range.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from .._format import MAX_QUANT
from ..pp._quantize import _STEP_EPSILON, encode_with_bounds
from ._legacy_arithmetic import encode_with_bounds_float32

_kernel = numba.njit(cache=True, nogil=True)


@_kernel
def _column_summary(indices, data, a, b, stats, count, non_finite):  # pragma: no cover
    """Summarize stored values ``a .. b - 1`` column by column (see :func:`column_summary`).

    ``stats[c]`` holds column ``c``'s ``lo``, ``hi`` and ``low``. Returns whether a finite
    value became ±Inf in float32. Ties go to the later value, as in numpy's
    ``maximum.at``/``minimum.at`` (which keeps the sign of a zero the same way).
    """
    overflow = False
    for k in range(a, b):
        c = indices[k]
        count[c] += 1
        x = data[k]
        v = np.float32(x)
        if not np.isfinite(v):
            non_finite[c] = True
            if np.isfinite(x):
                overflow = True
            continue
        if v >= stats[c, 1]:
            stats[c, 1] = v
        if v < 0 and v <= stats[c, 0]:
            stats[c, 0] = v
        if v <= stats[c, 2]:
            stats[c, 2] = v
    return overflow


@_kernel
def _run_starts(indptr, indices, bounds, r0, r1, out):  # pragma: no cover
    """``out[r, k]``: row ``r``'s stored values in columns ``< bounds[k]``, rows ``r0 .. r1 - 1``."""
    n_bounds = bounds.shape[0]
    for r in range(r0, r1):
        a, b = indptr[r], indptr[r + 1]
        j = a
        for k in range(n_bounds):
            bound = bounds[k]
            while j < b and indices[j] < bound:
                j += 1
            out[r, k] = j - a


@_kernel
def _code_current(v, vmin, span, max_q):  # pragma: no cover
    """Return the code of a float64 ``v`` as :func:`~cellucid.pp._quantize.encode_with_bounds` computes it."""
    if not np.isfinite(v):
        return max_q + 1.0
    if not span > 0:
        return 0.0
    q = np.floor((v - vmin) * max_q / span + _STEP_EPSILON)
    return min(max(q, 0.0), max_q)


# how a part's values become payload values (see :func:`_encode_part`)
_FLOAT, _CURRENT, _LEGACY = 0, 1, 2


@_kernel
def _encode_part(
    indptr, indices, data, runs, r0, in_block, first, how, vmin, scale, max_q, out
):  # pragma: no cover
    """Put a part's stored values into ``out[gene, row]``, encoded as the numpy path does.

    Row ``r0 + i``'s values of the block are ``runs[i, 0] .. runs[i, 1] - 1`` of the
    row's; a column ``c`` is gene ``in_block[c]`` (-1: not exported), or ``c - first``
    when ``in_block`` is empty. ``how``:

    * ``_CURRENT``, as ``encode_with_bounds``: float32 values widened to float64, then
      ``floor((v - vmin) * max_q / scale + 1e-8)`` clipped to ``0 .. max_q`` (``scale``
      is the span; 0 where it is not > 0); ``max_q + 1`` for NaN and ±Inf;
    * ``_LEGACY``, as ``encode_with_bounds_float32``: ``(v - vmin) * scale`` in float32
      (``vmin`` and ``scale`` float32, every ``scale`` finite and > 0) clipped and
      truncated; ``max_q + 1`` for NaN and ±Inf;
    * ``_FLOAT``: float32 values, ±Inf as NaN (unquantized; ``vmin``, ``scale`` unused).
    """
    mapped = in_block.shape[0] > 0
    for i in range(runs.shape[0]):
        r = r0 + i
        base = indptr[r]
        for k in range(base + runs[i, 0], base + runs[i, 1]):
            c = indices[k]
            if mapped:
                g = in_block[c]
                if g < 0:
                    continue
            else:
                g = c - first
            v32 = np.float32(data[k])
            if how == _CURRENT:
                out[g, r] = _code_current(np.float64(v32), vmin[g], scale[g], max_q)
            elif how == _LEGACY:
                if not np.isfinite(v32):
                    out[g, r] = max_q + 1
                else:
                    q32 = (v32 - vmin[g]) * scale[g]
                    out[g, r] = int(min(max(q32, np.float32(0)), np.float32(max_q)))
            else:
                out[g, r] = np.float32(np.nan) if np.isinf(v32) else v32


@_kernel
def _gather_quantized(
    indptr, indices, data, runs, in_block, first, r0, r1, at, vmin, span, max_q, rows, codes
):  # pragma: no cover
    """Quantize and group by gene a block's stored values in rows ``r0 .. r1 - 1``, in one pass.

    The block is as in :func:`_encode_part` (``runs`` of every row; ``in_block`` maps
    columns to genes, -1 for a column that is not exported, or is empty and the genes are
    the columns from ``first``). Gene ``g``'s rows and codes go to ``rows``/``codes`` from
    ``at[g]`` on (advanced in place): row ranges given their genes' starts fill one
    gene-grouped block in parallel. The codes are :func:`_encode_part`'s (``_CURRENT``).
    """
    mapped = in_block.shape[0] > 0
    for r in range(r0, r1):
        for k in range(indptr[r] + runs[r, 0], indptr[r] + runs[r, 1]):
            g = in_block[indices[k]] if mapped else indices[k] - first
            if g < 0:
                continue  # a column that is not exported
            i = at[g]
            rows[i] = r
            codes[i] = _code_current(np.float64(np.float32(data[k])), vmin[g], span[g], max_q)
            at[g] = i + 1


def column_summary(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_all: int, r0: int, r1: int
) -> tuple[np.ndarray, ...] | None:
    """Summarize rows ``r0 .. r1 - 1`` of a CSR matrix by column; None if a finite value passes float32's range.

    Returns ``(lo, hi, low, count, non_finite)``: ``lo`` the minimum of the negative
    finite values, ``low`` of all finite values (±inf: none).
    """
    # a column's bounds and count share a cache line (its row of ``stats``, the count in
    # int32): a row's values jump across all columns, and four arrays took 1.4-1.8x the time
    stats = np.empty((n_all, 4), dtype=np.float32)
    stats[:, :3] = [np.inf, -np.inf, np.inf]
    count = stats.view(np.int32)[:, 3]
    count[:] = 0
    non_finite = np.zeros(n_all, dtype=np.bool_)
    a, b = int(indptr[r0]), int(indptr[r1])
    if _column_summary(indices, data, a, b, stats, count, non_finite):
        return None
    lo, hi, low = stats[:, :3].T.copy()
    return lo, hi, low, count.astype(np.int64), non_finite


def merge_summaries(summaries: list[tuple[np.ndarray, ...]], n_rows: int) -> tuple[np.ndarray, ...]:
    """Merge :func:`column_summary` of consecutive row ranges (in order) into ``(lo, hi, count, non_finite)``.

    As :func:`~cellucid.ex._genes.summarize`: ``lo`` is the minimum over every finite
    value only for columns with no implicit zero and no negative value.
    """
    lo, hi, low, count, non_finite = summaries[0]
    for lo2, hi2, low2, count2, non_finite2 in summaries[1:]:
        hi = np.where(hi2 >= hi, hi2, hi)  # ties to the later value, as in one pass
        lo = np.where(lo2 <= lo, lo2, lo)
        low = np.where(low2 <= low, low2, low)
        count = count + count2
        non_finite = non_finite | non_finite2
    full = (count == n_rows) & (lo == np.inf)
    return np.where(full, low, lo), hi, count, non_finite


def run_starts(
    indptr: np.ndarray, indices: np.ndarray, bounds: np.ndarray, out: np.ndarray, r0: int, r1: int
) -> None:
    """Fill rows ``r0 .. r1 - 1`` of ``out`` as :func:`~cellucid.ex._genes._run_starts` does."""
    _run_starts(indptr, indices, bounds, r0, r1, out)


def part_encoder(
    arith_encode: Callable, vmin: np.ndarray, vmax: np.ndarray, *, bits: int | None
) -> Callable[[object, np.ndarray], None] | None:
    """Return ``encode(part, payloads)``, which writes a CSR part's payload values, or None.

    ``arith_encode`` is the arithmetic's ``encode``: the codes are those of
    :func:`~cellucid.pp._quantize.encode_with_bounds` or of the legacy
    :func:`~cellucid.ex._legacy_arithmetic.encode_with_bounds_float32`; None (the
    caller's numpy path) for another arithmetic, or for legacy bounds whose float32
    scale is not finite and > 0 (numpy's NaN codes then). ``bits`` None: float32 values.
    """
    if not bits:
        none = np.empty(0, dtype=np.float32)
        return lambda part, out: _encode_part(*_part_args(part), _FLOAT, none, none, 0.0, out)
    max_q = MAX_QUANT[bits]
    vmin = np.asarray(vmin, dtype=np.float64)
    if arith_encode is encode_with_bounds:
        span = np.asarray(vmax, dtype=np.float64) - vmin
        return lambda part, out: _encode_part(
            *_part_args(part), _CURRENT, vmin, span, np.float64(max_q), out
        )
    if arith_encode is encode_with_bounds_float32:
        with np.errstate(divide="ignore", over="ignore"):
            scale = (max_q / (np.asarray(vmax, dtype=np.float64) - vmin)).astype(np.float32)
        if not (np.isfinite(scale) & (scale > 0)).all():
            return None
        vmin32 = vmin.astype(np.float32)
        return lambda part, out: _encode_part(
            *_part_args(part), _LEGACY, vmin32, scale, np.float64(max_q), out
        )
    return None


_NO_MAP = np.empty(0, dtype=np.int32)


def _part_args(part: object) -> tuple:
    matrix, genes = part.matrix, part.genes
    in_block, first = (_NO_MAP, genes) if isinstance(genes, int) else (genes, 0)
    return matrix.indptr, matrix.indices, matrix.data, part.runs, part.r0, in_block, first
