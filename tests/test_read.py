"""Tests of ``cellucid.ex.read``: real exports read back, and export → read round trips."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import cellucid as cl
import cellucid.pp as clpp
from cellucid._format import safe_filename_component
from cellucid.ex import read

LEGACY_DATA = Path(__file__).parent / "data" / "legacy"
UPSTREAM_DATASETS = (
    "synthetic-cell-types-2d",
    "synthetic-development-3d",
    "synthetic-trajectory-1d",
)


# --- helpers, independent of the reader ---------------------------------------------------------


def shared_fixtures() -> Path:
    """The shared fixtures folder: ``$CELLUCID_SHARED/fixtures`` or ``shared/`` beside the checkout."""
    env = os.environ.get("CELLUCID_SHARED")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return base / "fixtures"


def upstream_dir(name: str) -> Path:
    path = shared_fixtures() / "upstream-demo" / "exports" / name
    if not (path / "dataset_identity.json").is_file():
        pytest.skip(f"shared fixture {path} is not available")
    return path


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def raw_payload(root: Path, relpath: str, dtype: str) -> np.ndarray:
    data = (root / relpath).read_bytes()
    if relpath.endswith(".gz"):
        data = gzip.decompress(data)
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))


def decode_codes(codes: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """The viewer's decoding, written out here: ``min + q * (max - min) / maxQuant``."""
    max_q = 254 if codes.dtype.itemsize == 1 else 65534
    out = vmin + codes.astype(np.float64) * (vmax - vmin) / max_q
    out[codes.astype(np.int64) == max_q + 1] = np.nan
    return out.astype(np.float32)


def column(x: object, j: int) -> np.ndarray:
    if sparse.issparse(x):
        return np.asarray(x[:, [j]].toarray()).ravel()
    return np.asarray(x)[:, j]


def dense(x: object) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def step(values: np.ndarray, bits: int | None) -> float:
    """One quantization step of these values (0 for float32), with float32 rounding room."""
    finite = values[np.isfinite(values)].astype(np.float32)
    if bits is None or finite.size == 0:
        return 0.0
    span = float(finite.max()) - float(finite.min())
    return span / (254 if bits == 8 else 65534) + 4 * np.finfo(np.float32).eps * max(
        1.0, float(np.abs(finite).max())
    )


def assert_within_step(got: np.ndarray, expected: np.ndarray, bits: int | None, what: str) -> None:
    expected = np.asarray(expected, dtype=np.float64).astype(np.float32)
    missing = ~np.isfinite(expected)
    assert got.dtype == np.float32, what
    np.testing.assert_array_equal(np.isnan(got), missing, err_msg=f"{what}: missing values")
    if bits is None:
        np.testing.assert_array_equal(got[~missing], expected[~missing], err_msg=what)
    else:
        err = np.abs(got[~missing].astype(np.float64) - expected[~missing].astype(np.float64))
        assert err.max(initial=0.0) <= step(expected, bits), f"{what}: off by {err.max()}"


# --- the upstream exports ------------------------------------------------------------------------


@pytest.fixture(params=UPSTREAM_DATASETS)
def upstream(request: pytest.FixtureRequest) -> Path:
    return upstream_dir(request.param)


def test_upstream_shapes_and_uns(upstream: Path) -> None:
    identity = load_json(upstream / "dataset_identity.json")
    stats = identity["stats"]
    adata = read(upstream)
    assert adata.shape == (stats["n_cells"], stats["n_genes"])
    assert adata.obs_names.tolist() == [str(i) for i in range(stats["n_cells"])]
    assert adata.obs.shape[1] == stats["n_obs_fields"]
    cellucid = adata.uns["cellucid"]
    assert set(cellucid) == {
        "identity",
        "centroids",
        "outlier_quantiles",
        "export_settings",
        "layout",
    }
    assert json.loads(cellucid["identity"]) == identity
    assert cellucid["export_settings"] == {
        k: v for k, v in identity["export_settings"].items() if v is not None
    }
    assert cellucid["layout"] == "current"
    for dim in identity["embeddings"]["available_dimensions"]:
        coords = adata.obsm[f"X_umap_{dim}d"]
        assert coords.shape == (stats["n_cells"], dim)
        assert coords.dtype == np.float32
        np.testing.assert_array_equal(
            coords.ravel(),
            raw_payload(upstream, identity["embeddings"]["files"][f"{dim}d"], "float32"),
        )
        assert np.abs(coords).max() <= 1.0 + 1e-6


