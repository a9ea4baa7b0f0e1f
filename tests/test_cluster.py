"""On a distributed cluster the workers encode and write the genes; the client gets small facts only."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from _data import files_under, make_adata
from conftest import AWS_ISOLATION
from scipy import sparse

import cellucid as cl
from cellucid.ex import _distributed

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
N_CELLS, N_GENES = 400, 37
OPTIONS = {
    "dataset_name": "same",
    "compression": 6,
    "var_quantization": 8,
    "obs_continuous_quantization": 8,
}
# a small budget: many blocks of genes and many groups of row chunks
BUDGET = 20_000


@pytest.fixture(autouse=True)
def _fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=AWS_ISOLATION,  # the workers reach the tests' S3 server with the tests' keys only
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    adata = make_adata(N_CELLS, N_GENES)
    adata.X[5, 3] = np.nan  # a gene with a missing value: its warning comes from the workers' facts
    return adata


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every result the client receives from the cluster (``Client._gather``)."""
    results: list[object] = []
    gather = distributed.Client._gather

    async def spy(self, futures, *args, **kwargs):
        out = await gather(self, futures, *args, **kwargs)
        results.append(out)
        return out

    monkeypatch.setattr(distributed.Client, "_gather", spy)
    return results


def arrays(obj: object) -> list[object]:
    """The numpy arrays and sparse matrices in a result, however nested."""
    if isinstance(obj, np.ndarray) or sparse.issparse(obj):
        return [obj]
    if isinstance(obj, list | tuple):
        return [a for item in obj for a in arrays(item)]
    if isinstance(obj, dict):
        return [a for item in obj.values() for a in arrays(item)]
    return []


def assert_no_x_block(results: list[object]) -> None:
    """Nothing of cells × genes came back.

    Sparse results are the graph, 2-D arrays obsm, 1-D arrays obs or var columns (a lazy
    AnnData's) or a block's facts (its genes' places): never X's stored values.
    """
    for a in arrays(results):
        if sparse.issparse(a):
            assert a.shape == (N_CELLS, N_CELLS), a.shape
        elif a.ndim == 2:
            assert a.shape[1] in (2, 3, 10) and a.shape[0] == N_CELLS, a.shape
        else:
            assert a.ndim == 1 and a.shape[0] <= max(N_CELLS, N_GENES), a.shape


def facts(results: list[object]) -> list[_distributed.BlockFacts]:
    return [f for out in results for f in out if isinstance(f, _distributed.BlockFacts)]


def dask_copy(adata: ad.AnnData, kind: str) -> ad.AnnData:
    copy = adata.copy()
    dense = adata.X.toarray()
    if kind == "dense":
        copy.X = da.from_array(dense, chunks=(97, 11))
    elif kind == "sparse-rows":
        copy.X = da.from_array(dense, chunks=(60, -1)).map_blocks(
            sparse.csr_matrix, dtype=np.float32
        )
    else:  # sparse chunks of rows and columns
        copy.X = da.from_array(dense, chunks=(97, 10)).map_blocks(
            sparse.csr_matrix, dtype=np.float32
        )
    return copy


SIXTEEN_BITS = {"dataset_name": "same", "var_quantization": 16}
FLOAT32_GZIP = {"dataset_name": "same", "compression": 1}
LEGACY_SUBSET = {
    **OPTIONS,
    "layout": "legacy",
    "var_names": ["GENE030", "GENE002", "HLA-A/B", "GENE017"],
}


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("sparse-rows", OPTIONS),
        ("sparse-rows", SIXTEEN_BITS),
        ("sparse-rows", FLOAT32_GZIP),
        ("sparse-rows", LEGACY_SUBSET),
        ("sparse-tiles", OPTIONS),
        ("sparse-tiles", LEGACY_SUBSET),
        ("dense", SIXTEEN_BITS),
        ("dense", FLOAT32_GZIP),
        ("dense", LEGACY_SUBSET),
    ],
    ids=[
        "sparse-rows-8bit-gzip",
        "sparse-rows-16bit",
        "sparse-rows-float32-gzip",
        "sparse-rows-legacy-subset",
        "sparse-tiles-8bit-gzip",
        "sparse-tiles-legacy-subset",
        "dense-16bit",
        "dense-float32-gzip",
        "dense-legacy-subset",
    ],
)
def test_workers_write_byte_identical(
    client, adata, received, tmp_path: Path, kind: str, options: dict
) -> None:
    expected = files_under(cl.ex.export(adata, tmp_path / "memory", **options))
    budget = BUDGET if "var_names" not in options else BUDGET // 5  # a few genes: small blocks
    out = cl.ex.export(
        dask_copy(adata, kind), tmp_path / "cluster", memory_budget=budget, **options
    )
    assert files_under(out) == expected
    written = facts(received)
    assert len(written) > 1  # several blocks, each written by a worker
    assert sum(len(f.genes) for f in written) == len(options.get("var_names", adata.var_names))
    assert_no_x_block(received)


