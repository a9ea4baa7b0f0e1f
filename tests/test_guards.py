"""Writer guards: whatever the viewer refuses, the export refuses first; no input is changed silently."""

from __future__ import annotations

import gzip
import json
import os
import warnings
import zlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _data import knn_graph, make_adata
from _decode import decode
from scipy import sparse

import cellucid as cl
from cellucid import _format
from cellucid.ex._payload import gzip_bytes, gzip_encoder

pytestmark = pytest.mark.filterwarnings(
    "ignore:obs\\[.*exported as missing:UserWarning", "ignore:.*genes have NaN:UserWarning"
)


def small_adata(n_cells: int = 300, **obs: object) -> ad.AnnData:
    """A small AnnData with a 2-D embedding and the given obs columns."""
    rng = np.random.default_rng(0)
    adata = ad.AnnData(obs=pd.DataFrame(obs or None, index=[f"c{i}" for i in range(n_cells)]))
    adata.obsm["X_umap"] = rng.normal(size=(n_cells, 2))
    return adata


def refused(adata: ad.AnnData, tmp_path: Path, match: str, **kwargs: object) -> None:
    """The export raises a ValueError matching ``match`` and leaves nothing behind."""
    with pytest.raises(ValueError, match=match):
        cl.ex.export(adata, tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def valid(out: Path) -> None:
    report = cl.ex.validate(out)
    assert report.ok, str(report)


# --- item 1: gzip never past the viewer's transfer ceiling ---------------------------------


def test_gzip_ceiling_formula() -> None:
    # FORMAT.md §3's example: 2,000 cells of 3-D float32 points
    assert _format.gzip_ceiling(24_000) == 25_052
    assert _format.gzip_ceiling(0) == 5 + 18 + 1024
    assert _format.gzip_ceiling(65_535) == 65_535 + 10 + 18 + 1024
    assert _format.gzip_ceiling(65_536) == 65_536 + 15 + 18 + 1024


ENCODERS = ["zlib", "zlib-ng"]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("level", range(1, 10))
@pytest.mark.parametrize("run_length", [False, True])
def test_incompressible_payloads_stay_under_the_ceiling(
    encoder: str, level: int, run_length: bool
) -> None:
    lib = gzip_encoder(encoder)
    rng = np.random.default_rng(level)
    for size in (0, 1, 1000, 24_000, 65_535, 65_536, 200_001):
        data = rng.bytes(size)
        member = gzip_bytes(data, level, run_length=run_length, lib=lib)
        assert len(member) <= _format.gzip_ceiling(size), (encoder, level, size, len(member))
        d = zlib.decompressobj(-15)
        assert d.decompress(member[10:]) == data and d.eof and len(d.unused_data) == 8
        assert gzip.decompress(member) == data
        assert gzip_bytes(data, level, run_length=run_length, lib=lib) == member  # deterministic


def test_compressible_payloads_are_still_compressed() -> None:
    data = np.zeros(100_000, np.float32).tobytes()
    for encoder in ENCODERS:
        assert len(gzip_bytes(data, 1, lib=gzip_encoder(encoder))) < 5000


def test_zlib_ng_level_1_export_of_random_points_fits_the_viewer(tmp_path: Path) -> None:
    # the case: 2,000 cells of random 3-D points, zlib-ng at level 1
    rng = np.random.default_rng(1)
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(2000)]))
    adata.obsm["X_umap_3d"] = rng.normal(size=(2000, 3))
    adata.obsm["velocity_umap_3d"] = rng.normal(size=(2000, 3))
    out = cl.ex.export(adata, tmp_path / "ds", compression=1, gzip_encoder="zlib-ng")
    size = (out / "points_3d.bin.gz").stat().st_size
    assert size <= _format.gzip_ceiling(24_000)
    decode(out)
    valid(out)


# --- item 2: whitespace-only names, by JavaScript's trim ------------------------------------

BLANKS = [" ", "\t", "\u3000", "\xa0", "\ufeff", "\u2028", " \n", "\u200a\u205f"]


