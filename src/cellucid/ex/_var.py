"""Writer of ``var_manifest.json`` and ``var/``: one payload per gene, streamed in column blocks."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse

from .._format import EXT, MANIFEST_FORMAT, QUANT_DTYPE, VAR_DIR, VAR_MANIFEST, gz
from ..pp._quantize import finite_range
from ._arithmetic import Arithmetic
from ._collect import GeneSource
from ._genes import DEFAULT_MEMORY_BUDGET, gene_blocks
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
    blocks = gene_blocks(genes.matrix, genes.columns, n_cells=n_cells, memory_budget=memory_budget)
    fields: list[list] = []
    non_finite: list[str] = []
    with progress_bar(total=len(genes.names), desc="genes", unit="gene", enabled=progress) as bar:
        for block in blocks:
            dense, csc = block.dense, block.csc
            first = len(fields)
            if csc is None:
                lo, hi = finite_range(dense, axis=1)
                bad = ~np.isfinite(dense).all(axis=1)
            else:
                lo, hi = _sparse_range(csc, n_cells)
                bad = np.zeros(csc.shape[1], dtype=bool)
                bad_data = ~np.isfinite(csc.data)
                if bad_data.any():
                    bad[np.searchsorted(csc.indptr, np.flatnonzero(bad_data), side="right") - 1] = (
                        True
                    )
            if bits:
                vmin, vmax = arith.bounds(lo, hi)
                codes = (
                    arith.encode(dense, vmin[:, None], vmax[:, None], bits=bits)
                    if csc is None
                    else None
                )
                if csc is not None:
                    per_value = np.repeat(np.arange(csc.shape[1]), np.diff(csc.indptr))
                    data_codes = arith.encode(csc.data, vmin[per_value], vmax[per_value], bits=bits)
                    zero_codes = arith.encode(
                        np.zeros(csc.shape[1], np.float32), vmin, vmax, bits=bits
                    )
            n_block = dense.shape[0] if csc is None else csc.shape[1]
            for j in range(n_block):
                name = genes.names[first + j]
                if bad[j]:
                    non_finite.append(name)
                if csc is None:
                    payload = (
                        codes[j]
                        if bits
                        else np.where(np.isinf(dense[j]), np.float32(np.nan), dense[j])
                    )
                else:
                    s, e = csc.indptr[j], csc.indptr[j + 1]
                    if bits:
                        payload = np.full(n_cells, zero_codes[j], dtype=QUANT_DTYPE[bits])
                        payload[csc.indices[s:e]] = data_codes[s:e]
                    else:
                        payload = np.zeros(n_cells, dtype=np.float32)
                        values = csc.data[s:e]
                        payload[csc.indices[s:e]] = np.where(np.isinf(values), np.nan, values)
                index = first + j
                writer.write(f"{VAR_DIR}/{layout.stem(index, name)}.values.{ext}", payload)
                fields.append(
                    [
                        *layout.entry_head(index, name),
                        *([float(vmin[j]), float(vmax[j])] if bits else []),
                    ]
                )
            bar.update(n_block)
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
