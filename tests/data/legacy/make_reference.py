"""Regenerate the legacy-layout reference exports in this folder.

Run with the interpreter of a SEPARATE virtualenv that has the original
``cellucid==0.0.9`` from PyPI installed (see README.md in this folder)::

    python -m venv /work/venv-ref
    /work/venv-ref/bin/pip install cellucid==0.0.9 anndata h5py
    /work/venv-ref/bin/python tests/data/legacy/make_reference.py

The script

1. builds a small deterministic AnnData (``numpy.random.default_rng(0)``),
2. writes it to ``input.h5ad`` and reads it back,
3. calls the original ``cellucid.prepare_data.prepare`` on the read-back
   object once per variant (``f32``, ``q8_gz6``, ``q16_u16``), writing
   into ``<variant>/`` next to this file,
4. writes ``variants.json`` with the exact non-array keyword arguments.

Only the public ``prepare`` function of the reference package is called.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib import metadata
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

HERE = Path(__file__).resolve().parent
REFERENCE_VERSION = "0.0.9"

N_CELLS = 300
N_PCS = 10
K_NEIGHBORS = 8
CELL_TYPES = ["T cell", "B cell", "NK", "Monocyte", "DC", "Platelet"]
# "Platelet" has 5 cells (< centroid_min_points=10); 5 cells get NaN.
CELL_TYPE_SIZES = [80, 70, 60, 45, 35, 5]
N_CELL_TYPE_MISSING = N_CELLS - sum(CELL_TYPE_SIZES)
GENE_NAMES = [f"GENE{i:02d}" for i in range(19)] + ["HLA-A"]
ALL_ZERO_GENE = "GENE18"  # exercises the constant-value (max == min) path

# Array arguments: prepare() keyword -> where the array lives in input.h5ad
ARRAY_ARGUMENTS = {
    "latent_space": "obsm/X_pca",
    "obs": "obs",
    "var": "var",
    "gene_expression": "X",
    "connectivities": "obsp/connectivities",
    "X_umap_2d": "obsm/X_umap",
    "X_umap_3d": "obsm/X_umap_3d",
    "vector_fields": {"velocity_umap": "obsm/velocity_umap"},
}

COMMON_KWARGS = {"dataset_name": "legacy-ref", "force": True}
VARIANTS = {
    "f32": {
        "var_quantization": None,
        "obs_continuous_quantization": None,
        "obs_categorical_dtype": "auto",
        "compression": None,
    },
    "q8_gz6": {
        "var_quantization": 8,
        "obs_continuous_quantization": 8,
        "obs_categorical_dtype": "auto",
        "compression": 6,
    },
    "q16_u16": {
        "var_quantization": 16,
        "obs_continuous_quantization": 16,
        "obs_categorical_dtype": "uint16",
        "compression": None,
    },
}


def build_adata() -> ad.AnnData:
    rng = np.random.default_rng(0)
    n = N_CELLS

    # --- cluster labels (shuffled); -1 marks a missing cell_type ---------
    labels = np.concatenate(
        [np.full(size, i) for i, size in enumerate(CELL_TYPE_SIZES)]
        + [np.full(N_CELL_TYPE_MISSING, -1)]
    )
    labels = labels[rng.permutation(n)]
    # cells without a cell_type still belong to some cluster geometrically
    geo = np.where(labels >= 0, labels, rng.integers(0, len(CELL_TYPES), n))

    # --- latent space and embeddings ---------------------------------------
    pca_centers = rng.normal(0.0, 4.0, (len(CELL_TYPES), N_PCS))
    x_pca = (pca_centers[geo] + rng.normal(0.0, 1.0, (n, N_PCS))).astype(np.float32)

    umap_centers = rng.normal(0.0, 1.0, (len(CELL_TYPES), 2)) * np.array([8.0, 3.0]) + [
        5.0,
        -2.0,
    ]
    x_umap = (umap_centers[geo] + rng.normal(0.0, 0.7, (n, 2))).astype(np.float32)

    umap3_centers = rng.normal(0.0, 5.0, (len(CELL_TYPES), 3))
    x_umap_3d = (umap3_centers[geo] + rng.normal(0.0, 0.8, (n, 3))).astype(np.float32)

    velocity = rng.normal(0.0, 0.4, (n, 2)).astype(np.float32)

    # --- expression: log1p of gamma "counts", ~30% nonzero ------------------
    n_genes = len(GENE_NAMES)
    nonzero = rng.random((n, n_genes)) < 0.3
    # make a few genes cluster-specific so the data is not pure noise
    for g in range(6):
        nonzero[:, g] |= (geo == g) & (rng.random(n) < 0.6)
    nonzero[:, GENE_NAMES.index(ALL_ZERO_GENE)] = False
    raw = rng.gamma(2.0, 2.0, (n, n_genes))
    dense = np.where(nonzero, np.log1p(raw), 0.0).astype(np.float32)
    x = sparse.csr_matrix(dense)
    x.eliminate_zeros()
    x.sort_indices()

    # --- kNN graph on X_pca (brute force), symmetrized with max -------------
    d2 = ((x_pca[:, None, :].astype(np.float64) - x_pca[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nbrs = np.argsort(d2, axis=1, kind="stable")[:, :K_NEIGHBORS]
    rows = np.repeat(np.arange(n), K_NEIGHBORS)
    cols = nbrs.ravel()
    dist = np.sqrt(d2[rows, cols])
    sigma = np.median(dist)
    weights = np.exp(-((dist / sigma) ** 2)).astype(np.float32)
    w = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n), dtype=np.float32)
    w = w.maximum(w.T).tocsr().astype(np.float32)
    w.setdiag(0)
    w.eliminate_zeros()
    w.sort_indices()
    assert (w != w.T).nnz == 0 and w.diagonal().sum() == 0

    # --- obs ------------------------------------------------------------------
    cell_type = pd.Categorical.from_codes(labels, categories=CELL_TYPES)
    is_doublet = rng.random(n) < 0.1
    score = rng.normal(0.5, 0.2, n)
    score[rng.choice(n, 2, replace=False)] = np.nan
    n_genes_col = np.asarray((x > 0).sum(axis=1)).ravel().astype(np.int64)
    # batch is a plain object column; values not in sorted order of appearance
    batch = np.array(["b2", "b0", "b1"], dtype=object)[rng.integers(0, 3, n)]
    leiden = pd.Categorical(rng.integers(0, 8, n), categories=list(range(8)))

    obs = pd.DataFrame(
        {
            "cell_type": cell_type,
            "is_doublet": is_doublet,
            "score": score,
            "n_genes": n_genes_col,
            "batch": batch,
            "leiden": leiden,
        },
        index=pd.Index([f"cell{i:03d}" for i in range(n)]),
    )
    var = pd.DataFrame(
        {"symbol": [g.lower() for g in GENE_NAMES]},
        index=pd.Index(GENE_NAMES),
    )

    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.obsm["X_umap"] = x_umap
    adata.obsm["X_umap_3d"] = x_umap_3d
    adata.obsm["X_pca"] = x_pca
    adata.obsm["velocity_umap"] = velocity
    adata.obsp["connectivities"] = w
    return adata


def check_roundtrip(a: ad.AnnData, b: ad.AnnData) -> None:
    """The object prepare() sees must equal what a test reads from input.h5ad."""
    assert list(a.obs_names) == list(b.obs_names)
    assert list(a.var_names) == list(b.var_names)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert sparse.issparse(b.X) and b.X.format == "csr" and b.X.dtype == np.float32
    assert (a.X != b.X).nnz == 0
    for key in a.obsm:
        np.testing.assert_array_equal(a.obsm[key], b.obsm[key])
        assert a.obsm[key].dtype == b.obsm[key].dtype
    c = b.obsp["connectivities"]
    assert c.format == "csr" and c.dtype == np.float32
    assert (a.obsp["connectivities"] != c).nnz == 0


def main() -> int:
    version = metadata.version("cellucid")
    if version != REFERENCE_VERSION:
        print(
            f"error: need the original cellucid=={REFERENCE_VERSION} "
            f"(found {version}); run with the reference venv",
            file=sys.stderr,
        )
        return 2
    from cellucid.prepare_data import prepare

    built = build_adata()
    h5ad_path = HERE / "input.h5ad"
    # keep the object column "batch" an object column on disk
    built.write_h5ad(h5ad_path, convert_strings_to_categoricals=False)
    adata = ad.read_h5ad(h5ad_path)
    check_roundtrip(built, adata)

    recorded = {}
    for name, options in VARIANTS.items():
        out_dir = HERE / name
        if out_dir.exists():
            shutil.rmtree(out_dir)
        kwargs = {**COMMON_KWARGS, **options}
        # Fresh copies for every call: the reference scales a float32 vector
        # field IN PLACE (``vec *= scale``), i.e. it mutates the caller's
        # obsm["velocity_umap"]; without copies later variants would see
        # already-scaled vectors.
        work = adata.copy()
        arrays = {
            "latent_space": work.obsm["X_pca"],
            "obs": work.obs,
            "var": work.var,
            "gene_expression": work.X,
            "connectivities": work.obsp["connectivities"],
            "X_umap_2d": work.obsm["X_umap"],
            "X_umap_3d": work.obsm["X_umap_3d"],
            "vector_fields": {"velocity_umap": work.obsm["velocity_umap"]},
        }
        prepare(**arrays, out_dir=out_dir, **kwargs)
        recorded[name] = {"out_dir": name, **kwargs}
        check_roundtrip(built, adata)  # the pristine object is untouched

    info = {
        "reference": f"cellucid=={REFERENCE_VERSION} cellucid.prepare_data.prepare",
        "input": "input.h5ad",
        "note": (
            "Each variant was produced by prepare(**array_arguments, **kwargs) "
            "with out_dir=<this folder>/<kwargs['out_dir']>."
        ),
        "array_arguments": ARRAY_ARGUMENTS,
        "variants": recorded,
        "versions": {
            pkg: metadata.version(pkg)
            for pkg in ("cellucid", "numpy", "pandas", "scipy", "anndata", "h5py")
        },
    }
    (HERE / "variants.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print("reference outputs written to", HERE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