def test_js_trim_is_javascripts_set() -> None:
    for blank in [*BLANKS, ""]:
        assert _format.is_blank(blank) and _format.js_trim(blank) == ""
    # Python's str.strip() removes these, JavaScript's trim() does not (and vice versa for U+FEFF)
    for kept in ["\x1c", "\x85", "\u200b", "a"]:
        assert not _format.is_blank(kept)
    assert "\ufeff".strip() == "\ufeff" and _format.js_trim("\ufeffa\u3000") == "a"
    assert _format.is_blank(None) and _format.is_blank(1)


@pytest.mark.parametrize("blank", BLANKS)
def test_blank_obs_key_is_refused(tmp_path: Path, blank: str) -> None:
    adata = small_adata(**{blank: ["a", "b", "c"] * 100})
    refused(adata, tmp_path, "obs keys must be unique and not blank")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dataset_name": " "},
        {"dataset_name": "\u3000"},
        {"source_name": " "},
        {"source_name": "\ufeff"},
        {"source_name": "lab", "source_url": ""},
        {"source_name": "lab", "source_citation": " \n"},
    ],
)
def test_blank_identity_strings_are_refused(tmp_path: Path, kwargs: dict) -> None:
    key = next(iter(kwargs)) if "source_name" not in kwargs or len(kwargs) == 1 else list(kwargs)[1]
    refused(small_adata(), tmp_path, f"{key} must .*not .*empty or whitespace", **kwargs)


@pytest.mark.parametrize("blank", ["", " ", "\xa0", "\ufeff"])
def test_blank_gene_names_are_refused(tmp_path: Path, blank: str) -> None:
    adata = make_adata(n_cells=50, n_genes=5)
    adata.var["symbol"] = ["a", "b", blank, "d", "e"]
    refused(adata, tmp_path, "gene names are empty or whitespace", gene_id_column="symbol")


def test_blank_latent_key_is_refused(tmp_path: Path) -> None:
    adata = small_adata()
    adata.obsm[" "] = np.ones((300, 2))
    refused(adata, tmp_path, "latent_key ' ' is blank", latent_key=" ")


def test_category_labels_with_js_whitespace_are_refused(tmp_path: Path) -> None:
    adata = small_adata(c=pd.Categorical(["a", "\ufeffb", "c"] * 100))
    refused(adata, tmp_path, "leading/trailing whitespace")


# --- item 3: vector fields overflowing float32 after scaling --------------------------------


def test_vectors_overflowing_after_scaling_are_refused(tmp_path: Path) -> None:
    adata = small_adata()
    adata.obsm["X_umap"] *= 1e-3 / np.ptp(adata.obsm["X_umap"])  # extent 1e-3: scale 2,000
    adata.obsm["velocity_umap"] = np.full((300, 2), 1e36)  # finite, 2e39 once scaled
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow warning either
        refused(adata, tmp_path, r"vector field 'velocity_umap' \(2D\) overflows float32")
    adata.obsm["velocity_umap"] = np.full((300, 2), 1e33)  # 2e36: fits
    out = cl.ex.export(adata, tmp_path / "ds")
    assert np.isfinite(decode(out).vectors["velocity_umap"][2]).all()


# --- item 4: normalization of extreme but finite coordinates --------------------------------