def test_upstream_obs(upstream: Path) -> None:
    manifest = load_json(upstream / "obs_manifest.json")
    identity = load_json(upstream / "dataset_identity.json")
    adata = read(upstream)
    entries = {e[0]: e for e in manifest["_continuousFields"] + manifest["_categoricalFields"]}
    # the obs columns come in field index order
    assert adata.obs.columns.tolist() == [entries[i][1] for i in range(len(entries))]
    n_categorical = 0
    for index, key, min_, max_ in manifest["_continuousFields"]:
        codes = raw_payload(upstream, f"obs/{index}.values.u8.gz", "uint8")
        values = adata.obs[key].to_numpy()
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values, decode_codes(codes, min_, max_))
    for index, key, categories, codes_dtype, missing, centroids, omin, omax in manifest[
        "_categoricalFields"
    ]:
        n_categorical += 1
        col = adata.obs[key]
        assert isinstance(col.dtype, pd.CategoricalDtype)
        assert col.cat.categories.tolist() == categories
        codes = raw_payload(upstream, f"obs/{index}.codes.u8.gz", codes_dtype).astype(np.int64)
        np.testing.assert_array_equal(
            col.cat.codes.to_numpy(), np.where(codes == missing, -1, codes)
        )
        outliers = adata.uns["cellucid"]["outlier_quantiles"][key]
        expected = decode_codes(
            raw_payload(upstream, f"obs/{index}.outliers.u8.gz", "uint8"), omin, omax
        )
        np.testing.assert_array_equal(outliers, expected)
        by_dim = adata.uns["cellucid"]["centroids"][key]
        assert sorted(by_dim) == sorted(centroids)
        for dim, items in centroids.items():
            frame = by_dim[dim]
            assert frame["category"].tolist() == [item["category"] for item in items]
            assert frame["n_points"].tolist() == [item["n_points"] for item in items]
            np.testing.assert_array_equal(
                frame[list("xyz"[: int(dim)])].to_numpy(),
                np.array([item["position"] for item in items]),
            )
    assert n_categorical == identity["stats"]["n_categorical_fields"]


def test_upstream_genes(upstream: Path) -> None:
    manifest = load_json(upstream / "var_manifest.json")
    adata = read(upstream)
    assert adata.var_names.tolist() == [f[1] for f in sorted(manifest["fields"])]
    assert adata.X.dtype == np.float32
    for index, name, min_, max_ in manifest["fields"]:
        codes = raw_payload(upstream, f"var/{index}.values.u8.gz", "uint8")
        np.testing.assert_array_equal(column(adata[:, name].X, 0), decode_codes(codes, min_, max_))
    # sparse exactly when more than half the values are zero
    n_zero = adata.X.size - np.count_nonzero(dense(adata.X))
    assert sparse.issparse(adata.X) == (2 * n_zero > adata.X.size)


def test_upstream_connectivities(upstream: Path) -> None:
    manifest = load_json(upstream / "connectivity_manifest.json")
    adata = read(upstream)
    graph = adata.obsp["connectivities"]
    assert sparse.issparse(graph)
    assert graph.format == "csr"
    assert graph.dtype == np.float64
    assert graph.shape == (adata.n_obs, adata.n_obs)
    assert graph.nnz == 2 * manifest["n_edges"]
    assert (graph != graph.T).nnz == 0
    assert graph.diagonal().max() == 0
    upper = sparse.triu(graph, k=1).tocoo()
    order = np.lexsort((upper.col, upper.row))
    np.testing.assert_array_equal(
        upper.row[order], raw_payload(upstream, manifest["sourcesPath"], "uint16")
    )
    np.testing.assert_array_equal(
        upper.col[order], raw_payload(upstream, manifest["destinationsPath"], "uint16")
    )
    np.testing.assert_array_equal(
        upper.data[order], raw_payload(upstream, manifest["weightsPath"], "float64")
    )
    degree = np.diff(graph.indptr)
    assert degree.max() == manifest["max_neighbors"]


