#!/usr/bin/env python3
"""The exporting process's memory when a 2-worker ``LocalCluster`` writes the genes.

The expression matrix is made on the workers (sparse chunks of rows from seeds, never a
file), so the shape can be an atlas' without a store to read: the client holds ``obs``
(three columns), one 2-D embedding, and what the export itself keeps. Prints the
client's peak RSS (this process: the scheduler of a ``LocalCluster`` runs in it too),
the workers' peak RSS, the bytes of every result that reached the client, the export's
time and its output. Run::

    python benchmarks/cluster_memory.py --cells 1000000 --genes 20000 --density 0.005
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from large_data import _count_gathered, _workers_peak_rss  # this folder: run as a script
from scipy import sparse


def _chunk(seed: int, n_rows: int, n_genes: int, density: float) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    nnz_per_row = rng.binomial(n_genes, density, n_rows)
    indptr = np.concatenate([[0], np.cumsum(nnz_per_row)])
    indices = np.concatenate([np.sort(rng.choice(n_genes, k, replace=False)) for k in nnz_per_row])
    data = np.log1p(rng.poisson(2.0, indptr[-1]) + 1).astype(np.float32)
    return sparse.csr_matrix((data, indices, indptr), shape=(n_rows, n_genes))


def main(argv: list[str] | None = None) -> int:
    import anndata as ad
    import dask.array as da
    import distributed
    import pandas as pd
    from dask import delayed

    import cellucid as cl

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--density", type=float, default=0.005)
    ap.add_argument("--rows-per-chunk", type=int, default=100_000)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "cellucid-cluster-memory"))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    client.run(lambda: __import__("cellucid.ex._distributed"))
    received = _count_gathered(distributed)
    n, rows = args.cells, args.rows_per_chunk
    starts = list(range(0, n, rows))
    chunks = [
        da.from_delayed(
            delayed(_chunk)(i, min(rows, n - s), args.genes, args.density),
            shape=(min(rows, n - s), args.genes),
            dtype=np.float32,
            meta=sparse.csr_matrix((0, 0), dtype=np.float32),
        )
        for i, s in enumerate(starts)
    ]
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {
            "cluster": pd.Categorical(rng.integers(0, 30, n).astype(str)),
            "n_counts": rng.gamma(2.0, 1000.0, n).astype(np.float32),
            "is_doublet": rng.random(n) < 0.05,
        },
        index=pd.RangeIndex(n).astype(str),
    )
    adata = ad.AnnData(
        X=da.concatenate(chunks),
        obs=obs,
        var=pd.DataFrame(index=[f"G{i}" for i in range(args.genes)]),
        obsm={"X_umap": rng.normal(size=(n, 2)).astype(np.float32)},
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shutil.rmtree(args.out, ignore_errors=True)
    start = time.perf_counter()
    cl.ex.export(
        adata,
        args.out,
        var_quantization=8,
        obs_continuous_quantization=8,
        compression=6,
        progress=False,
        dataset_name="memory",
    )
    seconds = time.perf_counter() - start
    workers = _workers_peak_rss(client)
    out = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    result = {
        "cells": n,
        "genes": args.genes,
        "density": args.density,
        "seconds": seconds,
        "client_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "client_rss_before_export": before,
        "client_bytes": received[0],
        "workers_peak_rss": workers,
        "output_bytes": out,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    client.close()
    cluster.close()
    shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