@pytest.mark.parametrize(
    "coords",
    [
        np.array([[-1.7e308, 0.0], [1.7e308, 1.0], [0.0, -1e308]]),  # the extent overflows
        np.array([[1.5e308, 1.0], [1.7e308, 2.0], [1.6e308, 3.0]]),  # lo + hi overflows
        np.array([[-1.7e308, -1.7e308], [-1.6e308, -1.5e308], [-1.65e308, -1.7e308]]),
    ],
)
def test_normalize_coords_near_float64_limits(coords: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        norm = cl.pp.normalize_coords(coords)
    assert np.isfinite(norm.coords).all() and np.isfinite(norm.center).all()
    assert 0 < norm.scale < np.inf
    assert np.abs(norm.coords).max() == pytest.approx(1.0)
    # the transform is the documented one, and keeps the aspect ratio
    assert np.allclose(norm.coords, (coords - norm.center) * norm.scale)
    exact = (coords / 2 - norm.center / 2) * 2 * norm.scale
    assert np.allclose(norm.coords, exact)


def test_normalize_coords_is_unchanged_for_ordinary_coordinates() -> None:
    x = np.random.default_rng(0).normal(3, 5, (1000, 3))
    lo, hi = x.min(0), x.max(0)
    norm = cl.pp.normalize_coords(x)
    assert np.array_equal(norm.coords, (x - (lo + hi) / 2) * (2 / (hi - lo).max()))


def test_normalize_coords_refuses_a_subnormal_extent() -> None:
    with pytest.raises(ValueError, match=r"Cannot normalize X: its coordinates span only 1e-310"):
        cl.pp.normalize_coords(np.array([[0.0], [1e-310]]), name="X")


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_export_of_extreme_embeddings(tmp_path: Path, layout: str) -> None:
    n = 300
    rng = np.random.default_rng(0)
    labels = pd.Categorical(rng.choice(["a", "b", "c"], n))
    adata = small_adata(n, labels=labels)
    huge = rng.uniform(-1, 1, (n, 2)) * 1.7e308
    adata.obsm["X_umap"] = huge
    if layout == "legacy":  # float32 arithmetic: refused with the key
        refused(adata, tmp_path, r"adata.obsm\['X_umap'\].*float32", layout=layout)
        return
    out = cl.ex.export(adata, tmp_path / "ds")
    points = decode(out).points[2]
    assert np.isfinite(points).all() and np.abs(points).max() == pytest.approx(1.0)
    valid(out)
    adata.obsm["X_umap"] = rng.normal(size=(n, 2)) * 1e-310  # extent ~1e-309: scale is infinite
    (tmp_path / "tiny").mkdir()
    refused(adata, tmp_path / "tiny", r"adata.obsm\['X_umap'\].*span only", layout=layout)


# --- item 5: one codes dtype for every categorical field ------------------------------------


def test_auto_codes_dtype_is_the_same_for_every_field(tmp_path: Path) -> None:
    n = 600
    adata = small_adata(
        n,
        small=pd.Categorical(["x", "y", "z"] * (n // 3)),
        large=pd.Categorical([f"t{i % 300}" for i in range(n)]),
        flag=np.arange(n) % 2 == 0,
    )
    out = cl.ex.export(adata, tmp_path / "ds", compression=6)
    dec = decode(out)
    assert dec.identity["export_settings"]["obs_categorical_dtype"] == "uint16"
    assert {e[3] for e in dec.obs_manifest["_categoricalFields"]} == {"uint16"}
    assert sorted(p.name for p in (out / "obs").glob("*.codes.*")) == [
        "0.codes.u16.gz",
        "1.codes.u16.gz",
        "2.codes.u16.gz",
    ]
    assert dec.codes["small"].dtype == np.uint16
    assert [dec.categories["small"][c] for c in dec.codes["small"][:3]] == ["x", "y", "z"]
    valid(out)
    # without a large field every field is uint8
    dec = decode(cl.ex.export(adata[:, :], tmp_path / "ds2", obs_keys=["small", "flag"]))
    assert dec.identity["export_settings"]["obs_categorical_dtype"] == "uint8"
    assert {e[3] for e in dec.obs_manifest["_categoricalFields"]} == {"uint8"}


def test_explicit_uint16_is_declared_without_categorical_fields(tmp_path: Path) -> None:
    adata = small_adata(v=np.arange(300.0))
    dec = decode(cl.ex.export(adata, tmp_path / "ds", obs_categorical_dtype="uint16"))
    assert dec.identity["export_settings"]["obs_categorical_dtype"] == "uint16"


def test_255_categories_fit_uint8(tmp_path: Path) -> None:
    n = 510
    adata = small_adata(n, c=pd.Categorical([f"c{i % 255}" for i in range(n)]))
    out = cl.ex.export(adata, tmp_path / "ds")
    dec = decode(out)
    assert dec.obs_manifest["_categoricalFields"][0][3:5] == ["uint8", 255]
    assert dec.codes["c"].max() == 254 and len(dec.categories["c"]) == 255
    valid(out)
    enc = cl.pp.category_codes([f"c{i}" for i in range(255)], dtype="uint8")
    assert enc.dtype == "uint8" and enc.codes.max() == 254
    with pytest.raises(ValueError, match="uint8 codes hold at most 255"):
        cl.pp.category_codes([f"c{i}" for i in range(256)], dtype="uint8")


# --- item 6: payloads past 512 MiB, JSON past 64 MiB ----------------------------------------


def test_payload_limit_is_checked_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adata = make_adata()  # 300 cells: 3-D points take 3,600 bytes
    monkeypatch.setattr(_format, "MAX_PAYLOAD_BYTES", 3_000)
    refused(adata, tmp_path, r"The 3-D points of 300 cells would take 0.0 MB in one file, past")
    monkeypatch.setattr(_format, "MAX_PAYLOAD_BYTES", 1_000)
    refused(adata, tmp_path, "points of 300 cells", obs_keys=[], var_names=[])
    monkeypatch.setattr(_format, "MAX_PAYLOAD_BYTES", 2_399)
    del adata.obsm["X_umap_3d"]  # 2-D points: 2,400 bytes
    refused(adata, tmp_path, "2-D points")


def test_graph_past_the_limit_is_refused_and_prune_graph_fits_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adata = make_adata()
    n_edges = cl.pp.graph_edges(adata.obsp["connectivities"]).src.shape[0]
    monkeypatch.setattr(_format, "MAX_PAYLOAD_BYTES", 8 * (n_edges - 100))  # points fit
    refused(adata, tmp_path, rf"obsp\['connectivities'\] has {n_edges:,} edges.*cl.pp.prune_graph")
    limit = _format.max_edges()
    assert limit == n_edges - 100
    with pytest.warns(UserWarning, match=rf"dropped \d+ of {n_edges:,} edges to fit {limit:,}"):
        adata.obsp["connectivities"] = cl.pp.prune_graph(adata.obsp["connectivities"])
    out = cl.ex.export(adata, tmp_path / "ds")
    dec = decode(out)
    assert 0 < dec.identity["stats"]["n_edges"] <= limit
    valid(out)
    # the legacy layout has no weights: 4-byte indices are its largest edge file
    assert _format.max_edges("legacy") == 2 * limit


def test_graph_past_the_viewers_working_set_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the viewer holds 44 bytes per edge (+4 with uint16 indices) and 4 per cell
    assert _format.max_edges(n_cells=1_000_000) == (512 * 2**20 - 4 * 10**6) // 44
    # tighter than the file of weights (8 bytes per edge) at any number of cells
    assert _format.max_edges(n_cells=300) == (512 * 2**20 - 1_200) // 48 < _format.max_edges()
    adata = make_adata()
    n_edges = cl.pp.graph_edges(adata.obsp["connectivities"]).src.shape[0]
    monkeypatch.setattr(_format, "MAX_CONNECTIVITY_WORKING_BYTES", 48 * (n_edges - 50) + 4 * 300)
    assert _format.max_edges(n_cells=300) == n_edges - 50
    refused(adata, tmp_path, rf"has {n_edges:,} edges; the viewer loads at most {n_edges - 50:,}")
    with pytest.warns(UserWarning, match=rf"to fit {n_edges - 50:,}"):
        adata.obsp["connectivities"] = cl.pp.prune_graph(adata.obsp["connectivities"])
    out = cl.ex.export(adata, tmp_path / "ds")
    assert decode(out).identity["stats"]["n_edges"] <= n_edges - 50
    # the legacy layout is for older viewers, which have no such working set
    cl.ex.export(make_adata(), tmp_path / "legacy", layout="legacy")


def test_prune_graph_keeps_each_cells_strongest_neighbours() -> None:
    rng = np.random.default_rng(3)
    g = knn_graph(rng.normal(size=(200, 5)), k=10)
    full = cl.pp.graph_edges(g)
    max_edges = full.src.shape[0] // 2
    with pytest.warns(UserWarning, match="dropped"):
        pruned = cl.pp.prune_graph(g, max_edges=max_edges)
    assert (pruned != pruned.T).nnz == 0 and pruned.dtype == g.dtype
    kept = cl.pp.graph_edges(pruned)
    assert 0 < kept.src.shape[0] <= max_edges
    # every kept weight is an original weight, every cell keeps its strongest neighbour
    assert np.array_equal(np.asarray(g[kept.src, kept.dst]).ravel(), kept.weights)
    dense = g.toarray()
    strongest = dense.argmax(axis=1)
    assert (pruned.toarray()[np.arange(200), strongest] > 0).all()
    # a dropped edge is weaker, at both its cells, than all of their kept edges ranked as deep
    k = int((pruned.toarray() > 0).sum(1).min())
    assert k >= 1
    # fits already: nothing dropped, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = cl.pp.prune_graph(g)
    assert (same != g).nnz == 0


def test_prune_graph_refuses_a_budget_below_one_neighbour_per_cell() -> None:
    g = knn_graph(np.random.default_rng(0).normal(size=(50, 3)), k=5)
    with pytest.raises(ValueError, match="Even one neighbour per cell"):
        cl.pp.prune_graph(g, max_edges=3)


def test_json_limit_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adata = make_adata()
    monkeypatch.setattr(_format, "MAX_JSON_BYTES", 2_000)
    refused(adata, tmp_path, r"(obs|var)_manifest.json would be 0.0 MB, past the")


# --- item 7: finite values beyond float32's range; obs columns of lists ---------------------


def test_obs_values_beyond_float32_say_so(tmp_path: Path) -> None:
    v = np.linspace(0, 1, 300)
    v[:2] = [1e39, -1e300]
    v[2] = np.nan
    v[3] = np.inf
    adata = small_adata(v=v)
    with pytest.warns(
        UserWarning,
        match=r"obs\['v'\] has 1 NaN, 1 ±Inf and 2 finite values beyond float32's range",
    ):
        out = cl.ex.export(adata, tmp_path / "ds")
    assert np.isnan(decode(out).continuous["v"][:4]).all()


@pytest.mark.parametrize("kind", ["dense", "csr", "csc", "csr, compiled"])
def test_x_values_beyond_float32_are_refused(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind == "csr, compiled":  # the kernels' first pass finds them; numpy's summary says so
        from cellucid.ex import _genes

        monkeypatch.setattr(_genes, "COMPILED_MIN_STORED", 0)
        kind = "csr"
    adata = make_adata(n_cells=50, n_genes=6)
    x = adata.X.toarray().astype(np.float64)
    x[7, 2] = 3e38 * 10
    adata.X = {"dense": x, "csr": sparse.csr_matrix(x), "csc": sparse.csc_matrix(x)}[kind]
    refused(adata, tmp_path, r"finite values beyond float32's range \(\|v\| up to 3e\+39")


def test_latent_beyond_float32_is_refused_as_such(tmp_path: Path) -> None:
    adata = small_adata()
    adata.obsm["X_pca"] = np.ones((300, 4))
    adata.obsm["X_pca"][5, 1] = 1e39
    refused(adata, tmp_path, r"adata.obsm\['X_pca'\] has finite values beyond float32's range")
    adata.obsm["X_pca"][5, 1] = np.nan
    refused(adata, tmp_path, r"adata.obsm\['X_pca'\] has NaN or Inf")


def test_obs_column_of_lists_names_the_column(tmp_path: Path) -> None:
    adata = small_adata(tags=pd.Series([["a", "b"], ["c"], None] * 100, dtype=object).to_numpy())
    refused(adata, tmp_path, r"obs\['tags'\] holds list values \(first at row 0")


# --- issue 12 item 11: complex values -------------------------------------------------------


def test_complex_x_is_refused(tmp_path: Path) -> None:
    adata = make_adata(n_cells=50, n_genes=6)
    adata.X = adata.X.toarray() * (1 + 1j)
    refused(adata, tmp_path, "The expression matrix holds complex numbers")
    adata.X = sparse.csr_matrix(adata.X)
    refused(adata, tmp_path, "The expression matrix holds complex numbers")


@pytest.mark.parametrize("key", ["X_umap", "X_pca", "velocity_umap"])
def test_complex_obsm_is_refused(tmp_path: Path, key: str) -> None:
    adata = small_adata()
    adata.obsm["X_pca"] = np.ones((300, 3))
    adata.obsm["velocity_umap"] = np.ones((300, 2))
    adata.obsm[key] = adata.obsm[key] + 1j
    refused(adata, tmp_path, rf"adata.obsm\['{key}'\] holds complex numbers")


@pytest.mark.parametrize(
    "column",
    [
        np.arange(300) * (1 + 2j),
        pd.Series([1 + 2j, 3j, None] * 100, dtype=object).to_numpy(),
        pd.Categorical([1j, 2j, 3j] * 100),
    ],
)
def test_complex_obs_is_refused(tmp_path: Path, column: object) -> None:
    refused(small_adata(z=column), tmp_path, r"obs\['z'\] holds complex numbers")


# --- issue 12 item 12: mixed-type object columns, one value per cell ------------------------


@pytest.mark.parametrize("n_cells", [20, 2000])
def test_mixed_type_column_becomes_strings_with_a_warning(tmp_path: Path, n_cells: int) -> None:
    values = pd.Series([1, "a", 2.5, None, True] * (n_cells // 5), dtype=object).to_numpy()
    adata = small_adata(n_cells, mixed=values)
    with pytest.warns(
        UserWarning, match=r"obs\['mixed'\] mixes values of types bool, float, int, str"
    ):
        out = cl.ex.export(adata, tmp_path / "ds")
    dec = decode(out)
    assert sorted(dec.categories["mixed"]) == ["1", "2.5", "True", "a"]
    decoded = [
        None if c == 255 else dec.categories["mixed"][c] for c in dec.codes["mixed"][:5].tolist()
    ]
    assert decoded == ["1", "a", "2.5", None, "True"]  # True and 1 stay apart, None is missing
    valid(out)


def test_single_type_columns_are_not_converted(tmp_path: Path) -> None:
    adata = small_adata(
        s=pd.Series(["a", None, "b"] * 100, dtype=object).to_numpy(),
        b=pd.Series([True, None, False] * 100, dtype=object).to_numpy(),
        n=pd.Series([1, 2.5, None] * 100, dtype=object).to_numpy(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dec = decode(cl.ex.export(adata, tmp_path / "ds"))
    assert dec.categories["b"] == [False, True]
    assert dec.categories["s"] == ["a", "b"]


def test_one_value_per_cell_warns(tmp_path: Path) -> None:
    n = 400
    adata = small_adata(n, barcode=[f"AACG{i:06d}" for i in range(n)])
    with pytest.warns(
        UserWarning, match=r"obs\['barcode'\] has a different value in every cell \(400"
    ):
        cl.ex.export(adata, tmp_path / "ds")
    adata = small_adata(n, cluster=[f"k{i % 300}" for i in range(n)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cl.ex.export(adata, tmp_path / "ds2")


# --- issue 12 item 13: legacy file names ----------------------------------------------------


def test_legacy_refuses_keys_that_differ_only_in_case(tmp_path: Path) -> None:
    adata = small_adata(Gene=["a", "b", "c"] * 100, gene=np.arange(300.0))
    refused(adata, tmp_path, "'Gene' and 'gene' become the file names", layout="legacy")
    cl.ex.export(adata, tmp_path / "current")  # the current layout names files by index
    genes = make_adata(n_cells=30, n_genes=4)
    genes.var_names = ["CD4", "cd4", "B", "C"]
    refused(genes, tmp_path, "genes 'CD4' and 'cd4'", layout="legacy")
    vectors = small_adata()
    vectors.obsm["velocity_umap"] = np.ones((300, 2))
    vectors.obsm["Velocity_umap"] = np.ones((300, 2))
    refused(vectors, tmp_path, "vector fields 'Velocity_umap' and 'velocity_umap'", layout="legacy")


def test_legacy_refuses_over_long_file_names(tmp_path: Path) -> None:
    long_key = "k" * 10_000
    adata = small_adata(**{long_key: np.arange(300.0)})
    refused(adata, tmp_path, "is 10,000 characters long as a file name", layout="legacy")
    fits = "k" * _format.LEGACY_MAX_STEM
    adata = small_adata(**{fits: ["a", "b", "c"] * 100})
    out = cl.ex.export(adata, tmp_path / "ds", layout="legacy", compression=1)
    names = [p.name for p in (out / "obs").iterdir()]
    assert max(len(os.fsencode(n)) for n in names) <= _format.MAX_FILE_NAME_BYTES
    assert json.loads((out / "obs_manifest.json").read_text())["_categoricalFields"][0][0] == fits
