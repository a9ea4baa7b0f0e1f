"""gzip members of code columns written from their stored values: time follows the values, not the cells.

A quantized gene payload is runs of one code (the code of 0) between the codes of the
stored values. Its deflate stream is written here straight from ``(rows, codes)``: the
codes as literals, each run as length/distance matches repeating the byte before it
(distance 1; 2 for 16-bit zero codes whose bytes differ), one block with Huffman codes built from the block's symbol
counts (or the fixed codes, when smaller). The gzip trailer's CRC-32 is linear in the
bytes: it is the CRC of the column of zero codes (a few table steps) plus the stored
values' part, summed chunk by chunk, so no run is ever written out. The decoded bytes are
the dense column, exactly; the member's bytes are not zlib's.

The per-value work runs in numba kernels (compiled once, cached on disk); a block of a
large in-memory CSR matrix is gathered, quantized and grouped by gene by
:mod:`cellucid.ex._csr_kernels` and written by one kernel call per run of genes
(:func:`stored_columns_from_csr`). :func:`use_sparse_gzip` decides by the export's
settings (the size rule is the compiled path's, :data:`cellucid.ex._genes.COMPILED_MIN_STORED`)
and each column by its density (:data:`DENSE_FRACTION`). :func:`stored_columns` groups
stored codes given in parts: the reference the compiled path is tested against.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from .._format import gzip_ceiling
from ..pp._quantize import encode_with_bounds
from ._deflate import (
    CRC_CHUNK,
    CRC_CHUNK_BITS,
    CRC_CHUNK_STEPS,
    CRC_LEVELS,
    END_OF_BLOCK,
    EXTRA_BITS_OF_RUN,
    FIXED_LENGTHS,
    LEN_NBITS,
    LEN_SYMBOL,
    LEN_VALUE,
    MAX_MATCH,
    N_DIST,
    N_LITLEN,
    canonical_codes,
    compile_kernels,
    crc_after_zeros,
    crc_linear,
    crc_tables,
    huffman_lengths,
    kernel,
    plan_header,
    put_bits,
    put_header,
    run_matches,
)

if TYPE_CHECKING:
    from scipy import sparse

    from ._arithmetic import Arithmetic

# --- when this encoder is used (measured on 8-bit codes, see benchmarks/README.md) ----------
#: columns with more stored values than this fraction of cells go to zlib's run-length
#: deflate, which is then as fast and smaller (repeated codes become matches)
DENSE_FRACTION = 0.25

# --- kernels --------------------------------------------------------------------------------
# compiled on first use (:func:`cellucid.ex._deflate.compile_kernels`, with the deflate
# primitives); the tests also run them interpreted (NUMBA_DISABLE_JIT=1), same bytes


def _compile() -> None:
    """Put the numba versions of the kernels in their place (numba is imported then, when first needed)."""
    compile_kernels()


@kernel
def _crc_shifts(zero, itemsize, crc_byte, crc_zeros):
    """Return the constant parts of the CRC register's affine maps over runs of the zero code.

    ``shift[j]``: over ``2**j`` codes (the linear part is ``crc_zeros[j + log2(itemsize)]``).
    All 0 when the zero code is 0.
    """
    level0 = itemsize - 1  # log2 of 1 or 2
    shift = np.zeros(CRC_LEVELS, np.uint32)
    if zero == 0:
        return shift
    reg = np.uint32(0)
    for i in range(itemsize):
        reg = crc_byte[(reg ^ np.uint32((zero >> (8 * i)) & 0xFF)) & 0xFF] ^ (reg >> np.uint32(8))
    shift[0] = reg
    for j in range(CRC_LEVELS - 1 - level0):
        c = shift[j]
        lv = j + level0
        shift[j + 1] = crc_linear(crc_zeros, lv, c) ^ c
    return shift


@kernel
def _run_unit(zero, itemsize):
    """Return the distance of a column's run matches: 1, or 2 for 16-bit zero codes whose two bytes differ.

    A run repeats the byte (or the two bytes) before it; zlib's run-length deflate does the
    same with distance 1, which needs one literal byte where a 2-byte unit needs two.
    """
    return 1 if itemsize == 1 or (zero & 0xFF) == (zero >> 8) else 2


@kernel
def _zero_literals(zero, itemsize, n, lit_freq):
    """Count ``n`` zero codes' literals in ``lit_freq``."""
    for i in range(itemsize):
        lit_freq[(zero >> (8 * i)) & 0xFF] += n


