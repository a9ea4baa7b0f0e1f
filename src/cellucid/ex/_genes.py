"""Gene values in column blocks, from any matrix: numpy, scipy, backed h5ad/zarr datasets and dask.

The export writes one payload per gene, but expression matrices are usually stored by
cell (CSR, row chunks). Blocks of gene columns are cut so that one block's values and
payloads fit a memory budget, so the whole matrix is never densified nor re-laid-out at
once; cell-major matrices that are not in memory are read once, by row chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
from scipy import sparse

T = TypeVar("T")

#: default memory budget for one block of gene values
DEFAULT_MEMORY_BUDGET = 512 * 2**20
# bytes one stored sparse value costs when a block holds its values: gene, row and
# float32 value, in two blocks (one read while the one before is encoded)
_BYTES_PER_STORED_VALUE = 24
# a dense input value: the float32 block
_BYTES_PER_DENSE_VALUE = 4
# stored values in one part of a block: parts are encoded in parallel, each with
# temporaries small enough to be reused rather than faulted in afresh
_PART = 2**20


class StoredValues(NamedTuple):
    """Stored values of a sparse block of genes (every other value is 0)."""

    gene: np.ndarray  # the value's gene, 0 .. n - 1 within the block
    row: np.ndarray  # its cell
    value: np.ndarray  # float32


class StoredSummary(NamedTuple):
    """Per gene: its stored values' finite minimum and maximum (±inf: none), number and non-finiteness."""

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


def summarize(parts: Iterable[StoredValues], n_genes: int) -> StoredSummary:
    """Summarize stored values gene by gene, in one pass over their parts."""
    lo = np.full(n_genes, np.inf, dtype=np.float32)
    hi = np.full(n_genes, -np.inf, dtype=np.float32)
    count = np.zeros(n_genes, dtype=np.int64)
    non_finite = np.zeros(n_genes, dtype=bool)
    for gene, _, value in parts:
        np.add.at(count, gene, 1)
        finite = np.isfinite(value)
        if not finite.all():
            non_finite[gene[~finite]] = True
            gene, value = gene[finite], value[finite]
        np.minimum.at(lo, gene, value)
        np.maximum.at(hi, gene, value)
    return StoredSummary(lo, hi, count, non_finite)


def _sparse_block(genes: np.ndarray, stored: StoredValues) -> GeneBlock:
    """Wrap stored values held in memory as a block, in parts."""
    parts = [
        partial(StoredValues._make, tuple(field[a : a + _PART] for field in stored))
        for a in range(0, stored.value.shape[0], _PART)
    ]
    return GeneBlock(genes, parts=parts, summary=summarize((p() for p in parts), genes.shape[0]))


def is_dask(matrix: object) -> bool:
    """Whether ``matrix`` is a dask array (without importing dask)."""
    return type(matrix).__module__.split(".")[0] == "dask" and hasattr(matrix, "compute")


def computed(value: object) -> object:
    """Return a dask array's values (computed on the user's scheduler); anything else as is."""
    return value.compute() if is_dask(value) else value


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
        coo = sparse.coo_matrix(values)
        coo.sum_duplicates()  # as scipy reads them: duplicates add up
        return _sparse_block(genes, StoredValues(coo.col, coo.row, _float32(coo.data)))
    return GeneBlock(genes, dense=np.ascontiguousarray(_float32(np.asarray(values)).T))


