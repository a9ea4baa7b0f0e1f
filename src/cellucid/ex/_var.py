"""Writer of ``var_manifest.json`` and ``var/``: one payload per gene, streamed in column blocks."""

from __future__ import annotations

import shutil
import time
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np

from .._format import EXT, MANIFEST_FORMAT, QUANT_DTYPE, VAR_MANIFEST
from .._warn import user_stacklevel
from ..pp._quantize import finite_range
from ._arithmetic import Arithmetic, missing_as_nan
from ._collect import GeneSource
from ._genes import (
    DEFAULT_MEMORY_BUDGET,
    GeneBlock,
    ReadAhead,
    StoredSummary,
    StoredValues,
    gene_blocks,
)
from ._memory import release_free_memory
from ._payload import PayloadWriter, dumps_manifest, encode_payload, write_json
from ._progress import ExportProgress
from ._settings import ExportSettings
from ._sparse_gzip import (
    GzippedPayload,
    stored_columns_from_csr,
    stored_value_bytes,
    use_sparse_gzip,
    warm_up,
)

#: blocks of gene payloads in memory at once: one being encoded, one being written
IN_FLIGHT = 2


def encode_gene(
    payload: np.ndarray | GzippedPayload,
    *,
    compression: int | None,
    quantized: bool,
    lib: ModuleType,
) -> bytes | bytearray | memoryview:
    """Return the bytes of one gene's file: its payload (codes or float32), gzipped if asked.

    Called on the writer's pool, once per gene; codes are deflated run-length (see
    :func:`~cellucid.ex._payload.gzip_bytes`).
    """
    return encode_payload(payload, compression, run_length=quantized, lib=lib)


