"""gzip of float64 edge weights that widen float32 values, in a compiled kernel (~1/3 of zlib's level-6 time).

The format stores edge weights as float64; they are the graph's float32 values widened,
so each little-endian value's bytes 0-2 are zero and byte 3 keeps 3 bits. zlib's level 6
searches for matches at every byte of them: at 1M cells (11.5 M edges) that was 4.6 s,
the graph's largest cost, for 0.494 of the bytes. The kernel here looks for matches only
where they are: at each value's head (the value before's bytes 6-7, the value's zeros and
its byte 3, little entropy), as a match of the last head with the same bytes, or of the
last equal value (runs of repeats become one long match), found through small hash tables
within the 32 KiB window; the other bytes are literals. Blocks of :data:`_BLOCK_VALUES`
values get their own Huffman codes (:mod:`cellucid.ex._deflate`). The result is one gzip
member whose decoded bytes are the payload's (1.016x zlib-ng level 6's size on that graph);
its bytes are not zlib's.

Importing this module imports numba and compiles (or loads from numba's cache) the
kernels: it is loaded through :func:`cellucid._compiled.load_kernels`, only for graphs past
:data:`cellucid.ex._connectivity.WEIGHTS_KERNEL_MIN_EDGES`.
"""

from __future__ import annotations

import struct
import zlib

import numba
import numpy as np

from .._format import gzip_ceiling
from ._deflate import compile_kernels

compile_kernels()  # the deflate primitives this module's kernels call, as numba functions

from ._deflate import (  # noqa: E402 (numba versions, after compile_kernels)
    DIST_NBITS,
    DIST_SYMBOL,
    DIST_VALUE,
    END_OF_BLOCK,
    LEN_NBITS,
    LEN_SYMBOL,
    LEN_VALUE,
    MAX_MATCH,
    N_DIST,
    N_LITLEN,
    canonical_codes,
    huffman_lengths,
    plan_header,
    put_bits,
    put_header,
)

_njit = numba.njit(cache=True, nogil=True)

#: values per deflate block: each has its own Huffman codes (~100 bytes of header)
_BLOCK_VALUES = 1 << 14
#: a value repeats one at most this many values back (deflate's window, 32 KiB)
_MAX_BACK = 4096
#: slots of the tables of heads (by their 3 bytes that are not zero) and of values
_HEAD_BITS = 12
_EQUAL_BITS = 13
#: the low bits of a float64 mantissa that a widened float32 leaves zero
_FLOAT32_LOW_BITS = np.uint64((1 << 29) - 1)


@_njit
def _widens_float32(values):  # pragma: no cover (compiled)
    """Whether every value's low 29 mantissa bits are zero (float32's precision): bytes 0-2 are then 0."""
    for i in range(values.shape[0]):  # noqa: SIM110 (a compiled loop that stops early)
        if values[i] & _FLOAT32_LOW_BITS:
            return False
    return True


