"""The C allocator's free memory goes back to the system between gene blocks (ex/_memory.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cellucid.ex import _memory


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
