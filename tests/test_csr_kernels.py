"""The compiled CSR kernels (:mod:`cellucid.ex._csr_kernels`) against their numpy references, and when they run."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from _data import files_under, make_adata
from scipy import sparse

import cellucid as cl
from cellucid.ex import _csr_kernels, _genes, _var
from cellucid.ex._arithmetic import CURRENT, LEGACY
from cellucid.ex._progress import ExportProgress

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
NEVER = 10**18  # a COMPILED_MIN_STORED no matrix reaches: the numpy path


def awkward_csr(
    n: int, m: int, *, dtype: type, index_dtype: type, seed: int = 0
) -> sparse.csr_matrix:
    """A canonical CSR matrix with NaN, ±Inf, negatives, stored ±0 and special columns.

    Column 0 is full and positive, 1 full with one negative, 2 empty, 3 full and constant,
    4 full of ±0, 5 full with a NaN, 6 all NaN; the others are random at density 0.3.
    """
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 2, (n, m)).astype(np.float32)
    stored = rng.random((n, m)) < 0.3
    special = rng.random((n, m))
    values[special < 0.02] = np.nan
    values[(special >= 0.02) & (special < 0.03)] = np.inf
    values[(special >= 0.03) & (special < 0.04)] = -np.inf
    values[(special >= 0.04) & (special < 0.06)] = -0.0
    values[:, 0] = np.abs(values[:, 0]) + 1
    values[:, 1] = np.abs(values[:, 1]) + 1
    values[n // 2, 1] = -3.5
    values[:, 3] = 2.5
    values[:, 4] = np.where(np.arange(n) % 3 == 0, -0.0, 0.0)
    values[:, 5] = np.abs(values[:, 5]) + 0.5
    values[1, 5] = np.nan
    values[:, 6] = np.nan
    stored[:, [0, 1, 3, 4, 5, 6]] = True
    stored[:, 2] = False
    rows, cols = np.nonzero(stored)
    matrix = sparse.csr_matrix(
        (values[rows, cols].astype(dtype), (rows, cols)), shape=(n, m), dtype=dtype
    )
    matrix.indices = matrix.indices.astype(index_dtype)
    matrix.indptr = matrix.indptr.astype(index_dtype)
    assert matrix.has_canonical_format and matrix.nnz == rows.shape[0]  # the ±0 are stored
    return matrix


def same_bits(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.asarray(x).tobytes() == np.asarray(y).tobytes()
        for x, y in zip(a, b, strict=True)
    )


def numpy_summary(matrix: sparse.csr_matrix) -> _genes.StoredSummary:
    n, m = matrix.shape

    def everything():
        for r0, r1 in [(0, n // 3), (n // 3, n)]:
            a, b = matrix.indptr[r0], matrix.indptr[r1]
            yield matrix.indices[a:b], _genes._float32(matrix.data[a:b])

    return _genes.summarize(everything, m, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("shape", [(97, 23), (5, 8), (0, 4)])
def test_column_summary_equals_numpy_summarize(
    dtype: type, index_dtype: type, shape: tuple[int, int]
) -> None:
    n, m = shape
    if n > 10:
        matrix = awkward_csr(n, m, dtype=dtype, index_dtype=index_dtype, seed=n)
    else:  # no stored value at all
        matrix = sparse.csr_matrix((n, m), dtype=dtype)
        matrix.indptr = matrix.indptr.astype(index_dtype)
    expected = numpy_summary(matrix)
    args = matrix.indptr, matrix.indices, matrix.data, m
    whole = _csr_kernels.merge_summaries([_csr_kernels.column_summary(*args, 0, n)], n)
    cuts = [0, n // 4, n // 4, min(n // 2 + 1, n), n]  # an empty range among them
    ranges = [_csr_kernels.column_summary(*args, a, b) for a, b in pairwise(cuts)]
    assert same_bits(whole, tuple(expected))
    assert same_bits(_csr_kernels.merge_summaries(ranges, n), tuple(expected))
    if n == 97:  # the special columns are covered
        assert expected.non_finite[[5, 6]].all() and expected.count[2] == 0
        assert np.signbit(expected.hi[4]) == np.signbit(np.float32(-0.0))  # the last zero: -0
        column = matrix[:, 0].toarray()
        assert expected.lo[0] == column[np.isfinite(column)].min()  # a full column's minimum


def test_column_summary_refuses_values_float32_cannot_hold() -> None:
    matrix = awkward_csr(40, 9, dtype=np.float64, index_dtype=np.int32)
    matrix.data[7] = 1e300
    assert _csr_kernels.column_summary(matrix.indptr, matrix.indices, matrix.data, 9, 0, 40) is None
    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="beyond float32's range"):
        blocks(matrix, np.arange(9), compiled=True, executor=pool, budget=10**9)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_run_starts_equals_numpy(index_dtype: type) -> None:
    matrix = awkward_csr(120, 300, dtype=np.float32, index_dtype=index_dtype)
    for bounds in (np.array([0, 300]), np.array([3, 50, 51, 180, 299]), np.arange(0, 301, 7)):
        expected = _genes._run_starts(matrix, bounds)
        out = np.empty_like(expected)
        for r0, r1 in [(0, 50), (50, 50), (50, 120)]:
            _csr_kernels.run_starts(matrix.indptr, matrix.indices, bounds, out, r0, r1)
        assert out.dtype == expected.dtype
        np.testing.assert_array_equal(out, expected)


def blocks(
    matrix: sparse.csr_matrix,
    columns: np.ndarray,
    *,
    compiled: bool,
    executor: ThreadPoolExecutor,
    budget: int,
) -> list[_genes.GeneBlock]:
    saved = _genes.COMPILED_MIN_STORED
    _genes.COMPILED_MIN_STORED = 0 if compiled else NEVER
    try:
        return list(
            _genes.gene_blocks(
                matrix,
                columns,
                n_cells=matrix.shape[0],
                payload_bytes=4,
                memory_budget=budget,
                spill_dir=Path("unused"),
                executor=executor,
                stop=None,
            )
        )
    finally:
        _genes.COMPILED_MIN_STORED = saved


def encoded(
    matrix: sparse.csr_matrix, columns: np.ndarray, *, compiled: bool, arith, bits: int | None
) -> list[tuple]:
    """Every block's (genes, payload bytes, vmin, vmax, finite, summary), encoded on a pool of 2."""
    n = matrix.shape[0]
    dtype = {8: np.uint8, 16: np.uint16, None: np.float32}[bits]
    out = []
    with ThreadPoolExecutor(2) as pool:
        # about 20 genes per block, so that there are several, with gaps when columns has some
        for block in blocks(matrix, columns, compiled=compiled, executor=pool, budget=20 * n * 4):
            buffer = np.full((block.genes.shape[0], n), 7, dtype=dtype)  # not the zero code
            payloads, vmin, vmax, finite = _var.encode_block(
                block,
                n_cells=n,
                bits=bits,
                arith=arith,
                buffer=lambda k, buffer=buffer: buffer[:k],
                executor=pool,
                progress=ExportProgress(total=1, enabled=False),
            )
            out.append((block.genes, payloads, vmin, vmax, finite, *block.summary))
    return out