def test_upstream_vector_fields(upstream: Path) -> None:
    identity = load_json(upstream / "dataset_identity.json")
    adata = read(upstream)
    fields = identity.get("vector_fields", {}).get("fields", {})
    expected_keys = {
        f"{fid}_{d}d" for fid, meta in fields.items() for d in meta["available_dimensions"]
    }
    embedding_keys = {f"X_umap_{d}d" for d in identity["embeddings"]["available_dimensions"]}
    assert set(adata.obsm) == expected_keys | embedding_keys
    for fid, meta in fields.items():
        for dim in meta["available_dimensions"]:
            vectors = adata.obsm[f"{fid}_{dim}d"]
            assert vectors.shape == (identity["stats"]["n_cells"], dim)
            assert vectors.dtype == np.float32
            np.testing.assert_array_equal(
                vectors.ravel(), raw_payload(upstream, meta["files"][f"{dim}d"], "float32")
            )


def test_upstream_gene_options() -> None:
    root = upstream_dir("synthetic-development-3d")
    full = read(root)
    names = full.var_names[[7, 2, 5]].tolist()
    subset = read(root, var_names=names)
    assert subset.var_names.tolist() == names
    np.testing.assert_array_equal(dense(subset.X), dense(full[:, names].X))
    pd.testing.assert_frame_equal(subset.obs, full.obs)

    no_genes = read(root, genes=False)
    assert no_genes.X is None
    assert no_genes.var_names.tolist() == full.var_names.tolist()
    pd.testing.assert_frame_equal(no_genes.obs, full.obs)
    assert (no_genes.obsp["connectivities"] != full.obsp["connectivities"]).nnz == 0

    with pytest.raises(KeyError, match="NOT_A_GENE"):
        read(root, var_names=[names[0], "NOT_A_GENE"])


def test_upstream_writes_to_h5ad(upstream: Path, tmp_path: Path) -> None:
    adata = read(upstream)
    adata.write_h5ad(tmp_path / "back.h5ad")
    back = ad.read_h5ad(tmp_path / "back.h5ad")
    pd.testing.assert_frame_equal(back.obs, adata.obs)
    np.testing.assert_array_equal(dense(back.X), dense(adata.X))


# --- errors --------------------------------------------------------------------------------------


