"""Deflate (RFC 1951) and CRC-32 building blocks of cellucid's own gzip encoders.

Huffman code lengths (limited, as zlib's), canonical codes, a dynamic block's code-length
header, a branch-free bit writer, and the CRC-32 register as linear maps (over runs of zero
bytes, in chunks). The encoders that use them (:mod:`cellucid.ex._sparse_gzip`) write one
block per member from symbol counts.

The functions marked :func:`kernel` are plain Python until :func:`compile_kernels` puts
their numba versions in place, in this module and in every module that imported them (numba
is imported then, only when first needed). The tests also run them interpreted
(NUMBA_DISABLE_JIT=1), which must give the same bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache

import numpy as np

# --- kernels: compiled on first use, cached next to this file (or in numba's cache folder) -
_KERNELS: list[Callable] = []


def kernel(func: Callable) -> Callable:
    """Mark ``func`` as a kernel: :func:`compile_kernels` replaces it by its numba version."""
    _KERNELS.append(func)
    return func


def compile_kernels() -> None:
    """Put the numba versions of all kernels in place of the Python functions, wherever they are bound.

    Every module holding a kernel (its own, and those that imported it by name) gets the
    compiled function under the same name. Each compiles on its first call, or loads from
    numba's cache. Once per process; threads that call it together wait for the first.
    """
    with _COMPILING:
        _compile_kernels()


_COMPILING = threading.Lock()


@cache
def _compile_kernels() -> None:
    import numba

    jit = numba.njit(cache=True, nogil=True)
    compiled = {id(func): jit(func) for func in _KERNELS}
    namespaces = {id(func.__globals__): func.__globals__ for func in _KERNELS}
    for namespace in namespaces.values():
        for name, value in list(namespace.items()):
            if id(value) in compiled:
                namespace[name] = compiled[id(value)]


# --- deflate (RFC 1951) ---------------------------------------------------------------------
MAX_MATCH = 258
END_OF_BLOCK = 256
N_LITLEN = 286  # 0-255 literals, 256 end of block, 257-285 lengths
N_DIST = 30
N_CLEN = 19
# the order in which a dynamic block's header lists the code-length code's lengths
CLEN_ORDER = np.array([16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15], np.int64)
_LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59]
_LEN_BASE += [67, 83, 99, 115, 131, 163, 195, 227, 258]
_LEN_EXTRA = [0] * 8 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [0]


def _length_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per match length 0..258: its length symbol, extra bits and extra value."""
    symbol = np.zeros(MAX_MATCH + 1, np.int64)
    nbits = np.zeros(MAX_MATCH + 1, np.int64)
    value = np.zeros(MAX_MATCH + 1, np.int64)
    for code, (base, extra) in enumerate(zip(_LEN_BASE, _LEN_EXTRA, strict=True)):
        top = MAX_MATCH if code == len(_LEN_BASE) - 1 else min(base + (1 << extra) - 1, 257)
        for length in range(base, top + 1):
            symbol[length], nbits[length], value[length] = 257 + code, extra, length - base
    return symbol, nbits, value


LEN_SYMBOL, LEN_NBITS, LEN_VALUE = _length_tables()