@pytest.mark.parametrize("arith", [CURRENT, LEGACY], ids=["current", "legacy"])
@pytest.mark.parametrize("bits", [8, 16, None])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gaps", [False, True])
def test_compiled_parts_encode_the_same_payloads(
    monkeypatch: pytest.MonkeyPatch, arith, bits: int | None, dtype: type, gaps: bool
) -> None:
    matrix = awkward_csr(
        310, 90, dtype=dtype, index_dtype=np.int64 if gaps else np.int32, seed=bits or 1
    )
    rng = np.random.default_rng(3)
    columns = rng.permutation(90)[:70] if gaps else rng.permutation(90)
    expected = encoded(matrix, columns, compiled=False, arith=arith, bits=bits)

    def no_gather(*args: object) -> None:
        pytest.fail("a compiled part was gathered by numpy")

    monkeypatch.setattr(_genes, "_csr_part", no_gather)
    monkeypatch.setattr(_genes, "summarize", no_gather)
    monkeypatch.setattr(_genes, "_run_starts", no_gather)
    got = encoded(matrix, columns, compiled=True, arith=arith, bits=bits)
    assert len(expected) > 3  # several blocks
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert same_bits(a, b)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.longdouble])
def test_other_value_types_keep_numpy(monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:
    matrix = sparse.csr_matrix(np.array([[0, 3, 1], [2, 0, 0]], dtype=dtype))
    with ThreadPoolExecutor(1) as pool:
        (block,) = blocks(matrix, np.arange(3), compiled=True, executor=pool, budget=10**9)
    assert not any(part.compiled for part in block.parts)
    assert block.summary.hi.tolist() == [2.0, 3.0, 1.0]


def test_kernels_that_cannot_load_leave_the_work_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix = awkward_csr(50, 12, dtype=np.float32, index_dtype=np.int32)
    monkeypatch.setitem(sys.modules, "cellucid.ex._csr_kernels", None)  # import fails
    with ThreadPoolExecutor(1) as pool:
        got = blocks(matrix, np.arange(12), compiled=True, executor=pool, budget=10**9)
        expected = blocks(matrix, np.arange(12), compiled=False, executor=pool, budget=10**9)
    assert not any(part.compiled for block in got for part in block.parts)
    assert same_bits(tuple(got[0].summary), tuple(expected[0].summary))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN codes, computed by numpy
def test_legacy_bounds_without_a_float32_scale_keep_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    vmin, vmax = np.array([0.0, 1.0]), np.array([1e-45, 2.0])  # 254 / 1e-45 is inf in float32
    assert _csr_kernels.part_encoder(LEGACY.encode, vmin, vmax, bits=8) is None
    assert _csr_kernels.part_encoder(CURRENT.encode, vmin, vmax, bits=8) is not None
    matrix = sparse.csr_matrix(np.array([[0.0, 1.5], [1e-45, 0.0], [0.0, 2.0]], np.float32))
    payloads = []
    with ThreadPoolExecutor(1) as pool:
        for compiled in (False, True):
            (block,) = blocks(matrix, np.arange(2), compiled=compiled, executor=pool, budget=10**9)
            codes, *_ = _var.encode_block(
                block,
                n_cells=3,
                bits=8,
                arith=LEGACY,
                buffer=lambda k: np.empty((k, 3), np.uint8),
                executor=pool,
                progress=ExportProgress(total=1, enabled=False),
            )
            payloads.append(codes.tobytes())
    assert payloads[0] == payloads[1]


@pytest.mark.parametrize("arith", [CURRENT, LEGACY], ids=["current", "legacy"])
@pytest.mark.parametrize("bits", [8, None])
def test_kernels_compute_as_interpreted(
    monkeypatch: pytest.MonkeyPatch, arith, bits: int | None
) -> None:
    """numba's compiled kernels give the bits their Python source gives, interpreted."""
    matrix = awkward_csr(60, 30, dtype=np.float64, index_dtype=np.int32, seed=7)
    columns = np.random.default_rng(0).permutation(30)[:24]
    compiled = encoded(matrix, columns, compiled=True, arith=arith, bits=bits)
    for name in ("_column_summary", "_run_starts", "_encode_part"):
        monkeypatch.setattr(_csr_kernels, name, getattr(_csr_kernels, name).py_func)
    interpreted = encoded(matrix, columns, compiled=True, arith=arith, bits=bits)
    for a, b in zip(compiled, interpreted, strict=True):
        assert same_bits(a, b)


def test_compiled_export_writes_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the identity's created_at
    adata = make_adata(400, 60)
    adata.X.data[5] = np.nan
    options = {"var_quantization": 8, "compression": 6, "progress": False}
    cl.ex.export(adata, tmp_path / "numpy" / "ds", **options)
    saved = _genes.COMPILED_MIN_STORED
    _genes.COMPILED_MIN_STORED = 0
    try:
        cl.ex.export(adata, tmp_path / "compiled" / "ds", **options)
    finally:
        _genes.COMPILED_MIN_STORED = saved

    numpy_files = files_under(tmp_path / "numpy" / "ds")
    compiled_files = files_under(tmp_path / "compiled" / "ds")
    assert sum(name.startswith("var/") for name in numpy_files) == 60
    assert numpy_files == compiled_files


def test_small_exports_do_not_load_the_kernels(tmp_path: Path) -> None:
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _data import make_adata
import cellucid as cl
cl.ex.export(make_adata(300, 40), {str(tmp_path / "ds")!r}, progress=False)
print("cellucid.ex._csr_kernels" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
    assert (tmp_path / "ds" / "var_manifest.json").is_file()


def test_stored_value_blocks_hold_at_most_64_values_a_cell() -> None:
    """Gzipped from their stored values, blocks stay small enough to visit each row for 64 values.

    The budget would take every gene in one block; the cap cuts them by the mean stored
    values of a column (so a block of denser genes than the mean may hold a few more).
    """
    rng = np.random.default_rng(3)
    n_cells, n_genes = 200, 400
    matrix = sparse.random(n_cells, n_genes, density=0.5, format="csr", random_state=rng)
    matrix.data = matrix.data.astype(np.float32)
    columns = np.arange(n_genes)
    saved = _genes.COMPILED_MIN_STORED
    _genes.COMPILED_MIN_STORED = 0
    try:
        with ThreadPoolExecutor(2) as pool:
            found = list(
                _genes.gene_blocks(
                    matrix,
                    columns,
                    n_cells=n_cells,
                    payload_bytes=2,
                    stored_bytes=12,
                    memory_budget=2**30,
                    spill_dir=Path("unused"),
                    executor=pool,
                    stop=None,
                )
            )
    finally:
        _genes.COMPILED_MIN_STORED = saved
    stored = [int(block.summary.count.sum()) for block in found]
    assert sum(stored) == matrix.nnz
    cap = _genes._STORED_VALUES_PER_ROW * n_cells
    assert len(found) >= -(-matrix.nnz // cap) > 1
    assert max(stored) <= 1.1 * cap
    assert np.array_equal(np.sort(np.concatenate([b.genes for b in found])), columns)
