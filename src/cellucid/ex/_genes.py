"""Gene values in column blocks, from any matrix: numpy, scipy, backed h5ad/zarr datasets and dask.

The export writes one payload per gene, but expression matrices are usually stored by
cell (CSR, row chunks). Blocks of gene columns are cut so that one block's values and
payloads fit a memory budget, so the whole matrix is never densified nor re-laid-out at
once; cell-major matrices that are not in memory are read once, by row chunks.

Threads: :class:`ReadAhead` produces the blocks in one reader thread of its own; every
other piece of parallel work (a block's parts, spilling a row chunk, the row runs) goes
to the export's one pool (``executor``, the payload writer's), so that ``n_jobs`` bounds
the worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import NamedTuple, TypeVar

import numpy as np
from scipy import sparse

from .._compiled import load_kernels

T = TypeVar("T")

#: default memory budget for one block of gene values (larger blocks were no faster:
#: their payload buffers cost more to fault in than the fewer blocks saved)
DEFAULT_MEMORY_BUDGET = 256 * 2**20
# bytes one stored sparse value costs when a block holds its values: gene, row and
# float32 value, in two blocks (one read while the one before is encoded)
_BYTES_PER_STORED_VALUE = 24
# a dense input value: the float32 block
_BYTES_PER_DENSE_VALUE = 4
# stored values in one part of a block: parts are encoded in parallel, each with
# temporaries small enough to be reused rather than faulted in afresh
_PART = 2**18
_MIN_PARTS = 8
#: stored values of an in-memory CSR matrix from which its summaries, row runs and parts
#: go through the compiled kernels of :mod:`cellucid.ex._csr_kernels`. Measured in fresh
#: processes (benchmarks/README.md): loading numba and the cached kernels costs ~0.7 s;
#: the gene stage breaks even at ~10 M stored values and is twice as fast at 40 M
COMPILED_MIN_STORED = 16_000_000


def compiled_blocks(matrix: object) -> bool:
    """Whether the gene stage runs ``matrix``'s blocks through the compiled kernels.

    An in-memory, cell-major sparse matrix of float values with :data:`COMPILED_MIN_STORED`
    stored values or more, where numba loads (:func:`~cellucid._compiled.load_kernels`). A
    rule of the input alone, so that other writers can count on numba's compiler being
    loaded (the same input gives the same files, whatever ran in the process before).
    """
    return (
        sparse.issparse(matrix)
        and matrix.format != "csc"
        and matrix.dtype in (np.float32, np.float64)
        and matrix.nnz >= COMPILED_MIN_STORED
    )


# where the compiled path gzips genes from their stored values, its blocks hold at most
# this many values per cell (by the mean of a column): each block visits every row once,
# ~200-300 ns a visit; with fewer values per row the visits dominate (at 1M cells, 5 per
# row took 1.7x the gather CPU of 21 per row), and more hold memory for nothing (at 100k
# cells, 53 and 210 per row gathered in the same CPU, 0.17 GB apart at the peak)
_STORED_VALUES_PER_ROW = 64


class StoredValues(NamedTuple):
    """Stored values of a sparse block of genes (every other value is 0)."""

    gene: np.ndarray  # the value's gene, 0 .. n - 1 within the block (integers, best intp)
    row: np.ndarray  # its cell (integers, best intp)
    value: np.ndarray  # float32


class StoredSummary(NamedTuple):
    """Per gene: its stored values' finite minimum and maximum (±inf: none), number and non-finiteness.

    ``lo`` is only known where it can be the gene's minimum: for a gene that has implicit
    zeros and no negative stored value, it is +inf (0 is then the minimum).
    """

    lo: np.ndarray  # float32
    hi: np.ndarray  # float32
    count: np.ndarray  # int64
    non_finite: np.ndarray  # bool: a stored value is NaN or ±Inf


@dataclass(frozen=True)
class GeneBlock:
    """Values of some exported genes: dense rows, or the stored values of sparse columns."""

    genes: np.ndarray  # the genes' places in the export, in the block's order
    dense: np.ndarray | None = None  # (n_genes, n_cells) float32, one gene per row
    # a sparse block: its stored values in parts that can be produced in parallel, and their summary
    parts: Sequence[Callable[[], StoredValues]] = ()
    summary: StoredSummary | None = None
    # the rows of each part, when each holds every stored value of a range of rows (the
    # ranges then cover the cells once): its share of the payloads is filled with it
    part_rows: Sequence[tuple[int, int]] = ()
    # a block of a large canonical in-memory CSR matrix (the compiled path): (matrix, each
    # row's run of the block's values, columns -> genes or the first column, row ranges,
    # each gene's stored values in each range), for kernels that gather it themselves
    csr: (
        tuple[sparse.csr_matrix, np.ndarray, np.ndarray | int, list[tuple[int, int]], np.ndarray]
        | None
    ) = None


def summarize(
    parts: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], n_genes: int, n_rows: int
) -> StoredSummary:
    """Summarize the stored values of ``n_rows`` rows gene by gene, from ``parts()``' ``(gene, value)``.

    Minima are looked for among negative values only, unless a gene has no implicit zero:
    those genes' parts are read a second time (``parts`` is called again).
    """
    lo = np.full(n_genes, np.inf, dtype=np.float32)
    hi = np.full(n_genes, -np.inf, dtype=np.float32)
    count = np.zeros(n_genes, dtype=np.int64)
    non_finite = np.zeros(n_genes, dtype=bool)
    for gene, value in parts():
        np.add.at(count, gene, 1)
        finite = np.isfinite(value)
        if not finite.all():
            non_finite[gene[~finite]] = True
            gene, value = gene[finite], value[finite]
        np.maximum.at(hi, gene, value)
        negative = value < 0
        if negative.any():
            np.minimum.at(lo, gene[negative], value[negative])
    full = (count == n_rows) & (lo == np.inf)  # no implicit zero, no negative value
    if full.any():
        for gene, value in parts():
            kept = full[gene] & np.isfinite(value)
            np.minimum.at(lo, gene[kept], value[kept])
    return StoredSummary(lo, hi, count, non_finite)


def _sparse_block(genes: np.ndarray, stored: StoredValues, n_cells: int) -> GeneBlock:
    """Wrap stored values of ``n_cells`` rows held in memory as a block, in parts."""
    parts = [
        partial(StoredValues._make, tuple(field[a : a + _PART] for field in stored))
        for a in range(0, stored.value.shape[0], _PART)
    ]
    summary = summarize(
        lambda: ((part.gene, part.value) for part in (p() for p in parts)), genes.shape[0], n_cells
    )
    return GeneBlock(genes, parts=parts, summary=summary)


def is_dask(matrix: object) -> bool:
    """Whether ``matrix`` is a dask array (without importing dask)."""
    return type(matrix).__module__.split(".")[0] == "dask" and hasattr(matrix, "compute")


def is_backed_sparse(matrix: object) -> bool:
    """Whether ``matrix`` is an anndata backed sparse dataset (``read_h5ad(..., backed="r")``)."""
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # older anndata
        return type(matrix).__name__ in ("CSRDataset", "CSCDataset", "SparseDataset")
    return isinstance(matrix, CSRDataset | CSCDataset)


def _backed_format(matrix: object) -> str:
    return getattr(matrix, "format", None) or getattr(matrix, "format_str", "csr")


def _as_block(genes: np.ndarray, values: object) -> GeneBlock:
    """Wrap computed cell × gene values as a block."""
    if sparse.issparse(values):
        coo = _canonical_coo(values)
        return _sparse_block(
            genes, StoredValues(coo.col, coo.row, _float32(coo.data)), values.shape[0]
        )
    return GeneBlock(genes, dense=np.ascontiguousarray(_float32(np.asarray(values)).T))


def _canonical_coo(values: sparse.spmatrix | sparse.sparray) -> sparse.coo_matrix:
    """Return a fresh sparse matrix's stored values with duplicates added up, as scipy reads them."""
    if values.format not in ("csr", "csc"):
        values = sparse.csr_matrix(values)  # the conversion adds duplicates up
    values.sum_duplicates()  # in place, cheap when canonical (unlike a COO matrix's, which sorts)
    return values.tocoo()


