"""Vectorized per-category statistics shared by centroids and outlier quantiles."""

from __future__ import annotations

from types import ModuleType

import numpy as np
from scipy import sparse

from .._compiled import load_kernels

# from this many rows (a graph's cells) on, per-row loops run compiled (``_kernels``, same
# bits): importing numba and loading the cached kernels (0.6-1 s of CPU once, nothing when
# scanpy was imported) costs less than they save (at 1M cells: an obs field's outlier
# quantiles ~0.25 s, a 23M-entry kNN graph's edges ~0.5 s; a graph of 100k-300k cells and
# 2M entries takes 0.1 s either way)
COMPILED_MIN_ROWS = 200_000


def compiled(n_rows: int) -> ModuleType | None:
    """Return the compiled kernels for ``n_rows`` rows, or None: the numpy code then runs."""
    return load_kernels(f"{__package__}._kernels", n_rows, COMPILED_MIN_ROWS)


def valid_codes(codes: np.ndarray, n_categories: int) -> np.ndarray:
    """Return the mask of codes that name a category (not missing)."""
    codes = np.asarray(codes)
    return (codes >= 0) & (codes < n_categories)


# rows per block when summing groups, so a wide float32 matrix is widened a block at a time
_BLOCK_ROWS = 65536
# up to this many columns, one bincount per column sums a block fastest; beyond, a sparse
# indicator product (one pass over the codes for all columns) wins (measured at 1M cells:
# 2-3 columns ~4x faster by bincount, 50 columns ~1.5x faster by the product)
_BINCOUNT_MAX_COLUMNS = 16


def group_means(
    values: np.ndarray, codes: np.ndarray, counts: np.ndarray, *, keep: np.ndarray | None = None
) -> np.ndarray:
    """Return the float64 mean of ``values`` (n, d) for every code; NaN where a group is empty.

    With ``keep``, only those rows count (the codes of the others are not read), as if the
    rows were taken out first; ``counts`` are the kept rows' counts. Within a block of
    kept rows, each group's sum adds its rows in order from 0.0; the blocks' sums are
    added in order. Every way of summing below follows that order, so they give the same bits.
    """
    kernels = compiled(values.shape[0])
    if kernels is not None:
        keep = np.ones(values.shape[0], dtype=bool) if keep is None else keep
        sums = kernels.group_sums(values, codes, keep, counts.shape[0], _BLOCK_ROWS)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts[:, None]
    if keep is not None:
        values, codes = np.compress(keep, values, axis=0), codes[keep]
    n_groups, n, n_cols = counts.shape[0], values.shape[0], values.shape[1]
    sums = np.zeros((n_groups, n_cols))
    for start in range(0, n, _BLOCK_ROWS):
        rows = codes[start : start + _BLOCK_ROWS]
        block = values[start : start + _BLOCK_ROWS]
        if n_cols <= _BINCOUNT_MAX_COLUMNS:
            for col in range(n_cols):
                sums[:, col] += np.bincount(rows, weights=block[:, col], minlength=n_groups)
        else:
            sums += _indicator(rows, n_groups) @ np.asarray(block, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _indicator(rows: np.ndarray, n_groups: int) -> sparse.csr_matrix:
    """Return the (groups x rows) 0/1 matrix of ``rows``' codes, each group's rows in order."""
    indptr = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_groups), out=indptr[1:])
    indices = np.argsort(_small_ints(rows, n_groups), kind="stable")
    return sparse.csr_matrix(
        (np.ones(rows.shape[0]), indices, indptr), shape=(n_groups, rows.shape[0])
    )


def _small_ints(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Return codes in the smallest unsigned dtype, which numpy's stable sort orders by radix."""
    return codes.astype(
        np.uint8 if n_groups <= 256 else np.uint16 if n_groups <= 65536 else np.int64
    )


def sorted_by_group(
    codes: np.ndarray, values: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the order that sorts by (code, value) and each group's start in it.

    The order of equal values within a group is unspecified (they are interchangeable here).
    """
    if values.dtype == np.float32 and counts.shape[0] <= 2**32 and (values >= 0).all():
        # non-negative float32 (+0.0 for -0.0, no NaN) sort as their bits: one sort of
        # (code, bits) keys, ~2x faster than the two sorts below
        keys = np.add(values, np.float32(0.0)).view(np.uint32).astype(np.uint64)
        keys |= codes.astype(np.uint64) << np.uint64(32)
        order = np.argsort(keys)
    else:
        # sorting by value, then stably (radix) by code, orders like a lexsort, several
        # times faster; the first sort need not be stable: equal values are interchangeable
        order = np.argsort(values)
        order = order[np.argsort(_small_ints(codes, counts.shape[0])[order], kind="stable")]
    starts = np.zeros(counts.shape[0], dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return order, starts


def group_quantiles(
    codes: np.ndarray, values: np.ndarray, counts: np.ndarray, q: float
) -> np.ndarray:
    """Return each group's ``q`` quantile of ``values`` (linear interpolation, as :func:`numpy.quantile`)."""
    # values grouped by a radix sort of the codes; each group needs only two order
    # statistics, which a partial sort finds in linear time (faster than sorting values)
    kernels = compiled(values.shape[0])
    if kernels is not None:
        grouped = kernels.grouped_values(values, codes, counts)
    else:
        grouped = values[np.argsort(_small_ints(codes, counts.shape[0]), kind="stable")]
    ends = np.cumsum(counts)
    nonempty = counts > 0
    pos = (counts[nonempty] - 1) * q
    below = np.floor(pos).astype(np.int64)
    frac = pos - below
    above = np.minimum(below + 1, counts[nonempty] - 1)
    lo, hi = np.empty(pos.shape[0]), np.empty(pos.shape[0])
    for i, group in enumerate(np.flatnonzero(nonempty).tolist()):  # a loop over groups
        members = grouped[ends[group] - counts[group] : ends[group]]
        lo[i], hi[i] = np.partition(members, (below[i], above[i]))[[below[i], above[i]]]
    out = np.full(counts.shape[0], np.nan)
    out[nonempty] = lo + (hi - lo) * frac
    return out


def rank_fraction(codes: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return, for each element, the fraction of its group with a value at most its own."""
    order, starts = sorted_by_group(codes, values, counts)
    kernels = compiled(values.shape[0])
    if kernels is not None:
        return kernels.sorted_ranks(order, values, counts)
    v = values[order]
    n = v.shape[0]
    # runs of equal (code, value): every member ranks at the end of its run; the sorted
    # codes are each group's code repeated, so a run also starts where a group starts
    new_run = np.ones(n, dtype=bool)
    np.not_equal(v[1:], v[:-1], out=new_run[1:])
    new_run[starts[counts > 0]] = True
    run_id = np.cumsum(new_run) - 1
    run_end = np.append(np.flatnonzero(new_run)[1:], n)  # exclusive end of each run
    rank = run_end[run_id] - np.repeat(starts, counts)
    out = np.empty(n, dtype=np.float32)
    out[order] = rank.astype(np.float32) / np.repeat(counts.astype(np.float32), counts)
    return out
