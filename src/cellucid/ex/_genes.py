"""Gene values in column blocks, from any matrix: numpy, scipy, backed h5ad/zarr datasets and dask.

The export writes one payload per gene, but expression matrices are usually stored by
cell (CSR, row chunks). Blocks of gene columns are cut so that one block's values fit a
memory budget, so the whole matrix is never densified nor re-laid-out at once; backed
and row-major on-disk matrices are streamed by row chunks, once per block of genes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from scipy import sparse

#: default memory budget for one block of gene values
DEFAULT_MEMORY_BUDGET = 512 * 2**20
# bytes one stored sparse value costs in a block: float32 value + int32 row index, twice
# while scipy re-lays the block out as CSC
_BYTES_PER_STORED_VALUE = 16
# a dense value: the float32 block and its transposed copy
_BYTES_PER_DENSE_VALUE = 8


@dataclass(frozen=True)
class GeneBlock:
    """Values of consecutive exported genes ``start .. start + n - 1``: dense rows or CSC columns."""

    start: int
    dense: np.ndarray | None = None  # (n_genes, n_cells) float32, one gene per row
    csc: sparse.csc_matrix | None = None  # (n_cells, n_genes)

    @property
    def n_genes(self) -> int:
        """The number of genes in the block."""
        return self.dense.shape[0] if self.dense is not None else self.csc.shape[1]


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


def _as_block(start: int, values: object) -> GeneBlock:
    """Wrap computed cell × gene values as a block."""
    if sparse.issparse(values):
        csc = sparse.csc_matrix(values, dtype=np.float32)
        csc.sort_indices()
        return GeneBlock(start, csc=csc)
    return GeneBlock(start, dense=np.ascontiguousarray(np.asarray(values, dtype=np.float32).T))


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


def _dense_cuts(n_columns: int, n_cells: int, budget: int) -> list[tuple[int, int]]:
    step = max(1, budget // max(1, n_cells * _BYTES_PER_DENSE_VALUE))
    return [(s, min(s + step, n_columns)) for s in range(0, n_columns, step)]


def _row_chunks(n_cells: int, bytes_per_row: float, budget: int) -> list[tuple[int, int]]:
    step = max(1, int(budget // max(bytes_per_row, 1.0)))
    return [(s, min(s + step, n_cells)) for s in range(0, n_cells, step)]


def gene_blocks(
    matrix: object,
    columns: np.ndarray,
    *,
    n_cells: int,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spill_dir: Path,
) -> Iterator[GeneBlock]:
    """Yield the exported genes (``matrix[:, columns]``) in order, in blocks that fit ``memory_budget``.

    A cell-major matrix that is not in memory (backed CSR, dask with sparse chunks) is read
    once: its values are spilled to one file per block of genes under ``spill_dir``, then
    read back block by block.
    """
    n_columns = columns.shape[0]
    if is_dask(matrix) and sparse.issparse(getattr(matrix, "_meta", None)):
        # the user's scheduler (threads, processes or a distributed.Client) computes the row chunks
        per_gene = _dask_sparse_bytes_per_gene(matrix)
        cuts = _cuts(np.full(n_columns, per_gene), memory_budget // 2)
        if len(cuts) == 1:
            yield _as_block(0, matrix[:, columns].compute())
            return
        per_row = per_gene * matrix.shape[1] / max(1, n_cells)
        # the cluster computes the next row chunk while this process spills the current one
        chunks = _prefetched(
            (r0, partial(computed, matrix[r0:r1]))
            for r0, r1 in _row_chunks(n_cells, per_row, memory_budget // 4)
        )
        yield from _spilled_blocks(chunks, columns, matrix.shape[1], cuts, n_cells, spill_dir)
    elif is_dask(matrix):
        for s, e in _dense_cuts(n_columns, n_cells, memory_budget):
            yield _as_block(s, matrix[:, columns[s:e]].compute())
    elif sparse.issparse(matrix):
        yield from _in_memory_sparse_blocks(matrix, columns, memory_budget)
    elif is_backed_sparse(matrix):
        yield from _backed_sparse_blocks(matrix, columns, n_cells, memory_budget, spill_dir)
    elif isinstance(matrix, np.ndarray):
        for s, e in _dense_cuts(n_columns, n_cells, memory_budget):
            yield _as_block(s, matrix[:, columns[s:e]])
    else:  # an on-disk dense array (h5py / zarr): read row chunks, once per block of genes
        yield from _row_streamed_dense_blocks(matrix, columns, n_cells, memory_budget)


def _column_selector(columns: np.ndarray) -> slice | np.ndarray:
    """Return a slice when the columns are consecutive (scipy's fast path), else the index array."""
    if columns.size and np.all(np.diff(columns) == 1):
        return slice(int(columns[0]), int(columns[-1]) + 1)
    return columns


def _dask_sparse_bytes_per_gene(matrix: object) -> float:
    """Estimate a gene's block bytes from the density of the first chunk of a sparse dask array."""
    first = matrix.blocks[(0,) * matrix.ndim].compute()
    density = first.nnz / max(1, first.shape[0] * first.shape[1])
    # a margin for genes denser than the first chunk's average
    return 2 * density * matrix.shape[0] * _BYTES_PER_STORED_VALUE


def _in_memory_sparse_blocks(
    matrix: object, columns: np.ndarray, budget: int
) -> Iterator[GeneBlock]:
    fmt = matrix.format
    if fmt not in ("csr", "csc"):
        matrix = sparse.csr_matrix(matrix)
        fmt = "csr"
    if fmt == "csc":
        per_column = np.diff(matrix.indptr)[columns]
    else:
        per_column = np.bincount(matrix.indices, minlength=matrix.shape[1])[columns]
    for s, e in _cuts(per_column * _BYTES_PER_STORED_VALUE, budget):
        # scipy's column selection is one C pass over the stored values of a CSR matrix
        yield _as_block(s, matrix[:, _column_selector(columns[s:e])])


def _backed_sparse_blocks(
    matrix: object, columns: np.ndarray, n_cells: int, budget: int, spill_dir: Path
) -> Iterator[GeneBlock]:
    n_stored = _backed_nnz(matrix)
    if _backed_format(matrix) == "csc":
        average = n_stored / max(1, matrix.shape[1]) * _BYTES_PER_STORED_VALUE
        for s, e in _cuts(np.full(columns.shape[0], average), budget):
            yield _as_block(s, matrix[:, columns[s:e]])
        return
    # CSR on disk: a gene's values are spread over the whole file; read it once, by row chunks
    per_gene = n_stored / max(1, matrix.shape[1]) * _BYTES_PER_STORED_VALUE
    per_row = n_stored / max(1, n_cells) * _BYTES_PER_STORED_VALUE
    cuts = _cuts(np.full(columns.shape[0], per_gene), budget // 2)
    if len(cuts) > 1:
        chunks = ((r0, matrix[r0:r1]) for r0, r1 in _row_chunks(n_cells, per_row, budget // 4))
        yield from _spilled_blocks(chunks, columns, matrix.shape[1], cuts, n_cells, spill_dir)
        return
    parts = [matrix[r0:r1][:, columns] for r0, r1 in _row_chunks(n_cells, per_row, budget // 2)]
    yield _as_block(0, sparse.vstack(parts, format="csr"))


def _prefetched(tasks: Iterator[tuple[int, Callable[[], object]]]) -> Iterator[tuple[int, object]]:
    """Yield ``(key, task())`` in order, running the next task in a thread meanwhile."""
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for key, task in tasks:
            submitted = (key, pool.submit(task))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = submitted
        if pending is not None:
            yield pending[0], pending[1].result()


#: one spilled stored value: its row, its column within the block, its value
_SPILL_RECORD = np.dtype([("row", "<i4"), ("col", "<i4"), ("value", "<f4")])


def _spilled_blocks(
    chunks: Iterator[tuple[int, object]],
    columns: np.ndarray,
    n_all: int,
    cuts: list[tuple[int, int]],
    n_cells: int,
    spill_dir: Path,
) -> Iterator[GeneBlock]:
    """Transpose a cell-major matrix in one pass over its row chunks, spilling to disk.

    Each chunk's values are appended to the file of their block of genes (in row order), so
    that a block is then read back whole, within the memory budget, with the matrix read once.
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
                    records["row"], records["col"] = rows[taken], place[taken] - starts[b]
                    records["value"] = values[taken]
                    records.tofile(files[b])
        finally:
            for f in files:
                f.close()
        for b, (s, e) in enumerate(cuts):
            records = np.fromfile(paths[b], dtype=_SPILL_RECORD)
            paths[b].unlink()
            values = sparse.csc_matrix(
                (records["value"], (records["row"], records["col"])), shape=(n_cells, e - s)
            )
            del records
            yield _as_block(s, values)
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def _backed_nnz(matrix: object) -> int:
    group = getattr(matrix, "group", None)
    if group is not None and "data" in group:
        return int(group["data"].shape[0])
    return int(getattr(matrix, "nnz", matrix.shape[0] * matrix.shape[1]))


def _row_streamed_dense_blocks(
    matrix: object, columns: np.ndarray, n_cells: int, budget: int
) -> Iterator[GeneBlock]:
    n_all = matrix.shape[1]
    for s, e in _dense_cuts(columns.shape[0], n_cells, budget // 2):
        wanted = columns[s:e]
        block = np.empty((e - s, n_cells), dtype=np.float32)
        for r0, r1 in _row_chunks(n_cells, n_all * 4, budget // 2):
            block[:, r0:r1] = np.asarray(matrix[r0:r1], dtype=np.float32)[:, wanted].T
        yield GeneBlock(s, dense=block)