def test_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset_identity\.json"):
        read(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dataset_identity\.json"):
        read(tmp_path / "does-not-exist")


def test_catalog_root_is_explained() -> None:
    root = shared_fixtures() / "upstream-demo" / "exports"
    if not (root / "datasets.json").is_file():
        pytest.skip(f"shared fixture {root} is not available")
    with pytest.raises(FileNotFoundError, match=r"datasets\.json"):
        read(root)


def test_truncated_payload(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(upstream_dir("synthetic-cell-types-2d"), root)
    (root / "var" / "3.values.u8.gz").write_bytes(gzip.compress(b"\x00" * 10))
    with pytest.raises(ValueError, match=r"var/3\.values\.u8\.gz.*expected 72"):
        read(root)
    # ... but reading without genes does not touch it
    assert read(root, genes=False).n_vars == 8


def test_path_outside_the_export(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(upstream_dir("synthetic-cell-types-2d"), root)
    identity = load_json(root / "dataset_identity.json")
    identity["embeddings"]["files"]["2d"] = "../points_2d.bin.gz"
    shutil.copy(root / "points_2d.bin.gz", tmp_path / "points_2d.bin.gz")
    (root / "dataset_identity.json").write_text(json.dumps(identity))
    with pytest.raises(ValueError, match=r"dataset_identity\.json: \[path\.syntax\].*'\.\.'"):
        read(root)


# --- the legacy reference exports (cellucid 0.0.9) ------------------------------------------------


@pytest.fixture(scope="module")
def legacy_input() -> ad.AnnData:
    return ad.read_h5ad(LEGACY_DATA / "input.h5ad")


@pytest.mark.parametrize(("variant", "bits"), [("f32", None), ("q8_gz6", 8), ("q16_u16", 16)])
def test_legacy_reference(variant: str, bits: int | None, legacy_input: ad.AnnData) -> None:
    src = legacy_input
    adata = read(LEGACY_DATA / variant)
    assert adata.uns["cellucid"]["layout"] == "legacy"
    assert adata.shape == src.shape
    assert adata.var_names.tolist() == src.var_names.tolist()
    # obs columns in the original order; the original writer made every label a string
    assert adata.obs.columns.tolist() == src.obs.columns.tolist()
    for key in ("cell_type", "is_doublet", "batch", "leiden"):
        orig = pd.Categorical(src.obs[key])
        got = adata.obs[key]
        assert got.cat.categories.tolist() == [str(c) for c in orig.categories]
        np.testing.assert_array_equal(got.cat.codes.to_numpy(), orig.codes)
    for key in ("score", "n_genes"):
        assert_within_step(adata.obs[key].to_numpy(), src.obs[key].to_numpy(), bits, key)
    x, x_src = dense(adata.X), dense(src.X)
    assert sparse.issparse(adata.X)  # about 31% non-zero
    for j, name in enumerate(src.var_names):
        assert_within_step(x[:, j], x_src[:, j], bits, name)
    # no weights in the legacy layout: every edge weighs 1
    graph = adata.obsp["connectivities"]
    expected = (src.obsp["connectivities"] != 0).astype(np.float64)
    assert graph.nnz == 2 * 1728
    assert abs(graph - expected).max() == 0
    for dim, key in ((2, "X_umap"), (3, "X_umap_3d")):
        norm = clpp.normalize_coords(src.obsm[key])
        np.testing.assert_allclose(adata.obsm[f"X_umap_{dim}d"], norm.coords, rtol=0, atol=1e-6)
        if dim == 2:
            np.testing.assert_allclose(
                adata.obsm["velocity_umap_2d"],
                src.obsm["velocity_umap"] * norm.scale,
                rtol=1e-5,
                atol=1e-7,
            )
    # Platelet has 5 cells: no centroid and NaN outlier quantiles
    cell_type = adata.obs["cell_type"]
    outliers = adata.uns["cellucid"]["outlier_quantiles"]["cell_type"]
    assert np.isnan(outliers[(cell_type == "Platelet").to_numpy()]).all()
    assert np.isnan(outliers[cell_type.isna().to_numpy()]).all()
    other = cell_type.notna().to_numpy() & (cell_type != "Platelet").to_numpy()
    assert ((outliers[other] > 0) & (outliers[other] <= 1)).all()
    assert (
        "Platelet" not in adata.uns["cellucid"]["centroids"]["cell_type"]["2"]["category"].tolist()
    )


def test_legacy_sanitized_names(tmp_path: Path) -> None:
    """Keys whose file names differ from the key are found through the sanitized name."""
    root = tmp_path / "ds"
    shutil.copytree(LEGACY_DATA / "f32", root)
    manifest = load_json(root / "obs_manifest.json")
    manifest["_continuousFields"][0][0] = "score (a.u.)"
    (root / "obs_manifest.json").write_text(json.dumps(manifest))
    identity = load_json(root / "dataset_identity.json")
    for field in identity["obs_fields"]:
        if field["key"] == "score":
            field["key"] = "score (a.u.)"
    (root / "dataset_identity.json").write_text(json.dumps(identity))
    assert safe_filename_component("score (a.u.)") == "score_a.u"
    (root / "obs" / "score.values.f32").rename(root / "obs" / "score_a.u.values.f32")
    var = load_json(root / "var_manifest.json")
    var["fields"][-1] = ["HLA A/1"]
    (root / "var_manifest.json").write_text(json.dumps(var))
    (root / "var" / "HLA-A.values.f32").rename(root / "var" / "HLA_A_1.values.f32")

    adata = read(root)
    reference = read(LEGACY_DATA / "f32")
    np.testing.assert_array_equal(
        adata.obs["score (a.u.)"].to_numpy(), reference.obs["score"].to_numpy()
    )
    assert adata.var_names[-1] == "HLA A/1"
    np.testing.assert_array_equal(column(adata.X, 19), column(reference.X, 19))


# --- round trips through the exporter ------------------------------------------------------------


@pytest.fixture
def export():
    """``cellucid.ex.export``."""
    return cl.ex.export


def make_adata(seed: int = 0) -> ad.AnnData:
    """A small, realistic AnnData: clustered embeddings, sparse counts, kNN graph, mixed obs."""
    rng = np.random.default_rng(seed)
    n, n_genes, k = 200, 30, 6
    types = np.array(["T cell", "B cell", "NK", "Monocyte", "Rare"])
    sizes = [70, 60, 40, 24, 6]  # "Rare" is under centroid_min_points
    labels = np.repeat(np.arange(5), sizes)
    rng.shuffle(labels)
    centers2 = rng.normal(scale=[6.0, 3.0], size=(5, 2))
    umap = (centers2[labels] + rng.normal(scale=0.7, size=(n, 2))).astype(np.float32)
    centers3 = rng.normal(scale=4.0, size=(5, 3))
    umap3 = (centers3[labels] + rng.normal(scale=0.5, size=(n, 3))).astype(np.float32)
    pca = (rng.normal(size=(5, 10))[labels] * 3 + rng.normal(size=(n, 10))).astype(np.float32)
    velocity = rng.normal(scale=0.3, size=(n, 2)).astype(np.float32)

    counts = rng.gamma(2.0, 2.0, size=(n, n_genes)) * (rng.random((n, n_genes)) < 0.3)
    counts[:, 5] = 0  # an all-zero gene: a constant field
    x = np.log1p(counts).astype(np.float32)
    x[3, 7] = np.nan  # one missing gene value
    x_sparse = sparse.csr_matrix(x)

    # kNN on the latent space, Gaussian weights, W = max(W, W.T), zero diagonal
    d2 = ((pca[:, None, :] - pca[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nn = np.argsort(d2, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    dist2 = d2[rows, nn.ravel()]
    w = np.exp(-dist2 / np.median(dist2)).astype(np.float32)
    graph = sparse.csr_matrix((w, (rows, nn.ravel())), shape=(n, n))
    graph = graph.maximum(graph.T).tocsr()

    cell_type = pd.Categorical(types[labels], categories=types[:5])
    cell_type[rng.choice(n, 4, replace=False)] = np.nan
    score = rng.normal(size=n)
    score[[1, 9]] = np.nan
    score[20] = np.inf
    score[21] = -np.inf
    batch = rng.choice(np.array(["b2", "b0", "b1"], dtype=object), n)
    batch[11] = None
    leiden = pd.Categorical(labels % 4, categories=[0, 1, 2, 3, 4])  # int labels, one unused
    obs = pd.DataFrame(
        {
            "cell_type": cell_type,
            "is_doublet": rng.random(n) < 0.1,
            "score": score,
            "n_genes": (counts > 0).sum(1).astype(np.int64),
            "batch": batch,
            "pct.mito (%)": rng.uniform(0, 20, n).astype(np.float32),
            "leiden": leiden,
            "constant": np.full(n, 2.5),
        },
        index=[f"cell{i:03d}" for i in range(n)],
    )
    var = pd.DataFrame(index=[f"GENE{j:02d}" for j in range(n_genes - 2)] + ["HLA-A", "MT/CO1"])
    adata = ad.AnnData(X=x_sparse, obs=obs, var=var)
    adata.obsm["X_umap"] = umap
    adata.obsm["X_umap_3d"] = umap3
    adata.obsm["X_pca"] = pca
    adata.obsm["velocity_umap"] = velocity
    adata.obsp["connectivities"] = graph
    return adata


@pytest.fixture(scope="module")
def small_adata() -> ad.AnnData:
    return make_adata()


def run_export(export, adata: ad.AnnData, out: Path, **kwargs) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # NaN/Inf → missing is announced with a warning
        result = export(adata, out, latent_key="X_pca", **kwargs)
    return Path(result)


VARIANTS = {
    "f32": {"var_quantization": None, "obs_continuous_quantization": None, "compression": None},
    "f32_gz9": {"var_quantization": None, "obs_continuous_quantization": None, "compression": 9},
    "q8_gz6": {"var_quantization": 8, "obs_continuous_quantization": 8, "compression": 6},
    "q16_u16": {
        "var_quantization": 16,
        "obs_continuous_quantization": 16,
        "compression": None,
        "obs_categorical_dtype": "uint16",
    },
    "q8var_q16obs_gz1": {
        "var_quantization": 8,
        "obs_continuous_quantization": 16,
        "compression": 1,
    },
}


@pytest.mark.parametrize("layout", ["current", "legacy"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip(
    export, small_adata: ad.AnnData, tmp_path: Path, layout: str, variant: str
) -> None:
    options = VARIANTS[variant]
    src = small_adata
    before = src.copy()
    out = run_export(export, src, tmp_path / "ds", layout=layout, **options)
    # the export does not change its input (the original scaled vectors in place)
    np.testing.assert_array_equal(src.obsm["velocity_umap"], before.obsm["velocity_umap"])
    np.testing.assert_array_equal(dense(src.X), dense(before.X))

    adata = read(out)
    legacy = layout == "legacy"
    cellucid = adata.uns["cellucid"]
    assert cellucid["layout"] == layout
    settings = cellucid["export_settings"]
    # settings that are off (null in the file) are left out: h5ad stores no null
    assert settings.get("compression") == options["compression"]
    assert settings.get("var_quantization") == options["var_quantization"]
    assert settings.get("obs_continuous_quantization") == options["obs_continuous_quantization"]
    if not legacy:
        assert settings["obs_categorical_dtype"] == options.get("obs_categorical_dtype", "uint8")
    assert adata.shape == src.shape
    assert adata.obs_names.tolist() == [str(i) for i in range(src.n_obs)]
    assert adata.var_names.tolist() == src.var_names.tolist()

    # embeddings: normalized into [-1, 1]
    scales = {}
    for dim, key in ((2, "X_umap"), (3, "X_umap_3d")):
        norm = clpp.normalize_coords(src.obsm[key])
        scales[dim] = norm.scale
        got = adata.obsm[f"X_umap_{dim}d"]
        assert got.dtype == np.float32
        if legacy:  # the original float32 arithmetic
            np.testing.assert_allclose(got, norm.coords, rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(got, norm.coords.astype(np.float32))

    # vectors: in the units of the normalized embedding
    expected = src.obsm["velocity_umap"].astype(np.float64) * scales[2]
    got = adata.obsm["velocity_umap_2d"]
    assert got.dtype == np.float32
    assert "velocity_umap_3d" not in adata.obsm
    if legacy:
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(got, expected.astype(np.float32))

    # obs: every column (the order is checked in test_round_trip_obs_order)
    assert sorted(adata.obs.columns) == sorted(src.obs.columns)
    bits = options["obs_continuous_quantization"]
    for key in ("score", "n_genes", "pct.mito (%)", "constant"):
        assert_within_step(
            adata.obs[key].to_numpy(), src.obs[key].to_numpy(dtype=np.float64), bits, key
        )
    for key in ("cell_type", "is_doublet", "batch", "leiden"):
        orig = pd.Categorical(src.obs[key])
        got = adata.obs[key]
        expected_categories = orig.categories.tolist()
        if legacy:  # the original writer makes every label a string
            expected_categories = [str(c) for c in expected_categories]
        assert got.cat.categories.tolist() == expected_categories, key
        assert [type(c) for c in got.cat.categories.tolist()] == [
            type(c) for c in expected_categories
        ], key
        np.testing.assert_array_equal(got.cat.codes.to_numpy(), orig.codes, err_msg=key)

    # genes
    var_bits = options["var_quantization"]
    assert sparse.issparse(adata.X)  # about 30% non-zero
    assert adata.X.dtype == np.float32
    x, x_src = dense(adata.X), dense(src.X)
    for j, name in enumerate(src.var_names):
        assert_within_step(x[:, j], x_src[:, j], var_bits, name)
    assert np.isnan(x[3, 7])
    assert (x[:, 5] == 0).all()

    # graph
    graph = adata.obsp["connectivities"]
    assert graph.dtype == np.float64
    orig = src.obsp["connectivities"]
    expected = (orig != 0).astype(np.float64) if legacy else orig.astype(np.float64)
    assert abs(graph - expected).max() == 0
    assert (graph != graph.T).nnz == 0

    # outlier quantiles and centroids, as cellucid.pp computes them
    out_bits = bits
    for key in ("cell_type", "is_doublet", "batch", "leiden"):
        orig = pd.Categorical(src.obs[key])
        codes = orig.codes.astype(np.int64)
        n_cat = len(orig.categories)
        expected = clpp.outlier_quantiles(src.obsm["X_pca"], codes, n_categories=n_cat)
        got = cellucid["outlier_quantiles"][key]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=key)
        tol = 0.0 if out_bits is None else 1.0 / (254 if out_bits == 8 else 65534) + 1e-6
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol + 1e-7, err_msg=key)
        for dim, okey in ((2, "X_umap"), (3, "X_umap_3d")):
            coords = clpp.normalize_coords(src.obsm[okey]).coords
            if legacy:
                coords = adata.obsm[f"X_umap_{dim}d"].astype(np.float64)
            cents = clpp.category_centroids(coords, codes, n_categories=n_cat)
            frame = cellucid["centroids"][key][str(dim)]
            kept = np.flatnonzero(cents.n_points > 0)
            labels = [orig.categories[i] for i in kept]
            if legacy:
                labels = [str(c) for c in labels]
            assert frame["category"].tolist() == labels, key
            np.testing.assert_array_equal(frame["n_points"].to_numpy(), cents.n_points[kept])
            np.testing.assert_allclose(
                frame[list("xyz"[:dim])].to_numpy(),
                cents.positions[kept],
                rtol=0,
                atol=1e-6 if legacy else 1e-12,
            )
    assert "Rare" not in cellucid["centroids"]["cell_type"]["2"]["category"].tolist()


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_round_trip_obs_order(export, small_adata: ad.AnnData, tmp_path: Path, layout: str) -> None:
    """The obs columns come back in their original order, continuous and categorical interleaved.

    The current layout keeps it in the field indices; the legacy layout in the identity's
    ``obs_fields``, as the original writer (``tests/data/legacy``) lists them.
    """
    out = run_export(export, small_adata, tmp_path / "ds", layout=layout)
    assert read(out).obs.columns.tolist() == small_adata.obs.columns.tolist()


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_round_trip_gene_options(
    export, small_adata: ad.AnnData, tmp_path: Path, layout: str
) -> None:
    out = run_export(
        export, small_adata, tmp_path / "ds", layout=layout, var_quantization=8, compression=6
    )
    full = read(out)
    names = ["MT/CO1", "GENE03", "HLA-A"]
    subset = read(out, var_names=names)
    assert subset.var_names.tolist() == names
    np.testing.assert_array_equal(dense(subset.X), dense(full[:, names].X))
    no_genes = read(out, genes=False)
    assert no_genes.X is None
    assert no_genes.var_names.tolist() == small_adata.var_names.tolist()
    pd.testing.assert_frame_equal(no_genes.obs, full.obs)


def test_round_trip_dense_genes(export, small_adata: ad.AnnData, tmp_path: Path) -> None:
    """Mostly non-zero genes come back dense."""
    src = small_adata.copy()
    src.X = dense(src.X) + 1.0
    out = run_export(export, src, tmp_path / "ds", layout="current")
    adata = read(out)
    assert isinstance(adata.X, np.ndarray)
    np.testing.assert_array_equal(adata.X, src.X.astype(np.float32))


def test_round_trip_minimal(export, tmp_path: Path) -> None:
    """No genes, no graph, no vector fields: only what is there comes back."""
    rng = np.random.default_rng(1)
    n = 50
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {"group": pd.Categorical(rng.choice(["a", "b"], n)), "value": rng.normal(size=n)},
            index=[f"c{i}" for i in range(n)],
        )
    )
    adata.obsm["X_umap"] = rng.normal(size=(n, 2)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = Path(export(adata, tmp_path / "ds"))
    got = read(out)
    assert got.shape == (n, 0)
    assert got.X is None
    assert list(got.obsm) == ["X_umap_2d"]
    assert len(got.obsp) == 0
    assert got.obs.columns.tolist() == ["group", "value"]
    np.testing.assert_array_equal(
        got.obs["value"].to_numpy(), adata.obs["value"].to_numpy(dtype=np.float32)
    )
    assert got.obs["group"].tolist() == adata.obs["group"].tolist()


@pytest.mark.parametrize("layout", ["current", "legacy"])
@pytest.mark.parametrize("bits", [None, 8])
def test_round_trip_awkward_values(export, tmp_path: Path, layout: str, bits: int | None) -> None:
    """1-D embedding, float and nullable columns, all-missing fields and an all-NaN gene."""
    rng = np.random.default_rng(2)
    n = 60
    obs = pd.DataFrame(
        {
            "float_cat": pd.Categorical(rng.choice([0.5, 1.5, 2.0], n)),
            "all_nan_cat": pd.Categorical([np.nan] * n, categories=["x"]),
            "all_nan": np.full(n, np.nan),
            "nullable_int": pd.array(rng.integers(0, 5, n), dtype="Int64"),
            "nullable_str": pd.array(rng.choice(["u", "v"], n), dtype="string"),
            "nullable_bool": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        },
        index=[f"c{i}" for i in range(n)],
    )
    obs.iloc[0, 3] = pd.NA
    obs.iloc[1, 4] = pd.NA
    obs.iloc[2, 5] = pd.NA
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 2] = np.nan
    src = ad.AnnData(X=x, obs=obs)
    src.obsm["X_umap"] = rng.normal(size=(n, 1)).astype(np.float32)
    src.obsm["velocity_umap"] = rng.normal(size=(n, 1)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = Path(
            export(
                src,
                tmp_path / "ds",
                layout=layout,
                var_quantization=bits,
                obs_continuous_quantization=bits,
            )
        )
    adata = read(out)
    legacy = layout == "legacy"
    assert adata.obsm["X_umap_1d"].shape == (n, 1)
    assert adata.obsm["velocity_umap_1d"].shape == (n, 1)
    assert isinstance(adata.X, np.ndarray)  # no zeros at all
    for j in range(4):
        assert_within_step(adata.X[:, j], x[:, j], bits, f"gene {j}")
    for key in ("all_nan", "nullable_int"):
        expected = src.obs[key].to_numpy(dtype=np.float64, na_value=np.nan)
        assert_within_step(adata.obs[key].to_numpy(), expected, bits, key)
    for key in ("float_cat", "all_nan_cat", "nullable_str", "nullable_bool"):
        orig = pd.Categorical(src.obs[key])
        expected = orig.categories.tolist()
        if legacy:
            expected = [str(c) for c in expected]
        got = adata.obs[key]
        assert got.cat.categories.tolist() == expected, key
        assert [type(c) for c in got.cat.categories.tolist()] == [type(c) for c in expected], key
        np.testing.assert_array_equal(got.cat.codes.to_numpy(), orig.codes, err_msg=key)


# --- untrusted exports --------------------------------------------------------------------------


@pytest.fixture
def upstream_copy(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(upstream_dir("synthetic-cell-types-2d"), root)
    return root


def test_payload_linked_out_of_the_export_is_refused(upstream_copy: Path) -> None:
    """A right-sized payload outside the export, reached through a link: never read."""
    outside = upstream_copy.parent / "elsewhere.gz"
    (upstream_copy / "var" / "3.values.u8.gz").rename(outside)
    (upstream_copy / "var" / "3.values.u8.gz").symlink_to(outside)
    with pytest.raises(ValueError, match=r"var/3\.values\.u8\.gz: \[path\.symlink\]"):
        read(upstream_copy)


def test_var_folder_linked_out_of_the_export_is_refused(upstream_copy: Path) -> None:
    outside = upstream_copy.parent / "var-elsewhere"
    (upstream_copy / "var").rename(outside)
    (upstream_copy / "var").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"var/0\.values\.u8\.gz: \[path\.symlink\]"):
        read(upstream_copy)
    # a link inside the export is followed
    (upstream_copy / "var").unlink()
    outside.rename(upstream_copy / "var-real")
    (upstream_copy / "var").symlink_to("var-real", target_is_directory=True)
    assert read(upstream_copy).n_vars == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda root: (root / "obs_manifest.json").write_text(
                (root / "obs_manifest.json").read_text().replace("0.95", "NaN")
            ),
            r"obs_manifest\.json: \[json\.parse\]",
        ),
        (
            lambda root: (root / "var_manifest.json").write_text("[" * 50_000 + "]" * 50_000),
            r"var_manifest\.json: \[(json\.parse|var\.keys)\]",
        ),
        (
            lambda root: (root / "var" / "2.values.u8.gz").write_bytes(
                (root / "var" / "2.values.u8.gz").read_bytes() + b"\x00" * 4
            ),
            r"var/2\.values\.u8\.gz: \[gzip\.trailing\]",
        ),
        (
            lambda root: (root / "var" / "2.values.u8.gz").write_bytes(
                gzip.compress(b"\x00" * 71, mtime=0)
            ),
            r"var/2\.values\.u8\.gz: \[payload\.length\] found 71 bytes decoded; expected 72",
        ),
    ],
    ids=["NaN in JSON", "deeply nested JSON", "bytes after the gzip member", "one byte short"],
)
def test_broken_exports_raise_value_errors_naming_file_and_rule(
    upstream_copy: Path, change: object, message: str
) -> None:
    change(upstream_copy)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        read(upstream_copy)
