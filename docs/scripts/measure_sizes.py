"""Measure export size and time for the quantization/compression table of the user guide.

Not run by the docs build (the large dataset takes minutes); the user guide quotes its
output. Usage::

    python docs/scripts/measure_sizes.py                      # pbmc68k_reduced only
    python /path/to/make_data.py --cells 100000 --genes 2000 --out synth.h5ad
    python docs/scripts/measure_sizes.py synth.h5ad           # and a larger dataset

Prints one Markdown table per dataset: total bytes on disk, the share of gene payloads
(``var/``), wall time of the export, and the largest error of a decoded gene value relative
to that gene's value range.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import cellucid as cl

CONFIGS = [
    ("float32, uncompressed (default)", {}),
    ("float32, gzip 6", {"compression": 6}),
    ("16-bit, uncompressed", {"var_quantization": 16, "obs_continuous_quantization": 16}),
    (
        "16-bit, gzip 6",
        {"var_quantization": 16, "obs_continuous_quantization": 16, "compression": 6},
    ),
    ("8-bit, uncompressed", {"var_quantization": 8, "obs_continuous_quantization": 8}),
    ("8-bit, gzip 1", {"var_quantization": 8, "obs_continuous_quantization": 8, "compression": 1}),
    ("8-bit, gzip 6", {"var_quantization": 8, "obs_continuous_quantization": 8, "compression": 6}),
    ("8-bit, gzip 9", {"var_quantization": 8, "obs_continuous_quantization": 8, "compression": 9}),
]


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 10e6 else f"{n / 1e3:,.0f} kB"


def max_relative_error(adata, out: Path, n_genes: int = 50) -> float:
    """Largest |decoded - original| / (max - min) over the first ``n_genes`` genes."""
    names = list(adata.var_names[:n_genes])
    back = cl.ex.read(out, var_names=names)
    x = adata[:, names].X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    x = x.astype(np.float32)
    y = back.X.toarray() if hasattr(back.X, "toarray") else np.asarray(back.X)
    span = x.max(axis=0) - x.min(axis=0)
    span[span == 0] = 1
    return float((np.abs(y - x) / span).max())


def measure(adata, label: str) -> None:
    print(f"\n### {label}: {adata.n_obs:,} cells x {adata.n_vars:,} genes\n")
    print("| storage | total | of default | genes | time | max error / range |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in CONFIGS:
            out = Path(tmp) / "ds"
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NaN/Inf in obs: expected, the export warns
                cl.ex.export(adata, out, overwrite=True, progress=False, **kwargs)
            seconds = time.perf_counter() - start
            total, genes = du(out), du(out / "var")
            base = base or total
            err = max_relative_error(adata, out)
            print(
                f"| {name} | {human(total)} | {100 * total / base:.0f}% "
                f"| {human(genes)} | {seconds:.1f} s | {err:.1e} |"
            )


def main() -> None:
    import scanpy as sc

    print(f"cellucid {cl.__version__}, {os.cpu_count()} cores")
    measure(sc.datasets.pbmc68k_reduced(), "pbmc68k_reduced")
    for path in sys.argv[1:]:
        import anndata as ad

        measure(ad.read_h5ad(path), Path(path).name)


if __name__ == "__main__":
    main()
