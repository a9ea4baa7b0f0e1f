"""The compiled kernels of large inputs give the same bits as the numpy code, which small inputs run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import cellucid as cl
from cellucid.pp import _groups, _outliers


def _numpy_then_compiled(monkeypatch: pytest.MonkeyPatch, fn):
    """Return ``fn()`` computed by the numpy code, then by the kernels."""
    monkeypatch.setattr(_groups, "COMPILED_MIN_ROWS", 2**62)
    reference = fn()
    monkeypatch.setattr(_groups, "COMPILED_MIN_ROWS", 0)
    return reference, fn()


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}"))


def _rank_fraction_by_two_sorts(codes, values, counts):
    """``rank_fraction`` as it was: a sort by value, then a stable sort by code."""
    order = np.argsort(values)
    order = order[np.argsort(codes[order], kind="stable")]
    starts = np.zeros(counts.shape[0], dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    v = values[order]
    new_run = np.ones(v.shape[0], dtype=bool)
    np.not_equal(v[1:], v[:-1], out=new_run[1:])
    new_run[starts[counts > 0]] = True
    run_end = np.append(np.flatnonzero(new_run)[1:], v.shape[0])
    rank = run_end[np.cumsum(new_run) - 1] - np.repeat(starts, counts)
    out = np.empty(v.shape[0], dtype=np.float32)
    out[order] = rank.astype(np.float32) / np.repeat(counts.astype(np.float32), counts)
    return out


def _categories(rng: np.random.Generator, n: int, n_used: int) -> np.ndarray:
    """uint8 codes with a missing code (255), an empty and a single-cell category."""
    codes = rng.integers(0, n_used, n).astype(np.uint8)
    codes[rng.random(n) < 0.05] = 255
    codes[codes == 2] = 3  # category 2 is empty
    codes[codes == 4] = 5
    codes[7] = 4  # category 4 has one cell
    return codes


@pytest.mark.parametrize(
    ("n_cols", "n_groups", "block_rows", "masked"),
    [(50, 30, 1000, True), (50, 30, None, False), (17, 300, 777, True), (20, 5, 4096, False)],
)
def test_group_sums_same_bits(
    n_cols: int,
    n_groups: int,
    block_rows: int | None,
    masked: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if block_rows is not None:
        monkeypatch.setattr(_groups, "_BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(n_cols)
    n = 20_000
    # a wide range of magnitudes, so the order of additions shows in the bits
    values = rng.normal(size=(n, n_cols)) * 10.0 ** rng.integers(-3, 4, (n, 1))
    values = values.astype(np.float32 if n_cols == 50 else np.float64)
    codes = rng.integers(0, n_groups, n)
    codes[codes == 1] = 2  # an empty group
    keep = rng.random(n) < 0.9 if masked else None
    if masked:
        codes[~keep & (rng.random(n) < 0.5)] = -1  # not read: the row is left out
    kept = codes if keep is None else codes[keep]
    counts = np.bincount(kept, minlength=n_groups + 1)  # an unused last group
    numpy_means, compiled_means = _numpy_then_compiled(
        monkeypatch, lambda: _groups.group_means(values, codes, counts, keep=keep)
    )
    _same_bits(numpy_means, compiled_means)
    assert np.isnan(compiled_means[[1, n_groups]]).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_rank_fraction_same_as_two_sorts(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    codes = rng.integers(0, 40, n)
    codes[codes == 3] = 4  # an empty group
    codes[codes == 5] = 6
    codes[9] = 5  # a group of one
    values = np.abs(rng.normal(size=n)).round(2).astype(np.float32)  # many ties
    values[:30] = 0.0
    values[30:40] = -0.0  # equal to +0.0
    counts = np.bincount(codes, minlength=41)  # an unused last group
    for nan in (False, True):
        if nan:  # NaN: ranked as the two sorts rank it (each NaN a run of its own)
            values[50:53] = np.nan
            codes[50:53] = 7
        expected = _rank_fraction_by_two_sorts(codes, values, counts)
        numpy_ranks, compiled_ranks = _numpy_then_compiled(
            monkeypatch, lambda: _groups.rank_fraction(codes, values, counts)
        )
        _same_bits(numpy_ranks, expected)
        _same_bits(compiled_ranks, expected)
        assert compiled_ranks[9] == 1.0


def _clustered(rng: np.random.Generator, codes: np.ndarray, n_dims: int) -> np.ndarray:
    centers = rng.normal(size=(256, n_dims)) * 5
    return (centers[codes] + rng.normal(size=(codes.shape[0], n_dims))).astype(np.float32)


def test_outlier_quantiles_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_outliers, "_BLOCK_ROWS", 3000)  # several blocks of distances
    monkeypatch.setattr(_groups, "_BLOCK_ROWS", 5000)
    rng = np.random.default_rng(4)
    codes = _categories(rng, 20_000, 12)
    latent = _clustered(rng, codes, 30)
    latent[100] = latent[101]  # a tie
    codes[100] = codes[101] = 6
    latent[200, 3] = np.nan  # its category's quantiles rank NaN distances
    for used, n_categories in [(codes, 15), (np.where(codes == 255, 0, codes), 12)]:
        numpy_values, compiled_values = _numpy_then_compiled(
            monkeypatch,
            lambda used=used, n=n_categories: cl.pp.outlier_quantiles(
                latent, used, n_categories=n, min_points=5
            ),
        )
        _same_bits(numpy_values, compiled_values)
        assert np.isnan(compiled_values[used == 4]).all()  # a single cell: below min_points
        assert compiled_values[100] == compiled_values[101]


@pytest.mark.parametrize("n_dims", [2, 3])
def test_category_centroids_same_bits(n_dims: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_groups, "_BLOCK_ROWS", 4000)
    rng = np.random.default_rng(n_dims)
    codes = _categories(rng, 20_000, 40)
    coords = _clustered(rng, codes, n_dims)
    coords[300] = np.nan  # a NaN position: its category's centroid is NaN either way
    numpy_result, compiled_result = _numpy_then_compiled(
        monkeypatch, lambda: cl.pp.category_centroids(coords, codes, n_categories=45)
    )
    _same_bits(numpy_result.positions, compiled_result.positions)
    _same_bits(numpy_result.n_points, compiled_result.n_points)
    assert compiled_result.n_points[[2, 4, 44]].tolist() == [0, 0, 0]


@pytest.mark.parametrize("q", [0.0, 0.37, 1.0])
def test_group_quantiles_same_bits(q: float, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 300, 20_000)
    codes[codes == 7] = 8  # an empty group
    codes[codes == 9] = 10
    codes[0] = 9  # a group of one
    values = rng.normal(size=20_000).round(1)  # with ties
    values[5] = np.nan
    counts = np.bincount(codes, minlength=301)  # an unused last group
    numpy_q, compiled_q = _numpy_then_compiled(
        monkeypatch, lambda: _groups.group_quantiles(codes, values, counts, q)
    )
    _same_bits(numpy_q, compiled_q)
    assert np.isnan(compiled_q[[7, 300]]).all() and compiled_q[9] == values[0]


def _symmetric_graph(n: int, seed: int) -> sparse.csr_matrix:
    g = sparse.random(n, n, density=0.02, random_state=seed, format="lil", dtype=np.float32)
    g[:, 100:150] = g[100:150] = 0  # cells without neighbours
    g = g.tocsr()
    g = g.maximum(g.T).tocsr()
    with warnings.catch_warnings():  # scipy: changing a CSR matrix's structure is slow
        warnings.simplefilter("ignore", sparse.SparseEfficiencyWarning)
        g.setdiag(np.r_[np.zeros(100), np.full(n - 100, 0.7)])
        j = g[3].indices[1]
        g[3, j] = g[j, 3] = 0  # a stored zero
    return g


def _edited(g: sparse.csr_matrix, edit: str) -> sparse.csr_matrix:
    """``g`` made asymmetric: one value changed, or one entry without its mirror."""
    g = g.tolil(copy=True)
    i, j = 5, int(g[5].rows[0][-1])  # j > 5
    if edit == "value":
        g[i, j] = g[i, j] + 1
    elif edit == "upper":
        g[j, i] = 0
        g = g.tocsr()
        g.eliminate_zeros()
    elif edit == "lower":
        g[i, j] = 0
        g = g.tocsr()
        g.eliminate_zeros()
    elif edit == "extra":
        g[499, 498] = 0.25  # a new entry below the diagonal, in the last row
    return sparse.csr_matrix(g)


@pytest.mark.parametrize("band", [None, 7, 1])
@pytest.mark.parametrize("edit", [None, "value", "upper", "lower", "extra"])
def test_graph_edges_same_edges(
    edit: str | None, band: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numpy and compiled paths agree; the compiled check by bands of a few entries too."""
    from cellucid.pp import _graph

    if band is not None:  # bands of a column or two (at least one column each)
        monkeypatch.setattr(_graph, "_MIRROR_BAND_ENTRIES", band)
    g = _symmetric_graph(500, 5)
    g = _edited(g, edit) if edit else g
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        numpy_edges, compiled_edges = _numpy_then_compiled(
            monkeypatch, lambda: cl.pp.graph_edges(g)
        )
    assert len(caught) == (2 if edit else 0)  # each path warns about an asymmetric graph
    for a, b in zip(numpy_edges[:3], compiled_edges[:3], strict=True):
        _same_bits(a, b)
    assert numpy_edges.max_neighbors == compiled_edges.max_neighbors > 0


