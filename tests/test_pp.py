"""``cl.pp``: array-level transforms against direct computations, and the AnnData-level wrappers."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import cellucid as cl


@pytest.mark.parametrize("bits", [8, 16])
def test_quantize_roundtrip_within_one_step(bits: int) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(3, 2, 10_000).astype(np.float32)
    values[:5] = [np.nan, np.inf, -np.inf, values.min() - 1, values.max() + 1]
    q = cl.pp.quantize(values, bits=bits)
    assert q.codes.dtype == (np.uint8 if bits == 8 else np.uint16)
    finite = np.isfinite(values)
    assert (q.vmin, q.vmax) == (float(values[finite].min()), float(values[finite].max()))
    max_code = 254 if bits == 8 else 65534
    assert (q.codes[~finite] == max_code + 1).all()
    assert q.codes[finite].max() == max_code and q.codes[finite].min() == 0
    back = cl.pp.dequantize(q.codes, vmin=q.vmin, vmax=q.vmax, bits=bits)
    assert np.isnan(back[~finite]).all()
    step = (q.vmax - q.vmin) / max_code
    assert np.abs(back[finite] - values[finite]).max() <= step + 4e-7 * np.abs(values[finite]).max()
    # floor: a decoded value never exceeds its source by more than float rounding
    assert (back[finite] <= values[finite] + 1e-5).all()


def test_quantize_constant_and_empty() -> None:
    q = cl.pp.quantize(np.full(4, 2.5), bits=8)
    assert (q.codes == 0).all() and (q.vmin, q.vmax) == (2.5, 2.5)
    assert (cl.pp.dequantize(q.codes, vmin=q.vmin, vmax=q.vmax) == 2.5).all()
    q = cl.pp.quantize(np.array([np.nan, np.nan]), bits=16)
    assert (q.codes == 65535).all() and (q.vmin, q.vmax) == (0.0, 0.0)
    with pytest.raises(ValueError, match="bits must be 8 or 16"):
        cl.pp.quantize(np.ones(3), bits=12)


def test_quantize_exact_steps_land_on_their_code() -> None:
    values = np.arange(255, dtype=np.float32) * 0.5  # steps of exactly 0.5
    q = cl.pp.quantize(values, bits=8)
    assert np.array_equal(q.codes, np.arange(255, dtype=np.uint8))
    assert np.array_equal(cl.pp.dequantize(q.codes, vmin=q.vmin, vmax=q.vmax), values)


@pytest.mark.parametrize("encode", ["current", "legacy"])
@pytest.mark.parametrize("bits", [8, 16])
def test_encode_with_per_column_bounds(encode: str, bits: int) -> None:
    from cellucid.ex._legacy_arithmetic import encode_with_bounds_float32
    from cellucid.pp._quantize import encode_with_bounds

    fn = encode_with_bounds if encode == "current" else encode_with_bounds_float32
    rng = np.random.default_rng(5)
    vmin = np.array([0.0, -2.0, 3.0, 1.5])
    # column 2 is constant (the legacy bounds never are: the original added 1 to vmax)
    vmax = np.array([1.0, 2.0, 3.0 if encode == "current" else 4.0, 9.0])
    column = rng.integers(0, 4, 1_000)
    values = (vmin[column] + rng.random(1_000) * (vmax - vmin)[column]).astype(np.float32)
    values[[3, 10]] = np.nan, np.inf
    expected = fn(values, vmin[column], vmax[column], bits=bits)
    np.testing.assert_array_equal(fn(values, vmin, vmax, bits=bits, index=column), expected)
    zero = np.zeros_like(vmin)  # every minimum 0, as for expression with implicit zeros
    np.testing.assert_array_equal(
        fn(values, zero, vmax, bits=bits, index=column),
        fn(values, zero[column], vmax[column], bits=bits),
    )
    if encode == "current":  # every code is in range; the constant column's codes are 0
        assert (expected[column == 2][np.isfinite(values[column == 2])] == 0).all()
        assert expected[3] == expected[10] == (2**bits - 1)


def test_normalize_coords_keeps_aspect_ratio() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform([-10, 0, 5], [30, 10, 6], (1000, 3))
    norm = cl.pp.normalize_coords(x)
    assert np.isclose(norm.coords[:, 0].min(), -1) and np.isclose(norm.coords[:, 0].max(), 1)
    assert norm.scale == pytest.approx(2 / np.ptp(x[:, 0]))
    np.testing.assert_allclose(norm.coords, (x - (x.min(0) + x.max(0)) / 2) * norm.scale)
    # centred on the bounding box in every axis
    np.testing.assert_allclose(norm.coords.min(0) + norm.coords.max(0), 0, atol=1e-12)
    single = cl.pp.normalize_coords(np.array([[5.0, 5.0]]))
    assert np.array_equal(single.coords, [[0.0, 0.0]]) and single.scale == 2.0
    one_d = cl.pp.normalize_coords(np.array([1.0, 3.0]))
    assert one_d.coords.shape == (2, 1)


def test_category_codes() -> None:
    enc = cl.pp.category_codes(pd.Series(["b", "a", None, "b"]))
    assert enc.categories == ["a", "b"] and enc.dtype == "uint8" and enc.missing == 255
    assert enc.codes.tolist() == [1, 0, 255, 1]
    cat = pd.Categorical(["x", "y"], categories=["y", "x", "unused"])
    enc = cl.pp.category_codes(cat)
    assert enc.categories == ["y", "x", "unused"] and enc.codes.tolist() == [1, 0]
    enc = cl.pp.category_codes(np.arange(300))
    assert enc.dtype == "uint16" and enc.missing == 65535 and enc.codes[-1] == 299
    with pytest.raises(ValueError, match="300 categories but uint8"):
        cl.pp.category_codes(np.arange(300), dtype="uint8")
    with pytest.raises(ValueError, match="70,000 categories but uint16"):
        cl.pp.category_codes(np.arange(70_000))


@pytest.mark.parametrize("q", [0.0, 0.37, 0.9, 1.0])
def test_group_quantiles_against_numpy(q: float) -> None:
    from cellucid.pp._groups import group_quantiles

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 300, 5000)  # uint16 group sort
    codes[codes == 7] = 8  # an empty group
    codes[codes == 9] = 10
    codes[0] = 9  # a group of one
    values = rng.normal(size=5000).round(1)  # with ties
    counts = np.bincount(codes, minlength=301)  # the last group empty too
    out = group_quantiles(codes, values, counts, q)
    assert np.isnan(out[[7, 300]]).all() and out[9] == values[0]
    for g in np.flatnonzero(counts):
        np.testing.assert_allclose(out[g], np.quantile(values[codes == g], q), rtol=1e-14)


def _group_means_by_coo_product(values, codes, counts, block_rows):
    """The formula group_means used before bincount: a COO-built indicator product per block."""
    sums = np.zeros((counts.shape[0], values.shape[1]))
    for start in range(0, values.shape[0], block_rows):
        rows = codes[start : start + block_rows]
        indicator = sparse.csr_matrix(
            (np.ones(rows.shape[0]), (rows, np.arange(rows.shape[0]))),
            shape=(counts.shape[0], rows.shape[0]),
        )
        sums += indicator @ np.asarray(values[start : start + block_rows], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


@pytest.mark.parametrize(
    ("n_rows", "n_cols", "n_groups", "block_rows"),
    [
        (150_000, 2, 30, None),  # the real block size: three blocks, bincount per column
        (150_000, 50, 200, None),  # a latent space: the indicator product, uint8 group sort
        (20_000, 17, 300, 1000),  # just past bincount's columns, uint16 group sort
        (20_000, 20, 70_000, 4096),  # more groups than rows (most empty), int64 group sort
        (20_000, 3, 70_000, 4096),  # the same by bincount
        (20_000, 16, 5, 999),  # bincount's widest, a short last block
    ],
)
def test_group_means_bit_identical_to_product(
    n_rows: int, n_cols: int, n_groups: int, block_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellucid.pp import _groups

    if block_rows is not None:
        monkeypatch.setattr(_groups, "_BLOCK_ROWS", block_rows)
    block_rows = _groups._BLOCK_ROWS
    rng = np.random.default_rng(n_cols)
    # float32 with a wide range of magnitudes, so the order of additions shows in the bits
    values = rng.normal(size=(n_rows, n_cols)) * 10.0 ** rng.integers(-3, 4, (n_rows, 1))
    values = values.astype(np.float32)
    codes = rng.integers(0, n_groups, n_rows)
    codes[codes == 1] = 2  # an empty group
    counts = np.bincount(codes, minlength=n_groups + 1)  # and an empty last group
    out = _groups.group_means(values, codes, counts)
    expected = _group_means_by_coo_product(values, codes, counts, block_rows)
    assert out.dtype == np.float64 and out.shape == (n_groups + 1, n_cols)
    assert np.isnan(out[[1, n_groups]]).all()
    np.testing.assert_array_equal(out.view(np.uint64), expected.view(np.uint64))
    if n_groups <= 1000:  # big groups: summing them in another order changes some bits
        reversed_order = _groups.group_means(values[::-1], codes[::-1], counts)
        assert not np.array_equal(out[counts > 0], reversed_order[counts > 0])


def test_category_centroids_against_loop() -> None:
    rng = np.random.default_rng(2)
    coords = rng.normal(size=(2000, 3))
    codes = rng.integers(-1, 7, 2000)
    codes[codes == 6] = 255  # missing code
    codes[:8] = 5  # category 5: exactly 8 cells -> below min_points
    codes[8:][codes[8:] == 5] = 0
    res = cl.pp.category_centroids(coords, codes, n_categories=6, quantile=0.9, min_points=10)
    for c in range(6):
        pts = coords[codes == c]
        if len(pts) < 10:
            assert np.isnan(res.positions[c]).all() and res.n_points[c] == 0
            continue
        d = np.linalg.norm(pts - pts.mean(0), axis=1)
        keep = d <= np.quantile(d, 0.9)
        np.testing.assert_allclose(res.positions[c], pts[keep].mean(0), atol=1e-12)
        assert res.n_points[c] == keep.sum()


def test_outlier_quantiles_against_loop() -> None:
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(3000, 20)).astype(np.float32)
    latent[10] = latent[11]  # ties share the higher rank
    codes = rng.integers(0, 4, 3000)
    codes[10] = codes[11] = 2
    codes[:5] = 3
    codes[5:][codes[5:] == 3] = 1  # category 3 has 5 cells
    out = cl.pp.outlier_quantiles(latent, codes, n_categories=4, min_points=10)
    assert out.dtype == np.float32
    assert np.isnan(out[codes == 3]).all()
    for c in range(3):
        pts = latent[codes == c]
        d = np.linalg.norm(pts - pts.mean(0), axis=1)
        expected = np.searchsorted(np.sort(d), d, side="right") / len(d)
        np.testing.assert_allclose(out[codes == c], expected, atol=1e-6)
    assert out[10] == out[11]


@pytest.mark.parametrize("chunk_entries", [None, 1, 37])
def test_graph_edges(chunk_entries: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if chunk_entries is not None:  # edges found in many chunks of rows
        monkeypatch.setattr("cellucid.pp._graph._CHUNK_ENTRIES", chunk_entries)
    g = sparse.random(500, 500, density=0.02, random_state=5, format="lil")
    g[:, 100:150] = g[100:150] = 0  # cells without neighbours (but the diagonal)
    g = g.tocsr()
    g = g.maximum(g.T).tocsr()
    with warnings.catch_warnings():  # scipy: changing a CSR matrix's structure is slow
        warnings.simplefilter("ignore", sparse.SparseEfficiencyWarning)
        g.setdiag(np.r_[np.zeros(100), np.full(400, 0.7)])  # the diagonal is dropped, zero or not
        j = g[3].indices[1]
        g[3, j] = g[j, 3] = 0  # stored zeros are dropped
    assert j in g[3].indices and g.getnnz(axis=1)[100:150].max() == 1
    e = cl.pp.graph_edges(g)
    upper = sparse.triu(g, k=1).tocoo()
    upper.eliminate_zeros()
    order = np.lexsort((upper.col, upper.row))
    assert np.array_equal(e.src, upper.row[order]) and np.array_equal(e.dst, upper.col[order])
    assert np.array_equal(e.weights, upper.data[order])
    sym = (g + g.T).tolil()
    sym.setdiag(0)
    assert e.max_neighbors == int((sparse.csr_matrix(sym) != 0).sum(1).max())
    # asymmetric input: symmetrized by maximum, with a warning
    a = sparse.csr_matrix(np.array([[0, 1.0, 0], [0.5, 0, 0], [0, 2.0, 0]]))
    with pytest.warns(UserWarning, match="not symmetric"):
        e = cl.pp.graph_edges(a)
    assert (
        e.src.tolist() == [0, 1] and e.dst.tolist() == [1, 2] and e.weights.tolist() == [1.0, 2.0]
    )
    with pytest.raises(ValueError, match="2 negative or non-finite"):
        cl.pp.graph_edges(np.array([[0, -1.0], [np.nan, 0]]))
    with pytest.raises(ValueError, match="1 negative or non-finite"):
        cl.pp.graph_edges(np.array([[0, np.inf], [1.0, 0]]))


def test_anndata_level_wrappers() -> None:
    rng = np.random.default_rng(6)
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {"g": pd.Categorical(rng.choice(["a", "b"], 100)), "v": rng.normal(size=100)},
            index=[str(i) for i in range(100)],
        )
    )
    adata.obsm["X_umap"] = rng.normal(size=(100, 2))
    adata.obsm["X_pca"] = rng.normal(size=(100, 5)).astype(np.float32)

    copy = cl.pp.normalize_embedding(adata, key="X_umap", copy=True)
    assert "X_umap_normalized" not in adata.obsm
    np.testing.assert_allclose(
        copy.obsm["X_umap_normalized"], cl.pp.normalize_coords(adata.obsm["X_umap"]).coords
    )
    assert copy.uns["cellucid"]["normalization"]["X_umap_normalized"]["scale"] > 0

    assert cl.pp.quantize_obs(adata, key="v", bits=16, key_added="vq") is None
    assert adata.obs["vq"].dtype == np.uint16
    bounds = adata.uns["cellucid"]["quantization"]["vq"]
    assert bounds["vmin"] == pytest.approx(adata.obs["v"].min())

    cl.pp.encode_categories(adata, key="g")
    assert (adata.obs["g_codes"].to_numpy() == adata.obs["g"].cat.codes.to_numpy()).all()

    cl.pp.centroids(adata, groupby="g", basis="X_umap", min_points=5)
    table = adata.uns["cellucid"]["centroids"]["g_X_umap"]
    assert list(table.index) == ["a", "b"] and list(table.columns) == [
        "X_umap_1",
        "X_umap_2",
        "n_points",
    ]

    cl.pp.outlier_quantiles_obs(adata, groupby="g", use_rep="X_pca", min_points=5)
    assert adata.obs["g_outlier_quantile"].between(0, 1).all()
    with pytest.raises(KeyError, match=r"'nope' is not a column of adata\.obs"):
        cl.pp.encode_categories(adata, key="nope")
    with pytest.raises(KeyError, match=r"'X_nope' is not a key of adata\.obsm"):
        cl.pp.normalize_embedding(adata, key="X_nope")