def _distance_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per match distance 0..32768: its distance symbol, extra bits and extra value."""
    symbol = np.zeros(WINDOW + 1, np.int64)
    nbits = np.zeros(WINDOW + 1, np.int64)
    value = np.zeros(WINDOW + 1, np.int64)
    base = 1
    for code in range(N_DIST):
        extra = max(code // 2 - 1, 0)
        top = base + (1 << extra)
        symbol[base:top], nbits[base:top], value[base:top] = code, extra, np.arange(top - base)
        base = top
    return symbol, nbits, value


#: the largest match distance (deflate's window)
WINDOW = 32768
DIST_SYMBOL, DIST_NBITS, DIST_VALUE = _distance_tables()


def _fixed_lengths() -> np.ndarray:
    lengths = np.full(288 + 32, 5, np.int64)  # literal/lengths, then distances
    lengths[:144], lengths[144:256], lengths[256:280], lengths[280:288] = 8, 9, 7, 8
    return lengths


FIXED_LENGTHS = _fixed_lengths()

# --- CRC-32 ---------------------------------------------------------------------------------
_CRC_POLY = 0xEDB88320
CRC_LEVELS = 32  # runs up to 2**32 bytes


#: the CRC of a column's stored values is summed by chunks of this many bytes (a power of 2)
CRC_CHUNK = 64
CRC_CHUNK_BITS = 6
#: steps of up to this many chunks from one stored value to the next have their own tables
CRC_CHUNK_STEPS = 16


def _byte_tables(image: np.ndarray) -> np.ndarray:
    """Tables ``t[i, b]`` of a linear map of the CRC register given the ``image`` of each register bit."""
    bits_of = (np.arange(256)[:, None] >> np.arange(8)) & 1  # (value, bit)
    return np.stack(
        [
            np.bitwise_xor.reduce(
                np.where(bits_of == 1, image[8 * i : 8 * i + 8], 0).astype(np.uint32), axis=1
            )
            for i in range(4)
        ]
    )


def _apply(tables: np.ndarray, register: np.ndarray) -> np.ndarray:
    return (
        tables[0, register & 0xFF]
        ^ tables[1, (register >> 8) & 0xFF]
        ^ tables[2, (register >> 16) & 0xFF]
        ^ tables[3, register >> 24]
    )


@cache
def crc_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return CRC-32's byte table and linear maps of the CRC register over zero bytes.

    ``powers[j, i, b]``: the register after ``2**j`` zero bytes, by its byte ``i`` before;
    ``chunks[m, i, b]``: after ``m * CRC_CHUNK`` zero bytes, ``m <= CRC_CHUNK_STEPS``
    (``m = 0``: the identity); ``at[o, b]``: a byte ``b``'s part of the register ``o`` bytes
    later. The register after zero bytes is linear in the register before, so each map is
    four tables of 256 (one per register byte); the byte table is linear in the byte.
    """
    byte = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        byte = np.where(byte & 1, (byte >> 1) ^ np.uint32(_CRC_POLY), byte >> 1).astype(np.uint32)
    bit = np.uint32(1) << np.arange(32, dtype=np.uint32)
    one = (bit >> 8) ^ byte[bit & 0xFF]  # each register bit's image after one zero byte
    powers = np.empty((CRC_LEVELS, 4, 256), np.uint32)
    image = one
    for level in range(CRC_LEVELS):
        powers[level] = _byte_tables(image)
        image = _apply(powers[level], image)  # twice as many zeros
    chunks = np.empty((CRC_CHUNK_STEPS + 1, 4, 256), np.uint32)
    image = bit
    for m in range(CRC_CHUNK_STEPS + 1):
        chunks[m] = _byte_tables(image)
        image = _apply(powers[CRC_CHUNK_BITS], image)
    at = np.empty((CRC_CHUNK, 256), np.uint32)
    at[0] = byte
    for o in range(1, CRC_CHUNK):
        at[o] = _apply(powers[0], at[o - 1])
    return byte, powers, chunks, at