def _float32(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32, copy=False)


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
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spill_dir: Path,
) -> Iterator[GeneBlock]:
    """Yield the exported genes (``matrix[:, columns]``) in blocks that fit ``memory_budget``.

    ``payload_bytes`` is a payload's bytes per cell: a block is budgeted with two blocks of
    payloads (one being built, one being written). Every exported gene is in exactly one
    block; blocks may come in another order than ``columns``. A cell-major matrix that is
    not in memory (backed CSR, dask with sparse chunks) is read once: its values are
    spilled to one file per block of genes under ``spill_dir``, then read back block by
    block.
    """
    n_columns = columns.shape[0]
    if n_columns == 0:
        return
    payload = 2 * n_cells * payload_bytes
    dense_cuts = _cuts(
        np.full(n_columns, payload + n_cells * _BYTES_PER_DENSE_VALUE), memory_budget
    )
    if is_dask(matrix) and sparse.issparse(getattr(matrix, "_meta", None)):
        # the user's scheduler (threads, processes or a distributed.Client) computes the row chunks
        stored = _dask_stored_per_gene(matrix)
        cuts = _cuts(
            np.full(n_columns, payload + stored * _BYTES_PER_STORED_VALUE), memory_budget // 2
        )
        if len(cuts) == 1:
            yield _as_block(np.arange(n_columns), matrix[:, columns].compute())
            return
        per_row = stored * _BYTES_PER_STORED_VALUE * matrix.shape[1] / max(1, n_cells)
        # the cluster computes the next row chunk while this process spills the current one
        chunks = read_ahead(
            (r0, computed(matrix[r0:r1]))
            for r0, r1 in _row_chunks(n_cells, per_row, memory_budget // 4)
        )
        yield from _spilled_blocks(chunks, columns, matrix.shape[1], cuts, spill_dir)
    elif is_dask(matrix):
        for s, e in dense_cuts:
            yield _as_block(np.arange(s, e), matrix[:, columns[s:e]].compute())
    elif sparse.issparse(matrix):
        yield from _in_memory_sparse_blocks(matrix, columns, payload, memory_budget)
    elif is_backed_sparse(matrix):
        yield from _backed_sparse_blocks(
            matrix, columns, n_cells, payload, memory_budget, spill_dir
        )
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
    matrix: object, columns: np.ndarray, payload: int, budget: int
) -> Iterator[GeneBlock]:
    if matrix.format not in ("csr", "csc"):
        matrix = sparse.csr_matrix(matrix)
    if not matrix.has_canonical_format:  # duplicates add up; each row's columns sorted
        matrix = matrix.copy()
        matrix.sum_duplicates()
    if matrix.format == "csr":
        yield from _csr_blocks(matrix, columns, payload, budget)
        return
    stored = np.diff(matrix.indptr)[columns]
    for s, e in _cuts(payload + stored * _BYTES_PER_STORED_VALUE, budget):
        yield _as_block(np.arange(s, e), matrix[:, columns[s:e]])


def _csr_blocks(
    matrix: sparse.csr_matrix, columns: np.ndarray, payload: int, budget: int
) -> Iterator[GeneBlock]:
    """Blocks of a canonical in-memory CSR matrix, gathered part by part, never re-laid out.

    Genes are taken in column order, so that a block is a range of columns and each row's
    values in it are one run of the row's (sorted) stored values: the runs are found once
    for all blocks, and each part of a block (a range of rows) gathers its own values.
    """
    n_cells, n_all = matrix.shape
    order = np.argsort(columns, kind="stable")  # exported genes in column order
    by_column = columns[order]
    cuts = _cuts(np.full(by_column.shape[0], payload), budget)
    in_block = np.full(n_all, -1, dtype=np.int32)  # a column's gene within its block
    for s, e in cuts:
        in_block[by_column[s:e]] = np.arange(e - s, dtype=np.int32)
    bounds = np.append(by_column[[s for s, _ in cuts]], by_column[-1] + 1)
    runs = _run_starts(matrix, bounds)
    per_row = max(1, matrix.indptr[-1]) / max(1, n_cells)
    row_parts = _row_chunks(n_cells, per_row, _PART)
    everything = (
        StoredValues(matrix.indices[a:b], None, _float32(matrix.data[a:b]))
        for a, b in ((matrix.indptr[r0], matrix.indptr[r1]) for r0, r1 in row_parts)
    )
    by_matrix_column = summarize(everything, n_all)
    for b, (s, e) in enumerate(cuts):
        # columns in the block's range that are not exported are dropped
        dropped = e - s < by_column[e - 1] - by_column[s] + 1
        parts = [
            partial(_csr_part, matrix, runs[r0:r1, b : b + 2], r0, in_block, dropped)
            for r0, r1 in row_parts
        ]
        summary = StoredSummary(*(field[by_column[s:e]] for field in by_matrix_column))
        yield GeneBlock(order[s:e], parts=parts, summary=summary)


def _csr_part(
    matrix: sparse.csr_matrix, runs: np.ndarray, r0: int, in_block: np.ndarray, dropped: bool
) -> StoredValues:
    """Gather one block's stored values in rows ``r0 ..``: ``runs`` has each row's run (start, end)."""
    lengths = runs[:, 1] - runs[:, 0]
    at = _concatenated_ranges(runs[:, 0], lengths)
    gene = in_block[matrix.indices[at]]
    row = np.repeat(np.arange(r0, r0 + runs.shape[0], dtype=np.int32), lengths)
    if dropped:
        kept = gene >= 0
        at, gene, row = at[kept], gene[kept], row[kept]
    return StoredValues(gene, row, _float32(matrix.data[at]))


def _run_starts(matrix: sparse.csr_matrix, bounds: np.ndarray) -> np.ndarray:
    """Return ``out[r, k]``: the position of row ``r``'s first stored value in a column ``>= bounds[k]``."""
    n_cells, n_all = matrix.shape
    out = np.empty((n_cells, bounds.shape[0]), dtype=np.int64)
    indptr = matrix.indptr.astype(np.int64)
    per_row = 8 * max(1, indptr[-1]) / max(1, n_cells)
    for r0, r1 in _row_chunks(n_cells, per_row, 2**25):
        a, b = indptr[r0], indptr[r1]
        # (row, column) keys increase through a canonical CSR matrix
        rows = np.repeat(np.arange(r1 - r0, dtype=np.int64), np.diff(indptr[r0 : r1 + 1]))
        keys = rows * n_all + matrix.indices[a:b]
        wanted = np.arange(r1 - r0, dtype=np.int64)[:, None] * n_all + bounds[None, :]
        out[r0:r1] = np.searchsorted(keys, wanted) + a
    return out