def test_only_small_facts_cross(client, adata, received, tmp_path: Path) -> None:
    copy = dask_copy(adata, "sparse-rows")
    copy.obsm["X_pca"] = da.from_array(adata.obsm["X_pca"], chunks=(100, 10))
    copy.obsp["connectivities"] = da.from_array(adata.obsp["connectivities"], chunks=(200, N_CELLS))
    cl.ex.export(copy, tmp_path / "ds", memory_budget=BUDGET, **OPTIONS)
    assert_no_x_block(received)
    written = facts(received)
    # a block's facts: its genes' manifest entries and counts, about 100 bytes per gene
    assert sum(len(pickle.dumps(f)) for f in written) < 200 * N_GENES + 600 * len(written)
    # the graph and X_pca did come back: the client needs them
    assert any(sparse.issparse(a) for a in arrays(received))


def test_without_client_nothing_changes(adata, tmp_path: Path, monkeypatch) -> None:
    """The same dask matrix on dask's own scheduler (the client not the default) stays local."""
    import dask

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the workers path ran without a distributed scheduler")

    monkeypatch.setattr(_distributed, "WorkersWrite", refuse)
    expected = files_under(cl.ex.export(adata, tmp_path / "memory", **OPTIONS))
    with dask.config.set(scheduler="threads"):
        out = cl.ex.export(dask_copy(adata, "sparse-rows"), tmp_path / "local", **OPTIONS)
    assert files_under(out) == expected


def test_progress_and_log(client, adata, tmp_path: Path, monkeypatch, caplog_cellucid) -> None:
    from cellucid.ex import _progress

    stages: list[str] = []
    counted: dict[str, int] = {}
    stage, advance = _progress.ExportProgress.stage, _progress.ExportProgress.advance

    def on_stage(self, name: str) -> None:
        stages.append(name)
        stage(self, name)

    def on_advance(self, nbytes: int) -> None:
        counted[stages[-1] if stages else ""] = (
            counted.get(stages[-1] if stages else "", 0) + nbytes
        )
        advance(self, nbytes)

    monkeypatch.setattr(_progress.ExportProgress, "stage", on_stage)
    monkeypatch.setattr(_progress.ExportProgress, "advance", on_advance)
    with caplog_cellucid(logging.INFO) as records:
        out = cl.ex.export(
            dask_copy(adata, "sparse-rows"), tmp_path / "ds", memory_budget=BUDGET, **OPTIONS
        )
    # the genes stage counts each payload once encoded and 3 times written (gzip); files
    # of obs the client's pool is still writing may be counted in it too
    assert counted["genes"] >= 4 * N_CELLS * N_GENES
    summary = next(r.getMessage() for r in records if r.getMessage().startswith("exported"))
    payloads = [p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".json")]
    assert f"{N_GENES} genes" in summary and f"{len(payloads)} payload files" in summary


