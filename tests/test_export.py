"""``cl.ex.export``: every file kind, both layouts, decoded and checked against the input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _data import make_adata
from _decode import MAX_Q, decode
from scipy import sparse

import cellucid as cl

pytestmark = pytest.mark.filterwarnings(
    "ignore:obs\\[:UserWarning", "ignore:.*genes have NaN:UserWarning"
)

SETTINGS = {
    "f32": {},
    "q8_gz6": {"var_quantization": 8, "obs_continuous_quantization": 8, "compression": 6},
    "q16": {"var_quantization": 16, "obs_continuous_quantization": 16},
    "f32_gz1": {"compression": 1},
}


def step(bits: int | None, vmin: float, vmax: float) -> float:
    """One quantization step (plus float32 rounding) — the tolerance of a decoded value."""
    return (vmax - vmin) / MAX_Q[bits] + 1e-6 * max(1.0, abs(vmax), abs(vmin)) if bits else 0.0


def expected_normalized(coords: np.ndarray) -> tuple[np.ndarray, float]:
    x = np.asarray(coords, dtype=np.float64)
    lo, hi = x.min(0), x.max(0)
    extent = (hi - lo).max() or 1.0
    return (x - (lo + hi) / 2) * (2 / extent), 2 / extent


@pytest.mark.parametrize("layout", ["current", "legacy"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_export_decodes_to_the_input(
    adata: ad.AnnData, tmp_path: Path, layout: str, setting: str
) -> None:
    options = SETTINGS[setting]
    legacy_safe = adata[:, [n for n in adata.var_names if n not in ("HLA-A/B", "MT CO1")]].copy()
    data = adata if layout == "current" else legacy_safe
    before = data.copy()
    out = cl.ex.export(data, tmp_path / "ds", layout=layout, **options)
    dec = decode(out)
    assert dec.layout == layout
    # the caller's adata is untouched
    assert np.array_equal(data.obsm["X_umap"], before.obsm["X_umap"])
    assert np.array_equal(data.obsm["velocity_umap"], before.obsm["velocity_umap"])
    assert (data.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(data.obs, before.obs)

    n = data.n_obs
    ident = dec.identity
    assert ident["stats"]["n_cells"] == n and ident["stats"]["n_genes"] == data.n_vars
    assert ident["embeddings"]["available_dimensions"] == [2, 3]

    # points: normalized per embedding, float32 within rounding of the float64 transform
    scales = {}
    for dim, key in ((2, "X_umap"), (3, "X_umap_3d")):
        expected, scales[dim] = expected_normalized(data.obsm[key])
        np.testing.assert_allclose(dec.points[dim], expected, atol=2e-7)
        assert np.isclose(np.abs(dec.points[dim]).max(), 1.0)
    # vectors: same scale as their embedding, no centring
    assert sorted(dec.vectors) == ["T_fwd_umap", "velocity_umap"]
    assert ident["vector_fields"]["default_field"] == "velocity_umap"
    np.testing.assert_allclose(
        dec.vectors["velocity_umap"][2],
        data.obsm["velocity_umap"] * scales[2],
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        dec.vectors["T_fwd_umap"][3], data.obsm["T_fwd_umap_3d"] * scales[3], rtol=1e-6, atol=1e-7
    )

    # continuous obs: within one quantization step, missing where NaN/Inf
    bits = options.get("obs_continuous_quantization")
    head = 2 if layout == "current" else 1
    bounds = {e[head - 1]: e[head:] for e in dec.obs_manifest["_continuousFields"]}
    for key in ("score", "n_genes", "all_nan"):
        source = data.obs[key].to_numpy(dtype=np.float64)
        got = dec.continuous[key]
        finite = np.isfinite(source)
        assert np.isnan(got[~finite]).all()
        tol = step(bits, *bounds[key]) if bits else 0
        np.testing.assert_allclose(
            got[finite], source[finite].astype(np.float32), atol=tol, rtol=0 if bits else 1e-7
        )

    # categorical obs: codes point at the right labels
    for key in ("cell_type", "is_doublet", "batch", "leiden"):
        labels = np.array(dec.categories[key], dtype=object)
        codes = dec.codes[key]
        source = data.obs[key].astype(object).to_numpy()
        if layout == "legacy":
            source = np.array([str(v) for v in source], dtype=object)
        assert (labels[codes] == source).all()
    assert dec.categories["is_doublet"] == (
        [False, True] if layout == "current" else ["False", "True"]
    )
    assert dec.categories["leiden"] == ([0, 1, 2] if layout == "current" else ["0", "1", "2"])
    assert dec.categories["batch"] == ["b0", "b1", "b2"]

    # genes: names and values
    names = list(data.var_names)
    assert list(dec.genes) == names
    dense = data.X.toarray()
    vbits = options.get("var_quantization")
    head = 2 if layout == "current" else 1
    for j, entry in enumerate(dec.var_manifest["fields"]):
        tol = step(vbits, *entry[head:]) if vbits else 0
        np.testing.assert_allclose(dec.genes[names[j]], dense[:, j], atol=tol, rtol=0)

    # graph: the upper triangle of connectivities with its weights
    src, dst, w = dec.edges
    upper = sparse.triu(data.obsp["connectivities"], k=1).tocoo()
    order = np.lexsort((upper.col, upper.row))
    assert np.array_equal(src, upper.row[order]) and np.array_equal(dst, upper.col[order])
    if layout == "current":
        assert np.array_equal(w, upper.data[order].astype(np.float64))


def test_export_is_deterministic(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    options = SETTINGS["q8_gz6"]
    a = cl.ex.export(adata, tmp_path / "a", dataset_name="same", **options)
    b = cl.ex.export(adata, tmp_path / "b", dataset_name="same", n_jobs=1, **options)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (
        json.loads((a / "dataset_identity.json").read_text())["created_at"]
        == "2023-11-14T22:13:20Z"
    )


def test_centroids_and_outliers_match_a_direct_computation(
    adata: ad.AnnData, tmp_path: Path
) -> None:
    dec = decode(cl.ex.export(adata, tmp_path / "ds", centroid_min_points=10))
    codes = dec.codes["cell_type"]
    cats = dec.categories["cell_type"]
    coords, _ = expected_normalized(adata.obsm["X_umap_3d"])
    latent = adata.obsm["X_pca"].astype(np.float32)
    by_label = {c["category"]: c for c in dec.centroids["cell_type"]["3"]}
    for code, label in enumerate(cats):
        pts = coords[codes == code]
        center = pts.mean(0)
        dist = np.linalg.norm(pts - center, axis=1)
        keep = dist <= np.quantile(dist, 0.95)
        np.testing.assert_allclose(by_label[label]["position"], pts[keep].mean(0), atol=1e-12)
        assert by_label[label]["n_points"] == keep.sum()
        lat = latent[codes == code]
        d = np.linalg.norm(lat - lat.mean(0), axis=1)
        expected = np.searchsorted(np.sort(d), d, side="right") / len(d)
        np.testing.assert_allclose(dec.outliers["cell_type"][codes == code], expected, atol=1e-6)


def test_small_categories_get_no_centroid_and_nan_outliers(
    adata: ad.AnnData, tmp_path: Path
) -> None:
    adata.obs["rare"] = pd.Categorical(np.where(np.arange(adata.n_obs) < 5, "rare", "common"))
    dec = decode(cl.ex.export(adata, tmp_path / "ds", obs_keys=["rare"]))
    assert [c["category"] for c in dec.centroids["rare"]["2"]] == ["common"]
    rare = dec.codes["rare"] == dec.categories["rare"].index("rare")
    assert np.isnan(dec.outliers["rare"][rare]).all()
    assert not np.isnan(dec.outliers["rare"][~rare]).any()


def test_no_latent_writes_unavailable_quantiles(adata: ad.AnnData, tmp_path: Path) -> None:
    del adata.obsm["X_pca"]
    dec = decode(cl.ex.export(adata, tmp_path / "ds", obs_continuous_quantization=8))
    assert dec.obs_manifest["latent_key"] is None
    assert all(np.isnan(v).all() for v in dec.outliers.values())


def test_latent_prefers_scvi(adata: ad.AnnData, tmp_path: Path) -> None:
    adata.obsm["X_scVI"] = adata.obsm["X_pca"][:, :4].copy()
    dec = decode(cl.ex.export(adata, tmp_path / "ds"))
    assert dec.obs_manifest["latent_key"] == "X_scVI"


@pytest.mark.parametrize("dim", [1, 2])
def test_single_dimension_exports(tmp_path: Path, dim: int) -> None:
    adata = make_adata(60, 5)
    for key in ("X_umap", "X_umap_3d", "T_fwd_umap_3d", "velocity_umap"):
        del adata.obsm[key]
    adata.obsm[f"X_umap_{dim}d"] = np.linspace(-3, 5, 60 * dim).reshape(60, dim)
    adata.obsm["velocity_umap"] = np.ones((60, dim))
    dec = decode(cl.ex.export(adata, tmp_path / "ds"))
    assert dec.identity["embeddings"]["available_dimensions"] == [dim]
    assert list(dec.vectors["velocity_umap"]) == [dim]
    assert all(list(c) == [str(dim)] for c in dec.centroids.values())


def test_no_graph_no_genes_no_vectors(adata: ad.AnnData, tmp_path: Path) -> None:
    out = cl.ex.export(
        adata, tmp_path / "ds", connectivities_key=False, var_names=[], vector_fields=False
    )
    dec = decode(out)
    assert (
        dec.identity["stats"]["has_connectivity"] is False
        and dec.identity["stats"]["n_edges"] is None
    )
    assert dec.identity["stats"]["n_genes"] == 0
    assert "vector_fields" not in dec.identity
    assert (
        not (out / "var_manifest.json").exists()
        and not (out / "connectivity_manifest.json").exists()
    )


def test_graph_without_uns_neighbors_and_custom_key(adata: ad.AnnData, tmp_path: Path) -> None:
    adata.obsp["my_graph"] = adata.obsp.pop("connectivities")
    adata.uns["neighbors"] = {"connectivities_key": "my_graph"}
    assert decode(cl.ex.export(adata, tmp_path / "a")).edges is not None
    del adata.uns["neighbors"]
    assert decode(cl.ex.export(adata, tmp_path / "b")).edges is None
    assert (
        decode(cl.ex.export(adata, tmp_path / "c", connectivities_key="my_graph")).edges is not None
    )


def test_asymmetric_graph_is_symmetrized_with_a_warning(adata: ad.AnnData, tmp_path: Path) -> None:
    g = sparse.triu(adata.obsp["connectivities"], k=1).tocsr()
    adata.obsp["connectivities"] = g
    with pytest.warns(UserWarning, match="not symmetric") as record:
        dec = decode(cl.ex.export(adata, tmp_path / "ds"))
    assert dec.identity["stats"]["n_edges"] == g.nnz
    assert [w.filename for w in record if "symmetric" in str(w.message)] == [__file__]


def test_one_cell(tmp_path: Path) -> None:
    adata = ad.AnnData(
        X=np.array([[1.0, 0.0]], dtype=np.float32),
        obs=pd.DataFrame({"t": ["a"], "v": [2.5]}, index=["c"]),
    )
    adata.obsm["X_umap"] = np.array([[3.0, 4.0]])
    adata.obsp["connectivities"] = sparse.csr_matrix((1, 1))
    dec = decode(
        cl.ex.export(adata, tmp_path / "ds", var_quantization=8, obs_continuous_quantization=8)
    )
    assert np.array_equal(dec.points[2], [[0.0, 0.0]])
    assert dec.identity["stats"]["n_edges"] == 0 and dec.connectivity_manifest["max_neighbors"] == 0
    assert dec.continuous["v"][0] == 2.5
    assert dec.genes["0"][0] == 1.0


@pytest.mark.parametrize(
    ("n_categories", "dtype"), [(255, "uint8"), (256, "uint16"), (70_000, None)]
)
def test_many_categories(tmp_path: Path, n_categories: int, dtype: str | None) -> None:
    n = max(n_categories, 300)
    obs = pd.DataFrame(
        {"c": pd.Categorical([f"c{i % n_categories}" for i in range(n)])},
        index=[str(i) for i in range(n)],
    )
    adata = ad.AnnData(obs=obs)
    adata.obsm["X_umap"] = np.random.default_rng(0).normal(size=(n, 2))
    if dtype is None:
        with pytest.raises(ValueError, match=r"obs\['c'\] has 70,000 categories"):
            cl.ex.export(adata, tmp_path / "ds")
        assert not (tmp_path / "ds").exists()
        return
    dec = decode(cl.ex.export(adata, tmp_path / "ds"))
    assert dec.obs_manifest["_categoricalFields"][0][3] == dtype
    assert dec.identity["export_settings"]["obs_categorical_dtype"] == dtype
    assert len(dec.categories["c"]) == n_categories
    assert (np.array(dec.categories["c"])[dec.codes["c"]] == adata.obs["c"].to_numpy()).all()
    if n_categories > 255:
        with pytest.raises(ValueError, match="uint8 codes hold at most 255"):
            cl.ex.export(adata, tmp_path / "ds2", obs_categorical_dtype="uint8")
    forced = decode(cl.ex.export(adata, tmp_path / "ds3", obs_categorical_dtype="uint16"))
    assert forced.obs_manifest["_categoricalFields"][0][3] == "uint16"


def test_numeric_and_bool_categories_keep_their_json_type(tmp_path: Path) -> None:
    adata = make_adata(40, 3)
    adata.obs = pd.DataFrame(
        {
            "ints": pd.Categorical([1, 2, 10, 2] * 10),
            "floats": pd.Categorical([0.5, 1.5] * 20),
            "flags": [True, False] * 20,
            "nullable": pd.array([True, None] * 20, dtype="boolean"),
        },
        index=adata.obs_names,
    )
    dec = decode(cl.ex.export(adata, tmp_path / "ds"))
    assert dec.categories == {
        "ints": [1, 2, 10],
        "floats": [0.5, 1.5],
        "flags": [False, True],
        "nullable": [True],
    }
    assert (dec.codes["nullable"][1::2] == 255).all()


def test_gene_names_with_slashes_spaces_and_id_column(adata: ad.AnnData, tmp_path: Path) -> None:
    dec = decode(cl.ex.export(adata, tmp_path / "a", var_names=["HLA-A/B", "MT CO1", "GENE001"]))
    assert list(dec.genes) == ["HLA-A/B", "MT CO1", "GENE001"]
    np.testing.assert_array_equal(dec.genes["GENE001"], adata[:, "GENE001"].X.toarray().ravel())
    dec = decode(cl.ex.export(adata, tmp_path / "b", gene_id_column="symbol", var_names=["sym3"]))
    assert dec.var_manifest["var_gene_id_column"] == "symbol" and list(dec.genes) == ["sym3"]
    np.testing.assert_array_equal(dec.genes["sym3"], adata.X[:, 3].toarray().ravel())


@pytest.mark.parametrize("matrix", ["dense", "csc", "layer", "raw"])
def test_gene_sources(adata: ad.AnnData, tmp_path: Path, matrix: str) -> None:
    expected = adata.X.toarray()
    kwargs = {}
    if matrix == "dense":
        adata.X = expected.copy()
    elif matrix == "csc":
        adata.X = sparse.csc_matrix(adata.X)
    elif matrix == "layer":
        expected = adata.layers["counts"].toarray()
        kwargs["layer"] = "counts"
    else:
        adata.raw = adata.copy()
        adata._inplace_subset_var(adata.var_names[:3])
        kwargs["use_raw"] = True
    dec = decode(cl.ex.export(adata, tmp_path / "ds", var_quantization=16, **kwargs))
    assert len(dec.genes) == expected.shape[1]
    fields = dec.var_manifest["fields"]
    for j, values in enumerate(dec.genes.values()):
        np.testing.assert_allclose(values, expected[:, j], atol=step(16, *fields[j][2:]))


@pytest.mark.parametrize(
    "matrix", ["csr", "non-canonical csr", "csc", "non-canonical csc", "dense"]
)
@pytest.mark.parametrize("bits", [8, None])
@pytest.mark.parametrize("budget", [1_000, 6_000])  # one gene per block, or several
def test_gene_subset_in_any_order_across_many_blocks(
    adata: ad.AnnData, tmp_path: Path, matrix: str, bits: int | None, budget: int
) -> None:
    X = adata.X.toarray()
    X[5, 7], X[6, 9], X[7, 9] = np.nan, np.inf, -np.inf
    # exported genes (even columns) whose minimum is not 0: without implicit zeros,
    # or with negative values
    X[:, 12] = 2.5
    X[::3, 14] *= -1
    X[:, 16] = -1.0 - X[:, 16]
    X[:, 18] = 3.0 + X[:, 18]
    X[::7, 18] = np.nan
    expected = X.copy()
    fmt = matrix.split()[-1]
    if matrix == "dense":
        adata.X = X
    elif matrix.startswith("non-canonical"):  # unsorted indices, duplicates that add up
        m = sparse.csr_matrix(X if fmt == "csr" else X.T)
        coo = m.tocoo()
        order = np.lexsort((-coo.col, coo.row))
        values, indices = np.repeat(coo.data[order] / 2, 2), np.repeat(coo.col[order], 2)
        m = sparse.csr_matrix((values, indices, 2 * m.indptr), shape=m.shape)
        adata.X = m if fmt == "csr" else m.T  # the transpose of a CSR matrix is CSC
        assert adata.X.format == fmt and not adata.X.has_canonical_format
    else:
        adata.X = sparse.csr_matrix(X) if fmt == "csr" else sparse.csc_matrix(X)
    # every other gene, shuffled: blocks of genes span columns that are not exported
    wanted = list(np.random.default_rng(3).permutation(adata.var_names[::2]))
    out = cl.ex.export(
        adata, tmp_path / "ds", var_names=wanted, var_quantization=bits, memory_budget=budget
    )
    dec = decode(out)
    assert list(dec.genes) == wanted
    fields = dec.var_manifest["fields"]
    for j, name in enumerate(wanted):
        source = expected[:, adata.var_names.get_loc(name)]
        tol = step(bits, *fields[j][2:]) if bits else 0
        finite = np.isfinite(source)
        np.testing.assert_allclose(dec.genes[name][finite], source[finite], atol=tol, rtol=0)
        assert np.isnan(dec.genes[name][~finite]).all()
        if bits:  # the bounds are the finite minimum and maximum, implicit zeros included
            assert fields[j][2:] == [float(source[finite].min()), float(source[finite].max())]


def test_nan_genes_are_missing_with_one_warning(adata: ad.AnnData, tmp_path: Path) -> None:
    X = adata.X.toarray()
    X[0, 1] = np.nan
    X[1, 2] = np.inf
    adata.X = X
    with pytest.warns(UserWarning, match=r"2 genes have NaN or ±Inf"):
        dec = decode(cl.ex.export(adata, tmp_path / "ds", var_quantization=8))
    assert np.isnan(dec.genes["GENE001"][0]) and np.isnan(dec.genes["GENE002"][1])
    assert not np.isnan(dec.genes["GENE001"][1:]).any()


def test_constant_and_all_nan_fields(adata: ad.AnnData, tmp_path: Path) -> None:
    adata.obs["const"] = 7.0
    dec = decode(
        cl.ex.export(adata, tmp_path / "ds", obs_continuous_quantization=8, var_quantization=8)
    )
    assert (dec.continuous["const"] == 7.0).all()
    assert np.isnan(dec.continuous["all_nan"]).all()
    assert (dec.genes["GENE000"] == 0).all()  # all-zero gene
    entry = next(e for e in dec.obs_manifest["_continuousFields"] if e[1] == "const")
    assert entry[2:] == [7.0, 7.0]


def test_nan_warning_names_the_field(adata: ad.AnnData, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"obs\['score'\] has 3 NaN and 1 ±Inf") as record:
        cl.ex.export(adata, tmp_path / "ds", obs_keys=["score"])
    assert record[0].filename == __file__  # points at the export call, not at a worker thread


def test_manifest_path_uses_index_and_index_order_interleaves(
    adata: ad.AnnData, tmp_path: Path
) -> None:
    out = cl.ex.export(adata, tmp_path / "ds", obs_keys=["score", "cell_type", "n_genes"])
    obs = json.loads((out / "obs_manifest.json").read_text())
    assert [e[:2] for e in obs["_continuousFields"]] == [[0, "score"], [2, "n_genes"]]
    assert [e[:2] for e in obs["_categoricalFields"]] == [[1, "cell_type"]]
    assert (out / "obs" / "1.codes.u8").exists() and (out / "obs" / "2.values.f32").exists()


def test_identity_metadata(adata: ad.AnnData, tmp_path: Path) -> None:
    out = cl.ex.export(
        adata,
        tmp_path / "folder",
        dataset_name="My atlas (v2)",
        dataset_description="Lung cells",
        source_name="HLCA",
        source_url="https://example.org",
        source_citation="Someone 2023",
    )
    ident = json.loads((out / "dataset_identity.json").read_text())
    assert ident["id"] == "My-atlas-v2" and ident["name"] == "My atlas (v2)"
    assert ident["description"] == "Lung cells"
    assert ident["source"] == {
        "name": "HLCA",
        "url": "https://example.org",
        "citation": "Someone 2023",
    }
    assert ident["cellucid_data_version"] == cl.__version__
    assert list(ident)[:3] == ["version", "id", "name"]
    default = json.loads(
        (cl.ex.export(adata, tmp_path / "plain") / "dataset_identity.json").read_text()
    )
    assert (default["id"], default["name"]) == ("plain", "plain")


def test_catalog(adata: ad.AnnData, tmp_path: Path) -> None:
    root = tmp_path / "exports"
    cl.ex.export(adata, root / "b", dataset_description="second")
    cl.ex.export(adata[:50].copy(), root / "a", var_names=[])
    (root / "not-a-dataset").mkdir()
    path = cl.ex.write_catalog(root, default="b")
    catalog = json.loads(path.read_text())
    assert catalog == {
        "version": 1,
        "default": "b",
        "datasets": [
            {"id": "a", "path": "a/", "name": "a", "description": "", "n_cells": 50, "n_genes": 0},
            {
                "id": "b",
                "path": "b/",
                "name": "b",
                "description": "second",
                "n_cells": 300,
                "n_genes": 40,
            },
        ],
    }
    assert json.loads(cl.ex.write_catalog(root).read_text())["default"] == "a"
    with pytest.raises(ValueError, match="'nope' is not one of the datasets"):
        cl.ex.write_catalog(root, default="nope")
    with pytest.raises(ValueError, match="No dataset folders"):
        cl.ex.write_catalog(root / "not-a-dataset")


def test_overwrite_and_no_partial_output(adata: ad.AnnData, tmp_path: Path) -> None:
    target = tmp_path / "ds"
    cl.ex.export(adata, target)
    marker = (target / "dataset_identity.json").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        cl.ex.export(adata, target)
    # a failure in the middle of writing leaves the previous export intact and no staging folder
    original = adata.obsp["connectivities"].data[0]
    adata.obsp["connectivities"].data[0] = -1.0
    with pytest.raises(ValueError, match="negative or non-finite weights"):
        cl.ex.export(adata, target, overwrite=True)
    assert (target / "dataset_identity.json").read_bytes() == marker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    adata.obsp["connectivities"].data[0] = original
    cl.ex.export(adata, target, overwrite=True, var_names=[])
    assert not (target / "var_manifest.json").exists()


def test_failure_while_writing_genes_cleans_up(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellucid.ex import _export

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_export.GeneWriter, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        cl.ex.export(adata, tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("mutate", "kwargs", "error", "match"),
    [
        (
            lambda a: a.obsm.__delitem__("X_umap") or a.obsm.__delitem__("X_umap_3d"),
            {},
            KeyError,
            "No embedding for basis 'umap'.*X_pca",
        ),
        (
            lambda a: a.obsm["X_umap"].__setitem__((slice(0, 4), 0), np.nan),
            {},
            ValueError,
            r"NaN or Inf in 4 of 300 rows",
        ),
        (
            lambda a: a.obsm.__setitem__("X_umap", np.zeros((300, 5))),
            {},
            ValueError,
            "has 5 columns",
        ),
        (None, {"obs_keys": ["score", "nope"]}, KeyError, r"obs_keys \['nope'\].*columns are"),
        (None, {"var_names": ["GENE001", "nope"]}, KeyError, r"var_names \['nope'\]"),
        (None, {"latent_key": "X_nope"}, KeyError, "latent_key 'X_nope'.*keys are"),
        (None, {"connectivities_key": "nope"}, KeyError, "connectivities_key 'nope'"),
        (None, {"layer": "nope"}, KeyError, "layer 'nope'"),
        (None, {"gene_id_column": "nope"}, KeyError, "gene_id_column 'nope'"),
        (None, {"var_quantization": 12}, ValueError, "var_quantization must be None"),
        (None, {"compression": 11}, ValueError, "compression must be None"),
        (None, {"layout": "old"}, ValueError, "layout must be one of"),
        (None, {"dataset_id": "bad id/"}, ValueError, "not a valid id"),
        (None, {"centroid_outlier_quantile": 1.5}, ValueError, "centroid_outlier_quantile"),
        (
            lambda a: a.var.__setitem__("symbol", ["dup"] * a.n_vars),
            {"gene_id_column": "symbol"},
            ValueError,
            r"Gene names must be unique.*duplicated: \['dup'\]",
        ),
        (
            lambda a: a.var.__setitem__("symbol", [""] * a.n_vars),
            {"gene_id_column": "symbol"},
            ValueError,
            "gene names are empty",
        ),
        (
            lambda a: setattr(
                a,
                "obs",
                a.obs.assign(cell_type=a.obs["cell_type"].cat.rename_categories(lambda c: c + " ")),
            ),
            {},
            ValueError,
            "leading/trailing whitespace",
        ),
        (
            lambda a: a.obsm.__setitem__("velocity_umap", np.full((300, 2), np.inf)),
            {},
            ValueError,
            r"velocity_umap.*NaN or Inf",
        ),
        (None, {"use_raw": True}, ValueError, "adata.raw is None"),
        (
            None,
            {"layout": "legacy"},
            ValueError,
            "'HLA-A/B' and .* both become the file name|both become",
        ),
    ],
)
def test_bad_input_fails_before_writing(adata, tmp_path, mutate, kwargs, error, match) -> None:
    if mutate is not None:
        mutate(adata)
    if kwargs.get("layout") == "legacy":
        adata.var_names = [*adata.var_names[:-2], "A/B", "A_B"]
    with pytest.raises(error, match=match):
        cl.ex.export(adata, tmp_path / "ds", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_pbmc68k_reduced_exports(tmp_path: Path) -> None:
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    dec = decode(
        cl.ex.export(
            adata,
            tmp_path / "pbmc",
            compression=6,
            var_quantization=8,
            obs_continuous_quantization=8,
        )
    )
    assert dec.identity["stats"]["n_cells"] == 700 and dec.identity["stats"]["n_genes"] == 765
    assert dec.categories["bulk_labels"] == list(adata.obs["bulk_labels"].cat.categories)
    assert dec.identity["stats"]["n_edges"] == sparse.triu(adata.obsp["connectivities"], k=1).nnz


def test_cpu_count_does_not_change_output(adata: ad.AnnData, tmp_path: Path) -> None:
    a = cl.ex.export(adata, tmp_path / "a", dataset_name="x", n_jobs=1, compression=9)
    b = cl.ex.export(adata, tmp_path / "b", dataset_name="x", n_jobs=4, compression=9)
    for p in a.rglob("*.gz"):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()
    assert sorted(os.listdir(a / "var")) == sorted(os.listdir(b / "var"))
