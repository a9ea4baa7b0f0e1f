"""Vectorized per-category statistics shared by centroids and outlier quantiles."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def valid_codes(codes: np.ndarray, n_categories: int) -> np.ndarray:
    """Return the mask of codes that name a category (not missing)."""
    codes = np.asarray(codes)
    return (codes >= 0) & (codes < n_categories)


# rows per block when summing groups, so a wide float32 matrix is widened a block at a time
_BLOCK_ROWS = 65536


def group_means(values: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return the float64 mean of ``values`` (n, d) for every code; NaN where a group is empty."""
    n_groups, n = counts.shape[0], values.shape[0]
    sums = np.zeros((n_groups, values.shape[1]))
    for start in range(0, n, _BLOCK_ROWS):
        rows = codes[start : start + _BLOCK_ROWS]
        # one sparse (groups x cells) indicator product sums every column at once
        indicator = sparse.csr_matrix(
            (np.ones(rows.shape[0]), (rows, np.arange(rows.shape[0]))),
            shape=(n_groups, rows.shape[0]),
        )
        sums += indicator @ np.asarray(values[start : start + _BLOCK_ROWS], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _small_ints(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Return codes in the smallest unsigned dtype, which numpy's stable sort orders by radix."""
    return codes.astype(
        np.uint8 if n_groups <= 256 else np.uint16 if n_groups <= 65536 else np.int64
    )


def sorted_by_group(
    codes: np.ndarray, values: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the order that sorts by (code, value) and each group's start in it."""
    # sorting by value, then stably (radix) by code, orders like a lexsort, several times faster;
    # the first sort need not be stable: equal values are interchangeable here
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
    c, v = codes[order], values[order]
    n = c.shape[0]
    # runs of equal (code, value): every member ranks at the end of its run
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (c[1:] != c[:-1]) | (v[1:] != v[:-1])
    run_id = np.cumsum(new_run) - 1
    run_end = np.append(np.flatnonzero(new_run)[1:], n)  # exclusive end of each run
    rank = run_end[run_id] - starts[c]
    out = np.empty(n, dtype=np.float32)
    out[order] = rank.astype(np.float32) / counts[c].astype(np.float32)
    return out
