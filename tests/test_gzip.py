"""gzip encoders: stdlib zlib and the optional zlib-ng write the same payloads, and codes alike."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from _data import files_under

import cellucid as cl
from cellucid.ex import _payload

pytestmark = pytest.mark.filterwarnings("ignore:obs\\[:UserWarning")

zlib_ng = pytest.importorskip("zlib_ng.zlib_ng")


def _code_columns(seed: int) -> list[np.ndarray]:
    """Columns of codes as the export writes them: runs of one code between other codes."""
    rng = np.random.default_rng(seed)
    columns = []
    for size in (1, 3, 100, 65_536, 100_003, 1_000_000):
        for density in (0.0, 0.05, 0.3, 1.0):
            dtype = np.uint8 if rng.random() < 0.5 else np.uint16
            column = np.full(size, rng.integers(0, 255), dtype=dtype)
            stored = rng.random(size) < density
            column[stored] = rng.geometric(0.1, stored.sum()).clip(0, 254)
            columns.append(column)
    return columns


@pytest.mark.parametrize("level", [1, 6, 9])
def test_run_length_codes_are_byte_identical_with_either_encoder(level: int) -> None:
    for column in _code_columns(level):
        raw = memoryview(column.view(np.uint8))
        ours = _payload.gzip_bytes(raw, level, run_length=True, lib=zlib)
        fast = _payload.gzip_bytes(raw, level, run_length=True, lib=zlib_ng)
        assert gzip.decompress(fast) == gzip.decompress(ours) == column.tobytes()
        # level 9 also tries deflate's search, and keeps it where it is smaller
        assert ours == fast or level == 9


def test_exports_with_either_encoder_hold_the_same_payloads(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    options = {
        "var_quantization": 8,
        "obs_continuous_quantization": 8,
        "compression": 6,
        "dataset_name": "same",
    }
    stdlib = files_under(cl.ex.export(adata, tmp_path / "zlib", gzip_encoder="zlib", **options))
    fast = files_under(cl.ex.export(adata, tmp_path / "ng", gzip_encoder="zlib-ng", **options))
    assert stdlib.keys() == fast.keys()
    differing = []
    for name, data in stdlib.items():
        if not name.endswith(".gz"):
            assert fast[name] == data, name  # manifests and identity
            continue
        assert gzip.decompress(fast[name]) == gzip.decompress(data), name
        if fast[name] != data:
            differing.append(name)
    # codes (genes, obs values, categories) are run-length deflated: the same bytes; only the
    # float payloads (points, vectors, edges, outlier quantiles are quantized here) differ
    assert differing
    assert all(not name.startswith(("var/", "obs/")) for name in differing), differing


def test_auto_uses_zlib_ng_when_installed(adata: ad.AnnData, tmp_path: Path) -> None:
    options = {"compression": 6, "var_names": [], "obs_keys": []}
    auto = files_under(cl.ex.export(adata, tmp_path / "auto", **options))
    fast = files_under(cl.ex.export(adata, tmp_path / "ng", gzip_encoder="zlib-ng", **options))
    assert auto["points_2d.bin.gz"] == fast["points_2d.bin.gz"]


def test_zlib_ng_missing_or_unknown_encoder_fails_before_writing(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"gzip_encoder must be one of .*'brotli'"):
        cl.ex.export(adata, tmp_path / "a", compression=6, gzip_encoder="brotli")
    monkeypatch.setattr(_payload, "_zlib_ng", None)
    with pytest.raises(ImportError, match=r"pip install zlib-ng"):
        cl.ex.export(adata, tmp_path / "b", compression=6, gzip_encoder="zlib-ng")
    assert not list(tmp_path.iterdir())
    # without zlib-ng, "auto" is Python's zlib
    auto = cl.ex.export(adata, tmp_path / "c", compression=6, var_names=[], obs_keys=[])
    stdlib = cl.ex.export(
        adata, tmp_path / "d", compression=6, var_names=[], obs_keys=[], gzip_encoder="zlib"
    )
    assert (auto / "points_2d.bin.gz").read_bytes() == (stdlib / "points_2d.bin.gz").read_bytes()


def _values_payloads() -> dict[str, np.ndarray]:
    """Payloads of values as a 200,000-cell export writes them, none of them codes."""
    rng = np.random.default_rng(7)
    n = 200_000
    centres = rng.normal(0, 4, (30, 2))
    umap = centres[rng.integers(0, 30, n)] + rng.normal(0, 0.6, (n, 2))
    umap = (umap / np.abs(umap).max()).astype(np.float32)  # fitted into [-1, 1]
    neighbours = np.sort(rng.integers(0, n, (n, 8)), axis=1).astype(np.uint32)
    counts = rng.negative_binomial(2, 0.002, n).astype(np.float32)  # whole numbers, repeating
    return {"coordinates": umap, "destinations": neighbours, "counts": counts}


@pytest.mark.parametrize("lib", [zlib, zlib_ng], ids=["zlib", "zlib-ng"])
def test_values_without_repeated_strings_are_huffman_coded_alone(lib) -> None:
    payloads = _values_payloads()
    for name, array in payloads.items():
        raw = memoryview(array.reshape(-1).view(np.uint8))
        member = _payload.gzip_bytes(raw, 6, lib=lib)
        assert gzip.decompress(member) == raw.tobytes(), name
        searched = _payload._deflate(raw, 6, zlib.Z_DEFAULT_STRATEGY, lib)
        huffman = _payload._deflate(raw, 6, zlib.Z_HUFFMAN_ONLY, lib)
        body = member[10:-8]
        if name == "counts":  # repeated values: matches pay, the search stays
            assert body == searched
            assert len(huffman) > 1.1 * len(searched)
        else:  # floats and indices: the same size for a fraction of the work
            assert body == huffman, name
            assert len(huffman) <= 1.01 * len(searched), name


@pytest.mark.parametrize("lib", [zlib, zlib_ng], ids=["zlib", "zlib-ng"])
def test_level_9_and_payloads_under_four_samples_always_search(lib) -> None:
    coordinates = _values_payloads()["coordinates"].reshape(-1).view(np.uint8)
    small = memoryview(coordinates[: 4 * _payload._SAMPLE_BYTES - 1])
    member = _payload.gzip_bytes(small, 6, lib=lib)
    assert member[10:-8] == _payload._deflate(small, 6, zlib.Z_DEFAULT_STRATEGY, lib)
    whole = memoryview(coordinates)
    member = _payload.gzip_bytes(whole, 9, lib=lib)
    assert member[10:-8] == _payload._deflate(whole, 9, zlib.Z_DEFAULT_STRATEGY, lib)
    assert gzip.decompress(member) == whole.tobytes()


def _one_shot(data: bytes, level: int, strategy: int, lib) -> bytes:
    deflate = lib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, strategy)
    stream = deflate.compress(data) + deflate.flush()
    trailer = zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little")
    return _payload.gzip_header(level) + stream + trailer


@pytest.mark.parametrize("lib", [zlib, zlib_ng], ids=["zlib", "zlib-ng"])
def test_large_payloads_are_fed_in_pieces_with_the_bytes_of_one_call(lib) -> None:
    """Past _FEED_BYTES, Huffman and run-length streams grow in place: the same bytes, not held twice."""
    import tracemalloc

    rng = np.random.default_rng(3)
    n = 3 * _payload._FEED_BYTES + 12345
    codes = np.where(rng.random(n) < 0.1, rng.integers(1, 256, n), 0).astype(np.uint8).tobytes()
    dst = rng.integers(0, 2**20, n // 4).astype(np.int32).tobytes()  # like a graph's destinations
    assert _payload._strategy(memoryview(dst), 6, lib) == zlib.Z_HUFFMAN_ONLY
    cases = [(codes, True, zlib.Z_RLE), (dst, False, zlib.Z_HUFFMAN_ONLY)]
    for data, run_length, strategy in cases:
        tracemalloc.start()
        member = _payload.gzip_bytes(data, 6, run_length=run_length, lib=lib)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert member == _one_shot(data, 6, strategy, lib)
        assert gzip.decompress(member) == data
        # the member once, and a piece's output (a member built by copies held it twice)
        assert peak < len(member) * 1.25 + 2 * _payload._FEED_BYTES
    # a searched payload is given at once (zlib-ng's bytes would depend on the pieces)
    values = np.repeat(rng.random(n // 64).astype(np.float32), 4).tobytes()
    searched = _payload.gzip_bytes(values, 6, lib=lib)
    assert searched == _one_shot(values, 6, zlib.Z_DEFAULT_STRATEGY, lib)
