"""The ``cellucid`` command line, driven in a subprocess on a real .h5ad file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest
from _decode import decode
from conftest import make_adata


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cellucid", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "data.h5ad"
    make_adata(120, 12).write_h5ad(path)
    return path


def test_export_with_options_then_info_validate_catalog(h5ad: Path, tmp_path: Path) -> None:
    root = tmp_path / "exports"
    result = run(
        "export", h5ad, root / "a", "--quantize-genes", "8", "--quantize-obs", "16", "--compression", "6",
        "--obs-keys", "cell_type,score", "--genes", "GENE001,GENE002", "--name", "First", "--id", "first",
        "--description", "one", "--source-name", "synthetic",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(root / "a")
    assert "exported" in result.stderr  # the summary is logged
    dec = decode(root / "a")
    assert dec.identity["id"] == "first" and dec.identity["source"] == {"name": "synthetic"}
    assert list(dec.genes) == ["GENE001", "GENE002"]
    assert dec.identity["export_settings"] == {
        "compression": 6,
        "var_quantization": 8,
        "obs_continuous_quantization": 16,
        "obs_categorical_dtype": "uint8",
    }
    genes_file = tmp_path / "genes.txt"
    genes_file.write_text("GENE003\n\nGENE004\n")
    result = run(
        "-q",
        "export",
        h5ad,
        root / "b",
        "--genes-file",
        genes_file,
        "--no-graph",
        "--layout",
        "legacy",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    dec = decode(root / "b")
    assert (
        list(dec.genes) == ["GENE003", "GENE004"] and dec.edges is None and dec.layout == "legacy"
    )

    info = run("info", root / "a")
    assert info.returncode == 0
    assert "cells        120" in info.stdout and "genes        2" in info.stdout
    assert "cell_type (5)" in info.stdout and "genes 8-bit, obs 16-bit, gzip 6" in info.stdout

    catalog = run("catalog", root, "--default", "first")
    assert catalog.returncode == 0, catalog.stderr
    assert json.loads((root / "datasets.json").read_text())["default"] == "first"
    assert "First (id first)" in run("info", root).stdout


def test_usage_and_input_errors(h5ad: Path, tmp_path: Path) -> None:
    result = run("export", h5ad, tmp_path / "x", "--quantize-genes", "7")
    assert result.returncode == 2 and "must be 8 or 16" in result.stderr
    assert run().returncode == 2
    assert run("frobnicate").returncode == 2
    result = run("export", tmp_path / "missing.h5ad", tmp_path / "x")
    assert result.returncode == 1 and "does not exist" in result.stderr
    result = run("export", h5ad, tmp_path / "x", "--obs-keys", "nope")
    assert result.returncode == 1 and "obs_keys ['nope'] are not columns" in result.stderr
    assert not (tmp_path / "x").exists()
    assert run("export", h5ad, tmp_path / "y").returncode == 0
    result = run("export", h5ad, tmp_path / "y")
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert run("export", h5ad, tmp_path / "y", "--overwrite").returncode == 0


def test_zarr_input(tmp_path: Path) -> None:
    adata = make_adata(50, 4)
    adata.write_zarr(tmp_path / "data.zarr")
    assert run("export", tmp_path / "data.zarr", tmp_path / "out").returncode == 0
    assert decode(tmp_path / "out").identity["stats"]["n_cells"] == 50


def test_help_is_complete_for_every_command() -> None:
    for command in ("export", "validate", "catalog", "info", "versions"):
        result = run(command, "--help")
        assert result.returncode == 0 and "usage: cellucid " + command in result.stdout
    text = run("export", "--help").stdout
    for option in ("--basis", "--latent-key", "--obs-keys", "--genes", "--genes-file", "--layer", "--use-raw",
                   "--quantize-genes", "--quantize-obs", "--compression", "--gzip-encoder", "--layout", "--overwrite", "--name",
                   "--description", "--id", "--source-name", "--backed"):  # fmt: skip
        assert option in text, option
    top = run("--help").stdout
    assert all(c in top for c in ("export", "validate", "catalog", "info", "versions", "-q", "-v"))


def test_versions() -> None:
    result = run("versions")
    assert result.returncode == 0
    for package in ("cellucid", "anndata", "numpy", "scanpy", "Python"):
        assert package in result.stdout


def test_h5ad_round_trip_matches_in_memory_export(h5ad: Path, tmp_path: Path) -> None:
    import cellucid as cl

    os.environ["SOURCE_DATE_EPOCH"] = "0"
    try:
        cl.ex.export(
            ad.read_h5ad(h5ad),
            tmp_path / "mem",
            dataset_name="x",
            compression=6,
            gzip_encoder="zlib",
        )
        result = subprocess.run(
            [sys.executable, "-m", "cellucid", "export", str(h5ad), str(tmp_path / "cli"), "--name", "x", "--compression", "6",
             "--gzip-encoder", "zlib"],
            capture_output=True, text=True, env={**os.environ, "CI": "1"}, check=False,
        )  # fmt: skip
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert result.returncode == 0, result.stderr
    for path in (tmp_path / "mem").rglob("*"):
        if path.is_file():
            assert (
                path.read_bytes()
                == (tmp_path / "cli" / path.relative_to(tmp_path / "mem")).read_bytes()
            ), path


def test_validate_exit_codes_and_json(h5ad: Path, tmp_path: Path) -> None:
    root = tmp_path / "exports"
    assert run("export", h5ad, root / "a", "--compression", "6").returncode == 0
    assert run("catalog", root).returncode == 0
    for path in (root, root / "a"):
        result = run("validate", path)
        assert result.returncode == 0, result.stdout
    report = json.loads(run("validate", root, "--json").stdout)
    assert report["ok"] is True and report["problems"] == []
    # break two rules: a manifest key too many, and a truncated payload
    manifest = json.loads((root / "a" / "obs_manifest.json").read_text())
    manifest["extra"] = 1
    (root / "a" / "obs_manifest.json").write_text(json.dumps(manifest))
    points = root / "a" / "points_2d.bin.gz"
    points.write_bytes(points.read_bytes()[:-3])
    result = run("validate", root)
    assert result.returncode == 1
    assert "obs.keys" in result.stdout and "points_2d.bin.gz" in result.stdout
    report = json.loads(run("validate", root, "--json").stdout)
    assert report["ok"] is False
    assert {p["rule"] for p in report["problems"]} >= {"obs.keys"}
    assert {p["file"] for p in report["problems"]} >= {"a/obs_manifest.json", "a/points_2d.bin.gz"}
    missing = run("validate", tmp_path / "nope")
    assert missing.returncode == 1 and "error" in missing.stderr


def test_backed_export_equals_in_memory(h5ad: Path, tmp_path: Path) -> None:
    env_epoch = {"SOURCE_DATE_EPOCH": "0"}
    for mode, extra in (("mem", []), ("backed", ["--backed"])):
        result = subprocess.run(
            [sys.executable, "-m", "cellucid", "export", str(h5ad), str(tmp_path / mode), "--name", "x", *extra],
            capture_output=True, text=True, env={**os.environ, "CI": "1", **env_epoch}, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    for path in (tmp_path / "mem").rglob("*"):
        if path.is_file():
            assert (
                path.read_bytes()
                == (tmp_path / "backed" / path.relative_to(tmp_path / "mem")).read_bytes()
            )
