"""gzip members written from stored codes (ex/_sparse_gzip.py): the same decoded bytes as zlib's, valid gzip."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import cellucid as cl
from cellucid.ex import _deflate, _payload, _sparse_gzip
from cellucid.ex._payload import PayloadWriter
from cellucid.ex._sparse_gzip import StoredColumn
from cellucid.pp._quantize import encode_with_bounds

pytestmark = pytest.mark.filterwarnings("ignore:obs\\[:UserWarning")


def _column(n_cells: int, rows: list[int] | np.ndarray, codes, zero: int, dtype) -> StoredColumn:
    return StoredColumn(
        n_cells,
        np.asarray(rows, dtype=np.int32),
        np.asarray(codes, dtype=dtype),
        zero,
        np.dtype(dtype),
    )


def _random_column(rng: np.random.Generator, n_cells: int, density: float, dtype) -> StoredColumn:
    top = 254 if dtype == np.uint8 else 65534
    rows = np.flatnonzero(rng.random(n_cells) < density)
    codes = rng.geometric(0.05, rows.shape[0]).clip(0, top)
    zero = int(rng.integers(0, top)) if rng.random() < 0.3 else 0
    return _column(n_cells, rows, codes, zero, dtype)


def _cases() -> list[StoredColumn]:
    """Columns at the edges: empty, all stored values equal to the zero code, one value at either end,
    runs longer than a match (258) and the window (32768), both code sizes, 1 to 300k cells."""
    cases = []
    for dtype in (np.uint8, np.uint16):
        for zero in (0, 7, 0x1234 if dtype == np.uint16 else 200):
            cases += [
                _column(1, [], [], zero, dtype),
                _column(5, [], [], zero, dtype),
                _column(300_000, [], [], zero, dtype),
                _column(1000, [0], [3], zero, dtype),
                _column(1000, [999], [3], zero, dtype),
                _column(1000, [0, 999], [zero, zero], zero, dtype),
                _column(100_000, [10, 11, 12, 50_000], [zero, 1, zero, 2], zero, dtype),
                _column(70_000, [259, 259 + 32_769], [5, 6], zero, dtype),
                _column(2_000, list(range(0, 2_000, 7)), [9] * 286, zero, dtype),
            ]
            # gaps around one match (258 bytes), the CRC's chunk steps (16 x 64 bytes) and the window
            gaps = (1, 2, 3, 4, 257, 258, 259, 260, 261, 516, 517, 1023, 1024, 1025, 1088)
            for gap in (*gaps, 32_768, 32_769, 65_536):
                cases.append(_column(gap * 3 + 1, [gap, 2 * gap + 1], [1, 2], zero, dtype))
    rng = np.random.default_rng(0)
    for n_cells in (1, 2, 3, 10, 255, 256, 257, 1000, 65_537, 300_000):
        for density in (0.001, 0.02, 0.1, 0.25):
            cases.append(_random_column(rng, n_cells, density, np.uint8))
            cases.append(_random_column(rng, n_cells, density, np.uint16))
    return cases


def _interpreted(script: str, spec: object, path: Path) -> list[str]:
    """Run ``script`` on ``spec`` (as JSON at ``path``) with numba's kernels interpreted; return its lines."""
    path.write_text(json.dumps(spec))
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    run = [sys.executable, "-c", script, str(path)]
    return subprocess.run(run, capture_output=True, text=True, env=env, check=True).stdout.split()


def _kernel_member(column: StoredColumn, level: int = 6) -> bytes:
    """The kernel's member, whatever the column's density (``StoredColumn.gzip`` sends dense ones to zlib)."""
    _sparse_gzip._compile()
    return _sparse_gzip._encode_column(
        column.n_cells,
        column.rows,
        column.codes,
        column.zero,
        column.dtype.itemsize,
        np.frombuffer(_payload.gzip_header(level), np.uint8),
        _sparse_gzip.crc_tables(),
    ).tobytes()


def _check_member(member: bytes, column: StoredColumn, level: int = 6) -> None:
    expected = column.dense().tobytes()
    assert gzip.decompress(member) == expected
    inflate = zlib.decompressobj(wbits=31)
    assert inflate.decompress(member) + inflate.flush() == expected
    assert inflate.eof and inflate.unused_data == b""  # one member, nothing after it
    assert member[:10] == _payload.gzip_header(level)  # mtime 0, no name, OS 0xff
    assert int.from_bytes(member[-8:-4], "little") == zlib.crc32(expected)
    assert int.from_bytes(member[-4:], "little") == len(expected) & 0xFFFFFFFF