@kernel
def _count_run(remaining, previous_zero, zero, unit, lit_freq):
    """Count the symbols of a run of ``remaining`` bytes of the zero code; return its extra bits.

    After a code that is not the zero code, the run starts with the literals of its first
    ``unit`` bytes (:func:`_run_unit`); the rest is matches of distance ``unit`` (literals
    when under 3 bytes).
    """
    extra_bits = 0
    if not previous_zero:
        _zero_literals(zero, unit, 1, lit_freq)
        remaining -= unit
    if remaining < 3:
        _zero_literals(zero, unit, remaining // unit, lit_freq)
    else:
        full, first, second = run_matches(remaining)
        lit_freq[LEN_SYMBOL[MAX_MATCH]] += full
        if first:
            lit_freq[LEN_SYMBOL[first]] += 1
            extra_bits += LEN_NBITS[first]
        if second:
            lit_freq[LEN_SYMBOL[second]] += 1
            extra_bits += LEN_NBITS[second]
    return extra_bits


@kernel
def _count(n_cells, rows, codes, zero, itemsize, lit_freq, gaps):
    """First pass over a column: add its symbols to ``lit_freq``; return the extra bits of its lengths.

    The column is written as: each stored code as literals; each run of the zero code as
    matches of distance ``unit`` (:func:`_run_unit`), after the literals of its first
    ``unit`` bytes where the code before is not the zero code (:func:`_write` follows the
    same steps). The usual run (after a code that is not the zero code, one match at most)
    is only counted by its length here (``gaps``, all 0 on entry and on return), its
    symbols added once per length at the end.
    """
    extra_bits = 0
    previous_zero = False  # whether the last code written is the zero code
    position = 0  # the next cell
    unit = _run_unit(zero, itemsize)
    short_gap = (MAX_MATCH + unit) // itemsize
    nnz = rows.shape[0]
    for k in range(nnz + 1):
        row = np.int64(rows[k]) if k < nnz else np.int64(n_cells)
        gap = row - position
        if gap < 0:
            raise ValueError("stored rows must increase and stay below n_cells")
        if gap > 0:
            if gap <= short_gap and not previous_zero:
                gaps[gap] += 1
            else:
                extra_bits += _count_run(gap * itemsize, previous_zero, zero, unit, lit_freq)
        if k == nnz:
            break
        code = np.int64(codes[k])
        if itemsize == 1:
            lit_freq[code] += 1
        else:
            lit_freq[code & 0xFF] += 1
            lit_freq[code >> 8] += 1
        previous_zero = code == zero
        position = row + 1
    for gap in range(1, short_gap + 1):
        n = gaps[gap]
        if n:
            gaps[gap] = 0
            remaining = gap * itemsize - unit
            _zero_literals(zero, unit, n, lit_freq)
            if remaining < 3:
                _zero_literals(zero, unit, n * (remaining // unit), lit_freq)
            else:
                lit_freq[LEN_SYMBOL[remaining]] += n
                extra_bits += n * LEN_NBITS[remaining]
    return extra_bits


@kernel
def _plan(lit_freq, unit, extra_bits):
    """Choose a block's codes from its symbol counts: dynamic Huffman codes, or the fixed ones when smaller.

    Returns ``(bits, dynamic, lit_len, dist_len, nlit, ndist, run_sym, run_extra, n_runs,
    clen_len, nclen)``: ``bits`` is the whole block's size.
    """
    dist_symbol = unit - 1  # distance 1 or 2 (:func:`_run_unit`): symbols 0 and 1, no extra bits
    dist_freq = np.zeros(N_DIST, np.int64)
    dist_freq[dist_symbol] = lit_freq[257:].sum()
    lit_len = huffman_lengths(lit_freq, 15)
    dist_len = huffman_lengths(dist_freq, 15)
    nlit, ndist, run_sym, run_extra, n_runs, clen_len, nclen = plan_header(lit_len, dist_len)
    data_bits = extra_bits
    fixed_bits = extra_bits
    for s in range(N_LITLEN):
        data_bits += lit_freq[s] * lit_len[s]
        fixed_bits += lit_freq[s] * FIXED_LENGTHS[s]
    data_bits += dist_freq[dist_symbol] * dist_len[dist_symbol]
    fixed_bits += dist_freq[dist_symbol] * 5
    header_bits = 14 + 3 * nclen
    for t in range(n_runs):
        header_bits += clen_len[run_sym[t]] + EXTRA_BITS_OF_RUN[run_sym[t]]
    dynamic = header_bits + data_bits <= fixed_bits
    bits = 3 + (header_bits + data_bits if dynamic else fixed_bits)
    return (
        bits,
        dynamic,
        lit_len,
        dist_len,
        nlit,
        ndist,
        run_sym,
        run_extra,
        n_runs,
        clen_len,
        nclen,
    )


@kernel
def _put_run(
    words, w, acc, nacc, remaining, lead, unit, zero_bits, zero_nbits, match_bits, match_nbits
):
    """Write any run of ``remaining`` bytes of the zero code, after its literals if ``lead`` (:func:`_count_run`)."""
    if lead:
        w, acc, nacc = put_bits(words, w, acc, nacc, zero_bits, zero_nbits)
        remaining -= unit
    if remaining < 3:  # whole units, too short for a match
        for _ in range(remaining // unit):
            w, acc, nacc = put_bits(words, w, acc, nacc, zero_bits, zero_nbits)
        return w, acc, nacc
    full, first, second = run_matches(remaining)
    for _ in range(full):
        w, acc, nacc = put_bits(words, w, acc, nacc, match_bits[MAX_MATCH], match_nbits[MAX_MATCH])
    if first:
        w, acc, nacc = put_bits(words, w, acc, nacc, match_bits[first], match_nbits[first])
    if second:
        w, acc, nacc = put_bits(words, w, acc, nacc, match_bits[second], match_nbits[second])
    return w, acc, nacc


@kernel
def _write(
    out,
    pos,
    n_cells,
    rows,
    codes,
    zero,
    itemsize,
    plan,
    tables,
    words,
):
    """Write one column's deflate block (codes from ``_plan``) and gzip trailer at ``out[pos:]``; return the end.

    ``out`` must hold the plan's bits and 12 bytes more, ``words`` the plan's bits and 128
    more (a scratch buffer). Each stored value's bits, the run of the zero code before it
    then its literals, are one string of bits from per-column tables for the usual run
    (as :func:`_count` counts it), so one store to the bit buffer. The CRC-32 is computed
    in the same loop: the register is linear in the bytes, so it is the register of the
    column of zero codes (a few steps) plus that of the stored values' differences from
    the zero code, summed by chunks of :data:`CRC_CHUNK` bytes counted from the column's
    end: each value's bytes look up their part in their chunk (``crc_at``), and one step
    of the dependent chain (``crc_chunks``) moves the sum from one value's chunk to the next's.
    """
    crc_byte, crc_zeros, crc_chunks, crc_at = tables  # crc_tables()
    nb = n_cells * itemsize
    # the register over ``nb`` bytes of the zero code, from the initial value
    shift = _crc_shifts(zero, itemsize, crc_byte, crc_zeros)
    crc = np.uint32(0xFFFFFFFF)
    j, g = itemsize - 1, n_cells
    while g:
        if g & 1:
            crc = crc_linear(crc_zeros, j, crc) ^ shift[j - itemsize + 1]
        g >>= 1
        j += 1
    # the stored values' part, summed at the end of chunk ``chunk`` (from the column's end)
    part = np.uint32(0)
    chunk = (nb - 1) >> CRC_CHUNK_BITS
    _, dynamic, lit_len, dist_len, nlit, ndist, run_sym, run_extra, n_runs, clen_len, nclen = plan
    # the deflate block goes to 64-bit words first, then to ``out`` at ``pos``
    w, acc, nacc = 0, np.uint64(0), 0
    if dynamic:  # the final block
        w, acc, nacc = put_header(
            words, w, acc, nacc, 1, nlit, ndist, run_sym, run_extra, n_runs, clen_len, nclen
        )
    else:
        w, acc, nacc = put_bits(words, w, acc, nacc, 1 | (1 << 1), 3)  # final block, fixed codes
        lit_len = FIXED_LENGTHS[:288].copy()
        dist_len = FIXED_LENGTHS[288:].copy()
    lit_code = canonical_codes(lit_len)
    dist_code = canonical_codes(dist_len)
    # each match length as one string of bits: its symbol's code, extra bits, distance code
    unit = _run_unit(zero, itemsize)
    dist_symbol = unit - 1
    match_bits = np.zeros(MAX_MATCH + 1, np.int64)
    match_nbits = np.zeros(MAX_MATCH + 1, np.int64)
    for length in range(3, MAX_MATCH + 1):
        s = LEN_SYMBOL[length]
        n = lit_len[s]
        match_bits[length] = (
            lit_code[s]
            | (LEN_VALUE[length] << n)
            | (dist_code[dist_symbol] << (n + LEN_NBITS[length]))
        )
        match_nbits[length] = n + LEN_NBITS[length] + dist_len[dist_symbol]
    # the literals of a run's first unit as one string of bits
    zero_bits, zero_nbits = 0, 0
    for i in range(unit):
        b = (zero >> (8 * i)) & 0xFF
        zero_bits |= lit_code[b] << zero_nbits
        zero_nbits += lit_len[b]
    # the usual run of ``gap`` zero codes, after a code that is not the zero code: its first
    # unit's literals, then one match or up to two more units (-1: over 56 bits, written piecewise)
    short_gap = (MAX_MATCH + unit) // itemsize
    run_bits = np.zeros(short_gap + 1, np.int64)
    run_nbits = np.zeros(short_gap + 1, np.int64)
    for gap in range(1, short_gap + 1):
        remaining = gap * itemsize - unit
        if remaining < 3:
            nbits = zero_nbits * (1 + remaining // unit)
        else:
            nbits = zero_nbits + match_nbits[remaining]
        if nbits > 56:
            run_nbits[gap] = -1
            continue
        bits = zero_bits
        if remaining < 3:
            for i in range(remaining // unit):
                bits |= zero_bits << (zero_nbits * (i + 1))
        else:
            bits |= match_bits[remaining] << zero_nbits
        run_bits[gap], run_nbits[gap] = bits, nbits
    position = 0
    previous_zero = False
    nnz = rows.shape[0]
    for k in range(nnz + 1):
        row = np.int64(rows[k]) if k < nnz else np.int64(n_cells)
        gap = row - position
        n = gap * itemsize
        rn = -1
        if gap <= short_gap and (gap == 0 or not previous_zero):
            rb, rn = run_bits[gap], run_nbits[gap]
        if rn < 0:
            w, acc, nacc = _put_run(
                words, w, acc, nacc, n, not previous_zero, unit,
                zero_bits, zero_nbits, match_bits, match_nbits,
            )  # fmt: skip
            rb, rn = 0, 0
        if k == nnz:
            w, acc, nacc = put_bits(words, w, acc, nacc, rb, rn)
            break
        code = np.int64(codes[k])
        diff = code ^ zero
        # the value's first byte is ``d`` bytes before the column's last (a 16-bit value's
        # two bytes share a chunk: ``d`` is odd)
        d = nb - 1 - row * itemsize
        steps = chunk - (d >> CRC_CHUNK_BITS)
        chunk = d >> CRC_CHUNK_BITS
        if steps <= CRC_CHUNK_STEPS:
            part = crc_linear(crc_chunks, steps, part)
        else:
            part = crc_after_zeros(part, steps, CRC_CHUNK_BITS, crc_zeros)
        o = d & (CRC_CHUNK - 1)
        if itemsize == 1:
            cb, cn = lit_code[code], lit_len[code]
            part ^= crc_at[o, diff]
        else:
            lo, hi = code & 0xFF, code >> 8
            cb = lit_code[lo] | (lit_code[hi] << lit_len[lo])
            cn = lit_len[lo] + lit_len[hi]
            part ^= crc_at[o, diff & 0xFF] ^ crc_at[o - 1, diff >> 8]
        if rn + cn <= 56:
            w, acc, nacc = put_bits(words, w, acc, nacc, rb | (cb << rn), rn + cn)
        else:
            w, acc, nacc = put_bits(words, w, acc, nacc, rb, rn)
            w, acc, nacc = put_bits(words, w, acc, nacc, cb, cn)
        previous_zero = code == zero
        position = row + 1
    w, acc, nacc = put_bits(words, w, acc, nacc, lit_code[END_OF_BLOCK], lit_len[END_OF_BLOCK])
    words[w] = acc  # the last bits (the rest are 0)
    nbytes = 8 * w + (nacc + 7) // 8
    out[pos : pos + nbytes] = words.view(np.uint8)[:nbytes]
    pos += nbytes
    crc ^= crc_after_zeros(part, chunk, CRC_CHUNK_BITS, crc_zeros) ^ np.uint32(0xFFFFFFFF)
    size = nb & 0xFFFFFFFF
    for i in range(4):
        out[pos + i] = (crc >> (8 * i)) & 0xFF
        out[pos + 4 + i] = (size >> (8 * i)) & 0xFF
    return pos + 8


@kernel
def _encode_column(n_cells, rows, codes, zero, itemsize, header, tables):
    """Return the gzip member of one column (see :func:`_encode_columns`)."""
    indptr = np.array([0, rows.shape[0]], np.int64)
    zeros = np.array([zero], np.int64)
    skip = np.zeros(1, np.bool_)
    out, _ = _encode_columns(n_cells, indptr, rows, codes, zeros, itemsize, skip, header, tables)
    return out


@kernel
def _encode_columns(
    n_cells,
    indptr,
    rows,
    codes,
    zeros,
    itemsize,
    skip,
    header,
    tables,
):
    """Return gzip members of many columns, one after the other, and where each ends (``skip``: left empty).

    Column ``g`` has the codes ``codes[indptr[g]:indptr[g + 1]]`` at ``rows[...]`` and
    ``zeros[g]`` elsewhere; ``tables`` are :func:`crc_tables`.
    """
    n_genes = indptr.shape[0] - 1
    ends = np.zeros(n_genes + 1, np.int64)
    out = np.empty(max(1024, (indptr[-1] * itemsize * 3) // 2), np.uint8)
    pos = 0
    lit_freq = np.zeros(N_LITLEN, np.int64)
    gaps = np.zeros(MAX_MATCH // itemsize + 2, np.int64)
    words = np.empty(1024, np.uint64)
    for g in range(n_genes):
        if not skip[g]:
            a, b = indptr[g], indptr[g + 1]
            lit_freq[:] = 0
            extra_bits = _count(n_cells, rows[a:b], codes[a:b], zeros[g], itemsize, lit_freq, gaps)
            lit_freq[END_OF_BLOCK] += 1
            plan = _plan(lit_freq, _run_unit(zeros[g], itemsize), extra_bits)
            bits = plan[0]
            need = pos + header.shape[0] + (bits + 7) // 8 + 16
            if need > out.shape[0]:
                bigger = np.empty(max(need, 2 * out.shape[0]), np.uint8)
                bigger[:pos] = out[:pos]
                out = bigger
            if (bits + 63) // 64 + 2 > words.shape[0]:
                words = np.empty(max((bits + 63) // 64 + 2, 2 * words.shape[0]), np.uint64)
            out[pos : pos + header.shape[0]] = header
            pos = _write(
                out,
                pos + header.shape[0],
                n_cells,
                rows[a:b],
                codes[a:b],
                zeros[g],
                itemsize,
                plan,
                tables,
                words,
            )
        ends[g + 1] = pos
    return out[:pos], ends


@kernel
def _scatter(gene, row, code, start, rows, codes):
    """Put each value's row and code at its gene's next place (``start[g]``, in order)."""
    at = start.copy()
    for i in range(gene.shape[0]):
        g = gene[i]
        rows[at[g]] = row[i]
        codes[at[g]] = code[i]
        at[g] += 1


# --- entry points ---------------------------------------------------------------------------


def stored_value_bytes(itemsize: int) -> int:
    """Bytes a stored value of a block written here takes: its row (int32), its code and its member's share.

    A member takes at most about as many bytes as the codes it holds (a literal each, the
    runs between them a few bits).
    """
    return 4 + 2 * itemsize


def use_sparse_gzip(*, bits: int | None, compression: int | None, arith: Arithmetic) -> bool:
    """Whether an export's compiled CSR blocks have their payloads gzipped from their stored values here.

    Only quantized, compressed genes have codes to write this way, and only in the
    current arithmetic (the kernels' codes are
    :func:`~cellucid.pp._quantize.encode_with_bounds`'s); level 9 keeps zlib's best of two
    strategies.
    """
    return (
        bool(bits) and bool(compression) and compression != 9 and arith.encode is encode_with_bounds
    )


@dataclass(frozen=True)
class StoredColumn:
    """One gene's code payload given by its stored codes: ``zero`` everywhere, ``codes`` at ``rows``.

    ``rows`` are strictly increasing cells; ``nbytes`` is the payload's.
    """

    n_cells: int
    rows: np.ndarray
    codes: np.ndarray
    zero: int
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of the payload (decoded)."""
        return self.n_cells * self.dtype.itemsize

    def dense(self) -> np.ndarray:
        """Return the payload array."""
        column = np.full(self.n_cells, self.zero, dtype=self.dtype.newbyteorder("<"))
        column[self.rows] = self.codes
        return column

    def gzip(self, level: int, lib: ModuleType = zlib) -> bytes | bytearray | memoryview:
        """Return the payload's ``.gz`` file: see the module's docstring.

        A column with more stored values than :data:`DENSE_FRACTION` of its cells, or whose
        member would pass the viewer's transfer ceiling, is deflated by zlib from its dense
        payload instead (:meth:`zlib_gzip`).
        """
        from ._payload import gzip_header

        if self.rows.shape[0] <= DENSE_FRACTION * self.n_cells and self.n_cells > 0:
            _compile()
            member = _encode_column(
                self.n_cells,
                self.rows,
                self.codes,
                self.zero,
                self.dtype.itemsize,
                np.frombuffer(gzip_header(level), np.uint8),
                crc_tables(),
            )
            if member.shape[0] <= gzip_ceiling(self.nbytes):
                return memoryview(member)
        return self.zlib_gzip(level, lib)

    def zlib_gzip(self, level: int, lib: ModuleType = zlib) -> bytearray:
        """Return the payload's ``.gz`` file deflated by ``lib`` from its dense payload (run-length)."""
        from ._payload import gzip_bytes

        return gzip_bytes(memoryview(self.dense().view(np.uint8)), level, run_length=True, lib=lib)


@dataclass(frozen=True)
class GzippedPayload:
    """A gene's payload held as its ``.gz`` file only: ``nbytes`` is the payload's (decoded).

    What a block's columns become once gzipped (:func:`stored_columns` given a level): the
    block's stored values can then be freed while its files wait to be written.
    """

    nbytes: int
    member: bytes | bytearray | memoryview


def stored_columns(
    n_cells: int,
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    zeros: np.ndarray,
    dtype: np.dtype,
    *,
    level: int | None = None,
    lib: ModuleType = zlib,
    pool_map: Callable = map,
) -> list[StoredColumn] | list[GzippedPayload]:
    """Group the stored codes of a block of genes by gene: ``parts`` of ``(gene, row, code)``.

    ``zeros`` are the genes' zero codes. Within each part and from one part to the next,
    each gene's rows must increase (parts of consecutive row ranges, or of whole genes).
    The parts are put in place in parallel by ``pool_map`` (an executor's ``map``). Given
    a gzip ``level``, the columns' ``.gz`` files are returned instead
    (:class:`GzippedPayload`), written a run of genes per kernel call
    (:data:`_VALUES_PER_CALL`), the calls in parallel by ``pool_map``: no Python per gene.
    Columns the kernel leaves to zlib (denser than :data:`DENSE_FRACTION`, or past the
    transfer ceiling) are deflated by ``lib`` then, in parallel too
    (:meth:`StoredColumn.zlib_gzip`): the block's stored values are not held after.
    """
    _compile()
    n_genes = zeros.shape[0]
    counts = np.stack([np.bincount(gene, minlength=n_genes) for gene, _, _ in parts])
    indptr = np.zeros(n_genes + 1, np.int64)
    np.cumsum(counts.sum(axis=0), out=indptr[1:])
    rows = np.empty(indptr[-1], np.int32)
    codes = np.empty(indptr[-1], dtype)
    # each part's first place per gene: after the gene's values in the parts before
    starts = indptr[:-1] + np.cumsum(counts, axis=0) - counts
    for _ in pool_map(lambda part, start: _scatter(*part, start, rows, codes), parts, list(starts)):
        pass
    return _columns(n_cells, indptr, rows, codes, zeros, level, lib, pool_map)


def stored_columns_from_csr(
    matrix,
    runs: np.ndarray,
    in_block: np.ndarray | int,
    row_ranges: list[tuple[int, int]],
    counts: np.ndarray,
    vmin: np.ndarray,
    vmax: np.ndarray,
    zeros: np.ndarray,
    dtype: np.dtype,
    *,
    bits: int,
    level: int | None = None,
    lib: ModuleType = zlib,
    pool_map: Callable = map,
) -> list[StoredColumn] | list[GzippedPayload]:
    """:func:`stored_columns` of a block of a canonical CSR ``matrix``, each value touched once while in the cache.

    ``runs`` has each row's run of the block's values (start, end within the row),
    ``in_block`` maps columns to genes (or is the block's first column); ``counts`` has
    each gene's stored values in each of the ``row_ranges`` (consecutive, covering the
    rows). The codes are those of :func:`~cellucid.pp._quantize.encode_with_bounds` with
    ``vmin``/``vmax``. The row ranges are gathered, quantized and grouped by gene straight
    into their place, in parallel by ``pool_map``; given a ``level`` (and ``lib``), the
    genes' ``.gz`` files are returned, as by :func:`stored_columns`.
    """
    from .._format import MAX_QUANT
    from ._csr_kernels import _gather_quantized

    _compile()
    n_cells = matrix.shape[0]
    n_genes = zeros.shape[0]
    mapped = np.empty(0, np.int64) if isinstance(in_block, int) else np.asarray(in_block, np.int64)
    first = in_block if isinstance(in_block, int) else 0
    counts = np.asarray(counts, np.int64).reshape(len(row_ranges), n_genes)
    indptr = np.zeros(n_genes + 1, np.int64)
    np.cumsum(counts.sum(axis=0), out=indptr[1:])
    # each range's values of a gene follow those of the ranges before it. Each range's
    # places are contiguous: a block's counts come column-major, and ranges on other
    # threads advancing places in the same cache lines took twice the gather's time
    starts = np.ascontiguousarray(indptr[:-1] + np.cumsum(counts, axis=0) - counts)
    rows = np.empty(indptr[-1], np.int32)
    codes = np.empty(indptr[-1], dtype)
    vmin = np.asarray(vmin, np.float64)
    span = np.asarray(vmax, np.float64) - vmin
    max_q = float(MAX_QUANT[bits])

    def gather(t: int) -> None:
        _gather_quantized(
            matrix.indptr, matrix.indices, matrix.data, runs, mapped, first, *row_ranges[t],
            starts[t], vmin, span, max_q, rows, codes,
        )  # fmt: skip

    list(pool_map(gather, range(len(row_ranges))))
    return _columns(n_cells, indptr, rows, codes, zeros, level, lib, pool_map)


def warm_up(matrix: sparse.csr_matrix, *, bits: int, level: int) -> None:
    """Load the kernels :func:`stored_columns_from_csr` runs on ``matrix``, on a block of no values.

    numba loads a kernel from its cache (or compiles it) at its first call with given
    types: here they are ``matrix``'s, so that the gene writer can load them on its pool
    (~1 s) while the first pass reads the matrix, instead of at its first block.
    """
    from .._format import QUANT_DTYPE

    empty = SimpleNamespace(  # what the kernels read of a CSR matrix, with its types
        shape=(1, matrix.shape[1]),
        indptr=np.zeros(2, matrix.indptr.dtype),
        indices=matrix.indices[:0],
        data=matrix.data[:0],
    )
    runs = np.zeros((1, 3), np.min_scalar_type(matrix.shape[1]))[:, :2]  # a view, as a block's
    one = np.ones(1)
    stored_columns_from_csr(
        empty, runs, 0, [(0, 1)], np.zeros((1, 1), np.int64), one - 1, one,
        np.zeros(1, np.int64), np.dtype(QUANT_DTYPE[bits]), bits=bits, level=level,
    )  # fmt: skip


def _genes_members(
    genes: tuple[int, int],
    n_cells: int,
    indptr: np.ndarray,
    rows: np.ndarray,
    codes: np.ndarray,
    zeros: np.ndarray,
    skip: np.ndarray,
    header: np.ndarray,
    tables: tuple[np.ndarray, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_encode_columns` of genes ``g0 .. g1 - 1`` of rows and codes grouped by gene (``indptr``)."""
    g0, g1 = genes
    a, b = indptr[g0], indptr[g1]
    return _encode_columns(
        n_cells,
        indptr[g0 : g1 + 1] - a,
        rows[a:b],
        codes[a:b],
        zeros[g0:g1],
        codes.dtype.itemsize,
        skip[g0:g1],
        header,
        tables,
    )


#: stored values per call of the members kernel (whole genes): calls run in parallel, and
#: each is long enough that its dispatch costs nothing next to it
_VALUES_PER_CALL = 2**20


def _columns(
    n_cells: int,
    indptr: np.ndarray,
    rows: np.ndarray,
    codes: np.ndarray,
    zeros: np.ndarray,
    level: int | None,
    lib: ModuleType,
    pool_map: Callable,
) -> list[StoredColumn] | list[GzippedPayload]:
    """Return a grouped block's columns, or given a ``level`` their ``.gz`` files (see :func:`stored_columns`)."""
    from ._payload import gzip_header

    dtype = codes.dtype
    zeros = np.asarray(zeros, np.int64)
    n_genes = zeros.shape[0]

    def column(g: int) -> StoredColumn:
        a, b = indptr[g], indptr[g + 1]
        return StoredColumn(n_cells, rows[a:b], codes[a:b], int(zeros[g]), dtype)

    if level is None:
        return [column(g) for g in range(n_genes)]
    itemsize = dtype.itemsize
    skip = (np.diff(indptr) > DENSE_FRACTION * n_cells) | (n_cells == 0)
    cuts = np.unique(
        np.searchsorted(indptr[1:], np.arange(0, indptr[-1], _VALUES_PER_CALL), side="right")
    )
    bounds = [*(int(c) for c in cuts if c > 0), n_genes] if n_genes else []
    calls = list(zip([0, *bounds[:-1]], bounds, strict=True))
    header = np.frombuffer(gzip_header(level), np.uint8)
    tables = crc_tables()

    def call(genes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return _genes_members(genes, n_cells, indptr, rows, codes, zeros, skip, header, tables)

    ceiling = gzip_ceiling(n_cells * itemsize)
    members: list[bytes | bytearray | memoryview | None] = []
    for out, ends in pool_map(call, calls):
        view = memoryview(out)
        members += [
            view[s:e] if 0 < e - s <= ceiling else None
            for s, e in zip(ends[:-1].tolist(), ends[1:].tolist(), strict=True)
        ]
    left = [g for g, member in enumerate(members) if member is None]
    for g, member in zip(
        left, pool_map(lambda g: column(g).zlib_gzip(level, lib), left), strict=True
    ):
        members[g] = member
    nbytes = n_cells * itemsize
    return [GzippedPayload(nbytes, member) for member in members]
