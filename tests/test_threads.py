"""An export's threads: ``n_jobs`` workers on one pool and one reader, none left once it returns or raises."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from _data import make_adata

import cellucid as cl
from cellucid.ex import _genes, _obs, _payload, _var

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
OPTIONS = {"compression": 6, "var_quantization": 8, "obs_continuous_quantization": 8}


class ThreadCounter:
    """Wraps functions the export runs in every kind of thread; counts the live threads it did not find."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.before = set(threading.enumerate())
        self.counts: list[int] = []
        for module, name in (
            (_payload, "encode_payload"),  # files: the pool
            (_var, "encode_payload"),  # gene files: the pool
            (_genes, "_csr_part"),  # a block's parts: the pool
            (_genes, "_run_starts"),  # the row runs: the pool, asked by the reader
            (_genes, "summarize"),  # the first pass: the reader
            (_genes, "_spill_chunk"),  # spilling a backed matrix: the pool
            (_obs, "outlier_quantiles"),  # obs fields: the pool
        ):
            monkeypatch.setattr(module, name, self._counted(getattr(module, name)))

    def _counted(self, function):
        def counted(*args, **kwargs):
            self.counts.append(len(self.new()))
            return function(*args, **kwargs)

        return counted

    def new(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in self.before]


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("threads") / "data.h5ad"
    make_adata(600, 120).write_h5ad(path)
    return path


@pytest.mark.parametrize("n_jobs", [1, 2, 4])
@pytest.mark.parametrize("backed", [False, True])
def test_live_threads_are_bounded_by_n_jobs(
    h5ad: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_jobs: int, backed: bool
) -> None:
    adata = ad.read_h5ad(h5ad, backed="r" if backed else None)
    counter = ThreadCounter(monkeypatch)
    # a small budget: many blocks of genes (a backed matrix is spilled)
    cl.ex.export(adata, tmp_path / "ds", n_jobs=n_jobs, memory_budget=20_000, **OPTIONS)
    assert counter.counts  # the wrapped functions ran
    # the pool's n_jobs threads (none for 1: the caller's does the work) and the reader
    assert max(counter.counts) <= (n_jobs if n_jobs > 1 else 0) + 1
    assert max(counter.counts) >= min(n_jobs, 2)  # the pool's and the reader's were seen
    assert counter.new() == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failing_export_stops_its_spill_promptly_and_leaves_no_thread(
    h5ad: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    """The main thread fails while the reader spills a backed matrix, one slow chunk at a time."""
    spilled, started, failed = [], threading.Event(), threading.Event()
    spill_chunk = _genes._spill_chunk

    def slow_spill(*args: object) -> None:
        spilled.append(1)
        started.set()
        if len(spilled) == 1:
            failed.wait(10)  # the export fails while a chunk is being spilled
        time.sleep(0.02)
        spill_chunk(*args)

    def fail(*args: object, **kwargs: object) -> None:
        assert started.wait(10)  # the spill runs beside the rest of the export
        failed.set()
        raise error

    monkeypatch.setattr(_genes, "_spill_chunk", slow_spill)
    monkeypatch.setattr(cl.ex._export, "encode_obs", fail)
    backed = ad.read_h5ad(h5ad, backed="r")
    before = set(threading.enumerate())
    start = time.perf_counter()
    with pytest.raises(error):
        # one row per chunk: spilling them all would take over 10 s
        cl.ex.export(backed, tmp_path / "ds", memory_budget=2_000, n_jobs=2, **OPTIONS)
    assert time.perf_counter() - start < 2.5
    assert len(spilled) <= 2  # stopped at the next chunk
    assert [t for t in threading.enumerate() if t not in before] == []
    assert list(tmp_path.iterdir()) == []  # staging and spill files removed


def test_a_failing_gene_writer_leaves_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    encode = _var.GeneWriter._encode

    def fail_on_the_third_block(self, *args: object, **kwargs: object):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(_var.GeneWriter, "_encode", fail_on_the_third_block)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        cl.ex.export(make_adata(300, 60), tmp_path / "ds", memory_budget=5_000, n_jobs=2)
    assert len(calls) == 3
    assert [t for t in threading.enumerate() if t not in before] == []
    assert list(tmp_path.iterdir()) == []


def test_a_spill_whose_chunk_the_pool_dropped_ends(tmp_path: Path) -> None:
    """A failing export's pool drops queued chunks: the spill must end, not wait for them forever.

    ``concurrent.futures.wait`` never sees a future cancelled that way as done.
    """
    from concurrent.futures import CancelledError, Executor, Future

    class Dropping(Executor):  # what a pool shut down with cancel_futures=True does to queued work
        def submit(self, fn, /, *args, **kwargs):
            future: Future = Future()
            future.cancel()
            return future

    matrix = make_adata(300, 40).X.tocsr()
    spill = _genes._Spill(tmp_path / "spill", Dropping(), threading.Event())
    blocks = spill.blocks(
        lambda r0, r1: matrix[r0:r1],
        lambda: matrix,
        np.arange(matrix.shape[1]),
        n_cells=matrix.shape[0],
        n_all=matrix.shape[1],
        stored_per_gene=matrix.nnz / matrix.shape[1],
        payload=matrix.shape[0],
        budget=4_000,
    )
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            list(blocks)
        except BaseException as error:
            outcome.append(error)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    consumer.join(timeout=30)
    assert not consumer.is_alive(), "the spill waits forever for a dropped chunk"
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledError)
    assert list((tmp_path / "spill").iterdir()) == []
