"""Payloads read within bounds: sizes judged before reading, raw and gzip streams decoded in chunks.

Nothing is inflated past the size a checked manifest declares, so a gzip bomb or an
oversized file costs no more than its expected size.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..._format import MAX_PAYLOAD_BYTES, gzip_ceiling
from ._files import BEFORE_READ, _escapes, _is_file

#: bytes read from disk / inflated at a time
_CHUNK = 4 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_RESERVED_FLAGS = 0xE0
#: deflate cannot expand more than 1032-fold (258 bytes from 2 bits): a ``.gz`` file of
#: ``n`` bytes that should inflate past ``1032 n`` is refused before inflating it
_MAX_INFLATE_RATIO = 1032


def _payload_problem(
    directory: Path, base: Path, rel: str, expected: int
) -> tuple[str, str, str] | None:
    """Return why payload ``rel`` cannot hold ``expected`` bytes, judged without reading it.

    The declared size must be within the viewer's limit, an uncompressed file must be
    exactly that size, and a ``.gz`` file must be within the transfer ceiling and large
    enough for deflate to inflate to it. ``None`` when it may hold them.
    """
    if expected > MAX_PAYLOAD_BYTES:
        return (
            "payload.size",
            f"{expected} bytes declared",
            f"at most {MAX_PAYLOAD_BYTES} bytes decoded",
        )
    path = directory / rel
    if not _is_file(path):
        return ("file.missing", "no such file", "the payload file its manifest declares")
    if _escapes(path, base):
        return (
            "path.symlink",
            "a symbolic link leading out of the export",
            "a file inside the export",
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        return ("file.missing", f"an unreadable file ({exc})", "a readable payload file")
    if not rel.endswith(".gz"):
        if size != expected:
            return ("payload.length", f"a file of {size} bytes", f"{expected} bytes")
        return None
    ceiling = gzip_ceiling(expected)
    if size > ceiling:
        return (
            "gzip.ceiling",
            f"a {size}-byte file for {expected} decoded bytes",
            f"at most {ceiling} bytes",
        )
    if expected > _MAX_INFLATE_RATIO * size:
        return (
            "payload.length",
            f"a {size}-byte gzip file, which cannot inflate to {expected} bytes",
            f"{expected} bytes decoded",
        )
    return None


def _payload_chunks(
    directory: Path,
    base: Path,
    rel: str,
    add: Any,
    dtype: np.dtype,
    n_elements: int,
    chunk: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the decoded elements of payload ``rel`` in chunks, reporting envelope problems.

    Nothing is read when the sizes are implausible (:func:`_payload_problem`), and
    decoding stops at the first byte past the expected length.
    """
    dtype = np.dtype(dtype).newbyteorder("<")
    itemsize = dtype.itemsize
    expected = n_elements * itemsize
    problem = _payload_problem(directory, base, rel, expected)
    if problem is not None:
        add(rel, *problem)
        return
    path = directory / rel
    fetch = BEFORE_READ.get()
    if fetch is not None:
        try:
            fetch(path)
        except OSError as exc:
            add(rel, "file.missing", f"an unreadable file ({exc})", "a readable payload file")
            return
    chunk_bytes = (chunk or max(1, _CHUNK // itemsize)) * itemsize
    state = _GzipState()
    blocks = (
        _gunzip_blocks(path, rel, add, state, expected)
        if rel.endswith(".gz")
        else _raw_blocks(path, expected)
    )
    buf = bytearray()
    total = 0
    try:
        for block in blocks:
            part = block[: expected - total]
            total += len(block)
            buf += part
            while len(buf) >= chunk_bytes:
                yield np.frombuffer(bytes(buf[:chunk_bytes]), dtype)
                del buf[:chunk_bytes]
            if total > expected:
                break
    except OSError as exc:
        add(rel, "file.missing", f"an unreadable file ({exc})", "a readable payload file")
        state.fatal = True
    finally:
        blocks.close()
    usable = len(buf) - len(buf) % itemsize
    if usable:
        yield np.frombuffer(bytes(buf[:usable]), dtype)
    if state.fatal:
        return
    if total > expected:
        add(
            rel,
            "payload.length",
            f"more than {expected} bytes decoded (stopped there)",
            f"{expected} bytes ({n_elements} x {itemsize})",
        )
    elif total != expected:
        add(
            rel,
            "payload.length",
            f"{total} bytes decoded",
            f"{expected} bytes ({n_elements} x {itemsize})",
        )


class _GzipState:
    def __init__(self) -> None:
        self.fatal = False


def _raw_blocks(path: Path, limit: int) -> Iterator[bytes]:
    """Yield the bytes of a file, stopping at the first byte past ``limit``."""
    left = limit + 1
    with open(path, "rb") as f:
        while left > 0 and (block := f.read(min(_CHUNK, left))):
            left -= len(block)
            yield block


def _read_exact(f: Any, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _read_zero_terminated(f: Any) -> bytes:
    out = bytearray()
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError
        out += byte
        if byte == b"\x00":
            return bytes(out)


def _gunzip_blocks(
    path: Path, rel: str, add: Any, state: _GzipState, limit: int
) -> Iterator[bytes]:
    """Yield the decoded blocks of a one-member gzip file, reporting every envelope problem.

    Inflating stops at the first byte past ``limit`` (the trailer is then not checked).
    """
    with open(path, "rb") as f:
        header = f.read(10)
        if header[:2] != _GZIP_MAGIC:
            add(
                rel,
                "gzip.magic",
                f"first bytes {header[:2].hex() or 'none'}",
                "1f8b (a gzip file, as the '.gz' suffix says)",
            )
            state.fatal = True
            return
        if len(header) < 10:
            add(rel, "gzip.corrupt", "a truncated gzip header", "a complete gzip member")
            state.fatal = True
            return
        if header[2] != 8:
            add(rel, "gzip.method", f"method {header[2]}", "8 (deflate)")
            state.fatal = True
            return
        flags = header[3]
        if flags & _GZIP_RESERVED_FLAGS:
            add(rel, "gzip.flags", f"flags 0x{flags:02x}", "reserved flag bits 5-7 clear")
        seen = bytearray(header)
        try:
            if flags & 4:
                xlen = _read_exact(f, 2)
                seen += xlen + _read_exact(f, int.from_bytes(xlen, "little"))
            if flags & 8:
                seen += _read_zero_terminated(f)
            if flags & 16:
                seen += _read_zero_terminated(f)
            if flags & 2:
                stored = int.from_bytes(_read_exact(f, 2), "little")
                actual = zlib.crc32(seen) & 0xFFFF
                if stored != actual:
                    add(
                        rel,
                        "gzip.header_crc",
                        f"header CRC-16 {stored:04x}",
                        f"{actual:04x} (the CRC of the header bytes)",
                    )
        except EOFError:
            add(rel, "gzip.corrupt", "a truncated gzip header", "a complete gzip member")
            state.fatal = True
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        crc = 0
        size = 0
        try:
            while not inflater.eof:
                data = f.read(_CHUNK)
                if not data:
                    break
                while True:
                    want = min(_CHUNK, limit + 1 - size)
                    out = inflater.decompress(data, want)
                    if out:
                        crc = zlib.crc32(out, crc)
                        size += len(out)
                        yield out
                        if size > limit:  # longer than declared: stop inflating here
                            return
                    data = inflater.unconsumed_tail
                    if inflater.eof or (not data and len(out) < want):
                        break
        except zlib.error as exc:
            add(rel, "gzip.corrupt", f"a broken deflate stream ({exc})", "a valid gzip member")
            state.fatal = True
            return
        if not inflater.eof:
            add(rel, "gzip.corrupt", "a truncated deflate stream", "a complete gzip member")
            state.fatal = True
            return
        tail = inflater.unused_data
        if len(tail) < 10:
            tail += f.read(10 - len(tail))
        trailer, rest = tail[:8], tail[8:]
        if len(trailer) < 8:
            add(rel, "gzip.corrupt", "a truncated gzip trailer", "a complete gzip member")
            state.fatal = True
            return
        stored_crc, isize = struct.unpack("<II", trailer)
        if stored_crc != crc:
            add(
                rel,
                "gzip.crc",
                f"CRC32 {stored_crc:08x} in the trailer",
                f"{crc:08x} (the CRC of the decoded data)",
            )
        # ISIZE must be the expected length; a file whose data has another length (and a
        # matching ISIZE) is reported once, as payload.length
        if isize != size % 2**32:
            add(rel, "gzip.isize", f"ISIZE {isize}", f"{size % 2**32} (the decoded length)")
        if rest:
            if rest[:2] == _GZIP_MAGIC:
                add(rel, "gzip.members", "more than one gzip member", "exactly one gzip member")
            else:
                add(
                    rel,
                    "gzip.trailing",
                    "bytes after the gzip member",
                    "nothing after the gzip trailer",
                )
