"""Compiled per-cell and per-edge loops for large inputs (numba kernels, cached on disk).

Each kernel does what numpy code of ``_groups``, ``_outliers``, ``_centroids`` or ``_graph``
does, with the same floating-point operations in the same order, so both give the same bits; the numpy
code stays the reference (tests compare the two) and runs below the size rule of
``_groups.compiled``, so small inputs never import numba (~0.5 s).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def group_sums(values, codes, keep, n_groups, block_rows):
    """Float64 sums of the kept rows of ``values`` per code, as ``_groups.group_means`` adds them.

    The kept rows are summed in blocks of ``block_rows`` kept rows, each group's sum in a
    block from 0.0 in row order, the blocks' sums added in order.
    """
    n_cols = values.shape[1]
    sums = np.zeros((n_groups, n_cols))
    block = np.zeros((n_groups, n_cols))
    in_block = 0
    for i in range(values.shape[0]):
        if not keep[i]:
            continue
        g = codes[i]
        for k in range(n_cols):
            block[g, k] += values[i, k]
        in_block += 1
        if in_block == block_rows:
            sums += block
            block[:] = 0.0
            in_block = 0
    if in_block:
        sums += block
    return sums


@numba.njit(cache=True, nogil=True)
def center_differences(x, centers, codes, rows, out):
    """Fill ``out[j]`` with ``x[rows[j]] - centers[codes[rows[j]]]`` (float32, as numpy subtracts)."""
    for j in range(rows.shape[0]):
        r = rows[j]
        g = codes[r]
        for k in range(x.shape[1]):
            out[j, k] = x[r, k] - centers[g, k]


@numba.njit(cache=True, nogil=True)
def center_distances(x, centers, codes, keep):
    """Float64 distance of each kept row of ``x`` to its center, as ``_centroids._distances``.

    Squares are summed one dimension at a time from 0.0 (no fused multiply-add: numba
    compiles without contraction); the result holds the kept rows in order.
    """
    n_kept = 0
    for i in range(keep.shape[0]):
        n_kept += keep[i]
    out = np.empty(n_kept)
    j = 0
    for i in range(x.shape[0]):
        if not keep[i]:
            continue
        g = codes[i]
        squared = 0.0
        for k in range(x.shape[1]):
            diff = x[i, k] - centers[g, k]
            squared += diff * diff
        out[j] = np.sqrt(squared)
        j += 1
    return out


@numba.njit(cache=True, nogil=True)
def grouped_values(values, codes, counts):
    """``values`` grouped by code, in their order within a group (a counting sort).

    The same as ``values[np.argsort(codes, kind="stable")]``.
    """
    at = np.zeros(counts.shape[0], dtype=np.int64)
    for g in range(1, counts.shape[0]):
        at[g] = at[g - 1] + counts[g - 1]
    out = np.empty(values.shape[0], dtype=values.dtype)
    for i in range(values.shape[0]):
        out[at[codes[i]]] = values[i]
        at[codes[i]] += 1
    return out


@numba.njit(cache=True, nogil=True)
def sorted_ranks(order, values, counts):
    """``_groups.rank_fraction`` from the order sorting by (code, value): one pass per group.

    From a group's largest value down, each value ranks at the end of its run of equal
    values (NaN equals nothing); the rank and the group's size are divided as float32.
    """
    out = np.empty(order.shape[0], dtype=np.float32)
    start = 0
    for g in range(counts.shape[0]):
        end = start + counts[g]
        size = np.float32(counts[g])
        run_end = end
        for j in range(end - 1, start - 1, -1):
            if j < end - 1 and values[order[j]] != values[order[j + 1]]:
                run_end = j + 1
            out[order[j]] = np.float32(run_end - start) / size
        start = end
    return out


@numba.njit(cache=True, nogil=True)
def symmetric_upper_edges(indptr, indices, data, band_entries):
    """Check that a canonical CSR matrix equals its transpose; count its kept upper entries.

    Returns ``(symmetric, n_edges, max_neighbors)``: whether every stored entry ``(i, j)``
    has a stored ``(j, i)`` of equal value, the number of entries with ``j > i`` and a
    non-zero value, and the most such entries at one cell (both ends counted). The
    entries below the diagonal are transposed a band of columns at a time (at most
    ``band_entries`` entries, or one column), in place by their column's count, so the
    check holds a band, not a copy of the graph; each band's rows must then equal the
    entries above the diagonal of its columns, row by row.
    """
    n = indptr.shape[0] - 1
    # where each column's entries below the diagonal go in its band (counts, then offsets)
    at = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            if j >= i:
                break  # a row's indices ascend: the entries below the diagonal come first
            at[j + 1] += 1
    widest = 0
    for j in range(n):
        widest = max(widest, at[j + 1])
    row = np.empty(max(band_entries, widest), dtype=indices.dtype)
    val = np.empty(max(band_entries, widest), dtype=data.dtype)
    next_lower = indptr[:-1].copy()  # each row's first entry below the diagonal not yet banded
    n_edges = most = 0
    c0 = 0
    while c0 < n:
        c1, size = c0, 0
        while c1 < n and (c1 == c0 or size + at[c1 + 1] <= band_entries):
            size += at[c1 + 1]
            c1 += 1
        start = np.empty(c1 - c0 + 1, dtype=np.int64)
        start[0] = 0
        for j in range(c0, c1):
            start[j - c0 + 1] = start[j - c0] + at[j + 1]
        put = start[:-1].copy()
        # rows ascend, so each column's entries are placed by row
        for i in range(c0 + 1, n):
            e = next_lower[i]
            while e < indptr[i + 1] and indices[e] < c1 and indices[e] < i:
                p = put[indices[e] - c0]
                row[p], val[p] = i, data[e]
                put[indices[e] - c0] = p + 1
                e += 1
            next_lower[i] = e
        for i in range(c0, c1):
            first, end = indptr[i], indptr[i + 1]
            m, m_end = start[i - c0], start[i - c0 + 1]
            neighbors = 0
            while first < end and indices[first] <= i:  # the row's entries up to the diagonal
                neighbors += indices[first] < i and data[first] != 0
                first += 1
            for e in range(first, end):
                if m == m_end or row[m] != indices[e] or val[m] != data[e]:
                    return False, 0, 0
                m += 1
                if data[e] != 0:
                    n_edges += 1
                    neighbors += 1
            if m != m_end:  # an entry below the diagonal without its mirror
                return False, 0, 0
            most = max(most, neighbors)
        c0 = c1
    return True, n_edges, most


@numba.njit(cache=True, nogil=True)
def fill_upper_edges(indptr, indices, data, src, dst, weights):
    """Write the entries with ``j > i`` and a non-zero value, in (row, index) order.

    Empty ``src``/``dst`` or ``weights`` are left out (the ends or the weights alone).
    """
    ends, values = src.shape[0] > 0, weights.shape[0] > 0
    k = 0
    for i in range(indptr.shape[0] - 1):
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            if j > i and data[e] != 0:
                if ends:
                    src[k] = i
                    dst[k] = j
                if values:
                    weights[k] = data[e]
                k += 1
