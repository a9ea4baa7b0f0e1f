"""Genes encoded and written by the workers of a dask cluster, where the expression matrix is.

When the matrix is a dask array and a ``distributed`` client is its scheduler, the genes
are not brought to the exporting process: tasks on the workers cut each group of row
chunks into the export's blocks of genes (one CSR -> CSC conversion: each block is then
one run of values), gather each block's values from every group (from worker to
worker), encode its payloads as the local export does (:func:`~cellucid.ex._var.encode_block`)
and write them where the export goes: the staging folder of a local ``out_dir`` (which
every worker must see), or straight to the new version prefix of an object store's
(:attr:`~cellucid.ex._cloud.CloudExport.version_dest`), so gene payloads never pass
through the client. Only small facts come back to the client: each gene's manifest entry,
the genes with NaN or ±Inf values, and the bytes written. A block holds every cell of its
genes, so their bounds are known before they are encoded: one pass.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np
from scipy import sparse

from .._format import QUANT_DTYPE, VAR_DIR, gz
from ._collect import GeneSource
from ._genes import (
    _BYTES_PER_DENSE_VALUE,
    _BYTES_PER_STORED_VALUE,
    GeneBlock,
    StoredValues,
    _canonical_csr,
    _ColumnBlocks,
    _float32,
    _sparse_block,
    is_dask,
)
from ._payload import PayloadWriter, _InPlace, encode_payload, gzip_encoder
from ._progress import ExportProgress
from ._publish import public_path
from ._settings import ExportSettings
from ._store import Destination
from ._var import block_files, encode_block, write_var_manifest

logger = logging.getLogger("cellucid")

#: how long a failed export waits for the blocks the workers are writing to end
_STOP_TIMEOUT = 300.0
#: a worker's concurrent uploads of its block's files to an object store (requests wait on the network)
_UPLOADS = 4


def cluster_client(matrix: object) -> object | None:
    """Return the ``distributed.Client`` that would compute ``matrix``, or None.

    None unless ``matrix`` is a dask array and dask's scheduler is a distributed client
    (``distributed`` is then imported already: a client is made with it).
    """
    if not is_dask(matrix) or "distributed" not in sys.modules:
        return None
    from dask.base import get_scheduler
    from distributed import Client

    client = getattr(get_scheduler(collections=[matrix]), "__self__", None)
    return client if isinstance(client, Client) else None


class BlockFacts(NamedTuple):
    """What a worker returns for a block of genes it wrote: small, whatever the number of cells."""

    genes: np.ndarray  # the genes' places in the export
    entries: list[list]  # their var manifest entries
    non_finite: np.ndarray  # the genes (places) with NaN or ±Inf values
    payload_bytes: int  # uncompressed
    bytes_written: int
    files_written: int


@dataclass(frozen=True)
class _Job:
    """What every write task needs: sent to each worker once."""

    root: str  # the staging folder, seen by the workers (one machine or a shared filesystem)
    dest: Destination | None  # else the object store's prefix the payloads go to
    n_cells: int
    settings: ExportSettings
    # "zlib" or "zlib-ng", resolved by the client so that every worker writes the same bytes
    encoder: str
    layout: _ColumnBlocks
    block_columns: list[np.ndarray]  # each block's matrix columns, in its genes' order
    names: list[list[str]]  # each block's gene names
    dense: bool


class _Silent:
    """Progress of a worker's block: the client counts it when the block is done."""

    def advance(self, nbytes: int) -> None:
        """Count nothing."""


def _encoder_name(lib: ModuleType) -> str:
    return "zlib" if lib.__name__ == "zlib" else "zlib-ng"


class _SparsePiece(NamedTuple):
    """One block's stored values in some rows: a CSC slice of the block's columns."""

    first: int  # the matrix column of ``counts[0]``
    r0: int  # the row of ``rows == 0``
    counts: np.ndarray  # stored values per column
    rows: np.ndarray  # each value's row, column by column
    values: np.ndarray  # float32