def test_worker_error_is_one_clear_error_and_leaves_nothing(client, adata, tmp_path: Path) -> None:
    def fail_on_third(block: sparse.csr_matrix, block_info=None) -> sparse.csr_matrix:
        if block_info[0]["chunk-location"][0] == 3:
            msg = "block 3 of X is corrupt"
            raise OSError(msg)
        return block

    copy = dask_copy(adata, "sparse-rows")
    copy.X = copy.X.map_blocks(
        fail_on_third, dtype=np.float32, meta=sparse.csr_matrix((0, 0), dtype=np.float32)
    )
    with pytest.raises(OSError, match="block 3 of X is corrupt"):
        cl.ex.export(copy, tmp_path / "ds", memory_budget=BUDGET, **OPTIONS)
    assert os.listdir(tmp_path) == []
    # the cluster is fine afterwards
    out = cl.ex.export(dask_copy(adata, "sparse-rows"), tmp_path / "ds", **OPTIONS)
    assert (out / "var_manifest.json").is_file()


def test_value_float32_cannot_hold_while_other_blocks_are_written(
    client, adata, tmp_path: Path
) -> None:
    """One tile of columns fails on a worker while the blocks of the others may be written."""
    dense = adata.X.toarray().astype(np.float64)
    dense[5, 33] = 1e300
    copy = adata.copy()
    copy.X = da.from_array(dense, chunks=(97, 10)).map_blocks(sparse.csr_matrix, dtype=np.float64)
    with pytest.raises(ValueError, match="beyond float32's range"):
        cl.ex.export(copy, tmp_path / "ds", memory_budget=BUDGET, **OPTIONS)
    assert os.listdir(tmp_path) == []


def test_read_lazy_zarr(client, adata, received, tmp_path: Path) -> None:
    import zarr
    from anndata.experimental import read_elem_lazy, read_lazy

    adata.write_zarr(tmp_path / "data.zarr")
    expected = files_under(cl.ex.export(adata, tmp_path / "memory", **OPTIONS))
    lazy = read_lazy(tmp_path / "data.zarr")
    assert type(lazy.X).__module__.startswith("dask")
    out = cl.ex.export(lazy, tmp_path / "lazy", memory_budget=BUDGET, **OPTIONS)
    assert files_under(out) == expected
    assert len(facts(received)) > 1
    assert_no_x_block(received)
    # the guide's recipe: larger row chunks of the same store
    lazy.X = read_elem_lazy(
        zarr.open_group(tmp_path / "data.zarr", mode="r")["X"], chunks=(150, N_GENES)
    )
    out = cl.ex.export(lazy, tmp_path / "chunks", memory_budget=BUDGET, **OPTIONS)
    assert files_under(out) == expected
    assert_no_x_block(received)


# --- to an object store: the workers write the genes straight to the new version -------------


def stored(url: str, options: dict) -> dict[str, bytes]:
    from cellucid.ex._store import Destination

    dest = Destination.from_target(url, options)
    return {rel: dest.read_bytes(rel) for rel in dest.files()}


def version_files(url: str, options: dict) -> dict[str, bytes]:
    """The files of the published version at ``url`` (relative to it)."""
    import json

    everything = stored(url, options)
    (entry,) = json.loads(everything["datasets.json"])["datasets"]
    return {
        rel.removeprefix(entry["path"]): data
        for rel, data in everything.items()
        if rel.startswith(entry["path"])
    }