def test_decoded_bytes_are_the_dense_column() -> None:
    for column in _cases():
        _check_member(_kernel_member(column), column)
        _check_member(bytes(column.gzip(6)), column)


def test_fully_dense_columns_and_every_code() -> None:
    rng = np.random.default_rng(1)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        for n_cells in (1, 300, 20_000):
            codes = rng.integers(0, top + 1, n_cells)
            column = _column(n_cells, np.arange(n_cells), codes, 0, dtype)
            _check_member(_kernel_member(column), column)
            # the zlib path takes them (more stored values than DENSE_FRACTION of the cells)
            assert bytes(column.gzip(6)) == _payload.gzip_bytes(
                column.dense().tobytes(), 6, run_length=True
            )


def test_columns_with_the_longest_codes() -> None:
    """Literal codes limited to 15 bits (counts in powers of 2), the zero code the rarest: a
    value's run and literals then pass 56 bits, the bit writer's single store."""
    _sparse_gzip._compile()
    byte = np.repeat(np.arange(1, 17), 2 ** np.arange(16))  # bytes 1..16, 2**(b - 1) times
    byte = np.random.default_rng(4).permutation(byte)
    for dtype, zero in ((np.uint8, 0), (np.uint8, 200), (np.uint16, 0), (np.uint16, 0x0102)):
        codes = byte * 257 if dtype == np.uint16 else byte  # 16 bit: both bytes the same
        for gaps in ([2], [1, 2], [3, 300], [2, 2, 1000]):
            n_cells = codes.shape[0] + sum(gaps)
            holes = [300 * (i + 1) + np.arange(g) for i, g in enumerate(gaps)]
            rows = np.setdiff1d(np.arange(n_cells), np.concatenate(holes))
            column = _column(n_cells, rows, codes, zero, dtype)
            _check_member(_kernel_member(column), column)
            freq = np.zeros(286, np.int64)
            itemsize = np.dtype(dtype).itemsize
            gap_counts = np.zeros(_deflate.MAX_MATCH // itemsize + 2, np.int64)
            extra = _sparse_gzip._count(
                n_cells, column.rows, column.codes, zero, itemsize, freq, gap_counts
            )
            freq[256] += 1
            unit = _sparse_gzip._run_unit(zero, itemsize)
            lit_len = _sparse_gzip._plan(freq, unit, extra)[2]
            assert lit_len.max() == 15 and lit_len[zero & 0xFF] >= 14


def test_huffman_lengths_are_optimal_and_limited() -> None:
    """Against a plain heapq Huffman: the same total bits when within the limit, a full prefix code always."""
    import heapq

    rng = np.random.default_rng(5)
    for t in range(300):
        n = int(rng.choice([2, 3, 19, 30, 286]))  # deflate's alphabets, and tiny ones
        freq = (rng.geometric(0.05, n) ** (1 + t % 3)) * (rng.random(n) < 0.8)
        if t % 5 == 0:
            freq = 2 ** rng.integers(0, 22, n)  # deep trees: the limit applies
        limit = 7 if n == 19 else 15
        lengths = _deflate.huffman_lengths(freq.astype(np.int64), limit)
        coded = lengths > 0
        assert coded.sum() >= min(2, n) and lengths.max() <= limit
        assert np.all(coded[freq > 0])
        assert sum(2.0 ** -lengths[coded]) == 1.0  # a complete prefix code
        used = freq[freq > 0].tolist()
        if len(used) >= 2:
            heap = used.copy()
            heapq.heapify(heap)
            best = 0
            while len(heap) > 1:
                merged = heapq.heappop(heap) + heapq.heappop(heap)
                best += merged
                heapq.heappush(heap, merged)
            total = int((freq * lengths).sum())
            assert total >= best
            if lengths.max() < limit:
                assert total == best


def test_header_level_byte_follows_the_level() -> None:
    column = _column(10_000, [5, 600], [1, 2], 0, np.uint8)
    for level in (1, 6, 9):
        member = bytes(column.gzip(level))
        _check_member(member, column, level)


def test_output_is_deterministic() -> None:
    cases = _cases()
    assert [bytes(c.gzip(6)) for c in cases] == [bytes(c.gzip(6)) for c in cases]


def test_compiled_kernels_write_the_bytes_of_the_interpreted_ones(tmp_path: Path) -> None:
    """numba's kernels against the same Python run by the interpreter (NUMBA_DISABLE_JIT)."""
    rng = np.random.default_rng(2)
    columns = [
        _random_column(rng, n, d, t)
        for n in (1, 700, 5000)
        for d in (0.01, 0.2)
        for t in (np.uint8, np.uint16)
    ]
    columns += [_column(70_000, [259, 259 + 32_769], [5, 6], 3, np.uint16)]
    spec = [[c.n_cells, c.rows.tolist(), c.codes.tolist(), c.zero, c.dtype.str] for c in columns]
    script = (
        "import json, sys, numpy as np\n"
        "from cellucid.ex._sparse_gzip import StoredColumn\n"
        "spec = json.load(open(sys.argv[1]))\n"
        "for n, rows, codes, zero, dt in spec:\n"
        "    c = StoredColumn(n, np.array(rows, np.int32), np.array(codes, dt), zero, np.dtype(dt))\n"
        "    sys.stdout.write(bytes(c.gzip(6)).hex() + '\\n')\n"
    )
    out = _interpreted(script, spec, tmp_path / "columns.json")
    assert out == [bytes(c.gzip(6)).hex() for c in columns]


def test_compiled_block_kernel_writes_the_bytes_of_the_interpreted_one(tmp_path: Path) -> None:
    """A block's members (one kernel call for many genes) against the interpreter's."""
    parts, _ = _block_parts(np.random.default_rng(7), 3000, [0.01, 0.2, 0.0, 0.05], np.uint8, 700)
    spec = [[g.tolist(), r.tolist(), c.tolist()] for g, r, c in parts]
    script = (
        "import json, sys, numpy as np\n"
        "from cellucid.ex._sparse_gzip import stored_columns\n"
        "parts = [tuple(np.array(x, t) for x, t in zip(p, (np.intp, np.int32, np.uint8)))\n"
        "         for p in json.load(open(sys.argv[1]))]\n"
        "for c in stored_columns(3000, parts, np.zeros(4, np.int64), np.dtype(np.uint8), level=6):\n"
        "    sys.stdout.write(bytes(c.member).hex() + '\\n')\n"
    )
    out = _interpreted(script, spec, tmp_path / "parts.json")
    columns = _sparse_gzip.stored_columns(
        3000, parts, np.zeros(4, np.int64), np.dtype(np.uint8), level=6
    )
    assert out == [bytes(c.member).hex() for c in columns]


def _log_counts_codes(n_cells: int, n_genes: int, density: float, seed: int) -> list[StoredColumn]:
    """8-bit codes of log-normalized counts at ``density``, quantized as the export does."""
    rng = np.random.default_rng(seed)
    detection = np.clip(rng.lognormal(np.log(density), 1.0, n_genes), 0.0005, 0.9)
    detection *= density / detection.mean()
    columns = []
    for p in np.clip(detection, 0, 1):
        rows = np.flatnonzero(rng.random(n_cells) < p)
        values = np.log1p(rng.poisson(1.5, rows.shape[0]) + 1.0).astype(np.float32)
        vmax = float(values.max()) if values.size else 0.0
        codes = encode_with_bounds(values, 0.0, vmax, bits=8)
        columns.append(_column(n_cells, rows, codes, 0, np.uint8))
    return columns


def test_sizes_within_five_percent_of_zlib_level_6() -> None:
    columns = _log_counts_codes(20_000, 200, 0.05, seed=3)
    ours = sum(len(c.gzip(6)) for c in columns)
    run_length = sum(
        len(_payload.gzip_bytes(c.dense().tobytes(), 6, run_length=True)) for c in columns
    )
    default = sum(len(_payload.gzip_bytes(c.dense().tobytes(), 6)) for c in columns)
    assert ours <= 1.05 * run_length
    assert ours <= 1.05 * default


def test_a_member_past_the_transfer_ceiling_falls_back_to_zlib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    column = _column(100_000, [10, 5000], [1, 2], 0, np.uint8)
    monkeypatch.setattr(_sparse_gzip, "gzip_ceiling", lambda raw: 0)
    assert bytes(column.gzip(6)) == _payload.gzip_bytes(
        column.dense().tobytes(), 6, run_length=True
    )


def test_rows_that_do_not_increase_are_refused() -> None:
    with pytest.raises(ValueError, match="rows must increase"):
        _column(100, [5, 3], [1, 2], 0, np.uint8).gzip(6)
    with pytest.raises(ValueError, match="rows must increase"):
        _column(100, [5, 100], [1, 2], 0, np.uint8).gzip(6)


def test_stored_columns_group_parts_by_gene() -> None:
    rng = np.random.default_rng(4)
    dense = (rng.random((500, 6)) < 0.1) * rng.integers(1, 200, (500, 6))
    coo = sparse.coo_matrix(dense)  # row-major: each gene's rows increase
    parts = [
        (
            coo.col[a : a + 37].astype(np.intp),
            coo.row[a : a + 37],
            coo.data[a : a + 37].astype(np.uint8),
        )
        for a in range(0, coo.nnz, 37)
    ]
    zeros = np.zeros(6, np.int64)
    columns = _sparse_gzip.stored_columns(500, parts, zeros, np.dtype(np.uint8))
    for g, column in enumerate(columns):
        assert np.array_equal(column.dense(), dense[:, g].astype(np.uint8))


def _block_parts(rng: np.random.Generator, n_cells: int, densities: list[float], dtype, step: int):
    """A block of genes at ``densities`` as row-major parts of ``step`` values, and its dense codes."""
    top = 254 if dtype == np.uint8 else 65534
    dense = np.stack(
        [(rng.random(n_cells) < d) * rng.geometric(0.05, n_cells).clip(1, top) for d in densities],
        axis=1,
    ).astype(dtype)
    coo = sparse.coo_matrix(dense)
    parts = [
        (coo.col[a : a + step].astype(np.intp), coo.row[a : a + step], coo.data[a : a + step])
        for a in range(0, coo.nnz, step)
    ]
    return parts, dense


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_blocks_members_are_its_columns_members_written_one_by_one(
    monkeypatch: pytest.MonkeyPatch, dtype
) -> None:
    """One kernel call per run of genes (several runs, on a pool) writes each column's member byte for byte."""
    rng = np.random.default_rng(6)
    densities = [0.0, 0.01, 0.05, 0.3, 0.002, 1.0, 0.1, 0.0, 0.2, 0.04]  # 0.3, 1.0: zlib's
    parts, dense = _block_parts(rng, 20_000, densities, dtype, 3001)
    zeros = np.array([0, 0, 3, 0, 7, 0, 0, 1, 0, 0])
    dense = np.where(dense == 0, zeros.astype(dtype), dense)
    parts = [(g, r, np.where(c == 0, zeros[g].astype(dtype), c)) for g, r, c in parts]
    monkeypatch.setattr(_sparse_gzip, "_VALUES_PER_CALL", 2500)  # a few genes per call
    with ThreadPoolExecutor(2) as pool:
        columns = _sparse_gzip.stored_columns(
            20_000, parts, zeros, np.dtype(dtype), level=6, pool_map=pool.map
        )
    alone = _sparse_gzip.stored_columns(20_000, parts, zeros, np.dtype(dtype))
    for g, (column, single) in enumerate(zip(columns, alone, strict=True)):
        assert column.nbytes == single.nbytes == dense[:, g].nbytes
        assert bytes(column.member) == bytes(single.gzip(6))
        if densities[g] > _sparse_gzip.DENSE_FRACTION:  # deflated by zlib with the block's
            assert bytes(column.member) == single.zlib_gzip(6)
        assert gzip.decompress(bytes(column.member)) == dense[:, g].tobytes()


def test_the_rule_takes_quantized_gzipped_exports_but_level_9() -> None:
    from cellucid.ex._arithmetic import CURRENT, LEGACY

    rule = partial(_sparse_gzip.use_sparse_gzip, arith=CURRENT)
    assert rule(bits=8, compression=6)
    assert rule(bits=16, compression=1)
    assert not rule(bits=None, compression=6)
    assert not rule(bits=8, compression=None)
    assert not rule(bits=8, compression=9)
    # the kernels write the current arithmetic's codes: the legacy layout keeps zlib
    assert not _sparse_gzip.use_sparse_gzip(bits=8, compression=6, arith=LEGACY)


def _payloads(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): gzip.decompress(p.read_bytes())
        if p.suffix == ".gz"
        else p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
    }


