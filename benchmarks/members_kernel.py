"""Micro-benchmark of the stored-values gzip kernel (``_sparse_gzip._encode_columns``) alone.

Synthetic blocks of genes whose stored values are already grouped by gene (``indptr``,
``rows``, ``codes``, as :func:`cellucid.ex._sparse_gzip.stored_columns` hands them to the
kernel): each gene's cells drawn at the case's density, its codes skewed as quantized
log-expression is (geometric, clipped to the code range; 16-bit codes are the 8-bit
distribution times 257 plus a uniform low part), the zero code 0. For each case it prints
the single-thread CPU time (``time.process_time``, minimum of ``--repeats``) per stored value:

- ``kernel``: the members kernel, one call for the block (counts, Huffman tables, bits, CRC-32);
- ``zlib-ng``: per gene, the dense column scattered in numpy, then zlib-ng's run-length
  deflate (level 6, ``Z_RLE``) and its CRC-32, i.e. today's path (``deflate`` alone in brackets);
- ``size``: the kernel's bytes over zlib-ng's, all members of the block.

Run from the repository (``pip install -e . --group dev`` gives numba and zlib-ng)::

    python benchmarks/members_kernel.py             # all cases, 3 repeats
    python benchmarks/members_kernel.py --quick     # 100 genes per case, 2 repeats
    python benchmarks/members_kernel.py --check     # also decode every member and compare

Numbers are on one core of a shared machine: compare runs made in one sitting.
"""

from __future__ import annotations

import argparse
import os
import time
import zlib

import numpy as np

from cellucid.ex import _payload, _sparse_gzip

#: (cells, genes, density, bits)
CASES = [
    (100_000, 500, 0.01, 8),
    (100_000, 500, 0.025, 8),
    (100_000, 500, 0.05, 8),
    (100_000, 500, 0.1, 8),
    (100_000, 500, 0.025, 16),
    (100_000, 500, 0.05, 16),
    (1_000_000, 50, 0.05, 8),
]


def block(n_cells: int, n_genes: int, density: float, bits: int, seed: int = 0):
    """Return ``(indptr, rows, codes)`` of a block of genes grouped by gene."""
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.uint16
    rows, codes, counts = [], [], []
    for _ in range(n_genes):
        # a gene's own density around the block's (real genes spread widely)
        d = min(0.25, density * rng.lognormal(0.0, 0.5) / np.exp(0.125))
        r = np.flatnonzero(rng.random(n_cells) < d).astype(np.int32)
        c = rng.geometric(rng.uniform(0.03, 0.15), r.shape[0])
        if bits == 16:
            c = c * 257 + rng.integers(0, 257, r.shape[0])
        rows.append(r)
        codes.append(c.clip(1, 254 if bits == 8 else 65534).astype(dtype))
        counts.append(r.shape[0])
    indptr = np.zeros(n_genes + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.concatenate(rows), np.concatenate(codes)


def kernel(n_cells, indptr, rows, codes):
    """The members of a block, written by the kernel: ``(buffer, ends)``."""
    n_genes = indptr.shape[0] - 1
    return _sparse_gzip._encode_columns(
        n_cells,
        indptr,
        rows,
        codes,
        np.zeros(n_genes, np.int64),
        codes.dtype.itemsize,
        np.zeros(n_genes, np.bool_),
        np.frombuffer(_payload.gzip_header(6), np.uint8),
        _sparse_gzip.crc_tables(),
    )


def dense(n_cells, indptr, rows, codes, lib):
    """Today's path per gene: the dense column, then run-length deflate and CRC-32; ``(bytes, s deflating)``."""
    total, deflating = 0, 0.0
    for g in range(indptr.shape[0] - 1):
        a, b = indptr[g], indptr[g + 1]
        column = np.zeros(n_cells, codes.dtype)
        column[rows[a:b]] = codes[a:b]
        t = time.process_time()
        deflate = lib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_RLE)
        body = deflate.compress(column) + deflate.flush()
        lib.crc32(column)
        deflating += time.process_time() - t
        total += 18 + len(body)
    return total, deflating


def best(repeats, func, *args):
    """Minimum CPU seconds of ``repeats`` calls ``func(*args)``, and the last result."""
    times = []
    for _ in range(repeats):
        t = time.process_time()
        result = func(*args)
        times.append(time.process_time() - t)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 genes per case (10 at 1M cells)")
    parser.add_argument("--check", action="store_true", help="decode every member and compare")
    args = parser.parse_args()
    try:
        from zlib_ng import zlib_ng as lib
    except ImportError:
        lib = zlib
    t = time.process_time()
    _sparse_gzip._compile()
    kernel(10, np.array([0, 1]), np.array([3], np.int32), np.array([1], np.uint8))
    kernel(10, np.array([0, 1]), np.array([3], np.int32), np.array([1], np.uint16))
    print(f"kernels compiled or loaded: {time.process_time() - t:.1f} s CPU")
    print(f"deflate: {lib.__name__}; load average {os.getloadavg()[0]:.1f}")
    print(
        "| cells x genes | density | bits | stored values | kernel ns/value | zlib-ng ns/value (deflate) | size kernel/zlib-ng |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for n_cells, n_genes, density, bits in CASES:
        if args.quick:
            n_genes //= 5
        indptr, rows, codes = block(n_cells, n_genes, density, bits)
        nnz = indptr[-1]
        t_kernel, (out, ends) = best(args.repeats, kernel, n_cells, indptr, rows, codes)
        t_dense, (size, deflating) = best(args.repeats, dense, n_cells, indptr, rows, codes, lib)
        if args.check:
            view = out.tobytes()
            for g in range(n_genes):
                column = np.zeros(n_cells, codes.dtype)
                column[rows[indptr[g] : indptr[g + 1]]] = codes[indptr[g] : indptr[g + 1]]
                member = view[ends[g] : ends[g + 1]]
                assert zlib.decompress(member, wbits=31) == column.tobytes(), g
        print(
            f"| {n_cells // 1000}k x {n_genes} | {density} | {bits} | {nnz:,} "
            f"| {t_kernel / nnz * 1e9:.1f} | {t_dense / nnz * 1e9:.1f} ({deflating / nnz * 1e9:.1f}) "
            f"| {ends[-1] / size:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
