"""Writer of ``var_manifest.json`` and ``var/``: one payload per gene, streamed in column blocks."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from scipy import sparse

from .._format import EXT, MANIFEST_FORMAT, QUANT_DTYPE, VAR_DIR, VAR_MANIFEST, gz
from ..pp._quantize import finite_range
from ._arithmetic import Arithmetic, missing_as_nan
from ._collect import GeneSource
from ._genes import DEFAULT_MEMORY_BUDGET, GeneBlock, gene_blocks
from ._payload import PayloadWriter, dumps_manifest, write_json
from ._progress import progress_bar
from ._settings import ExportSettings


def _sparse_range(block: sparse.csc_matrix, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite min and max per column, counting implicit zeros (NaN where no finite value)."""
    data = block.data.astype(np.float32, copy=False)
    nnz = np.diff(block.indptr)
    finite = np.isfinite(data)
    starts = block.indptr[:-1]
    has = nnz > 0
    lo = np.full(block.shape[1], np.inf)
    hi = np.full(block.shape[1], -np.inf)
    if data.size:
        lo[has] = np.minimum.reduceat(np.where(finite, data, np.inf), starts[has])
        hi[has] = np.maximum.reduceat(np.where(finite, data, -np.inf), starts[has])
    implicit_zero = nnz < n_cells
    lo[implicit_zero] = np.minimum(lo[implicit_zero], 0.0)
    hi[implicit_zero] = np.maximum(hi[implicit_zero], 0.0)
    none = ~np.isfinite(lo)
    lo[none] = np.nan
    hi[none] = np.nan
    return lo, hi


def _gene_payload(
    block: GeneBlock,
    j: int,
    n_cells: int,
    bits: int | None,
    arith: Arithmetic,
    vmin: float,
    vmax: float,
) -> np.ndarray:
    """Build gene ``j``'s payload (run on a writer thread, beside the compression)."""
    if block.csc is None:
        values = block.dense[j]
        return arith.encode(values, vmin, vmax, bits=bits) if bits else missing_as_nan(values)
    csc = block.csc
    rows = csc.indices[csc.indptr[j] : csc.indptr[j + 1]]
    values = csc.data[csc.indptr[j] : csc.indptr[j + 1]]
    if bits:
        # every implicit zero gets the code of 0; only the stored values are encoded
        zero = arith.encode(np.zeros(1, np.float32), vmin, vmax, bits=bits)[0]
        payload = np.full(n_cells, zero, dtype=QUANT_DTYPE[bits])
        payload[rows] = arith.encode(values, vmin, vmax, bits=bits)
    else:
        payload = np.zeros(n_cells, dtype=np.float32)
        payload[rows] = missing_as_nan(values)
    return payload


def _payloads(
    block: GeneBlock, n_cells: int, bits: int | None, arith: Arithmetic
) -> Iterator[tuple[Callable[[], np.ndarray], list[float], bool]]:
    """Yield, per gene, a function building its payload, its manifest bounds and whether its values were finite.

    Genes are encoded one at a time (temporaries stay the size of one gene), on the
    writer's threads.
    """
    dense, csc = block.dense, block.csc
    lo, hi = finite_range(dense, axis=1) if csc is None else _sparse_range(csc, n_cells)
    vmin, vmax = arith.bounds(lo, hi) if bits else (lo, hi)
    finite = np.isfinite(dense).all(axis=1) if csc is None else _columns_finite(csc)
    for j in range(block.n_genes):
        build = partial(_gene_payload, block, j, n_cells, bits, arith, vmin[j], vmax[j])
        yield build, ([float(vmin[j]), float(vmax[j])] if bits else []), bool(finite[j])


def _columns_finite(csc: sparse.csc_matrix) -> np.ndarray:
    """Whether every stored value of each column is finite."""
    finite = np.ones(csc.shape[1], dtype=bool)
    bad = np.flatnonzero(~np.isfinite(csc.data))
    finite[np.searchsorted(csc.indptr, bad, side="right") - 1] = False
    return finite


@contextmanager
def _removed_after(folder: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_var(
    writer: PayloadWriter,
    genes: GeneSource,
    *,
    n_cells: int,
    settings: ExportSettings,
    arith: Arithmetic,
    progress: bool,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> None:
    """Write one payload per gene and the var manifest, streaming blocks of genes within ``memory_budget``."""
    layout, comp, bits = settings.layout, settings.compression, settings.var_quantization
    ext = EXT[QUANT_DTYPE[bits]] if bits else EXT["float32"]
    spill_dir = writer.root / ".spill"  # inside the staging folder, removed before publishing
    blocks = gene_blocks(
        genes.matrix,
        genes.columns,
        n_cells=n_cells,
        memory_budget=memory_budget,
        spill_dir=spill_dir,
    )
    fields: list[list] = []
    non_finite: list[str] = []
    with (
        progress_bar(total=len(genes.names), desc="genes", unit="gene", enabled=progress) as bar,
        _removed_after(spill_dir),
    ):
        for block in blocks:
            for j, (payload, bounds, finite) in enumerate(_payloads(block, n_cells, bits, arith)):
                index = block.start + j
                name = genes.names[index]
                if not finite:
                    non_finite.append(name)
                writer.write(
                    f"{VAR_DIR}/{layout.stem(index, name)}.values.{ext}",
                    payload,
                    run_length=bits is not None,
                )
                fields.append([*layout.entry_head(index, name), *bounds])
            bar.update(block.n_genes)
    if non_finite:
        warnings.warn(
            f"{len(non_finite):,} genes have NaN or ±Inf values, exported as missing: "
            f"{non_finite[:10]}{' ...' if len(non_finite) > 10 else ''}",
            UserWarning,
            stacklevel=3,
        )
    schema = {
        "kind": "continuous",
        "pathPattern": gz(f"{VAR_DIR}/{layout.placeholder}.values.{ext}", comp),
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