@_njit
def _slot(key, bits):  # pragma: no cover (compiled)
    """Return a slot of a table of ``2**bits`` for ``key`` (Knuth's multiplicative hash)."""
    return ((key * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) >> np.uint64(32 - bits)


@_njit
def _match_length(values, i, back, length):  # pragma: no cover (compiled)
    """Return the match's length from value ``i`` on, ``back`` values before, ``length`` bytes found so far.

    Whole values are compared at once; the match ends at the first byte that differs (they
    are little-endian: the lowest), at the data's end or at 258 bytes.
    """
    n = values.shape[0]
    while length < MAX_MATCH and i < n:
        x = values[i] ^ values[i - back]
        if x == 0:
            length += 8
            i += 1
            continue
        x >>= np.uint64(24)  # bytes 0-2 are zero in both values
        length += 3
        while (x & np.uint64(0xFF)) == 0:
            x >>= np.uint64(8)
            length += 1
        break
    return min(length, MAX_MATCH)


@_njit
def _head_match(values, i, back):  # pragma: no cover (compiled)
    """Return the length of the match at value ``i``'s head (from bytes 6-7 of the value before), or 0."""
    if (values[i - 1] ^ values[i - 1 - back]) >> np.uint64(48):
        return 0
    return _match_length(values, i, back, 2)


@_njit
def _reach_back(data, start, p, dist):  # pragma: no cover (compiled)
    """Return how many bytes before ``p`` (down to ``start``, 2 at most) equal those ``dist`` before."""
    e = 0
    while e < 2 and p - 1 - e >= start and data[p - 1 - e] == data[p - 1 - e - dist]:
        e += 1
    return e


@_njit
def _tokens(data, values, a, b, state, tables, lit_freq, dist_freq, tokens):  # pragma: no cover
    """Choose the symbols of values ``a .. b - 1`` (and the bytes left at the end); return how many.

    A token (int32, small enough to stay in the cache) is ``length << 16 | distance`` for a
    match, the byte for a literal (length 0).
    Each value's choice is made at its head, the 6 bytes from the previous value's bytes 6-7
    to its byte 3 (3 zero bytes between): the longer match, reaching up to 2 bytes before
    the head, of the last head with the same 3 bytes (``tables[0]``) and of the last equal
    value (``tables[1]``), the first of equal length; else bytes 6-7 as literals, then the value as a match of the value before (its
    zeros at least) or of the last equal value. Literals up to the next head.
    ``state[0]`` is the first byte not written yet; the tables (values by slot, -1 for
    none) carry over from block to block.
    """
    heads, equal = tables
    n_tokens = 0
    cur = state[0]
    for i in range(max(a, 1), b):
        p = 8 * i - 2  # the head of value i
        v = values[i]
        key = ((v >> np.uint64(24)) & np.uint64(0xFF)) | (
            (values[i - 1] >> np.uint64(48)) << np.uint64(8)
        )
        hk = _slot(key, _HEAD_BITS)
        hv = _slot(v >> np.uint64(29), _EQUAL_BITS)
        j1, j2 = heads[hk], equal[hv]
        heads[hk], equal[hv] = i, i
        if p < cur:  # inside a match
            continue
        best, back, start = 0, 0, p
        for j in (j1, j2):
            if j >= 0 and i - j <= _MAX_BACK:
                n = _head_match(values, i, i - j)
                if n >= 3:
                    e = min(_reach_back(data, cur, p, 8 * (i - j)), MAX_MATCH - n)
                    if n + e > best:
                        best, back, start = n + e, i - j, p - e
        if best < 3:  # bytes 6-7 of the value before as literals, then the value
            start = p + 2
            best, back = _match_length(values, i, 1, 0), 1
            if j2 >= 0 and i - j2 <= _MAX_BACK:
                n = _match_length(values, i, i - j2, 0)
                if n > best:
                    best, back = n, i - j2
        while cur < start:
            lit_freq[data[cur]] += 1
            tokens[n_tokens] = data[cur]
            n_tokens += 1
            cur += 1
        lit_freq[LEN_SYMBOL[best]] += 1
        dist_freq[DIST_SYMBOL[8 * back]] += 1
        tokens[n_tokens] = (best << 16) | (8 * back)
        n_tokens += 1
        cur += best
    if b == values.shape[0]:  # the last bytes
        while cur < data.shape[0]:
            lit_freq[data[cur]] += 1
            tokens[n_tokens] = data[cur]
            n_tokens += 1
            cur += 1
    state[0] = cur
    return n_tokens


@_njit
def _put_header(words, w, acc, nacc, final, lit_len, dist_len):  # pragma: no cover
    """Write a dynamic block's header: its code lengths, run-length coded (RFC 1951, 3.2.7)."""
    nlit, ndist, run_sym, run_extra, n_runs, clen_len, nclen = plan_header(lit_len, dist_len)
    return put_header(
        words, w, acc, nacc, final, nlit, ndist, run_sym, run_extra, n_runs, clen_len, nclen
    )


@_njit
def _put_tokens(tokens, n_tokens, lit_len, dist_len, words, w, acc, nacc):  # pragma: no cover
    """Write a block's tokens (:func:`_tokens`) with its codes, and the end of the block."""
    lit_code = canonical_codes(lit_len)
    dist_code = canonical_codes(dist_len)
    for t in range(n_tokens):
        n, x = tokens[t] >> 16, tokens[t] & 0xFFFF
        if n == 0:
            w, acc, nacc = put_bits(words, w, acc, nacc, lit_code[x], lit_len[x])
            continue
        s, d = LEN_SYMBOL[n], DIST_SYMBOL[x]
        bits = lit_code[s] | (LEN_VALUE[n] << lit_len[s])
        nbits = lit_len[s] + LEN_NBITS[n]
        bits |= (dist_code[d] | (DIST_VALUE[x] << dist_len[d])) << nbits
        nbits += dist_len[d] + DIST_NBITS[x]
        w, acc, nacc = put_bits(words, w, acc, nacc, bits, nbits)  # at most 48 bits
    return put_bits(words, w, acc, nacc, lit_code[END_OF_BLOCK], lit_len[END_OF_BLOCK])


@_njit
def deflate_weights(values, before, after):  # pragma: no cover (compiled)
    """Return the raw deflate stream of ``values`` (uint64 bits of float64 values that widen float32).

    The stream comes after ``before`` bytes and is followed by ``after`` bytes, both left
    for the caller (a gzip member's header and trailer, so that it is not copied). The
    caller checks :func:`_widens_float32` first: a value's zeros are written as a match of
    the value before's.
    """
    n = values.shape[0]
    data = values.view(np.uint8)
    # ~4 bytes a value on real graphs: no regrowth
    out = np.empty(before + 9 * n // 2 + 1024 + after, np.uint8)
    pos = before
    tables = (
        np.full(1 << _HEAD_BITS, -1, np.int64),
        np.full(1 << _EQUAL_BITS, -1, np.int64),
    )
    state = np.zeros(1, np.int64)
    # a token per byte at most (the last block takes the bytes past its values too)
    tokens = np.empty(8 * _BLOCK_VALUES + 16, np.int32)
    words = np.empty((8 * _BLOCK_VALUES + 16) * 48 // 64 + 256, np.uint64)
    w, acc, nacc = 0, np.uint64(0), 0
    for a in range(0, max(n, 1), _BLOCK_VALUES):
        b = min(a + _BLOCK_VALUES, n)
        lit_freq = np.zeros(N_LITLEN, np.int64)
        dist_freq = np.zeros(N_DIST, np.int64)
        n_tokens = _tokens(data, values, a, b, state, tables, lit_freq, dist_freq, tokens)
        lit_freq[END_OF_BLOCK] += 1
        lit_len = huffman_lengths(lit_freq, 15)
        dist_len = huffman_lengths(dist_freq, 15)
        w, acc, nacc = _put_header(words, w, acc, nacc, int(b == n), lit_len, dist_len)
        w, acc, nacc = _put_tokens(tokens, n_tokens, lit_len, dist_len, words, w, acc, nacc)
        # the block's whole words go out; the bits past them stay in ``acc``
        if pos + 8 * w + 16 + after > out.shape[0]:
            bigger = np.empty(max(pos + 8 * w + 16 + after, 2 * out.shape[0]), np.uint8)
            bigger[:pos] = out[:pos]
            out = bigger
        out[pos : pos + 8 * w] = words[:w].view(np.uint8)
        pos += 8 * w
        w = 0
    words[0] = acc
    last = (nacc + 7) // 8
    out[pos : pos + last] = words[:1].view(np.uint8)[:last]
    return out[: pos + last + after]


def gzip_weights(weights: np.ndarray, header: bytes) -> memoryview | None:
    """Return the gzip member of a float64 weights payload, or None where this encoder does not apply.

    None when a value does not widen a float32 (its zeros are not where the matches
    expect them), or when the member would pass the viewer's transfer ceiling. ``header``
    is the member's (:func:`~cellucid.ex._payload.gzip_header`).
    """
    values = np.ascontiguousarray(weights, dtype="<f8").view(np.uint64)
    if not _widens_float32(values):
        return None
    member = deflate_weights(values, len(header), 8)  # the header's and trailer's room
    raw = memoryview(values).cast("B")
    size = member.shape[0]
    if size > gzip_ceiling(raw.nbytes):
        return None
    member[: len(header)] = np.frombuffer(header, np.uint8)
    member[size - 8 :] = np.frombuffer(
        struct.pack("<II", zlib.crc32(raw), raw.nbytes & 0xFFFFFFFF), np.uint8
    )
    return memoryview(member)