def _pieces(job: _Job, r0: int, c0: int, *chunks: object) -> list[object]:
    """Cut consecutive row chunks (rows from ``r0``, columns from ``c0``) into one piece per block.

    A sparse piece is a :class:`_SparsePiece`; a dense one the block's columns that the
    chunks have and their values, one gene per row.
    """
    if job.dense:
        # chunks may be sparse where dask's metadata says dense (a map_blocks without meta=)
        dense = [c.toarray() if sparse.issparse(c) else np.asarray(c) for c in chunks]
        values = _float32(np.concatenate(dense))
        pieces = []
        for columns in job.block_columns:
            inside = (columns >= c0) & (columns < c0 + values.shape[1])
            at = np.flatnonzero(inside)
            pieces.append((at, r0, np.ascontiguousarray(values[:, columns[at] - c0].T)))
        return pieces
    csr = _canonical_csr(sparse.vstack(chunks, format="csr") if len(chunks) > 1 else chunks[0])
    # one counting sort (scipy's CSR -> CSC): each block's values are then one run
    csc = sparse.csc_matrix(csr)
    data = _float32(csc.data)
    lows = np.clip(job.layout.bounds - c0, 0, csc.shape[1])
    pieces = []
    for lo, hi in zip(lows[:-1].tolist(), lows[1:].tolist(), strict=True):
        a, z = csc.indptr[lo], csc.indptr[hi]
        counts = np.diff(csc.indptr[lo : hi + 1])
        pieces.append(_SparsePiece(c0 + lo, r0, counts, csc.indices[a:z], data[a:z]))
    return pieces


def _block(job: _Job, b: int, pieces: tuple) -> GeneBlock:
    s, e = job.layout.cuts[b]
    genes = job.layout.order[s:e]
    if job.dense:
        dense = np.empty((e - s, job.n_cells), dtype=np.float32)
        for at, r0, values in pieces:
            dense[at, r0 : r0 + values.shape[1]] = values
        return GeneBlock(genes, dense=dense)
    columns = np.concatenate(
        [np.repeat(np.arange(p.first, p.first + p.counts.shape[0]), p.counts) for p in pieces]
    )
    if job.layout.gaps[b]:  # some of the block's columns are not exported
        gene = job.layout.in_block[columns]
        kept = gene >= 0
    else:
        gene, kept = columns - int(job.layout.bounds[b]), None
    rows = np.concatenate([p.rows.astype(np.intp) + p.r0 for p in pieces])
    values = np.concatenate([p.values for p in pieces])
    if kept is not None:
        gene, rows, values = gene[kept], rows[kept], values[kept]
    return _sparse_block(genes, StoredValues(gene, rows, values), job.n_cells)


class _StoreWriter:
    """Write a block's payload files to an object store, each in one upload (as :class:`PayloadWriter` would locally).

    Each file is encoded in the task's thread (one core, as dask gave it), then uploaded by
    a few threads: an upload mostly waits on the network.
    """

    def __init__(self, dest: Destination, *, compression: int | None, lib: ModuleType) -> None:
        self.dest, self.compression, self.lib = dest, compression or None, lib
        self.executor = _InPlace()  # the encoders' work: in the task's thread
        self.bytes_written = self.files_written = 0
        self._uploads = ThreadPoolExecutor(_UPLOADS, thread_name_prefix="cellucid-upload")
        self._pending: list = []

    def write_many(self, files: list[tuple[str, np.ndarray]], *, run_length: bool) -> None:
        """Encode ``files`` (relative path, array) and queue their uploads."""
        for relpath, array in files:
            data = encode_payload(array, self.compression, run_length=run_length, lib=self.lib)
            name = gz(relpath, self.compression)
            self._pending.append(self._uploads.submit(self.dest.write_bytes, name, data))
            self.bytes_written += memoryview(data).nbytes
            self.files_written += 1

    def __enter__(self) -> _StoreWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            if exc_type is None:  # every file uploaded, or the first error
                for future in self._pending:
                    future.result()
        finally:
            self._uploads.shutdown(wait=True, cancel_futures=True)