def _concatenated_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Return ``starts[0] .. starts[0] + lengths[0] - 1, starts[1] ..``, one array."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if ends.shape[0] else 0
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


def _backed_sparse_blocks(
    matrix: object, columns: np.ndarray, n_cells: int, payload: int, budget: int, spill_dir: Path
) -> Iterator[GeneBlock]:
    average = _backed_nnz(matrix) / max(1, matrix.shape[1])
    weights = np.full(columns.shape[0], payload + average * _BYTES_PER_STORED_VALUE)
    if _backed_format(matrix) == "csc":
        for s, e in _cuts(weights, budget):
            yield _as_block(np.arange(s, e), matrix[:, columns[s:e]])
        return
    # CSR on disk: a gene's values are spread over the whole file; read it once, by row chunks
    per_row = average * matrix.shape[1] / max(1, n_cells) * _BYTES_PER_STORED_VALUE
    cuts = _cuts(weights, budget // 2)
    if len(cuts) > 1:
        chunks = ((r0, matrix[r0:r1]) for r0, r1 in _row_chunks(n_cells, per_row, budget // 4))
        yield from _spilled_blocks(chunks, columns, matrix.shape[1], cuts, spill_dir)
        return
    parts = [matrix[r0:r1][:, columns] for r0, r1 in _row_chunks(n_cells, per_row, budget // 2)]
    yield _as_block(np.arange(columns.shape[0]), sparse.vstack(parts, format="csr"))


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield ``items``, producing the next one in a thread while the caller works on this one.

    numpy, scipy, h5py and dask release the GIL for the heavy work, so producing and
    consuming overlap on two cores.
    """
    end = object()
    pool = ThreadPoolExecutor(1)
    try:
        pending = pool.submit(next, items, end)
        while (item := pending.result()) is not end:
            pending = pool.submit(next, items, end)
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(items, "close", None)
        if close is not None:
            close()


#: one spilled stored value: its row, its gene within its block, its value
_SPILL_RECORD = np.dtype([("row", "<i4"), ("gene", "<i4"), ("value", "<f4")])


def _spilled_blocks(
    chunks: Iterator[tuple[int, object]],
    columns: np.ndarray,
    n_all: int,
    cuts: list[tuple[int, int]],
    spill_dir: Path,
) -> Iterator[GeneBlock]:
    """Transpose a cell-major matrix in one pass over its row chunks, spilling to disk.

    Each chunk's values are appended to the file of their block of genes, so that a block
    is then read back whole, within the memory budget, with the matrix read once.
    """
    position = np.full(n_all, -1, dtype=np.int64)  # a matrix column -> its place in the export
    position[columns] = np.arange(columns.shape[0])
    starts = np.array([s for s, _ in cuts], dtype=np.int64)
    spill_dir.mkdir(parents=True, exist_ok=True)
    paths = [spill_dir / f"block-{b}.bin" for b in range(len(cuts))]
    try:
        files = [open(path, "wb") for path in paths]  # noqa: SIM115  (closed below, all together)
        try:
            for r0, chunk in chunks:
                coo = sparse.coo_matrix(chunk)
                coo.sum_duplicates()
                place = position[coo.col]
                kept = place >= 0
                rows, place, values = coo.row[kept] + r0, place[kept], coo.data[kept]
                block = np.searchsorted(starts, place, side="right") - 1
                order = np.argsort(
                    block.astype(np.uint16 if len(cuts) <= 65536 else np.int64), kind="stable"
                )
                bounds = np.concatenate([[0], np.cumsum(np.bincount(block, minlength=len(cuts)))])
                for b in np.flatnonzero(np.diff(bounds)):
                    taken = order[bounds[b] : bounds[b + 1]]
                    records = np.empty(taken.shape[0], dtype=_SPILL_RECORD)
                    records["row"], records["gene"] = rows[taken], place[taken] - starts[b]
                    records["value"] = values[taken]
                    records.tofile(files[b])
        finally:
            for f in files:
                f.close()
        for b, (s, e) in enumerate(cuts):
            records = np.fromfile(paths[b], dtype=_SPILL_RECORD)
            paths[b].unlink()
            stored = StoredValues(records["gene"], records["row"], records["value"])
            yield _sparse_block(np.arange(s, e), stored)
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


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
            block[:, r0:r1] = np.asarray(matrix[r0:r1], dtype=np.float32)[:, wanted].T
        yield GeneBlock(np.arange(s, e), dense=block)
