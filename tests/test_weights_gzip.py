"""Edge weights gzipped by the compiled encoder (ex/_weights_gzip.py): zlib's decoded bytes, valid gzip."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import scanpy as sc

import cellucid as cl
from cellucid.ex import _connectivity, _genes, _payload, _weights_gzip

from ._decode import decode

ROOT = Path(__file__).resolve().parents[1]


def _member(weights: np.ndarray, level: int = 6) -> bytes:
    """The compiled encoder's member of ``weights``, checked: one valid gzip member of their bytes."""
    raw = np.asarray(weights, "<f8").tobytes()
    member = _weights_gzip.gzip_weights(
        np.asarray(weights, np.float64), _payload.gzip_header(level)
    )
    assert member is not None
    member = bytes(member)
    assert gzip.decompress(member) == raw
    inflate = zlib.decompressobj(wbits=31)
    assert inflate.decompress(member) + inflate.flush() == raw
    assert inflate.eof and inflate.unused_data == b""  # one member, nothing after it
    assert member[:10] == _payload.gzip_header(level)
    assert int.from_bytes(member[-8:-4], "little") == zlib.crc32(raw)
    assert int.from_bytes(member[-4:], "little") == len(raw) & 0xFFFFFFFF
    return member


def _widened(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).astype(np.float64)


def _edge_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    few = rng.random(40).astype(np.float32)
    return [
        np.empty(0),
        _widened([0.5]),
        _widened([1.0, 1.0]),
        _widened([0.25, 0.75]),
        _widened(np.full(100_000, 0.3)),  # runs of repeats far over 32 KiB, matches of 258
        _widened(np.tile(few, 500)),  # a 320-byte period: repeats longer than one match
        _widened(rng.choice(few[:7], 70_000)),  # a few values, over blocks
        _widened(rng.random(50_000)),  # no repeats
        _widened(rng.lognormal(0, 3, 30_000)),  # many exponents, values over 1
        _widened([np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, 0.0]),
    ]


def test_decoded_bytes_are_the_weights() -> None:
    for weights in _edge_cases():
        _member(weights)


def test_weights_that_need_float64_are_left_to_zlib() -> None:
    assert _weights_gzip.gzip_weights(np.array([0.1, 0.2]), _payload.gzip_header(6)) is None
    mixed = _widened(np.linspace(0.1, 1, 1000))
    mixed[517] = 0.1  # one value with more than float32's mantissa
    assert _weights_gzip.gzip_weights(mixed, _payload.gzip_header(6)) is None


def _pbmc() -> sc.AnnData:
    """pbmc68k_reduced with its scanpy neighbors graph in float32, as scanpy now stores it (it ships float64)."""
    adata = sc.datasets.pbmc68k_reduced()
    adata.obsp["connectivities"] = adata.obsp["connectivities"].astype(np.float32)
    return adata


def _pbmc_weights() -> np.ndarray:
    return cl.pp.graph_edges(_pbmc().obsp["connectivities"]).weights


