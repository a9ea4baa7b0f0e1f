"""Giving the C allocator's free memory back to the system between the blocks of a long stage."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's C library: glibc's, if it has one
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return the C allocator's free pages to the system where it can (glibc's ``malloc_trim``); elsewhere nothing.

    A block's arrays (tens of MB) are freed while other threads allocate: glibc keeps such
    memory in its heaps instead of unmapping it, and the process's resident memory crept up
    block by block (by 0.1 GB over the gene stage at 100k cells x 20k genes, see
    ``benchmarks/README.md``). The pages come back at their next use, zeroed by the system.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