def _float32(values: np.ndarray) -> np.ndarray:
    """Return gene values as float32, refusing finite values float32 cannot hold (they would become ±Inf)."""
    if values.dtype.kind != "f" or values.dtype.itemsize <= 4:
        return values.astype(np.float32, copy=False)
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    inf = np.isinf(out)
    if inf.any() and np.isfinite(values[inf]).any():
        wide = values[inf]
        biggest = float(np.abs(wide[np.isfinite(wide)]).max())
        msg = (
            f"The expression matrix has finite values beyond float32's range (|v| up to {biggest:.3g}, "
            f"float32 holds up to {float(np.finfo(np.float32).max):.3g}); the viewer stores gene "
            "values as float32. Rescale them (e.g. normalize and log1p) before exporting."
        )
        raise ValueError(msg)
    return out


def _cuts(weights: np.ndarray, budget: float) -> list[tuple[int, int]]:
    """Cut consecutive items into runs whose summed weight stays within ``budget`` (at least one item each)."""
    cuts, start, total = [], 0, 0.0
    for i, w in enumerate(weights.tolist()):
        if i > start and total + w > budget:
            cuts.append((start, i))
            start, total = i, 0.0
        total += w
    if start < len(weights):
        cuts.append((start, len(weights)))
    return cuts


