"""A bounded load test: 8 concurrent clients fetch every file of a 100k-cell export twice."""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import cellucid as cl

N_CELLS = 100_000
N_CLIENTS = 8


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLUCID_OFFLINE", "1")
    monkeypatch.setenv("CELLUCID_CACHE_DIR", str(tmp_path / "cache"))


def _large_adata(seed: int = 0) -> ad.AnnData:
    """100k cells in 12 clusters, 8 genes, a random 10-NN graph: big in cells, small in genes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 12, N_CELLS)
    latent = (rng.normal(0, 5, (12, 10))[labels] + rng.normal(0, 1, (N_CELLS, 10))).astype(
        np.float32
    )
    x = sparse.random(N_CELLS, 8, density=0.3, format="csr", dtype=np.float32, random_state=seed)
    rows = np.repeat(np.arange(N_CELLS), 10)
    cols = rng.integers(0, N_CELLS, rows.size)
    keep = rows != cols
    graph = sparse.csr_matrix(
        (rng.random(keep.sum()).astype(np.float32) + 0.1, (rows[keep], cols[keep])),
        shape=(N_CELLS, N_CELLS),
    )
    adata = ad.AnnData(
        X=x,
        obs=pd.DataFrame(
            {
                "cluster": pd.Categorical(labels.astype(str)),
                "score": rng.normal(size=N_CELLS),
            },
            index=np.arange(N_CELLS).astype(str),
        ),
    )
    adata.obsm["X_pca"] = latent
    adata.obsm["X_umap"] = latent[:, :2] * 2
    adata.obsm["X_umap_3d"] = latent[:, :3]
    adata.obsp["connectivities"] = graph.maximum(graph.T).tocsr()
    return adata


def _fetch_all(port: int, paths: list[str]) -> dict[str, str]:
    """Fetch ``paths`` over one kept-alive connection; return each body's sha256."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    digests = {}
    try:
        for path in paths:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200, (path, response.status)
            digest = hashlib.sha256()
            while block := response.read(256 * 1024):  # streamed: bounded client memory
                digest.update(block)
            digests[path] = digest.hexdigest()
    finally:
        conn.close()
    return digests


def test_eight_clients_fetch_every_file_twice(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the symmetrized random graph
        folder = cl.ex.export(_large_adata(), tmp_path / "large", compression=1)
    on_disk = {
        f"/{p.relative_to(folder).as_posix()}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    total_bytes = sum(sizes)
    paths = sorted(on_disk)
    server = cl.ex.serve(folder, port=0, open_browser=False, block=False)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(N_CLIENTS) as pool:
            # each client fetches every file twice, in its own order
            orders = [(paths[::-1] if i % 2 else paths) * 2 for i in range(N_CLIENTS)]
            results = list(pool.map(lambda order: _fetch_all(server.port, order), orders))
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.stop()
    for digests in results:
        assert digests == on_disk  # no error, every byte identical
    transferred = 2 * N_CLIENTS * total_bytes
    # bounded memory: files go out with sendfile, never loaded whole; the peak of Python
    # allocations stays far below what was transferred and below the largest file
    assert peak < min(16 * 2**20, max(sizes)), (peak, max(sizes))
    assert transferred > 20 * peak
    print(
        f"{len(paths)} files, {total_bytes / 1e6:.1f} MB per pass, {transferred / 1e6:.0f} MB "
        f"in {elapsed:.1f} s, Python allocation peak {peak / 1e6:.1f} MB, "
        f"largest file {max(sizes) / 1e6:.1f} MB"
    )
    # stopped cleanly: no serving thread left, the port is refused
    assert not [t for t in threading.enumerate() if t.name.startswith("cellucid-serve")]
    with pytest.raises(OSError):  # noqa: PT011
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=5).request("GET", "/")
