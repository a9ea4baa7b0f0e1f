"""Writer of ``var_manifest.json`` and ``var/``: one payload per gene, streamed in column blocks."""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

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
from ._payload import PayloadWriter, dumps_manifest, write_json
from ._progress import ExportProgress
from ._settings import ExportSettings


class _BlockEncoder:
    """Turn blocks of genes into payloads, one gene per row, on reused memory.

    A sparse block's parts are encoded in parallel, straight into the payloads (every
    implicit zero gets the code of 0). Freshly allocated pages are slow to fault in (here:
    slower than filling them), so two payload buffers alternate between blocks: the
    caller waits for block ``b - 1``'s files before encoding block ``b + 1``. ``progress``
    advances by the payload bytes encoded, part by part.
    """

    def __init__(
        self,
        n_cells: int,
        bits: int | None,
        arith: Arithmetic,
        pool: Executor,
        progress: ExportProgress,
    ) -> None:
        self.n_cells, self.bits, self.arith, self.pool = n_cells, bits, arith, pool
        self.progress = progress
        self.dtype = np.dtype(QUANT_DTYPE[bits] if bits else np.float32)
        self._buffers = [np.empty(0, np.uint8)] * 2
        self._next = 0

    def __call__(self, block: GeneBlock) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return the block's payloads, their bounds and whether each gene's values were finite.

        The bounds are the quantization bounds (unquantized: the finite minima and maxima).
        """
        bits, arith = self.bits, self.arith
        if block.dense is not None:
            dense = block.dense
            finite_values = np.isfinite(dense)
            lo, hi = finite_range(dense, axis=1, finite=finite_values)
            finite = finite_values.all(axis=1)
            if not bits:
                payloads = missing_as_nan(dense)
                self.progress.advance(payloads.nbytes)
                return payloads, lo, hi, finite
            vmin, vmax = arith.bounds(lo, hi)
            payloads = arith.encode(dense, vmin[:, None], vmax[:, None], bits=bits)
            self.progress.advance(payloads.nbytes)
            return payloads, vmin, vmax, finite
        lo, hi = _with_implicit_zeros(block.summary, self.n_cells)
        vmin, vmax = arith.bounds(lo, hi) if bits else (lo, hi)
        zero = (
            arith.encode(np.zeros(vmin.shape, np.float32), vmin, vmax, bits=bits)
            if bits
            else np.zeros(vmin.shape, self.dtype)
        )[:, None]
        payloads = self._buffer(block.genes.shape[0])
        flat = payloads.reshape(-1)
        if not block.part_rows:
            payloads[:] = zero
        share = payloads.nbytes // max(1, len(block.parts))  # each part's, for progress

        def encode_part(part: Callable[[], StoredValues], rows: tuple[int, int] | None) -> None:
            if rows is not None:  # this part's share, while it is in the cache
                payloads[:, rows[0] : rows[1]] = zero
            gene, row, value = part()
            gene = gene.astype(np.intp, copy=False)
            at = gene * self.n_cells
            at += row
            flat[at] = (
                arith.encode(value, vmin, vmax, bits=bits, index=gene)
                if bits
                else missing_as_nan(value)
            )
            self.progress.advance(share)

        rows = block.part_rows or [None] * len(block.parts)
        for _ in self.pool.map(encode_part, block.parts, rows):
            pass
        self.progress.advance(payloads.nbytes - share * len(block.parts))
        return payloads, vmin, vmax, ~block.summary.non_finite

    def _buffer(self, n_genes: int) -> np.ndarray:
        nbytes = n_genes * self.n_cells * self.dtype.itemsize
        slot, self._next = self._next, 1 - self._next
        if self._buffers[slot].nbytes < nbytes:
            self._buffers[slot] = np.empty(nbytes, dtype=np.uint8)
        return self._buffers[slot][:nbytes].view(self.dtype).reshape(n_genes, self.n_cells)


def _with_implicit_zeros(summary: StoredSummary, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite min and max per gene, counting implicit zeros (NaN where no finite value)."""
    implicit_zero = summary.count < n_cells
    lo = np.where(implicit_zero, np.minimum(summary.lo, 0.0), summary.lo).astype(np.float64)
    hi = np.where(implicit_zero, np.maximum(summary.hi, 0.0), summary.hi).astype(np.float64)
    none = ~np.isfinite(lo)
    lo[none] = np.nan
    hi[none] = np.nan
    return lo, hi


@contextmanager
def gene_stream(
    genes: GeneSource,
    *,
    root: Path,
    n_cells: int,
    settings: ExportSettings,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Iterator[ReadAhead[GeneBlock]]:
    """Start producing the blocks of genes :func:`write_var` writes, in a thread, from now on.

    The first block's pass over the matrix (value summaries, row runs, or spilling a
    backed matrix) then runs while the rest of the export is prepared. Spilled values go
    to a folder under ``root`` (the staging folder), removed on exit.
    """
    bits = settings.var_quantization
    spill_dir = root / ".spill"
    blocks = ReadAhead(
        gene_blocks(
            genes.matrix,
            genes.columns,
            n_cells=n_cells,
            payload_bytes=np.dtype(QUANT_DTYPE[bits] if bits else np.float32).itemsize,
            memory_budget=memory_budget,
            spill_dir=spill_dir,
        )
    )
    try:
        with blocks:
            yield blocks
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)


def write_var(
    writer: PayloadWriter,
    genes: GeneSource,
    blocks: Iterator[GeneBlock],
    *,
    n_cells: int,
    settings: ExportSettings,
    progress: ExportProgress,
    times: dict[str, float],
) -> None:
    """Write one payload per gene of ``blocks`` (from :func:`gene_stream`) and the var manifest.

    ``progress`` advances by the payload bytes encoded (the writer counts them again once
    written); ``times`` gets the seconds spent waiting for blocks
    (``genes.read``), encoding them (``genes.encode``) and waiting for the writer
    (``genes.write``).
    """
    layout, comp, bits = settings.layout, settings.compression, settings.var_quantization
    arith = settings.arithmetic
    ext = EXT[QUANT_DTYPE[bits]] if bits else EXT["float32"]
    fields: list[list] = [[] for _ in genes.names]
    non_finite_at: list[int] = []
    waited = {"genes.read": 0.0, "genes.encode": 0.0, "genes.write": 0.0}
    with ThreadPoolExecutor(writer.n_jobs) as pool:
        encode = _BlockEncoder(n_cells, bits, arith, pool, progress)
        previous = writer.mark()
        start = time.perf_counter()
        for block in blocks:
            encoding = time.perf_counter()
            waited["genes.read"] += encoding - start
            payloads, vmin, vmax, finite = encode(block)
            files = []
            for j, index in enumerate(block.genes.tolist()):
                name = genes.names[index]
                files.append((layout.field_path("var_values", index, name, ext), payloads[j]))
                bounds = [float(vmin[j]), float(vmax[j])] if bits else []
                fields[index] = [*layout.entry_head(index, name), *bounds]
            writer.write_many(files, run_length=bits is not None)
            non_finite_at.extend(block.genes[~finite].tolist())
            writing = time.perf_counter()
            waited["genes.encode"] += writing - encoding
            # at most two blocks of payloads in memory: this one and the one being written
            writer.wait_for(previous)
            previous = writer.mark()
            start = time.perf_counter()
            waited["genes.write"] += start - writing
    times.update(waited)
    non_finite = [genes.names[i] for i in sorted(non_finite_at)]
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
    write_json(writer.root / VAR_MANIFEST, dumps_manifest(manifest))