def _write_block(job: _Job, b: int, *pieces: object) -> BlockFacts:
    """Encode block ``b`` of genes from its pieces and write its payload files (on a worker)."""
    if job.dest is None and not os.path.isdir(job.root):
        msg = (
            f"The workers cannot reach the export's folder {public_path(job.root)}: with a "
            "distributed cluster, export to a folder that every worker shares."
        )
        raise FileNotFoundError(msg)
    block = _block(job, b, pieces)
    del pieces
    bits = job.settings.var_quantization
    dtype = np.dtype(QUANT_DTYPE[bits] if bits else np.float32)
    lib = gzip_encoder(job.encoder)
    compression = job.settings.compression
    # one thread: the worker's threads are dask's to give
    with (
        PayloadWriter(Path(job.root), compression=compression, n_jobs=1, lib=lib)
        if job.dest is None
        else _StoreWriter(job.dest, compression=compression, lib=lib)
    ) as writer:
        payloads, vmin, vmax, finite = encode_block(
            block,
            n_cells=job.n_cells,
            bits=bits,
            arith=job.settings.arithmetic,
            buffer=lambda n_genes: np.empty((n_genes, job.n_cells), dtype),
            executor=writer.executor,
            progress=_Silent(),
        )
        files, entries = block_files(block.genes, job.names[b], payloads, vmin, vmax, job.settings)
        writer.write_many(files, run_length=bits is not None)
    return BlockFacts(
        block.genes,
        entries,
        block.genes[~finite],
        payloads.nbytes,
        writer.bytes_written,
        writer.files_written,
    )


def _stored_per_row(client: object, matrix: object) -> float:
    """Estimate the stored values per row of a sparse dask matrix from its first chunk (counted on a worker)."""
    from dask import delayed

    first = matrix.to_delayed()[0, 0]
    nnz = client.compute(delayed(_nnz, pure=False)(first)).result()
    n_rows, width = matrix.chunks[0][0], matrix.chunks[1][0]
    return nnz * matrix.shape[1] / max(1, width) / max(1, n_rows)


def _nnz(chunk: sparse.spmatrix | sparse.sparray) -> int:
    return int(chunk.nnz)