def _realistic(adata: ad.AnnData) -> ad.AnnData:
    """Log-normalized counts at 8 % density, genes whose zero code is not 0, dense and empty genes."""
    adata = adata.copy()
    x = sparse.random(adata.n_obs, adata.n_vars, density=0.08, format="csr", random_state=5)
    x.data = np.log1p(np.ceil(x.data * 20)).astype(np.float32)
    x = x.tolil()
    x[:, 5:8] = np.log1p(np.arange(adata.n_obs) % 7 + 1)[:, None]  # every cell: zlib's
    x[: adata.n_obs // 3, 8] = 2.0  # a third of the cells: past DENSE_FRACTION
    x[:, 9] = 0  # no stored value
    x = x.tocsr()
    x[:, :5] = -x[:, :5]  # genes whose zero code is not 0
    adata.X = x
    return adata


@pytest.mark.parametrize("reference", ["numpy", "compiled dense"])
@pytest.mark.parametrize("bits", [8, 16])
def test_exports_through_stored_columns_decode_to_the_zlib_exports(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bits: int, reference: str
) -> None:
    """The compiled CSR path with stored-values members against the numpy path, or the compiled dense one."""
    from cellucid.ex import _genes, _var

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    adata = _realistic(adata)
    options = {"var_quantization": bits, "compression": 6, "dataset_name": "same"}
    options |= {"progress": False, "memory_budget": 64 * 1024}  # several blocks
    if reference == "compiled dense":
        monkeypatch.setattr(_genes, "COMPILED_MIN_STORED", 0)
        monkeypatch.setattr(_var, "use_sparse_gzip", lambda **_: False)
    expected = cl.ex.export(adata, tmp_path / "zlib", **options)
    monkeypatch.undo()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setattr(_genes, "COMPILED_MIN_STORED", 0)
    monkeypatch.setattr(_genes, "_STORED_VALUES_PER_ROW", 2)  # blocks of a few genes
    made = []

    def write_many(self, files, **kwargs):
        made.extend(kwargs.get("made", False) for relpath, _ in files if relpath.startswith("var/"))
        return write(self, files, **kwargs)

    write = PayloadWriter.write_many
    monkeypatch.setattr(PayloadWriter, "write_many", write_many)
    ours = cl.ex.export(adata, tmp_path / "stored", **options)
    assert _payloads(ours) == _payloads(expected)
    assert len(made) == adata.n_vars and all(made)  # files made: written in order (one thread)
    differs = [
        p.name
        for p in (ours / "var").iterdir()
        if p.read_bytes() != (expected / "var" / p.name).read_bytes()
    ]
    assert len(differs) > adata.n_vars // 2  # the stored-values encoder did write them
    assert cl.ex.validate(ours).ok


def test_small_exports_never_load_the_kernels(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exports under the compiled path's size rule keep zlib and never compile the members kernels."""
    from cellucid.ex import _genes

    def refuse() -> None:
        raise AssertionError("the stored-values kernels were loaded")

    monkeypatch.setattr(_sparse_gzip, "_compile", refuse)
    adata = _realistic(adata)
    out = cl.ex.export(adata, tmp_path / "small", var_quantization=8, compression=6, progress=False)
    assert cl.ex.validate(out).ok
    monkeypatch.setattr(_genes, "COMPILED_MIN_STORED", 0)  # the rule is what keeps them out
    with pytest.raises(AssertionError, match="kernels were loaded"):
        cl.ex.export(adata, tmp_path / "all", var_quantization=8, compression=6, progress=False)


def test_the_writer_warms_the_kernels_up_where_blocks_are_compiled(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellucid.ex import _genes, _var

    calls: list[tuple] = []
    monkeypatch.setattr(_var, "warm_up", lambda matrix, **kw: calls.append((matrix.shape, kw)))
    adata = _realistic(adata)
    options = {"compression": 6, "progress": False}
    cl.ex.export(adata, tmp_path / "small", var_quantization=8, **options)
    assert calls == []  # under the compiled path's size rule
    monkeypatch.setattr(_genes, "COMPILED_MIN_STORED", 0)
    cl.ex.export(adata, tmp_path / "compiled", var_quantization=16, **options)
    assert calls == [(adata.shape, {"bits": 16, "level": 6})]
    cl.ex.export(adata, tmp_path / "float32", var_quantization=None, **options)
    assert len(calls) == 1  # float32 values keep zlib: nothing to warm up


def _csr_block_cases(seed: int):
    """CSR matrices with negative, non-finite and repeated values, empty and constant columns."""
    rng = np.random.default_rng(seed)
    x = sparse.random(900, 40, density=0.12, format="csr", random_state=seed, dtype=np.float64)
    x.data = np.log1p(x.data * 50)
    x.data[rng.random(x.nnz) < 0.02] *= -1
    x.data[rng.integers(0, x.nnz, 5)] = [np.nan, np.inf, -np.inf, np.nan, 7.0]
    x = x.tolil()
    x[:, 3] = 0  # no stored value
    x[rng.random(900) < 0.3, 5] = 2.5  # one value: constant where stored
    x[:, 7] = 1.0  # no implicit zero
    x = x.tocsr()
    x.sort_indices()
    return x


@pytest.mark.parametrize(
    ("row_ranges", "per_call"),
    [
        ([(0, 900)], 2**20),
        ([(0, 300), (300, 300), (300, 899), (899, 900)], 2**20),
        ([(0, 450), (450, 900)], 200),
    ],
)
@pytest.mark.parametrize("gapped", [False, True])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("data_dtype", [np.float32, np.float64])
def test_fused_csr_gather_gives_the_columns_of_the_parts_path(
    gapped, bits, data_dtype, row_ranges, per_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One compiled pass (gather, quantize, group) against _csr_part + encode_with_bounds + stored_columns.

    ``row_ranges``: the rows gathered in these ranges (on a pool, an empty one among
    them); ``per_call``: the members in calls of a few genes each.
    """
    monkeypatch.setattr(_sparse_gzip, "_VALUES_PER_CALL", per_call)
    from cellucid.ex import _genes
    from cellucid.pp._quantize import finite_bounds

    x = _csr_block_cases(bits + gapped)
    x.data = x.data.astype(data_dtype)
    columns = np.array([1, 2, 3, 5, 7, 9, 10, 11, 12, 20, 21, 22, 30]) if gapped else np.arange(40)
    layout = _genes._ColumnBlocks.cut(columns, x.shape[1], 900.0, 900.0 * 6)
    runs = _genes._run_starts(x, layout.bounds)
    summary = _genes.summarize(
        lambda: iter([(x.indices, x.data.astype(np.float32))]), x.shape[1], x.shape[0]
    )
    dtype = np.dtype(np.uint8 if bits == 8 else np.uint16)
    row_parts = [(0, 300), (300, 650), (650, 900)]
    for b, ((s, e), parts) in enumerate(
        zip(layout.cuts, layout.parts(x, row_parts, runs), strict=True)
    ):
        genes = layout.order[s:e]
        count = summary.count[columns[genes]]
        lo = np.where(
            count < 900, np.minimum(summary.lo[columns[genes]], 0), summary.lo[columns[genes]]
        )
        hi = np.where(
            count < 900, np.maximum(summary.hi[columns[genes]], 0), summary.hi[columns[genes]]
        )
        lo, hi = lo.astype(np.float64), hi.astype(np.float64)
        lo[~np.isfinite(lo)], hi[~np.isfinite(lo)] = np.nan, np.nan
        vmin, vmax = finite_bounds(lo, hi)
        zeros = encode_with_bounds(np.zeros(vmin.shape, np.float32), vmin, vmax, bits=bits)
        coded = []
        for part in parts:
            gene, row, value = part()
            coded.append((gene, row, encode_with_bounds(value, vmin, vmax, bits=bits, index=gene)))
        expected = _sparse_gzip.stored_columns(900, coded, zeros, dtype, level=6)
        in_block = layout.in_block if layout.gaps[b] else int(layout.bounds[b])
        counts = [np.bincount(x[a:b].indices, minlength=40)[columns[genes]] for a, b in row_ranges]
        block = (x, runs[:, b : b + 2], in_block, row_ranges, counts, vmin, vmax, zeros, dtype)
        with ThreadPoolExecutor(2) as pool:
            ours, files = (
                _sparse_gzip.stored_columns_from_csr(
                    *block, bits=bits, level=level, pool_map=pool.map
                )
                for level in (None, 6)
            )
        grouped = _sparse_gzip.stored_columns(900, coded, zeros, dtype)
        assert len(ours) == len(files) == len(expected) == len(grouped) == e - s
        for o, file, ref, group in zip(ours, files, expected, grouped, strict=True):
            assert np.array_equal(o.rows, group.rows) and np.array_equal(o.codes, group.codes)
            assert o.zero == group.zero
            assert bytes(file.member) == bytes(ref.member)


def _case_script(tmp_path: Path, seed: int, modules: str) -> str:
    """Save :func:`_csr_block_cases` ``seed`` to ``x.npz``; return a script's start that loads it as ``x``.

    The script imports ``modules`` from ``cellucid.ex`` and reads the file from ``sys.argv[1]``.
    """
    x = _csr_block_cases(seed)
    np.savez(tmp_path / "x.npz", indptr=x.indptr, indices=x.indices, data=x.data)
    return (
        "import sys, numpy as np\n"
        "from scipy import sparse\n"
        f"from cellucid.ex import {modules}\n"
        "z = np.load(sys.argv[1])\n"
        "x = sparse.csr_matrix((z['data'], z['indices'], z['indptr']), shape=(900, 40))\n"
    )


def test_warm_up_loads_the_kernels_a_block_runs(tmp_path: Path) -> None:
    """After warm_up, a real block's call finds every kernel loaded for its types (in a fresh process).

    A kernel numba has not seen with a block's types would gain a signature at that call.
    """
    script = _case_script(tmp_path, 5, "_csr_kernels, _genes, _sparse_gzip") + (
        "layout = _genes._ColumnBlocks.cut(np.array([1, 2, 5, 9]), 40, 900.0, 900.0 * 6)\n"
        "runs = _genes._run_starts(x, layout.bounds)\n"
        "bits = int(sys.argv[2])\n"
        "if sys.argv[3] == 'warm':\n"
        "    _sparse_gzip.warm_up(x, bits=bits, level=6)\n"
        "kernels = lambda: (_csr_kernels._gather_quantized, _sparse_gzip._encode_columns)\n"
        "before = [len(getattr(k, 'signatures', ())) for k in kernels()]\n"
        "ranges = [(0, 450), (450, 900)]\n"
        "counts = [np.bincount(x[a:b].indices, minlength=40)[[1, 2, 5, 9]] for a, b in ranges]\n"
        "dtype = np.dtype(np.uint8 if bits == 8 else np.uint16)\n"
        "_sparse_gzip.stored_columns_from_csr(x, runs[:, 0:2], layout.in_block, ranges, counts,\n"
        "    np.zeros(4), np.full(4, 3.0), np.zeros(4, np.int64), dtype, bits=bits, level=6)\n"
        "after = [len(k.signatures) for k in kernels()]\n"
        "sys.stdout.write(f'{before} {after}')\n"
    )
    for bits in (8, 16):
        run = [sys.executable, "-c", script, str(tmp_path / "x.npz"), str(bits)]
        warm = subprocess.run([*run, "warm"], capture_output=True, text=True, check=True).stdout
        before, after = warm.split("] [")
        assert before.strip("[]") == after.strip("[]") and "0" not in before, (bits, warm)
        cold = subprocess.run([*run, "cold"], capture_output=True, text=True, check=True).stdout
        assert cold.startswith("[0, 0]"), cold  # nothing was loaded without it


def test_fused_csr_kernel_interpreted_gives_the_compiled_codes(tmp_path: Path) -> None:
    """_gather_quantized under NUMBA_DISABLE_JIT writes the compiled kernel's rows and codes."""
    script = _case_script(tmp_path, 3, "_sparse_gzip") + (
        "runs = np.stack([np.zeros(900, np.int64), np.diff(x.indptr)], axis=1)\n"
        "vmin, vmax = np.full(40, -1.0), np.full(40, 4.0)\n"
        "vmax[5] = -1.0\n"
        "ranges = [(0, 400), (400, 900)]\n"
        "counts = [np.bincount(x[a:b].indices, minlength=40) for a, b in ranges]\n"
        "cols = _sparse_gzip.stored_columns_from_csr(x, runs, 0, ranges, counts, vmin, vmax,\n"
        "    np.zeros(40, np.int64), np.dtype(np.uint8), bits=8)\n"
        "sys.stdout.write(' '.join(c.rows.tobytes().hex() + ':' + c.codes.tobytes().hex() for c in cols))\n"
    )
    run = [sys.executable, "-c", script, str(tmp_path / "x.npz")]
    interpreted = subprocess.run(
        run,
        capture_output=True,
        text=True,
        env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
        check=True,
    ).stdout
    compiled = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert interpreted == compiled and len(interpreted.split()) == 40
