"""Binary payload files: deterministic gzip, parallel compression, and reading them back."""

from __future__ import annotations

import gzip
import json
import os
import struct
import threading
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._format import STORED_BLOCK_BYTES, gz, gzip_ceiling
from ._limits import check_json_size
from ._sparse_gzip import GzippedPayload

try:  # optional (``pip install cellucid[fast]``): a faster deflate (benchmarks/README.md)
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:
    _zlib_ng = None

_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
# files per task of a writer's pool
_FILES_PER_TASK = 32

#: the gzip encoders an export can use
GZIP_ENCODERS = ("auto", "zlib", "zlib-ng")
#: bytes at the start of a payload of values that choose its deflate strategy (see _strategy)
_SAMPLE_BYTES = 64 << 10
# a sample's Huffman-only size may exceed the searched one by 1 %: measured ratios are
# 1.000-1.001 (coordinates, outlier quantiles, graph destinations) or >= 1.2 (the rest)
_HUFFMAN_SLACK = 1.01
# bytes fed to deflate at once where its stream does not depend on how it is fed (see
# _stream): a large stream then need not be held whole
_FEED_BYTES = 1 << 20
# the fastest CRC-32 at hand (every implementation gives the same checksum)
_crc32 = (_zlib_ng or zlib).crc32


def gzip_encoder(name: str) -> ModuleType:
    """Return the deflate implementation called ``name``: ``"auto"`` is zlib-ng when installed, else zlib.

    Both write valid gzip; their bytes differ (except for run-length payloads), so an
    export's bytes depend on the encoder, never on anything else.
    """
    if name not in GZIP_ENCODERS:
        msg = f"gzip_encoder must be one of {GZIP_ENCODERS}, got {name!r}."
        raise ValueError(msg)
    if name == "zlib" or (name == "auto" and _zlib_ng is None):
        return zlib
    if _zlib_ng is None:
        msg = "gzip_encoder='zlib-ng' needs the zlib-ng package: pip install zlib-ng (or cellucid[fast])."
        raise ImportError(msg)
    return _zlib_ng


def gzip_header(level: int) -> bytes:
    """Return a reproducible gzip header: deflate, no flags, ``mtime = 0``, OS byte ``0xff``."""
    # the extra-flags byte says "best" at level 9 and "fastest" at level 1, as gzip(1) does
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return struct.pack("<4sIBB", b"\x1f\x8b\x08\x00", 0, xfl, 0xFF)


def _stream(view: memoryview, level: int, strategy: int, lib: ModuleType) -> Iterator[bytes]:
    """Yield the raw deflate stream of the bytes ``view``, in pieces.

    Huffman coding alone and run-length coding are fed :data:`_FEED_BYTES` at a time, so
    a large payload's stream need not be held whole (nor twice: the output buffer, then
    its bytes): they write the same stream either way with zlib and zlib-ng, while
    zlib-ng's searching strategies do not, so those get the data at once.
    """
    deflate = lib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, strategy)
    step = _FEED_BYTES if strategy in (zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE) else max(1, len(view))
    for start in range(0, len(view), step):
        yield deflate.compress(view[start : start + step])
    yield deflate.flush()


def _deflate(
    data: bytes | bytearray | memoryview,
    level: int,
    strategy: int,
    lib: ModuleType,
    *,
    head: bytes = b"",
) -> bytearray:
    """Return ``head`` followed by the raw deflate stream of ``data`` (see :func:`_stream`)."""
    out = bytearray(head)
    for piece in _stream(memoryview(data).cast("B"), level, strategy, lib):
        out += piece
    return out


def _strategy(data: memoryview, level: int, lib: ModuleType) -> int:
    """Return deflate's strategy for a payload of values (not codes), measured on its start.

    The floats and indices of many payloads (coordinates, outlier quantiles, a graph's
    destinations) hold no repeated strings: there, a search for matches costs two to three
    times Huffman coding alone and saves under 0.3 %. Both are tried on the first
    :data:`_SAMPLE_BYTES`; Huffman coding alone is kept when its sample is at most
    :data:`_HUFFMAN_SLACK` times larger. Level 9 (the smallest files) and payloads under four
    samples always search.
    """
    if level >= 9 or len(data) < 4 * _SAMPLE_BYTES:
        return zlib.Z_DEFAULT_STRATEGY
    sample = data[:_SAMPLE_BYTES]
    searched = len(_deflate(sample, level, zlib.Z_DEFAULT_STRATEGY, lib))
    huffman = len(_deflate(sample, level, zlib.Z_HUFFMAN_ONLY, lib))
    return zlib.Z_HUFFMAN_ONLY if huffman <= _HUFFMAN_SLACK * searched else zlib.Z_DEFAULT_STRATEGY