class WorkersWrite:
    """The genes written by the cluster's workers: started at once, collected by :meth:`write`.

    Used like :class:`~cellucid.ex._var.GeneWriter` (a context manager, then
    :meth:`write`); leaving ``with`` on an error cancels the blocks and waits for those
    being written. The payloads go to ``dest`` (an object store's prefix) when given,
    else into the staging folder ``root``; the var manifest goes into ``root`` either way.
    """

    def __init__(
        self,
        client: object,
        genes: GeneSource,
        *,
        root: Path,
        dest: Destination | None = None,
        n_cells: int,
        settings: ExportSettings,
        lib: ModuleType,
        memory_budget: int,
    ) -> None:
        from dask import delayed

        self.client, self.root, self.genes = client, root, genes
        self.n_cells, self.settings = n_cells, settings
        self.bytes_written = self.files_written = 0  # by the workers
        matrix, columns = genes.matrix, genes.columns
        dense = not sparse.issparse(getattr(matrix, "_meta", None))
        bits = settings.var_quantization
        payload = n_cells * np.dtype(QUANT_DTYPE[bits] if bits else np.float32).itemsize
        if dense:
            per_row = matrix.shape[1] * _BYTES_PER_DENSE_VALUE
            per_gene = payload + n_cells * _BYTES_PER_DENSE_VALUE
        else:
            per_row = _stored_per_row(client, matrix) * _BYTES_PER_STORED_VALUE
            # a margin for genes denser than the first chunk's average
            per_gene = payload + 2 * per_row / max(1, matrix.shape[1]) * n_cells
        # a worker holds one block's values and payloads at a time per thread
        layout = _ColumnBlocks.cut(columns, matrix.shape[1], per_gene, memory_budget)
        by_column = columns[layout.order]
        job = _Job(
            root=str(root),
            dest=dest,
            n_cells=n_cells,
            settings=settings,
            encoder=_encoder_name(lib),
            layout=layout,
            block_columns=[by_column[s:e] for s, e in layout.cuts],
            names=[[genes.names[i] for i in layout.order[s:e]] for s, e in layout.cuts],
            dense=dense,
        )
        if dest is None:
            (root / VAR_DIR).mkdir(exist_ok=True)
        self.token = uuid.uuid4().hex[:12]
        [shared] = client.scatter([job], broadcast=True, hash=False)
        # row chunks grouped so that a group's values fill about a quarter of the budget
        row_edges = np.cumsum((0, *matrix.chunks[0]))
        col_edges = np.cumsum((0, *matrix.chunks[1]))
        chunks = matrix.to_delayed()
        rows_per_group = max(1, int(memory_budget // 4 // max(per_row, 1.0)))
        groups, start, n_row_chunks = [], 0, len(row_edges) - 1
        for i in range(1, n_row_chunks + 1):
            if i == n_row_chunks or row_edges[i + 1] - row_edges[start] > rows_per_group:
                groups.append((start, i))
                start = i
        n_blocks = len(layout.cuts)
        by_block: list[list] = [[] for _ in range(n_blocks)]
        for g, (i0, i1) in enumerate(groups):
            for j in range(len(col_edges) - 1):
                cut = delayed(_pieces, nout=n_blocks, pure=False)(
                    shared,
                    int(row_edges[i0]),
                    int(col_edges[j]),
                    *chunks[i0:i1, j],
                    dask_key_name=f"cellucid-pieces-{self.token}-{g}-{j}",
                )
                for b in range(n_blocks):
                    first, last = job.block_columns[b][0], job.block_columns[b][-1]
                    if first < col_edges[j + 1] and last >= col_edges[j]:
                        by_block[b].append(cut[b])
        writes = [
            delayed(_write_block, pure=False)(
                shared, b, *pieces, dask_key_name=f"cellucid-write-{self.token}-{b}"
            )
            for b, pieces in enumerate(by_block)
        ]
        self.futures = client.compute(writes)
        logger.debug(
            "genes: %d blocks written by the cluster's workers from %d groups of row chunks",
            n_blocks,
            len(groups),
        )

    def __enter__(self) -> WorkersWrite:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.stop()

    def write(self, *, progress: ExportProgress, times: dict[str, float]) -> None:
        """Wait for every block, as :class:`~cellucid.ex._var.GeneWriter` writes them, and write the var manifest.

        ``progress`` advances by each block's payload bytes, once encoded and once written;
        ``times`` gets the seconds waited for the workers (``genes.workers``).
        """
        from distributed import as_completed

        start = time.perf_counter()
        fields: list[list] = [[] for _ in self.genes.names]
        non_finite_at: list[int] = []
        for future in as_completed(self.futures):
            facts = future.result()
            for index, entry in zip(facts.genes.tolist(), facts.entries, strict=True):
                fields[index] = entry
            non_finite_at.extend(facts.non_finite.tolist())
            self.bytes_written += facts.bytes_written
            self.files_written += facts.files_written
            progress.advance(facts.payload_bytes)
            progress.written(facts.payload_bytes)
        times["genes.workers"] = time.perf_counter() - start
        write_var_manifest(
            self.root,
            self.genes,
            fields,
            sorted(non_finite_at),
            n_cells=self.n_cells,
            settings=self.settings,
        )

    def stop(self) -> None:
        """Cancel the blocks not started and wait for those being written (then nothing writes any more)."""
        self.client.cancel(self.futures)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while time.monotonic() < deadline:
            running = self.client.run(_running_writes, self.token)
            if not any(running.values()):
                return
            time.sleep(0.05)
        logger.warning("workers still writing blocks of genes after %.0f s", _STOP_TIMEOUT)


def _running_writes(token: str, dask_worker: object = None) -> int:
    """How many of an export's write tasks a worker is running (cancelled ones included)."""
    prefix = f"cellucid-write-{token}-"
    state = dask_worker.state  # its running tasks, cancelled or not, are in these two sets
    return sum(str(ts.key).startswith(prefix) for ts in (*state.executing, *state.long_running))