def _row_chunks(n_cells: int, bytes_per_row: float, budget: int) -> list[tuple[int, int]]:
    step = max(1, int(budget // max(bytes_per_row, 1.0)))
    return [(s, min(s + step, n_cells)) for s in range(0, n_cells, step)]


def gene_blocks(
    matrix: object,
    columns: np.ndarray,
    *,
    n_cells: int,
    payload_bytes: int,
    stored_bytes: int = 0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spill_dir: Path,
    executor: Executor,
    stop: threading.Event,
    warm_up: Callable[[sparse.csr_matrix], None] | None = None,
) -> Iterator[GeneBlock]:
    """Yield the exported genes (``matrix[:, columns]``) in blocks that fit ``memory_budget``.

    ``payload_bytes`` is what a gene's payloads in flight take per cell (the gene writer's
    rule: its payload's bytes per cell times the blocks it keeps in flight); ``stored_bytes``
    what they take per stored value instead where the writer encodes them from the stored
    values (a large in-memory CSR matrix, :data:`COMPILED_MIN_STORED`; 0: never). Every exported
    gene is in exactly one block; blocks may come in another order than ``columns``. A
    cell-major matrix that is not in memory (backed CSR, dask with sparse chunks) is read
    once: its values are spilled to one file per block of genes under ``spill_dir``, then
    read back block by block. Parallel work goes to ``executor``; once ``stop`` is set, a
    long pass (spilling) ends early. ``warm_up`` is run on ``executor`` with a matrix whose
    blocks will be compiled ones, while its first pass runs (the writer loads its kernels).
    """
    n_columns = columns.shape[0]
    if n_columns == 0:
        return
    payload = n_cells * payload_bytes
    dense_cuts = _cuts(
        np.full(n_columns, payload + n_cells * _BYTES_PER_DENSE_VALUE), memory_budget
    )
    spill = _Spill(spill_dir, executor, stop)
    if is_dask(matrix) and sparse.issparse(getattr(matrix, "_meta", None)):
        # the user's scheduler (threads, processes or a distributed.Client) computes the row chunks
        yield from spill.blocks(
            lambda r0, r1: matrix[r0:r1].compute(),
            lambda: matrix[:, columns].compute(),
            columns,
            n_cells=n_cells,
            n_all=matrix.shape[1],
            stored_per_gene=_dask_stored_per_gene(matrix),
            payload=payload,
            budget=memory_budget,
        )
    elif is_dask(matrix):
        for s, e in dense_cuts:
            yield _as_block(np.arange(s, e), matrix[:, columns[s:e]].compute())
    elif sparse.issparse(matrix):
        yield from _in_memory_sparse_blocks(
            matrix, columns, payload, stored_bytes, memory_budget, executor, warm_up
        )
    elif is_backed_sparse(matrix):
        yield from _backed_sparse_blocks(matrix, columns, n_cells, payload, memory_budget, spill)
    elif isinstance(matrix, np.ndarray):
        for s, e in dense_cuts:
            yield _as_block(np.arange(s, e), matrix[:, columns[s:e]])
    else:  # an on-disk dense array (h5py / zarr): read row chunks, once per block of genes
        yield from _row_streamed_dense_blocks(matrix, columns, n_cells, dense_cuts, memory_budget)


def _dask_stored_per_gene(matrix: object) -> float:
    """Estimate a gene's stored values from the density of the first chunk of a sparse dask array."""
    first = matrix.blocks[(0,) * matrix.ndim].compute()
    density = first.nnz / max(1, first.shape[0] * first.shape[1])
    # a margin for genes denser than the first chunk's average
    return 2 * density * matrix.shape[0]


def _in_memory_sparse_blocks(
    matrix: object,
    columns: np.ndarray,
    payload: int,
    stored_bytes: int,
    budget: int,
    executor: Executor,
    warm_up: Callable[[sparse.csr_matrix], None] | None,
) -> Iterator[GeneBlock]:
    if matrix.format != "csc":
        csr = _canonical_csr(matrix)
        yield from _csr_blocks(csr, columns, payload, stored_bytes, budget, executor, warm_up)
        return
    # each block's duplicates are added up as it is wrapped (_as_block), so no canonical copy
    stored = np.diff(matrix.indptr)[columns]
    for s, e in _cuts(payload + stored * _BYTES_PER_STORED_VALUE, budget):
        yield _as_block(np.arange(s, e), matrix[:, columns[s:e]])


@dataclass(frozen=True)
class _ColumnBlocks:
    """The exported genes in column order, cut into blocks of consecutive matrix columns.

    In a canonical cell-major matrix, each row's values in one block are then one run of
    the row's (sorted) stored values.
    """

    order: np.ndarray  # the genes' places in the export, in column order
    cuts: list[tuple[int, int]]  # blocks, as ranges of ``order``
    in_block: np.ndarray  # a matrix column -> its gene within its block (-1: not exported)
    bounds: np.ndarray  # each block's first column, then one past the last exported column
    gaps: list[bool]  # whether a block's columns include some that are not exported

    @classmethod
    def cut(cls, columns: np.ndarray, n_all: int, per_gene: float, budget: int) -> _ColumnBlocks:
        """Cut the genes ``columns`` of an ``n_all``-column matrix into blocks of ``per_gene`` bytes each."""
        order = np.argsort(columns, kind="stable")
        by_column = columns[order]
        cuts = _cuts(np.full(by_column.shape[0], per_gene), budget)
        in_block = np.full(n_all, -1, dtype=np.int32)
        for s, e in cuts:
            in_block[by_column[s:e]] = np.arange(e - s, dtype=np.int32)
        bounds = np.append(by_column[[s for s, _ in cuts]], by_column[-1] + 1)
        # a block's columns run up to the next block's first one
        gaps = [e - s < bounds[b + 1] - bounds[b] for b, (s, e) in enumerate(cuts)]
        return cls(order, cuts, in_block, bounds, gaps)

    def parts(
        self,
        matrix: sparse.csr_matrix,
        row_parts: list[tuple[int, int]],
        runs: np.ndarray | None = None,
        *,
        compiled: bool = False,
    ) -> list[list[CsrPart]]:
        """Return, per block, functions gathering its stored values of ``matrix`` part by part.

        ``runs`` is ``_run_starts(matrix, self.bounds)`` if the caller has it already;
        ``compiled`` marks the parts for the compiled encoder (:class:`CsrPart`).
        """
        runs = _run_starts(matrix, self.bounds) if runs is None else runs
        return [
            [
                CsrPart(
                    matrix,
                    runs[r0:r1, b : b + 2],
                    r0,
                    self.in_block if self.gaps[b] else int(self.bounds[b]),
                    compiled,
                )
                for r0, r1 in row_parts
            ]
            for b in range(len(self.cuts))
        ]


@dataclass(frozen=True)
class CsrPart:
    """One block's stored values in rows ``r0 ..`` of a canonical CSR matrix (see :func:`_csr_part`).

    Called, it gathers them; a ``compiled`` part is encoded straight from the matrix by
    :func:`cellucid.ex._csr_kernels.part_encoder` instead, when the arithmetic allows.
    """

    matrix: sparse.csr_matrix
    runs: np.ndarray
    r0: int
    genes: np.ndarray | int
    compiled: bool = False

    def __call__(self) -> StoredValues:
        return _csr_part(self.matrix, self.runs, self.r0, self.genes)


def _canonical_csr(matrix: object) -> sparse.csr_matrix:
    """Return ``matrix`` as CSR with sorted columns and duplicates added up (a copy only if needed)."""
    matrix = (
        matrix if sparse.issparse(matrix) and matrix.format == "csr" else sparse.csr_matrix(matrix)
    )
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    return matrix


def _csr_blocks(
    matrix: sparse.csr_matrix,
    columns: np.ndarray,
    payload: int,
    stored_bytes: int,
    budget: int,
    executor: Executor,
    warm_up: Callable[[sparse.csr_matrix], None] | None = None,
) -> Iterator[GeneBlock]:
    """Blocks of a canonical in-memory CSR matrix, gathered part by part, never re-laid out.

    Compiled blocks (see :data:`COMPILED_MIN_STORED`) carry the matrix for the writer's
    kernels (``GeneBlock.csr``); where it encodes their payloads from the stored values
    (``stored_bytes`` each), the blocks are cut by the mean stored values of a column.
    """
    n_cells, n_all = matrix.shape
    nnz = int(matrix.indptr[-1])
    per_row = max(1, nnz) / max(1, n_cells)

    def everything() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for r0, r1 in _row_chunks(n_cells, per_row, _PART):
            a, b = matrix.indptr[r0], matrix.indptr[r1]
            yield matrix.indices[a:b], _float32(matrix.data[a:b])

    # the kernels are compiled for float32/float64 values (integer counts keep numpy)
    kernels = (
        load_kernels(f"{__package__}._csr_kernels", nnz, COMPILED_MIN_STORED)
        if compiled_blocks(matrix)
        else None
    )
    per_gene = payload
    if kernels is not None and stored_bytes:
        per_gene = min(payload, stored_bytes * nnz / max(1, n_all))
        per_block = _STORED_VALUES_PER_ROW * max(1, n_cells) / max(1.0, nnz / max(1, n_all))
        budget = min(budget, int(per_gene * per_block))  # per_block genes at most
    layout = _ColumnBlocks.cut(columns, n_all, per_gene, budget)
    if kernels is not None:
        runs, by_matrix_column, row_ranges, range_counts = _compiled_first_pass(
            kernels, matrix, layout.bounds, executor, warm_up
        )
        if by_matrix_column is None:  # a finite value float32 cannot hold: refused, as numpy does
            summarize(everything, n_all, n_cells)
    else:
        # two passes over the matrix at once, the row runs on the pool (they release the
        # GIL; the summary's ufunc.at does not, so they overlap only in part)
        runs = executor.submit(_run_starts, matrix, layout.bounds)
        by_matrix_column = summarize(everything, n_all, n_cells)  # per column of the matrix
        runs = runs.result()
    # parts of about _PART values of one block (its share of each row), and enough of
    # them for every core even when blocks are small
    rows = min(_PART / max(per_row / len(layout.cuts), 1.0), -(-n_cells // _MIN_PARTS))
    row_parts = _row_chunks(n_cells, 1.0, max(1, int(rows)))
    blocks = layout.parts(matrix, row_parts, runs, compiled=kernels is not None)
    for b, ((s, e), parts) in enumerate(zip(layout.cuts, blocks, strict=True)):
        genes = layout.order[s:e]
        summary = StoredSummary(*(field[columns[genes]] for field in by_matrix_column))
        in_block = layout.in_block if layout.gaps[b] else int(layout.bounds[b])
        csr = (
            (matrix, runs[:, b : b + 2], in_block, row_ranges, range_counts[:, columns[genes]])
            if kernels
            else None
        )
        yield GeneBlock(genes, parts=parts, summary=summary, part_rows=row_parts, csr=csr)


def _compiled_first_pass(
    kernels: ModuleType,
    matrix: sparse.csr_matrix,
    bounds: np.ndarray,
    executor: Executor,
    warm_up: Callable[[sparse.csr_matrix], None] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None, list[tuple[int, int]], np.ndarray | None]:
    """Return :func:`_run_starts` and :func:`summarize` of the whole ``matrix`` (by column), compiled.

    Both in row ranges on the pool (the kernels release the GIL), which are returned too,
    with each range's stored values by column (for the blocks' gathers, see
    :func:`~cellucid.ex._sparse_gzip.stored_columns_from_csr`). The summary and the counts
    are None if a finite value passes float32's range (numpy's summary then refuses it).
    ``warm_up`` (the gene writer's kernels, loaded on the pool) starts once this pass's
    kernels are loaded, here on no rows: numba loads one kernel at a time, and the pass
    would otherwise wait for all of the writer's.
    """
    n_cells, n_all = matrix.shape
    ranges = _row_chunks(n_cells, 1.0, max(1, -(-n_cells // _MIN_PARTS)))
    runs = np.empty((n_cells, bounds.shape[0]), dtype=np.min_scalar_type(n_all))
    at = matrix.indptr, matrix.indices
    kernels.run_starts(*at, bounds, runs, 0, 0)
    kernels.column_summary(*at, matrix.data, n_all, 0, 0)
    if warm_up is not None:
        executor.submit(warm_up, matrix)  # its errors come again where the kernels run
    filling = [executor.submit(kernels.run_starts, *at, bounds, runs, *r) for r in ranges]
    summaries = [
        executor.submit(kernels.column_summary, *at, matrix.data, n_all, *r) for r in ranges
    ]
    summaries = [s.result() for s in summaries]
    for f in filling:
        f.result()
    if any(s is None for s in summaries):  # left to numpy's summary, which refuses them
        return runs, None, ranges, None
    counts = np.stack([s[3] for s in summaries])
    return runs, kernels.merge_summaries(summaries, n_cells), ranges, counts


def _csr_part(
    matrix: sparse.csr_matrix, runs: np.ndarray, r0: int, genes: np.ndarray | int
) -> StoredValues:
    """Gather one block's stored values in rows ``r0 ..``: ``runs`` has each row's run (start, end) within the row.

    ``genes`` maps matrix columns to genes of the block (-1: not exported, dropped), or is
    the block's first column when it has every column up to its last one.
    """
    starts, ends = runs[:, 0].astype(np.intp), runs[:, 1].astype(np.intp)
    lengths = ends - starts
    at = _concatenated_ranges(matrix.indptr[r0 : r0 + runs.shape[0]] + starts, lengths)
    row = np.repeat(np.arange(r0, r0 + runs.shape[0], dtype=np.intp), lengths)
    # ``at`` is within the matrix by construction: "clip" skips numpy's bounds check
    column = np.take(matrix.indices, at, mode="clip")
    if isinstance(genes, int):  # cheaper than looking every column up
        gene = column - np.intp(genes)
    else:
        gene = np.take(genes, column.astype(np.intp), mode="clip").astype(np.intp)
        kept = gene >= 0
        at, gene, row = at[kept], gene[kept], row[kept]
    return StoredValues(gene, row, _float32(np.take(matrix.data, at, mode="clip")))


def _run_starts(matrix: sparse.csr_matrix, bounds: np.ndarray) -> np.ndarray:
    """Return ``out[r, k]``: how many of row ``r``'s stored values are in columns ``< bounds[k]``.

    Counts fit the smallest unsigned type that holds the number of columns, so that many
    blocks of a matrix of millions of cells stay small.
    """
    n_cells, n_all = matrix.shape
    n_bounds = bounds.shape[0]
    out = np.empty((n_cells, n_bounds), dtype=np.min_scalar_type(n_all))
    # a column counts in out[:, k] for every k >= its level (levels 0 .. n_bounds)
    level = np.searchsorted(bounds, np.arange(n_all), side="right")
    levels = n_bounds + 1
    indptr = matrix.indptr.astype(np.int64)
    per_row = 8 * max(1, indptr[-1]) / max(1, n_cells)
    # one histogram of (row, level) per chunk of rows: linear in the stored values
    # whatever the number of blocks (a search per row and bound was not), and cache-sized
    for r0, r1 in _row_chunks(n_cells, per_row, 2**19):
        a, b = indptr[r0], indptr[r1]
        first = np.arange(0, (r1 - r0) * levels, levels, dtype=np.intp)
        key = np.repeat(first, np.diff(indptr[r0 : r1 + 1]))
        key += level[matrix.indices[a:b]]
        counts = np.bincount(key, minlength=(r1 - r0) * levels).reshape(r1 - r0, levels)
        out[r0:r1] = np.cumsum(counts[:, :n_bounds], axis=1)
    return out


def _concatenated_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Return ``starts[0] .. starts[0] + lengths[0] - 1, starts[1] ..``, one array."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if ends.shape[0] else 0
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


def _backed_sparse_blocks(
    matrix: object, columns: np.ndarray, n_cells: int, payload: int, budget: int, spill: _Spill
) -> Iterator[GeneBlock]:
    average = _backed_nnz(matrix) / max(1, matrix.shape[1])
    if _backed_format(matrix) == "csc":
        per_gene = payload + average * _BYTES_PER_STORED_VALUE
        for s, e in _cuts(np.full(columns.shape[0], per_gene), budget):
            yield _as_block(np.arange(s, e), matrix[:, columns[s:e]])
        return
    # CSR on disk: a gene's values are spread over the whole file; read it once, by row chunks
    per_row = average * matrix.shape[1] / max(1, n_cells) * _BYTES_PER_STORED_VALUE

    def whole() -> sparse.csr_matrix:
        chunks = _row_chunks(n_cells, per_row, budget // 2)
        return sparse.vstack([matrix[r0:r1][:, columns] for r0, r1 in chunks], format="csr")

    yield from spill.blocks(
        lambda r0, r1: matrix[r0:r1],
        whole,
        columns,
        n_cells=n_cells,
        n_all=matrix.shape[1],
        stored_per_gene=average,
        payload=payload,
        budget=budget,
    )


class ReadAhead(Iterator[T]):
    """Iterate over ``produce(stop)``, producing the next item in a reader thread while the caller works on this one.

    The first item is started at once, before it is asked for. numpy, scipy, h5py and
    dask release the GIL for the heavy work, so producing and consuming overlap.
    :meth:`close` (or leaving ``with``) sets :attr:`stop`, the :class:`threading.Event`
    given to ``produce``, waits for the item under way and closes the items: a producer
    whose item takes long (a matrix spilled whole) checks ``stop`` so as not to hold it
    up. The reader thread is gone once :meth:`close` returns.
    """

    _END = object()

    def __init__(self, produce: Callable[[threading.Event], Iterator[T]]) -> None:
        self.stop = threading.Event()
        self._items = produce(self.stop)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="cellucid-reader")
        self._pending: Future | None = self._reader.submit(next, self._items, self._END)

    def __next__(self) -> T:
        if self._pending is None:
            raise StopIteration
        item = self._pending.result()
        if item is self._END:
            self.close()
            raise StopIteration
        self._pending = self._reader.submit(next, self._items, self._END)
        return item

    def close(self) -> None:
        """Stop producing (waiting for an item under way) and close the items."""
        self.stop.set()
        self._pending = None
        self._reader.shutdown(wait=True, cancel_futures=True)
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: one spilled stored value: its row, its gene within its block, its value
_SPILL_RECORD = np.dtype([("row", "<i4"), ("gene", "<i4"), ("value", "<f4")])


@dataclass(frozen=True)
class _Spill:
    """The producer of blocks from a cell-major matrix not in memory (backed CSR, sparse dask): read once.

    Its values are transposed in one pass over row chunks, spilled to one file per block
    of genes under ``spill_dir``, then read back block by block within the memory budget.
    A chunk is read in the calling (reader) thread while the chunk before is spilled on
    ``executor``; once ``stop`` is set, the pass ends at the next chunk.
    """

    spill_dir: Path
    executor: Executor
    stop: threading.Event

    def blocks(
        self,
        read_rows: Callable[[int, int], object],
        read_whole: Callable[[], object],
        columns: np.ndarray,
        *,
        n_cells: int,
        n_all: int,
        stored_per_gene: float,
        payload: int,
        budget: int,
    ) -> Iterator[GeneBlock]:
        """Yield the blocks of genes ``columns`` of an ``n_cells`` x ``n_all`` matrix.

        ``read_rows(r0, r1)`` reads rows ``r0 .. r1 - 1`` (all columns), ``read_whole()``
        the exported columns at once, used when one block holds every gene.
        """
        per_gene = payload + stored_per_gene * _BYTES_PER_STORED_VALUE
        layout = _ColumnBlocks.cut(columns, n_all, per_gene, budget // 2)
        if len(layout.cuts) == 1:
            yield _as_block(np.arange(columns.shape[0]), read_whole())
            return
        per_row = stored_per_gene * _BYTES_PER_STORED_VALUE * n_all / max(1, n_cells)
        chunks = _row_chunks(n_cells, per_row, budget // 4)
        yield from self._spilled(read_rows, chunks, layout, n_cells)

    def _spilled(
        self,
        read_rows: Callable[[int, int], object],
        chunks: list[tuple[int, int]],
        layout: _ColumnBlocks,
        n_cells: int,
    ) -> Iterator[GeneBlock]:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        paths = [self.spill_dir / f"block-{b}.bin" for b in range(len(layout.cuts))]
        try:
            files = [open(path, "wb") for path in paths]  # noqa: SIM115  (closed below, all together)
            spilling: Future | None = None
            try:
                for r0, r1 in chunks:
                    if self.stop.is_set():  # the export failed or was interrupted meanwhile
                        return
                    chunk = read_rows(r0, r1)
                    if spilling is not None:
                        spilling.result()
                    spilling = self.executor.submit(_spill_chunk, files, layout, r0, chunk)
                if spilling is not None:
                    spilling.result()
            finally:
                # not under way when the files are closed; a chunk the failing export's
                # pool dropped never runs (and wait() would never see it done)
                if spilling is not None and not spilling.cancel():
                    wait([spilling])
                for f in files:
                    f.close()
            for path, (s, e) in zip(paths, layout.cuts, strict=True):
                records = np.fromfile(path, dtype=_SPILL_RECORD)
                path.unlink()
                stored = StoredValues(records["gene"], records["row"], records["value"])
                yield _sparse_block(layout.order[s:e], stored, n_cells)
        finally:
            for path in paths:
                path.unlink(missing_ok=True)


def _spill_chunk(files: list, layout: _ColumnBlocks, r0: int, chunk: object) -> None:
    """Append the stored values of rows ``r0 ..`` (``chunk``) to the files of their blocks."""
    csr = _canonical_csr(chunk)
    for f, (part,) in zip(files, layout.parts(csr, [(0, csr.shape[0])]), strict=True):
        gene, row, value = part()
        records = np.empty(gene.shape[0], dtype=_SPILL_RECORD)
        records["gene"], records["row"], records["value"] = gene, row + r0, value
        records.tofile(f)


def _backed_nnz(matrix: object) -> int:
    group = getattr(matrix, "group", None)
    if group is not None and "data" in group:
        return int(group["data"].shape[0])
    return int(getattr(matrix, "nnz", matrix.shape[0] * matrix.shape[1]))


def _row_streamed_dense_blocks(
    matrix: object, columns: np.ndarray, n_cells: int, cuts: list[tuple[int, int]], budget: int
) -> Iterator[GeneBlock]:
    n_all = matrix.shape[1]
    for s, e in cuts:
        wanted = columns[s:e]
        block = np.empty((e - s, n_cells), dtype=np.float32)
        for r0, r1 in _row_chunks(n_cells, n_all * 4, budget // 2):
            block[:, r0:r1] = _float32(np.asarray(matrix[r0:r1]))[:, wanted].T
        yield GeneBlock(np.arange(s, e), dense=block)