@kernel
def huffman_lengths(freq, limit):
    """Return the code length of each symbol of ``freq``: Huffman's, limited to ``limit`` bits.

    At least two symbols get a code (deflate's decoders want it; zlib does the same). The
    symbols are sorted by count (ties by symbol: a stable radix sort), the tree's depths
    computed in place (Moffat and Katajainen's three passes; a leaf before an internal node
    of the same weight); too long codes are shortened as JPEG's ``adjust_BITS`` does; the
    most frequent symbols get the shortest codes, ties by symbol order.
    """
    n = freq.shape[0]
    lengths = np.zeros(n, np.int64)
    leaves = np.empty(n, np.int64)
    used = 0
    top = 0
    for s in range(n):
        if freq[s] > 0:
            leaves[used] = s
            used += 1
            top |= freq[s]
    s = 0
    while used < 2:  # two symbols at least: the first unused ones, counted once
        if freq[s] == 0:
            leaves[used] = s
            used += 1
        s += 1
    if used == 2:  # one bit each (the distance code's usual case)
        lengths[leaves[0]] = 1
        lengths[leaves[1]] = 1
        return lengths
    weight = np.empty(used, np.int64)
    for i in range(used):
        weight[i] = max(freq[leaves[i]], 1)
    # stable radix sort of the leaves by count, a byte of it per pass
    sorted_leaves = np.empty(used, np.int64)
    sorted_weight = np.empty(used, np.int64)
    starts = np.empty(257, np.int64)
    shift = 0
    while (top >> shift) > 0:
        for b in range(257):  # explicit loops: numba's slice assignments cost ~10x more here
            starts[b] = 0
        for i in range(used):
            starts[((weight[i] >> shift) & 0xFF) + 1] += 1
        for b in range(256):
            starts[b + 1] += starts[b]
        for i in range(used):
            b = (weight[i] >> shift) & 0xFF
            sorted_leaves[starts[b]] = leaves[i]
            sorted_weight[starts[b]] = weight[i]
            starts[b] += 1
        for i in range(used):
            leaves[i], weight[i] = sorted_leaves[i], sorted_weight[i]
        shift += 8
    # Moffat and Katajainen: parents, then internal depths, then leaf depths, in ``weight``
    a = weight
    a[0] += a[1]
    root, leaf = 0, 2
    for nxt in range(1, used - 1):
        if leaf >= used or a[root] < a[leaf]:
            a[nxt] = a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] = a[leaf]
            leaf += 1
        if leaf >= used or (root < nxt and a[root] < a[leaf]):
            a[nxt] += a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] += a[leaf]
            leaf += 1
    a[used - 2] = 0
    for nxt in range(used - 3, -1, -1):
        a[nxt] = a[a[nxt]] + 1
    count = np.zeros(max(limit, used) + 1, np.int64)  # leaves by depth
    avail, depth, root = 1, 0, used - 2
    while avail > 0:
        internal = 0
        while root >= 0 and a[root] == depth:
            internal += 1
            root -= 1
        count[depth] += avail - internal
        avail = 2 * internal
        depth += 1
    for i in range(count.shape[0] - 1, limit, -1):
        while count[i] > 0:
            j = i - 2
            while count[j] == 0:
                j -= 1
            count[i] -= 2
            count[i - 1] += 1
            count[j + 1] += 2
            count[j] -= 1
    i = used - 1
    for length in range(1, limit + 1):
        for _ in range(count[length]):
            lengths[leaves[i]] = length
            i -= 1
    return lengths


#: each byte with its bits in reverse order
_REVERSED = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], np.int64)


@kernel
def canonical_codes(lengths):
    """Return the canonical Huffman code of each symbol, bit-reversed (deflate writes codes first bit first)."""
    count = np.zeros(16, np.int64)
    for length in lengths:
        count[length] += 1
    count[0] = 0
    next_code = np.zeros(16, np.int64)
    code = 0
    for bits in range(1, 16):
        code = (code + count[bits - 1]) << 1
        next_code[bits] = code
    codes = np.zeros(lengths.shape[0], np.int64)
    for s in range(lengths.shape[0]):
        length = lengths[s]
        if length:
            c = next_code[length]
            next_code[length] += 1
            codes[s] = ((_REVERSED[c & 0xFF] << 8) | _REVERSED[c >> 8]) >> (16 - length)
    return codes


@kernel
def length_runs(lengths, sym, extra):
    """Run-length code a dynamic block's code lengths (symbols 0-15, 16/17/18 with ``extra``); return the count."""
    n = 0
    i = 0
    m = lengths.shape[0]
    while i < m:
        v = lengths[i]
        run = 1
        while i + run < m and lengths[i + run] == v:
            run += 1
        i += run
        if v == 0:
            while run >= 11:
                k = min(run, 138)
                sym[n], extra[n] = 18, k - 11
                n += 1
                run -= k
            if run >= 3:
                sym[n], extra[n] = 17, run - 3
                n += 1
                run = 0
        else:
            sym[n], extra[n] = v, 0
            n += 1
            run -= 1
            while run >= 3:
                k = min(run, 6)
                sym[n], extra[n] = 16, k - 3
                n += 1
                run -= k
        for _ in range(run):
            sym[n], extra[n] = v, 0
            n += 1
    return n


@kernel
def put_bits(words, w, acc, nacc, value, nbits):
    """Append ``nbits <= 56`` bits of ``value`` to the bit buffer ``acc`` (``nacc < 64`` bits).

    The buffer is stored to ``words[w]`` every time (``words`` has a word to spare) and
    ``w`` moves on when it is full: no branch to mispredict.
    """
    v = np.uint64(value)
    acc |= v << np.uint64(nacc)
    words[w] = acc
    nacc += nbits
    full = nacc >> 6  # 0 or 1
    nacc &= 63
    w += full
    # when full, the bits of ``value`` past the word (none when ``nacc`` is 0)
    carry = v >> np.uint64((nbits - nacc) & 63)
    acc = carry if full else acc
    return w, acc, nacc


