"""Backed and dask inputs stream genes block by block and give byte-identical exports."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from _data import files_under, make_adata
from scipy import sparse

import cellucid as cl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
OPTIONS = {
    "dataset_name": "same",
    "compression": 6,
    "var_quantization": 8,
    "obs_continuous_quantization": 8,
}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[ad.AnnData, Path]:
    """An in-memory AnnData, its .h5ad and .zarr copies, and the reference in-memory export."""
    root = tmp_path_factory.mktemp("large")
    adata = make_adata(400, 37)
    adata.write_h5ad(root / "data.h5ad")
    adata.write_zarr(root / "data.zarr")
    return adata, root


@pytest.fixture(autouse=True)
def _fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


@pytest.fixture(scope="module")
def reference(
    source: tuple[ad.AnnData, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    import os

    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    adata, _ = source
    return files_under(cl.ex.export(adata, tmp_path_factory.mktemp("ref") / "ds", **OPTIONS))


@pytest.mark.parametrize(
    ("budget", "spilled"), [(8_000, True), (60_000, True), (512 * 2**20, False)]
)
def test_backed_h5ad(source, reference, tmp_path, monkeypatch, budget: int, spilled: bool) -> None:
    from cellucid.ex import _genes

    calls = []
    spill = _genes._Spill._spilled
    monkeypatch.setattr(
        _genes._Spill, "_spilled", lambda *a, **k: calls.append(1) or spill(*a, **k)
    )
    _, root = source
    backed = ad.read_h5ad(root / "data.h5ad", backed="r")
    assert not sparse.issparse(backed.X) and type(backed.X).__name__.endswith("CSRDataset")
    out = cl.ex.export(backed, tmp_path / "ds", memory_budget=budget, **OPTIONS)
    assert files_under(out) == reference
    # a budget smaller than the matrix transposes it in one pass through spill files, removed after
    assert bool(calls) == spilled


def test_backed_csc_and_dense(source, reference, tmp_path: Path) -> None:
    adata, root = source
    for name, matrix in (("csc", sparse.csc_matrix(adata.X)), ("dense", adata.X.toarray())):
        copy = adata.copy()
        copy.X = matrix
        copy.write_h5ad(root / f"{name}.h5ad")
        backed = ad.read_h5ad(root / f"{name}.h5ad", backed="r")
        out = cl.ex.export(backed, tmp_path / name, memory_budget=30_000, **OPTIONS)
        assert files_under(out) == reference, name


def test_in_memory_sources_and_budgets(source, reference, tmp_path: Path) -> None:
    adata, _ = source
    for i, matrix in enumerate(
        (adata.X, sparse.csc_matrix(adata.X), adata.X.toarray(), sparse.csr_array(adata.X))
    ):
        copy = adata.copy()
        copy.X = matrix
        out = cl.ex.export(copy, tmp_path / str(i), memory_budget=5_000, **OPTIONS)
        assert files_under(out) == reference, type(matrix)


def test_read_lazy_zarr_sparse_chunks(source, reference, tmp_path, monkeypatch) -> None:
    from anndata.experimental import read_lazy

    from cellucid.ex import _genes

    calls = []
    spill = _genes._Spill._spilled
    monkeypatch.setattr(
        _genes._Spill, "_spilled", lambda *a, **k: calls.append(1) or spill(*a, **k)
    )
    _, root = source
    lazy = read_lazy(root / "data.zarr")
    assert type(lazy.X).__module__.startswith("dask")
    assert (
        files_under(cl.ex.export(lazy, tmp_path / "ds", memory_budget=40_000, **OPTIONS))
        == reference
    )
    assert calls  # the dask matrix was read once, through spill files
    assert (
        files_under(cl.ex.export(lazy, tmp_path / "big", memory_budget=512 * 2**20, **OPTIONS))
        == reference
    )


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_user_built_dask(source, reference, tmp_path: Path, kind: str) -> None:
    import dask.array as da

    adata, _ = source
    copy = adata.copy()
    dense = adata.X.toarray()
    if kind == "dense":
        copy.X = da.from_array(dense, chunks=(97, 11))
    else:
        copy.X = da.from_array(dense, chunks=(97, 37)).map_blocks(
            sparse.csr_matrix, dtype=np.float32
        )
    copy.obsm["X_umap_3d"] = da.from_array(adata.obsm["X_umap_3d"], chunks=(100, 3))
    assert files_under(cl.ex.export(copy, tmp_path / "ds", **OPTIONS)) == reference


def test_distributed_local_cluster(source, reference, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    from anndata.experimental import read_lazy

    _, root = source
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        lazy = read_lazy(root / "data.zarr")
        out = cl.ex.export(lazy, tmp_path / "ds", memory_budget=40_000, **OPTIONS)
        # the blocks were computed on the cluster's workers
        assert client.run(lambda: True)
    assert files_under(out) == reference


def test_bad_memory_budget(source, tmp_path: Path) -> None:
    adata, _ = source
    with pytest.raises(ValueError, match="memory_budget must be a positive"):
        cl.ex.export(adata, tmp_path / "ds", memory_budget=0)


def test_backed_gene_subset_in_any_order(source, tmp_path: Path) -> None:
    adata, root = source
    genes = [adata.var_names[i] for i in (30, 2, 17, 5, 36, 0)]
    expected = files_under(cl.ex.export(adata, tmp_path / "mem", var_names=genes, **OPTIONS))
    backed = ad.read_h5ad(root / "data.h5ad", backed="r")
    out = cl.ex.export(backed, tmp_path / "backed", var_names=genes, memory_budget=4_000, **OPTIONS)
    assert files_under(out) == expected


def test_unused_lazy_arrays_are_never_computed(source, reference, tmp_path: Path) -> None:
    import dask.array as da

    adata, _ = source
    copy = adata.copy()

    def refuse(block: np.ndarray) -> np.ndarray:
        msg = "an obsm array the export does not use was computed"
        raise AssertionError(msg)

    lazy = da.zeros((copy.n_obs, 4), chunks=(100, 4))
    copy.obsm["X_unused"] = lazy.map_blocks(refuse, dtype=np.float64, meta=np.empty((0, 0)))
    copy.obsm["X_umap_3d"] = da.from_array(adata.obsm["X_umap_3d"], chunks=(100, 3))
    copy.obsp["connectivities"] = da.from_array(adata.obsp["connectivities"], chunks=(200, 400))
    assert files_under(cl.ex.export(copy, tmp_path / "ds", **OPTIONS)) == reference


def test_failure_while_genes_spill_cleans_up(
    source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The genes' first pass runs beside the rest: a failure there leaves nothing behind."""
    from cellucid.ex import _export

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("obs failed")

    monkeypatch.setattr(_export, "encode_obs", boom)
    backed = ad.read_h5ad(source[1] / "data.h5ad", backed="r")
    with pytest.raises(RuntimeError, match="obs failed"):
        cl.ex.export(backed, tmp_path / "ds", memory_budget=8_000, **OPTIONS)
    assert list(tmp_path.iterdir()) == []


def test_embeddings_are_released_before_the_gene_stage(
    source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinates serve the obs stage; the gene stage's blocks get their memory."""
    from cellucid.ex import _export, _var

    held: list[dict] = []
    normalize = _export.normalize_embeddings

    def keep(*args, **kwargs):
        held.append(normalize(*args, **kwargs))
        return held[-1]

    seen: list[int] = []
    write = _var.GeneWriter.write

    def count_then_write(self, **kwargs):
        seen.append(sum(a.coords.nbytes for a in held[0].values()))
        return write(self, **kwargs)

    monkeypatch.setattr(_export, "normalize_embeddings", keep)
    monkeypatch.setattr(_var.GeneWriter, "write", count_then_write)
    adata, _ = source
    before = {key: value.copy() for key, value in adata.obsm.items()}
    ds = cl.ex.export(adata, tmp_path / "ds", progress=False, **OPTIONS)
    assert seen == [0]
    decoded = cl.ex.read(ds)
    assert decoded.n_obs == adata.n_obs and {"X_umap_2d", "X_umap_3d"} <= set(decoded.obsm)
    for key, value in before.items():  # the caller's embeddings are untouched
        np.testing.assert_array_equal(adata.obsm[key], value)