def _stored(data: bytes | bytearray | memoryview) -> bytes:
    """Return ``data`` as stored deflate blocks: the size the viewer's transfer ceiling allows for.

    Built by hand, so it is the same with every encoder: 5 bytes per block of at most
    65535 bytes (one empty final block for empty data).
    """
    view = memoryview(data).cast("B")
    n = len(view)
    parts = []
    for start in range(0, max(n, 1), STORED_BLOCK_BYTES):
        block = view[start : start + STORED_BLOCK_BYTES]
        final = start + STORED_BLOCK_BYTES >= n
        parts.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
    return b"".join(parts)


def gzip_bytes(
    data: bytes | bytearray | memoryview,
    level: int,
    *,
    run_length: bool = False,
    lib: ModuleType = zlib,
) -> bytearray:
    """Compress ``data`` to one gzip member with a reproducible header (see :func:`gzip_header`).

    ``run_length`` suits quantized codes and category codes: long runs of one code (the
    zero of sparse expression, a missing value) between literals. There, deflate's
    run-length strategy is both smaller and faster than a level-6 search (see
    "Design measurements" in ``benchmarks/README.md``), and zlib and zlib-ng write the
    same bytes. At level 9 both strategies are tried and the smaller kept. Other payloads
    (values) are searched for matches, or Huffman-coded alone where their start shows that
    matches save nothing (:func:`_strategy`). ``lib`` is the deflate implementation (see
    :func:`gzip_encoder`).

    A member past the viewer's transfer ceiling (:func:`~cellucid._format.gzip_ceiling`:
    zlib-ng's level 1 can expand incompressible data) is written as stored blocks
    instead, which always fit.
    """
    view = memoryview(data).cast("B")
    header = gzip_header(level)
    # the member is built in place: the header, the stream, then the trailer
    member = min(
        (
            _deflate(view, level, s, lib, head=header)
            for s in _strategies(view, level, run_length, lib)
        ),
        key=len,
    )
    member += _trailer(view)
    return member if len(member) <= gzip_ceiling(len(view)) else _stored_member(view, level)


def write_gzip(
    fd: int,
    data: bytes | bytearray | memoryview,
    level: int,
    *,
    run_length: bool = False,
    lib: ModuleType = zlib,
) -> int:
    """Write :func:`gzip_bytes` of ``data`` to the open file ``fd`` as it is made; return its size.

    A payload deflated one way (all but level 9's codes) goes out a piece at a time, so a
    large one's member is not held in memory (see :func:`_stream`); past the transfer
    ceiling, the file is written again as stored blocks.
    """
    view = memoryview(data).cast("B")
    strategies = _strategies(view, level, run_length, lib)
    if len(strategies) > 1:
        return _write_all(fd, gzip_bytes(view, level, run_length=run_length, lib=lib))
    size = _write_all(fd, gzip_header(level))
    for piece in _stream(view, level, strategies[0], lib):
        size += _write_all(fd, piece)
    size += _write_all(fd, _trailer(view))
    if size <= gzip_ceiling(len(view)):
        return size
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    return _write_all(fd, _stored_member(view, level))


def _strategies(view: memoryview, level: int, run_length: bool, lib: ModuleType) -> list[int]:
    """Return the deflate strategies :func:`gzip_bytes` tries (the smaller member is kept)."""
    if not run_length:
        return [_strategy(view, level, lib)]
    return [zlib.Z_RLE] if level < 9 else [zlib.Z_RLE, zlib.Z_DEFAULT_STRATEGY]


def _trailer(view: memoryview) -> bytes:
    return struct.pack("<II", _crc32(view), len(view) & 0xFFFFFFFF)


