"""Realistic test data built in code, and the shared reference folder: helpers the tests import."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse


def shared_dir() -> Path | None:
    """The ``shared/`` folder beside the checkout (or ``$CELLUCID_SHARED``), if present."""
    env = os.environ.get("CELLUCID_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared")
    return next((p for p in candidates if p.is_dir()), None)


def knn_graph(latent: np.ndarray, k: int = 8) -> sparse.csr_matrix:
    """A symmetric kNN graph with zero diagonal and (0, 1] weights, like scanpy's connectivities."""
    d = ((latent[:, None, :] - latent[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    n = latent.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    idx = np.argsort(d, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    dist = d[rows, idx.ravel()]
    w = np.exp(-dist / (np.median(dist) + 1e-12)).astype(np.float32)
    g = sparse.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    return g.maximum(g.T).tocsr()


def files_under(root: Path | str, *, without: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` (its path relative to ``root``, with ``/``) and its bytes; ``without``: names left out."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in without
    }


def make_adata(n_cells: int = 300, n_genes: int = 40, *, seed: int = 0) -> ad.AnnData:
    """A small realistic AnnData: clustered embeddings, sparse log-counts, kNN graph, awkward obs."""
    rng = np.random.default_rng(seed)
    n_types = 5
    labels = rng.integers(0, n_types, n_cells)
    centers = rng.normal(0, 6, (n_types, 10))
    latent = (centers[labels] + rng.normal(0, 1, (n_cells, 10))).astype(np.float32)
    umap = (latent[:, :2] * 1.7 + 3).astype(np.float32)
    umap3 = np.c_[latent[:, :3] * [1, 0.5, 2]].astype(np.float32)
    counts = rng.poisson(0.4, (n_cells, n_genes)).astype(np.float32)
    counts[:, 0] = 0  # an all-zero gene
    X = sparse.csr_matrix(np.log1p(counts))
    cell_type = pd.Categorical.from_codes(labels, categories=[f"type {i}" for i in range(n_types)])
    score = rng.normal(size=n_cells)
    score[:3] = np.nan
    score[3] = np.inf
    obs = pd.DataFrame(
        {
            "cell_type": cell_type,
            "is_doublet": rng.random(n_cells) < 0.1,
            "batch": rng.choice(["b1", "b0", "b2"], n_cells).astype(object),
            "leiden": pd.Categorical(labels % 3),
            "score": score,
            "n_genes": (counts > 0).sum(1).astype(np.int64),
            "all_nan": np.full(n_cells, np.nan),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(
        {"symbol": [f"sym{i}" for i in range(n_genes)]},
        index=[f"GENE{i:03d}" for i in range(n_genes)],
    )
    var.index = [*var.index[:-2], "HLA-A/B", "MT CO1"]
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["X_pca"] = latent
    adata.obsm["X_umap"] = umap
    adata.obsm["X_umap_3d"] = umap3
    adata.obsm["velocity_umap"] = rng.normal(0, 0.3, (n_cells, 2)).astype(np.float32)
    adata.obsm["T_fwd_umap_3d"] = rng.normal(0, 0.3, (n_cells, 3)).astype(np.float32)
    adata.obsp["connectivities"] = knn_graph(latent)
    adata.uns["neighbors"] = {"connectivities_key": "connectivities"}
    adata.layers["counts"] = sparse.csr_matrix(counts)
    return adata
