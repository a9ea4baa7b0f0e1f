"""Memory between gene blocks (ex/_memory.py): the C allocator's free pages, the interpreter's collections."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
from _data import files_under, make_adata

from cellucid.ex import _memory

# the identity document names when each export was made
IDENTITY = ("dataset_identity.json",)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(_memory._malloc_trim() is None, reason="glibc's malloc_trim only")
def test_freed_heap_memory_is_returned() -> None:
    """Arrays freed in the middle of a thread's heap stay resident until released (glibc keeps them)."""

    def fill_and_free(out: list[int]) -> None:
        # a freed 30 MB array raises glibc's mmap threshold: the 1 MB arrays after it are
        # carved from the heap, and the last one keeps the heap from shrinking
        big = np.ones(30 * 2**20, np.uint8)
        del big
        arrays = [np.ones(2**20, np.uint8) for _ in range(64)]
        last = arrays.pop()
        del arrays
        out.append(_resident_bytes())
        _memory.release_free_memory()
        out.append(_resident_bytes())
        del last

    sizes: list[int] = []
    thread = threading.Thread(target=fill_and_free, args=(sizes,))
    thread.start()
    thread.join()
    before, after = sizes
    assert before - after > 32 * 2**20


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collections_on():
    """The interpreter's automatic collections on, as in a fresh session, and back as they were after."""
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_an_export_runs_without_automatic_collections(
    tmp_path, monkeypatch: pytest.MonkeyPatch, collections_on
) -> None:
    """Paused while the files are written, on again after the export, even one that failed."""
    import cellucid as cl
    from cellucid.ex import _var

    seen: list[bool] = []
    write = _var.GeneWriter.write

    def watched(self, **kwargs) -> None:
        seen.append(gc.isenabled())
        write(self, **kwargs)

    monkeypatch.setattr(_var.GeneWriter, "write", watched)
    adata = make_adata(200, 30)
    cl.ex.export(adata, tmp_path / "out", progress=False)
    assert seen == [False]
    assert gc.isenabled()

    def fail(self, **kwargs) -> None:
        seen.append(gc.isenabled())
        msg = "disk full"
        raise OSError(msg)

    monkeypatch.setattr(_var.GeneWriter, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        cl.ex.export(adata, tmp_path / "failed", progress=False)
    assert seen == [False, False]
    assert gc.isenabled()


def test_young_cycles_are_collected_between_blocks_while_paused(collections_on) -> None:
    """release_free_memory collects a cycle made in the block; the last of nested pauses resumes."""
    with _memory.collections_paused():
        with _memory.collections_paused():  # a second export at once
            cycle = weakref.ref(_Cycle())
            assert cycle() is not None
            _memory.release_free_memory()
            assert cycle() is None
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collections_the_user_turned_off_stay_off() -> None:
    was = gc.isenabled()
    gc.disable()
    try:
        with _memory.collections_paused():
            cycle = weakref.ref(_Cycle())
            _memory.release_free_memory()  # not ours to collect
            assert cycle() is not None
        assert not gc.isenabled()
    finally:
        gc.collect()
        if was:
            gc.enable()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_large_graphs_edges_are_made_a_part_at_a_time(
    tmp_path, monkeypatch: pytest.MonkeyPatch, n_jobs: int
) -> None:
    """Edges larger than a block of genes: found after obs, weights written before the ends are made; the same bytes."""

    import scanpy as sc

    import cellucid as cl
    from cellucid.pp import _graph, _groups

    adata = sc.datasets.pbmc68k_reduced()
    options = {"compression": 6, "var_quantization": 8, "n_jobs": n_jobs}
    small = cl.ex.export(adata, tmp_path / "small", **options)

    monkeypatch.setattr(_groups, "COMPILED_MIN_ROWS", 0)  # the kernels find a graph's edges
    made: list[str] = []
    weights_of = _graph.UpperEdges.weights
    ends_of = _graph.UpperEdges.ends

    def weights(self):
        w = weights_of(self)
        self.weights_ref = weakref.ref(w)
        made.append("weights")
        return w

    def ends(self):
        ref = getattr(self, "weights_ref", None)
        assert ref is None or ref() is None  # written and freed before the ends are made
        made.append("ends")
        return ends_of(self)

    monkeypatch.setattr(_graph.UpperEdges, "weights", weights)
    monkeypatch.setattr(_graph.UpperEdges, "ends", ends)
    edges = _graph.symmetric_edges(adata.obsp["connectivities"])[0]
    assert made == ["ends", "weights"]  # symmetric_edges makes both, for its callers
    made.clear()
    # pbmc's graph is larger than a block of genes under this budget
    large = cl.ex.export(adata, tmp_path / "large", memory_budget=edges.n_edges * 16, **options)
    assert made == ["weights", "ends"]
    assert files_under(large, without=IDENTITY) == files_under(small, without=IDENTITY)