EXTRA_BITS_OF_RUN = np.array([0] * 16 + [2, 3, 7], np.int64)


@kernel
def plan_header(lit_len, dist_len):
    """Plan a dynamic block's header (RFC 1951, 3.2.7) from the lengths of its two codes.

    Returns ``(nlit, ndist, run_sym, run_extra, n_runs, clen_len, nclen)``: how many
    literal/length and distance lengths are sent, those lengths run-length coded
    (:func:`length_runs`), and the code-length code's lengths and how many are sent.
    """
    nlit = N_LITLEN
    while lit_len[nlit - 1] == 0:
        nlit -= 1
    ndist = N_DIST
    while ndist > 1 and dist_len[ndist - 1] == 0:
        ndist -= 1
    all_len = np.concatenate((lit_len[:nlit], dist_len[:ndist]))
    run_sym = np.empty(all_len.shape[0], np.int64)
    run_extra = np.empty(all_len.shape[0], np.int64)
    n_runs = length_runs(all_len, run_sym, run_extra)
    clen_freq = np.zeros(N_CLEN, np.int64)
    for t in range(n_runs):
        clen_freq[run_sym[t]] += 1
    clen_len = huffman_lengths(clen_freq, 7)
    nclen = N_CLEN
    while nclen > 4 and clen_len[CLEN_ORDER[nclen - 1]] == 0:
        nclen -= 1
    return nlit, ndist, run_sym, run_extra, n_runs, clen_len, nclen


@kernel
def put_header(
    words, w, acc, nacc, final, nlit, ndist, run_sym, run_extra, n_runs, clen_len, nclen
):
    """Write a dynamic block's first bits and the header :func:`plan_header` planned."""
    w, acc, nacc = put_bits(words, w, acc, nacc, final | (2 << 1), 3)
    w, acc, nacc = put_bits(words, w, acc, nacc, nlit - 257, 5)
    w, acc, nacc = put_bits(words, w, acc, nacc, ndist - 1, 5)
    w, acc, nacc = put_bits(words, w, acc, nacc, nclen - 4, 4)
    for i in range(nclen):
        w, acc, nacc = put_bits(words, w, acc, nacc, clen_len[CLEN_ORDER[i]], 3)
    clen_code = canonical_codes(clen_len)
    for t in range(n_runs):
        s = run_sym[t]
        w, acc, nacc = put_bits(words, w, acc, nacc, clen_code[s], clen_len[s])
        if s >= 16:
            w, acc, nacc = put_bits(words, w, acc, nacc, run_extra[t], EXTRA_BITS_OF_RUN[s])
    return w, acc, nacc


@kernel
def crc_linear(tables, j, register):
    """Return the CRC register after the linear map ``tables[j]`` (four tables of 256, one per register byte)."""
    return (
        tables[j, 0, register & 0xFF]
        ^ tables[j, 1, (register >> 8) & 0xFF]
        ^ tables[j, 2, (register >> 16) & 0xFF]
        ^ tables[j, 3, register >> 24]
    )


@kernel
def run_matches(remaining):
    """Split a run of ``remaining >= 3`` bytes into matches: ``(n of 258, then up to two lengths, 0 = none)``."""
    if remaining <= MAX_MATCH:  # the usual run: one match, no division
        return 0, remaining, 0
    full = remaining // MAX_MATCH
    rest = remaining - full * MAX_MATCH
    if rest == 0:
        return full, 0, 0
    if rest >= 3:
        return full, rest, 0
    # 1 or 2 bytes past whole matches: the last two matches share them (no match is under 3)
    return full - 1, MAX_MATCH + rest - 3, 3


@kernel
def crc_after_zeros(register, n, level, crc_zeros):
    """Return the CRC register after ``n * 2**level`` zero bytes (one step per set bit of ``n``)."""
    j = level
    while n:
        if n & 1:
            register = crc_linear(crc_zeros, j, register)
        n >>= 1
        j += 1
    return register
