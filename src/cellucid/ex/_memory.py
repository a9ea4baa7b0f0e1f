"""Memory between the blocks of a long stage: the C allocator's free pages, the interpreter's collections."""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

# exports under way with the interpreter's automatic collections paused (by collections_paused)
_pausing = 0
_pausing_lock = threading.Lock()


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's C library: glibc's, if it has one
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Free what the blocks before left: young cyclic garbage, and the C allocator's free pages.

    While :func:`collections_paused` holds, the interpreter's young generations are
    collected here (a few thousand objects: ~1 ms). The C allocator's free pages go back to
    the system where it can (glibc's ``malloc_trim``): a block's arrays (tens of MB) are
    freed while other threads allocate, glibc keeps such memory in its heaps instead of
    unmapping it, and the process's resident memory crept up block by block (by 0.1 GB over
    the gene stage at 100k cells x 20k genes, see ``benchmarks/README.md``). The pages come
    back at their next use, zeroed by the system.
    """
    if _pausing:
        gc.collect(1)
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextmanager
def collections_paused() -> Iterator[None]:
    """Pause the interpreter's automatic garbage collections while the block runs (if they were on).

    An export keeps a few small objects per gene alive for a while (its file, its manifest
    entry): CPython counts them as long-lived, and every ~50,000 of them start a full
    collection, a walk over every object of the session (0.25 s each with scanpy loaded;
    three of them at 100k cells x 40k genes). The export itself leaves ~500 objects of
    cyclic garbage; young cycles (a dask computation's) are still collected between blocks
    by :func:`release_free_memory`. Collections resume when the last paused export ends.
    """
    global _pausing
    with _pausing_lock:
        pause = gc.isenabled() or _pausing > 0
        if pause:
            _pausing += 1
            gc.disable()
    try:
        yield
    finally:
        if pause:
            with _pausing_lock:
                _pausing -= 1
                if _pausing == 0:
                    gc.enable()