def _bench_weights(n_cells: int, seed: int) -> np.ndarray:
    """The weights of a graph from the benchmarks' data generator (UMAP's fuzzy connectivities)."""
    spec = importlib.util.spec_from_file_location("make_data", ROOT / "benchmarks" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    structure, latent_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    labels, t = make_data.make_structure(n_cells, structure)
    latent, _ = make_data.make_latent(labels, t, latent_rng)
    idx, dist = make_data.knn_block(latent, labels, t, 15)
    connectivities, _ = make_data.fuzzy_connectivities(idx, dist)
    return cl.pp.graph_edges(connectivities).weights


def test_scanpy_graph_of_pbmc68k_reduced_decodes() -> None:
    weights = _pbmc_weights()
    assert np.array_equal(_widened(weights), weights)  # scanpy's float32, widened
    _member(weights)


def test_generated_graph_decodes_within_two_percent_of_zlib_level_6() -> None:
    """The benchmarks' kind of graph (large ones take this encoder): about zlib's level-6 size."""
    weights = _bench_weights(20_000, 1)
    assert np.array_equal(_widened(weights), weights)
    member = _member(weights)
    assert len(member) <= 1.02 * len(_payload.gzip_bytes(weights.tobytes(), 6))


def test_output_is_deterministic() -> None:
    weights = _edge_cases()[6]
    assert _member(weights) == _member(weights.copy())
    assert _member(weights, level=1)[10:] == _member(weights)[10:]  # only the header's flag


def test_compiled_kernels_write_the_bytes_of_the_interpreted_ones(tmp_path: Path) -> None:
    """numba's kernels against the same Python run by the interpreter (NUMBA_DISABLE_JIT)."""
    rng = np.random.default_rng(3)
    few = rng.random(9).astype(np.float32)
    cases = [
        _widened([0.5]),
        _widened(np.full(5000, 0.3)),
        _widened(np.tile(few, 60)),
        _widened(rng.choice(few, 20_000)),  # two blocks
        _widened(rng.random(3000)),
    ]
    path = tmp_path / "weights.json"
    path.write_text(json.dumps([c.tolist() for c in cases]))
    script = (
        "import json, sys, numpy as np\n"
        "from cellucid.ex import _payload, _weights_gzip\n"
        "for values in json.load(open(sys.argv[1])):\n"
        "    w = np.array(values, np.float64)\n"
        "    sys.stdout.write(_weights_gzip.gzip_weights(w, _payload.gzip_header(6)).hex() + '\\n')\n"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    run = [sys.executable, "-c", script, str(path)]
    out = subprocess.run(run, capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == [_member(c).hex() for c in cases]


def _export_weights_file(adata, root: Path, **options) -> bytes:
    out = cl.ex.export(adata, root, gzip_encoder="zlib", **options)
    return (Path(out) / "connectivity" / "edges.weights.f64.bin.gz").read_bytes()


def test_export_writes_large_graphs_weights_with_the_compiled_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adata = _pbmc()
    weights = cl.pp.graph_edges(adata.obsp["connectivities"]).weights
    # the default rule: a small graph's weights are zlib's
    small = _export_weights_file(adata, tmp_path / "small", compression=6)
    assert small == _payload.gzip_bytes(weights.tobytes(), 6)
    monkeypatch.setattr(_connectivity, "WEIGHTS_KERNEL_MIN_EDGES", 0)  # as if it were large
    out = cl.ex.export(adata, tmp_path / "large", compression=6, gzip_encoder="zlib")
    written = (Path(out) / "connectivity" / "edges.weights.f64.bin.gz").read_bytes()
    assert written == _member(weights)
    _, _, read_back = decode(Path(out)).edges
    assert np.array_equal(read_back, weights)
    # level 9 keeps zlib's
    best = _export_weights_file(adata, tmp_path / "best", compression=9)
    assert best == _payload.gzip_bytes(weights.tobytes(), 9)
    # so do weights that need float64 (the graph as pbmc68k_reduced ships it)
    shipped = sc.datasets.pbmc68k_reduced()
    exact = cl.pp.graph_edges(shipped.obsp["connectivities"]).weights
    assert not np.array_equal(_widened(exact), exact)
    wide = _export_weights_file(shipped, tmp_path / "wide", compression=6)
    assert wide == _payload.gzip_bytes(exact.tobytes(), 6)


def test_compiled_genes_lower_the_weights_encoders_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the genes go through the compiled kernels (a rule of the input), the weights do from fewer edges."""
    from scipy import sparse

    adata = _pbmc()
    weights = cl.pp.graph_edges(adata.obsp["connectivities"]).weights
    # as if pbmc's graph were past the loaded threshold but under the cold one
    monkeypatch.setattr(_connectivity, "WEIGHTS_KERNEL_MIN_EDGES_COMPILER_LOADED", 0)
    monkeypatch.setattr(_genes, "COMPILED_MIN_STORED", 0)
    adata.X = sparse.csr_matrix(adata.X)
    assert _genes.compiled_blocks(adata.X)
    compiled = _export_weights_file(adata, tmp_path / "compiled", compression=6)
    assert compiled == _member(weights)
    # genes that keep numpy (a dense or CSC matrix, or none): zlib's, as before
    for name, options in {
        "csc": {"X": sparse.csc_matrix(adata.X)},
        "dense": {"X": adata.X.toarray()},
    }.items():
        other = adata.copy()
        other.X = options["X"]
        assert not _genes.compiled_blocks(other.X)
        written = _export_weights_file(other, tmp_path / name, compression=6)
        assert written == _payload.gzip_bytes(weights.tobytes(), 6)
    no_genes = _export_weights_file(adata, tmp_path / "none", compression=6, var_names=[])
    assert no_genes == _payload.gzip_bytes(weights.tobytes(), 6)


def test_compiled_blocks_is_a_rule_of_the_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy import sparse

    x = sparse.random(50, 40, density=0.2, format="csr", dtype=np.float32, random_state=0)
    monkeypatch.setattr(_genes, "COMPILED_MIN_STORED", x.nnz)
    assert _genes.compiled_blocks(x)
    assert _genes.compiled_blocks(x.astype(np.float64))
    assert not _genes.compiled_blocks(x.astype(np.int32))  # counts keep numpy
    assert not _genes.compiled_blocks(x.tocsc())
    assert not _genes.compiled_blocks(x.toarray())
    monkeypatch.setattr(_genes, "COMPILED_MIN_STORED", x.nnz + 1)
    assert not _genes.compiled_blocks(x)