def _stored_member(view: memoryview, level: int) -> bytearray:
    """Return the member of ``view`` as stored blocks, which always fit the transfer ceiling."""
    member = bytearray(gzip_header(level)) + _stored(view)
    member += _trailer(view)
    return member


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked); return its size."""
    view = memoryview(data).cast("B")
    size = len(view)
    while view:
        view = view[os.write(fd, view) :]
    return size


def encode_payload(
    array: np.ndarray | GzippedPayload,
    compression: int | None,
    *,
    run_length: bool = False,
    lib: ModuleType = zlib,
) -> bytes | bytearray | memoryview:
    """Return the bytes of a payload file: the raw little-endian array, gzipped if asked.

    A :class:`~cellucid.ex._sparse_gzip.GzippedPayload` is already its ``.gz`` file.
    """
    if isinstance(array, GzippedPayload):
        return array.member
    raw = _raw_bytes(array)
    return gzip_bytes(raw, compression, run_length=run_length, lib=lib) if compression else raw


def write_payload(
    fd: int,
    array: np.ndarray | GzippedPayload,
    compression: int | None,
    *,
    run_length: bool = False,
    lib: ModuleType = zlib,
) -> int:
    """Write :func:`encode_payload` of ``array`` to the open file ``fd``; return its size.

    An array to gzip goes out as its member is made (:func:`write_gzip`).
    """
    if isinstance(array, GzippedPayload) or not compression:
        return _write_all(fd, encode_payload(array, compression))
    return write_gzip(fd, _raw_bytes(array), compression, run_length=run_length, lib=lib)


def _raw_bytes(array: np.ndarray) -> memoryview:
    """Return the bytes of ``array`` (C order), a view where it is contiguous."""
    return memoryview(np.ascontiguousarray(array).view(np.uint8).reshape(-1))


def default_n_jobs() -> int:
    """Return the number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _InPlace(Executor):
    """Run each task at once in the caller's thread: ``n_jobs=1`` takes no worker thread.

    An error is raised by ``submit`` itself, so the first failure is the one reported.
    """

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class PayloadWriter:
    """Write payload files under a root folder, on the export's one pool of ``n_jobs`` threads.

    The pool (:attr:`executor`) is created here, once per export, and shut down on every
    way out; the obs and gene encoders run their work on it too, so ``n_jobs`` bounds the
    export's worker threads (``n_jobs=1``: none, the caller's thread does the work). zlib releases the GIL, so files compress in parallel; each
    file's bytes depend on its own content only, so the output does not depend on
    ``n_jobs``. A queued array is referenced, not copied, until its file is written:
    callers that queue much bound their memory with :meth:`mark` and :meth:`wait_for`.
    ``on_written`` is called with the uncompressed size of files once they are written (a
    task's files at a time, from the pool's threads), for progress.
    """

    def __init__(
        self,
        root: Path,
        *,
        compression: int | None,
        n_jobs: int | None = None,
        lib: ModuleType = zlib,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.compression = compression or None
        self.lib = lib
        self.n_jobs = max(1, n_jobs or default_n_jobs())
        self.bytes_written = 0
        self.files_written = 0
        self.bytes_queued = 0  # uncompressed
        self._on_written = on_written
        self._lock = threading.Lock()
        #: the export's worker threads: files, obs fields and gene parts are encoded here
        self.executor: Executor = (
            ThreadPoolExecutor(self.n_jobs, thread_name_prefix="cellucid")
            if self.n_jobs > 1
            else _InPlace()
        )
        self._pending: deque[Future] = deque()
        self._queued = 0  # tasks queued so far
        # tasks run in order by one pool thread at a time (files made before), and whether
        # a pool thread is running them
        self._ordered: deque[tuple[Future, Callable[[], None]]] = deque()
        self._draining = False
        self._folders: set[str] = set()

    def encoder(
        self, *, run_length: bool = False
    ) -> Callable[[np.ndarray], bytes | bytearray | memoryview]:
        """Return the function that turns an array into its file's bytes (see :func:`encode_payload`)."""
        return partial(
            encode_payload, compression=self.compression, run_length=run_length, lib=self.lib
        )

    def write(self, relpath: str, array: np.ndarray, *, run_length: bool = False) -> str:
        """Queue ``array`` for ``root/relpath`` (+ ``.gz``); return the path as manifests give it.

        ``run_length`` marks codes (quantized values, categories), see :func:`gzip_bytes`.
        """
        return self.write_many([(relpath, array)], run_length=run_length)[0]

    def write_many(
        self,
        files: Sequence[tuple[str, np.ndarray]],
        *,
        run_length: bool = False,
        encode: Callable[[np.ndarray], bytes | bytearray | memoryview] | None = None,
        made: bool = False,
    ) -> list[str]:
        """Queue many files like :meth:`write`, a few dozen per task of the pool; return their paths.

        ``encode`` turns an array into its file's bytes on the pool; by default arrays are
        gzipped into their files as the members are made (:func:`write_gzip`, with
        ``run_length``), or written raw without compression. Thousands of small files cost
        less this way: fewer hand-offs between threads. Files whose bytes are ``made``
        (``encode`` only hands them over) are written by one pool thread at a time, in
        order, while the others go on with the work queued after them: creating files in
        one folder from several threads contends for the folder's lock (at 100k cells x
        40k genes, 0.55 s more CPU for the same files).
        """
        relpaths = [gz(relpath, self.compression) for relpath, _ in files]
        # manifests' paths have "/" separators; string operations cost less per file than os.path's
        root = f"{self.root}{os.sep}"
        for folder in {relpath.rpartition("/")[0] for relpath in relpaths} - self._folders:
            os.makedirs(root + folder, exist_ok=True)
            self._folders.add(folder)
        jobs = [
            (root + relpath, array) for relpath, (_, array) in zip(relpaths, files, strict=True)
        ]
        self.bytes_queued += sum(array.nbytes for _, array in files)
        for start in range(0, len(jobs), _FILES_PER_TASK):
            task = partial(
                self._write_files, jobs[start : start + _FILES_PER_TASK], encode, run_length
            )
            self._queued += 1
            self._pending.append(self._in_order(task) if made else self.executor.submit(task))
        return relpaths

    def _in_order(self, task: Callable[[], None]) -> Future:
        """Queue ``task`` to run after the tasks queued before it, on one pool thread at a time (see :meth:`_drain`)."""
        future: Future = Future()
        with self._lock:
            self._ordered.append((future, task))
            start = not self._draining
            self._draining = True
        if start:
            self.executor.submit(self._drain)
        return future

    def _drain(self) -> None:
        """Run the tasks queued in order until none is left, each settling its future."""
        while True:
            with self._lock:
                if not self._ordered:
                    self._draining = False
                    return
                future, task = self._ordered.popleft()
            if not future.set_running_or_notify_cancel():  # dropped by cancel()
                continue
            try:
                task()
            except BaseException as exc:  # for whoever waits on it
                future.set_exception(exc)
            else:
                future.set_result(None)

    def _drop_ordered(self) -> None:
        """Cancel the tasks queued in order that have not started (as the pool's are)."""
        with self._lock:
            for future, _ in self._ordered:
                future.cancel()
            self._ordered.clear()
            self._draining = False

    def mark(self) -> int:
        """Return a mark of the files queued so far, for :meth:`wait_for`."""
        return self._queued

    def wait_for(self, mark: int) -> None:
        """Wait until the files queued before ``mark`` are written; re-raise the first error."""
        while self._pending and self._queued - len(self._pending) < mark:
            self._pending.popleft().result()

    def _write_files(
        self,
        jobs: list[tuple[str, np.ndarray]],
        encode: Callable[[np.ndarray], bytes | bytearray | memoryview] | None,
        run_length: bool,
    ) -> None:
        """Write each job's file: by ``encode``, or as :func:`write_payload` writes it.

        The task's files are counted (and reported to ``on_written``) together, once
        written: thousands of small files cost less without a lock taken for each.
        """
        n_files = size = nbytes = 0
        try:
            for target, array in jobs:
                # os-level calls: Python's buffered file objects cost more per file
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_BINARY, 0o666)
                try:
                    if encode is None:
                        size += write_payload(
                            fd, array, self.compression, run_length=run_length, lib=self.lib
                        )
                    else:
                        size += _write_all(fd, encode(array))
                finally:
                    os.close(fd)
                n_files += 1
                nbytes += array.nbytes
        finally:  # the files written before one that failed count too
            with self._lock:
                self.bytes_written += size
                self.files_written += n_files
            if self._on_written is not None and n_files:
                self._on_written(nbytes)

    def cancel(self) -> None:
        """Drop every task not started yet (files and encoders' work alike); new tasks are refused.

        For a failing export: what waits on the pool then stops soon. :meth:`close` or
        leaving the ``with`` block still waits for the tasks under way.
        """
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._drop_ordered()

    def close(self) -> None:
        """Wait for every queued file; re-raise the first error. The pool is shut down either way."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self._drop_ordered()

    def __enter__(self) -> PayloadWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # failing (or interrupted): drop the files not started, wait for the rest
            self._drop_ordered()
            self.executor.shutdown(wait=True, cancel_futures=True)


def dumps_manifest(obj: Any) -> str:
    """Serialize a manifest as compact, ASCII-escaped JSON (the viewer's manifests)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def dumps_identity(obj: Any) -> str:
    """Serialize ``dataset_identity.json`` / ``datasets.json``: ASCII-escaped, indented by 2."""
    return json.dumps(obj, indent=2, ensure_ascii=True, allow_nan=False)


def write_json(path: Path, text: str) -> int:
    """Write ``text`` (no trailing newline) in place of ``path``; return the bytes written.

    Refuses what the viewer would not read. The bytes go to a temporary file in the same
    folder, are flushed to disk and renamed over ``path``: a reader, a crash or a full disk
    leaves the old document or the new one, never a part of it.
    """
    path = Path(path)
    data = text.encode("ascii")
    check_json_size(path.name, len(data))
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException as e:
        with suppress(OSError):
            temporary.unlink()
        if isinstance(e, OSError) and e.errno is not None:  # name the file, not its temporary
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise
    fsync_dir(path.parent)
    return len(data)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the system allows it."""
    with suppress(OSError):  # Windows cannot open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_payload(path: Path, dtype: np.dtype | str) -> np.ndarray:
    """Read a payload file into a 1-D array; a ``.gz`` path is decompressed."""
    path = Path(path)
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