@pytest.mark.parametrize(("n", "dtype"), [(0, "f4"), (1, "f8"), (3, "f4"), (3, "i8"), (3, "u1")])
def test_graph_edges_same_edges_tiny(n: int, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny graphs, and weights of other dtypes (left to the numpy code)."""
    g = sparse.csr_matrix((np.eye(n) + (np.eye(n, k=1) + np.eye(n, k=-1)) * 2).astype(dtype))
    numpy_edges, compiled_edges = _numpy_then_compiled(monkeypatch, lambda: cl.pp.graph_edges(g))
    for a, b in zip(numpy_edges[:3], compiled_edges[:3], strict=True):
        _same_bits(a, b)
    assert numpy_edges.max_neighbors == compiled_edges.max_neighbors == min(2, max(n - 1, 0))


def test_size_rule() -> None:
    assert _groups.compiled(_groups.COMPILED_MIN_ROWS - 1) is None
    assert _groups.compiled(_groups.COMPILED_MIN_ROWS) is not None


def test_graph_size_rule_counts_cells_not_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph of fewer cells than the rule, however many its entries, takes the numpy code."""
    g = _symmetric_graph(500, 5)
    assert g.shape[0] < 1_000 <= g.nnz
    monkeypatch.setattr(_groups, "COMPILED_MIN_ROWS", 1_000)
    kernels = _groups.compiled(1_000)

    def refuse(*args):
        msg = "the kernels ran"
        raise AssertionError(msg)

    monkeypatch.setattr(kernels, "symmetric_upper_edges", refuse)
    edges = cl.pp.graph_edges(g)
    assert edges.src.size > 0
    monkeypatch.setattr(_groups, "COMPILED_MIN_ROWS", 500)
    with pytest.raises(AssertionError, match="the kernels ran"):
        cl.pp.graph_edges(g)


def test_small_export_does_not_import_numba(tmp_path: Path) -> None:
    """pbmc68k_reduced (700 cells) is exported by the numpy code alone: numba is never imported."""
    spec = importlib.util.find_spec("scanpy")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "10x_pbmc68k_reduced.h5ad"
    if not data.exists():
        pytest.skip("scanpy's pbmc68k_reduced file is not installed")
    script = (
        "import sys, warnings, anndata as ad, cellucid as cl\n"
        "warnings.simplefilter('ignore')\n"
        f"adata = ad.read_h5ad({str(data)!r})\n"
        f"cl.ex.export(adata, {str(tmp_path / 'pbmc')!r}, var_quantization=8, compression=6,"
        " progress=False)\n"
        "print(adata.n_obs, 'numba' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["700", "False"]


def test_center_distances_same_bits() -> None:
    from cellucid.pp import _centroids, _kernels

    rng = np.random.default_rng(8)
    codes = _categories(rng, 5000, 20).astype(np.intp)
    x = _clustered(rng, np.where(codes == 255, 0, codes), 3).astype(np.float64)
    valid = codes < 20
    centers = rng.normal(size=(20, 3))
    expected = _centroids._distances(np.compress(valid, x, axis=0), centers, codes[valid])
    _same_bits(_kernels.center_distances(x, centers, codes, valid), expected)