@pytest.fixture
def client_writes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """What this process (the client) stores remotely, and what it staged locally to upload."""
    from cellucid.ex._cloud import CloudExport
    from cellucid.ex._store import Destination

    seen: dict[str, list[str]] = {"stored": [], "staged": []}
    put, write_bytes, publish = Destination.put, Destination.write_bytes, CloudExport.publish

    def spy_put(self, local, relpath):
        seen["stored"].append(relpath)
        put(self, local, relpath)

    def spy_write_bytes(self, relpath, data):
        seen["stored"].append(relpath)
        write_bytes(self, relpath, data)

    def spy_publish(self, local):
        seen["staged"] += [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
        publish(self, local)

    monkeypatch.setattr(Destination, "put", spy_put)
    monkeypatch.setattr(Destination, "write_bytes", spy_write_bytes)
    monkeypatch.setattr(CloudExport, "publish", spy_publish)
    return seen


def test_workers_write_the_genes_straight_to_s3(
    client, adata, received, client_writes, s3, tmp_path: Path
) -> None:
    bucket, options = s3
    url = f"{bucket}/exports/same"
    expected = files_under(cl.ex.export(adata, tmp_path / "memory", **OPTIONS))
    copy = dask_copy(adata, "sparse-tiles")
    out = cl.ex.export(copy, url, storage_options=options, memory_budget=BUDGET, **OPTIONS)
    assert out == url
    assert version_files(url, options) == expected
    gene_payloads = {rel for rel in expected if rel.startswith("var/")}
    assert len(gene_payloads) == N_GENES
    # the client neither staged nor stored one gene payload: the workers stored them all
    assert not [rel for rel in client_writes["staged"] if rel.startswith("var/")]
    assert not [rel for rel in client_writes["stored"] if rel.startswith("var/")]
    assert "var_manifest.json" in client_writes["stored"]
    assert client_writes["stored"][-2:] == ["dataset_identity.json", "datasets.json"]
    written = facts(received)
    assert len(written) > 1
    assert sum(f.files_written for f in written) == N_GENES
    assert_no_x_block(received)
    assert cl.ex.validate(url, storage_options=options).ok


def _fail_after_the_genes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client fails once the workers wrote every gene payload (its var manifest is next)."""
    from cellucid.ex import _distributed

    def fail(*args: object, **kwargs: object) -> None:
        msg = "the client's disk is full"
        raise OSError(msg)

    monkeypatch.setattr(_distributed, "write_var_manifest", fail)


@pytest.mark.parametrize("where", ["worker", "client"])
def test_a_failed_cluster_export_to_s3_leaves_the_previous_one(
    client, adata, s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    bucket, options = s3
    url = f"{bucket}/exports/same"
    cl.ex.export(adata, url, storage_options=options, **OPTIONS)
    before = stored(url, options)
    previous = cl.ex.read(url, storage_options=options)
    copy = adata.copy()
    if where == "worker":  # one tile of columns fails while the other blocks are written
        dense = adata.X.toarray().astype(np.float64)
        dense[5, 33] = 1e300
        copy.X = da.from_array(dense, chunks=(97, 10)).map_blocks(
            sparse.csr_matrix, dtype=np.float64
        )
        error = pytest.raises(ValueError, match="beyond float32's range")
    else:  # every gene payload is stored in the new version when the client fails
        copy = dask_copy(adata, "sparse-rows")
        _fail_after_the_genes(monkeypatch)
        error = pytest.raises(OSError, match="the client's disk is full")
    with error:
        cl.ex.export(
            copy, url, storage_options=options, overwrite=True, memory_budget=BUDGET, **OPTIONS
        )
    # the partial version is gone, datasets.json untouched: the previous export is served
    assert stored(url, options) == before
    back = cl.ex.read(url, storage_options=options)
    np.testing.assert_array_equal(back.X.toarray(), previous.X.toarray())  # NaN too


def test_read_lazy_from_s3_to_s3(client, adata, received, s3, tmp_path: Path) -> None:
    """A zarr store at an s3:// URL, opened lazily, read by the workers and exported by them to S3."""
    import s3fs
    import zarr
    from anndata.experimental import read_lazy

    bucket, options = s3
    adata.write_zarr(tmp_path / "data.zarr")
    s3fs.S3FileSystem(**options).put(
        str(tmp_path / "data.zarr"), f"{bucket}/data.zarr", recursive=True
    )
    expected = files_under(cl.ex.export(adata, tmp_path / "memory", **OPTIONS))
    store = zarr.storage.FsspecStore.from_url(
        f"{bucket}/data.zarr", storage_options=options, read_only=True
    )
    lazy = read_lazy(store)  # the workers read X from the bucket (the store pickles)
    assert type(lazy.X).__module__.startswith("dask")
    url = f"{bucket}/exports/same"
    cl.ex.export(lazy, url, storage_options=options, memory_budget=BUDGET, **OPTIONS)
    assert version_files(url, options) == expected
    assert len(facts(received)) > 1
    assert_no_x_block(received)