class GeneWriter:
    """The gene stage of an export: produces blocks of genes, encodes them and writes ``var/``.

    Created before the rest of the export is written: the blocks are produced from then
    on in the reader thread (:class:`~cellucid.ex._genes.ReadAhead`), so the first
    block's pass over the matrix (value summaries, row runs, or spilling a backed matrix
    to a folder in the staging folder) overlaps the graph and ``obs``. Every other piece
    of work runs on the payload writer's pool.

    It owns the rule that :data:`IN_FLIGHT` blocks of payloads are in memory at once: the
    blocks are cut with room for them in the memory budget, a sparse block is encoded
    into one of :data:`IN_FLIGHT` reused payload buffers (fresh pages are slow to fault
    in), and a buffer is filled again only once the files of the block before in it are
    written. Blocks of a large in-memory CSR matrix, quantized and gzipped, are encoded
    from their stored values instead (:mod:`cellucid.ex._sparse_gzip`): no buffer, and
    room for their stored values only. Leaving ``with`` stops the producer (after an error, the writer's queued
    work is dropped first so that it stops soon) and removes the spilled values.
    """

    def __init__(
        self,
        writer: PayloadWriter,
        genes: GeneSource,
        *,
        n_cells: int,
        settings: ExportSettings,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        self.writer, self.genes, self.n_cells, self.settings = writer, genes, n_cells, settings
        self.bits = settings.var_quantization
        self.dtype = np.dtype(QUANT_DTYPE[self.bits] if self.bits else np.float32)
        # compiled CSR blocks give GzippedPayloads gzipped at this level, not payload arrays
        # (and are cut by their stored values): one rule, which encode_block follows
        self.stored_gzip = (
            writer.compression
            if use_sparse_gzip(
                bits=self.bits, compression=writer.compression, arith=settings.arithmetic
            )
            else None
        )
        stored_bytes = stored_value_bytes(self.dtype.itemsize) if self.stored_gzip else 0
        self._buffers = [np.empty(0, np.uint8)] * IN_FLIGHT
        self._written = [
            0
        ] * IN_FLIGHT  # each buffer's: the writer's mark once its files were queued
        self._spill_dir = writer.root / ".spill"
        self._blocks = ReadAhead(
            lambda stop: gene_blocks(
                genes.matrix,
                genes.columns,
                n_cells=n_cells,
                payload_bytes=IN_FLIGHT * self.dtype.itemsize,
                stored_bytes=IN_FLIGHT * stored_bytes,
                memory_budget=memory_budget,
                spill_dir=self._spill_dir,
                executor=writer.executor,
                stop=stop,
                warm_up=(
                    partial(warm_up, bits=self.bits, level=self.stored_gzip)
                    if self.stored_gzip
                    else None
                ),
            )
        )

    def __enter__(self) -> GeneWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            if exc_type is not None:  # the producer may wait on the pool: stop it, empty the pool
                self._blocks.stop.set()
                self.writer.cancel()
            self._blocks.close()
        finally:
            shutil.rmtree(self._spill_dir, ignore_errors=True)

    def write(self, *, progress: ExportProgress, times: dict[str, float]) -> None:
        """Write one payload per gene and the var manifest.

        ``progress`` advances by the payload bytes encoded (the writer counts them again
        once written); ``times`` gets the seconds spent waiting for blocks
        (``genes.read``), encoding them (``genes.encode``) and waiting for the writer
        (``genes.write``).
        """
        genes, writer, bits = self.genes, self.writer, self.bits
        arith = self.settings.arithmetic
        encode_file = partial(
            encode_gene, compression=writer.compression, quantized=bits is not None, lib=writer.lib
        )
        fields: list[list] = [[] for _ in genes.names]
        non_finite_at: list[int] = []
        waited = {"genes.read": 0.0, "genes.encode": 0.0, "genes.write": 0.0}
        start = time.perf_counter()
        for b, block in enumerate(self._blocks):
            slot = b % IN_FLIGHT
            writing = time.perf_counter()
            waited["genes.read"] += writing - start
            writer.wait_for(self._written[slot])  # the files of the block before in this buffer
            release_free_memory()  # what the blocks before freed (glibc would keep it)
            encoding = time.perf_counter()
            waited["genes.write"] += encoding - writing
            payloads, vmin, vmax, finite = self._encode(block, slot, arith, progress)
            names = [genes.names[i] for i in block.genes.tolist()]
            files, entries = block_files(block.genes, names, payloads, vmin, vmax, self.settings)
            for index, entry in zip(block.genes.tolist(), entries, strict=True):
                fields[index] = entry
            # gzipped from their stored values, the files' bytes are made: writing is creating them
            made = not isinstance(payloads, np.ndarray)
            writer.write_many(files, encode=encode_file, made=made)
            self._written[slot] = writer.mark()
            non_finite_at.extend(block.genes[~finite].tolist())
            start = time.perf_counter()
            waited["genes.encode"] += start - encoding
        times.update(waited)
        self._write_manifest(fields, sorted(non_finite_at))

    def _encode(
        self, block: GeneBlock, slot: int, arith: Arithmetic, progress: ExportProgress
    ) -> tuple[np.ndarray | list[GzippedPayload], np.ndarray, np.ndarray, np.ndarray]:
        """Encode ``block`` into buffer ``slot`` on the pool (see :func:`encode_block`)."""
        return encode_block(
            block,
            n_cells=self.n_cells,
            bits=self.bits,
            arith=arith,
            buffer=partial(self._buffer, slot),
            executor=self.writer.executor,
            progress=progress,
            stored_gzip=self.stored_gzip,
            lib=self.writer.lib,
        )

    def _buffer(self, slot: int, n_genes: int) -> np.ndarray:
        nbytes = n_genes * self.n_cells * self.dtype.itemsize
        if self._buffers[slot].nbytes < nbytes:
            self._buffers[slot] = np.empty(nbytes, dtype=np.uint8)
        return self._buffers[slot][:nbytes].view(self.dtype).reshape(n_genes, self.n_cells)

    def _write_manifest(self, fields: list[list], non_finite_at: list[int]) -> None:
        write_var_manifest(
            self.writer.root,
            self.genes,
            fields,
            non_finite_at,
            n_cells=self.n_cells,
            settings=self.settings,
        )


def encode_block(
    block: GeneBlock,
    *,
    n_cells: int,
    bits: int | None,
    arith: Arithmetic,
    buffer: Callable[[int], np.ndarray],
    executor: Executor,
    progress: ExportProgress,
    stored_gzip: int | None = None,
    lib: ModuleType = zlib,
) -> tuple[np.ndarray | list[GzippedPayload], np.ndarray, np.ndarray, np.ndarray]:
    """Return the block's payloads (one gene per row), their bounds and whether each gene's values were finite.

    The bounds are the quantization bounds (unquantized: the finite minima and maxima).
    A sparse block's parts are encoded in parallel on ``executor``, straight into
    ``buffer(n_genes)`` (every implicit zero gets the code of 0); ``progress`` advances
    part by part. The export's gene writer and the workers of a cluster both encode here.
    Parts of a large in-memory CSR matrix marked ``compiled`` are gathered, encoded and
    put in place by one kernel (:mod:`cellucid.ex._csr_kernels`), with the same result.
    Given a gzip level ``stored_gzip`` (where
    :func:`~cellucid.ex._sparse_gzip.use_sparse_gzip` allows), such a block's payloads
    are its genes' ``.gz`` files instead, the dense ones deflated by ``lib``
    (:func:`~cellucid.ex._sparse_gzip.stored_columns_from_csr`): the same decoded bytes.
    """
    if block.dense is not None:
        dense = block.dense
        finite_values = np.isfinite(dense)
        lo, hi = finite_range(dense, axis=1, finite=finite_values)
        finite = finite_values.all(axis=1)
        if not bits:
            payloads = missing_as_nan(dense)
            progress.advance(payloads.nbytes)
            return payloads, lo, hi, finite
        vmin, vmax = arith.bounds(lo, hi)
        payloads = arith.encode(dense, vmin[:, None], vmax[:, None], bits=bits)
        progress.advance(payloads.nbytes)
        return payloads, vmin, vmax, finite
    lo, hi = _with_implicit_zeros(block.summary, n_cells)
    vmin, vmax = arith.bounds(lo, hi) if bits else (lo, hi)
    zero = (
        arith.encode(np.zeros(vmin.shape, np.float32), vmin, vmax, bits=bits)
        if bits
        else np.zeros(vmin.shape, np.float32)
    )[:, None]
    if stored_gzip and block.csr is not None and block.summary.count.sum() > 0:
        columns = stored_columns_from_csr(
            *block.csr,
            vmin,
            vmax,
            zero[:, 0],
            np.dtype(QUANT_DTYPE[bits]),
            bits=bits,
            level=stored_gzip,
            lib=lib,
            pool_map=executor.map,
        )
        progress.advance(block.genes.shape[0] * n_cells * np.dtype(QUANT_DTYPE[bits]).itemsize)
        return columns, vmin, vmax, ~block.summary.non_finite
    payloads = buffer(block.genes.shape[0])
    flat = payloads.reshape(-1)
    if not block.part_rows:
        payloads[:] = zero
    share = payloads.nbytes // max(1, len(block.parts))  # each part's, for progress
    compiled = None
    if getattr(block.parts[0] if block.parts else None, "compiled", False):
        from ._csr_kernels import part_encoder  # loaded for large in-memory CSR matrices only

        compiled = part_encoder(arith.encode, vmin, vmax, bits=bits)

    def encode_part(part: Callable[[], StoredValues], rows: tuple[int, int] | None) -> None:
        if rows is not None:  # this part's share, while it is in the cache
            payloads[:, rows[0] : rows[1]] = zero
        if compiled is not None:  # gathered, encoded and put in place in one pass
            compiled(part, payloads)
            progress.advance(share)
            return
        gene, row, value = part()
        gene = gene.astype(np.intp, copy=False)
        at = gene * n_cells
        at += row
        flat[at] = (
            arith.encode(value, vmin, vmax, bits=bits, index=gene)
            if bits
            else missing_as_nan(value)
        )
        progress.advance(share)

    rows = block.part_rows or [None] * len(block.parts)
    for _ in executor.map(encode_part, block.parts, rows):
        pass
    progress.advance(payloads.nbytes - share * len(block.parts))
    return payloads, vmin, vmax, ~block.summary.non_finite


def block_files(
    genes: np.ndarray,
    names: list[str],
    payloads: np.ndarray | list[GzippedPayload],
    vmin: np.ndarray,
    vmax: np.ndarray,
    settings: ExportSettings,
) -> tuple[list[tuple[str, np.ndarray]], list[list]]:
    """Return a block's payload files (relative path, payload) and its var manifest entries.

    ``genes`` are the genes' places in the export, ``names`` their names, ``payloads``,
    ``vmin`` and ``vmax`` what :func:`encode_block` returned for them.
    """
    layout, bits = settings.layout, settings.var_quantization
    ext = EXT[QUANT_DTYPE[bits]] if bits else EXT["float32"]
    files, entries = [], []
    for j, (index, name) in enumerate(zip(genes.tolist(), names, strict=True)):
        files.append((layout.field_path("var_values", index, name, ext), payloads[j]))
        bounds = [float(vmin[j]), float(vmax[j])] if bits else []
        entries.append([*layout.entry_head(index, name), *bounds])
    return files, entries


def write_var_manifest(
    root: Path,
    genes: GeneSource,
    fields: list[list],
    non_finite_at: list[int],
    *,
    n_cells: int,
    settings: ExportSettings,
) -> None:
    """Write ``var_manifest.json`` under ``root`` from every gene's entry (``fields``, in export order).

    Genes at ``non_finite_at`` (sorted) had NaN or ±Inf values: a warning names them.
    """
    bits = settings.var_quantization
    layout, comp = settings.layout, settings.compression
    ext = EXT[QUANT_DTYPE[bits]] if bits else EXT["float32"]
    non_finite = [genes.names[i] for i in non_finite_at]
    if non_finite:
        warnings.warn(
            f"{len(non_finite):,} genes have NaN or ±Inf values, exported as missing: "
            f"{non_finite[:10]}{' ...' if len(non_finite) > 10 else ''}",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    schema = {
        "kind": "continuous",
        "pathPattern": layout.pattern("var_values", ext, comp),
        "ext": ext,
        "dtype": QUANT_DTYPE[bits] if bits else "float32",
        "quantized": bits is not None,
        **({"quantizationBits": bits} if bits else {}),
    }
    id_column = genes.id_column if layout.name == "current" else (genes.id_column or "index")
    manifest = {
        "_format": MANIFEST_FORMAT,
        "n_points": n_cells,
        "var_gene_id_column": id_column,
        "compression": comp,
        "quantization": bits,
        "_varSchema": schema,
        "fields": fields,
    }
    write_json(root / VAR_MANIFEST, dumps_manifest(manifest))


def _with_implicit_zeros(summary: StoredSummary, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite min and max per gene, counting implicit zeros (NaN where no finite value)."""
    implicit_zero = summary.count < n_cells
    lo = np.where(implicit_zero, np.minimum(summary.lo, 0.0), summary.lo).astype(np.float64)
    hi = np.where(implicit_zero, np.maximum(summary.hi, 0.0), summary.hi).astype(np.float64)
    none = ~np.isfinite(lo)
    lo[none] = np.nan
    hi[none] = np.nan
    return lo, hi
