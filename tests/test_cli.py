"""The ``cellucid`` command line, driven in a subprocess on a real .h5ad file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest
from _data import make_adata
from _decode import decode


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
    # 3: could not check (distinct from 1, problems found)
    missing = run("validate", tmp_path / "nope")
    assert missing.returncode == 3
    assert (
        missing.stderr.strip()
        == f"cellucid validate: error: No export at {str(tmp_path / 'nope')!r}: the path does not exist."
    )
    (tmp_path / "plain").mkdir()
    not_an_export = run("validate", tmp_path / "plain")
    assert not_an_export.returncode == 3 and "is not an export" in not_an_export.stderr
    assert "3 when the path could not be checked" in run("validate", "--help").stdout


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


def error_line(result: subprocess.CompletedProcess, command: str) -> str:
    """The one line a failing command prints (run with -q: nothing else is printed)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cellucid {command}: "), result.stderr
    return lines[0]


def test_export_refuses_the_input_folder_and_the_working_directory(
    h5ad: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "pbmc.h5ad").write_bytes(h5ad.read_bytes())
    (data / "README").write_text("notes")
    result = run("-q", "export", "data/pbmc.h5ad", "data", "--overwrite", cwd=tmp_path)
    assert result.returncode == 1
    assert error_line(result, "export").startswith(
        "cellucid export: error: Refusing to replace data: it holds the input file data/pbmc.h5ad."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert sorted(p.name for p in data.iterdir()) == ["README", "pbmc.h5ad"]
    for out_dir in (".", "..", tmp_path):
        result = run("-q", "export", "pbmc.h5ad", out_dir, "--overwrite", cwd=data)
        assert result.returncode == 1 and "it is the working directory or holds it" in error_line(
            result, "export"
        )
    assert sorted(p.name for p in data.iterdir()) == ["README", "pbmc.h5ad"]


def test_os_errors_are_one_line_naming_the_users_path(h5ad: Path, tmp_path: Path) -> None:
    # a folder nothing can be created in: the message names /proc/x, not an internal path beside it
    result = run("-q", "export", h5ad, "/proc/x")
    assert result.returncode == 1
    assert (
        error_line(result, "export") == "cellucid export: error: /proc/x: No such file or directory"
    )

    # a "full disk": no file may grow past 2 KiB
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    out = tmp_path / "out"
    full = subprocess.run(
        [sys.executable, "-m", "cellucid", "-q", "export", str(h5ad), str(out), "--jobs", "1"],
        capture_output=True, text=True, env={**os.environ, "CI": "1"}, preexec_fn=limit, check=False,
    )  # fmt: skip
    assert full.returncode == 1
    line = error_line(full, "export")
    # the user's folder, or the file in it that could not be written: never the staging folder
    assert re.fullmatch(
        rf"cellucid export: error: {re.escape(str(out))}(/[\w.]+)*: File too large", line
    ), line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "error", "expected", "code"),
    [
        ("export", "PermissionError(13, 'Permission denied', '{tmp}/.out.staging-0123456789ab/obs')", "{tmp}/out/obs: Permission denied", 1),
        ("export", "OSError(errno.EROFS, 'Read-only file system')", "{tmp}/out: Read-only file system", 1),
        ("export", "OSError(errno.EBUSY, 'Device or resource busy')", "{tmp}/out: Device or resource busy", 1),
        ("export", "MemoryError()", "{tmp}/out: out of memory", 1),
        ("export", "RecursionError('maximum recursion depth exceeded')", "{tmp}/out: too deeply nested to process (maximum recursion depth exceeded)", 1),
        ("validate", "MemoryError('cannot allocate 32 GiB')", "{tmp}/out: out of memory (cannot allocate 32 GiB)", 3),
        ("validate", "OSError(errno.EIO, 'Input/output error', '{tmp}/out/var/0.values.f32')", "{tmp}/out/var/0.values.f32: Input/output error", 3),
        ("validate", "TypeError('unhashable')", "{tmp}/out: internal error TypeError: unhashable (please report it, with the output of cellucid -v)", 3),
    ],
)  # fmt: skip
def test_every_error_is_one_line_with_a_documented_exit_code(
    h5ad: Path, tmp_path: Path, command: str, error: str, expected: str, code: int
) -> None:
    """Errors that real failures raise deep inside (a full disk, a busy device, a bomb), injected."""
    args = ["-q", command, *([str(h5ad)] if command == "export" else []), str(tmp_path / "out")]
    script = f"""
import errno, sys
import cellucid.ex
def fail(*args, **kwargs):
    raise {error.format(tmp=tmp_path)}
cellucid.ex.{command} = fail
from cellucid.cli import main
sys.exit(main({args!r}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == code
    assert (
        error_line(result, command) == f"cellucid {command}: error: {expected.format(tmp=tmp_path)}"
    )


def test_deeply_nested_json_is_one_line(h5ad: Path, tmp_path: Path) -> None:
    root = tmp_path / "exports"
    assert run("-q", "export", h5ad, root / "a").returncode == 0
    (root / "a" / "dataset_identity.json").write_text("[" * 100_000 + "]" * 100_000)
    result = run("-q", "catalog", root)
    assert result.returncode == 1
    line = error_line(result, "catalog")
    assert str(root) in line and ("nested" in line or "dataset_identity.json" in line)
    assert not (root / "datasets.json").exists()


def _export_parser():
    from cellucid.cli import build_parser

    commands = next(
        a
        for a in build_parser()._actions
        if isinstance(a, __import__("argparse")._SubParsersAction)
    )
    return commands.choices["export"]


def test_every_export_keyword_has_a_flag_with_the_same_default(h5ad: Path) -> None:
    import inspect

    import cellucid as cl

    parser = _export_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    args = parser.parse_args([str(h5ad)])
    keywords = [
        p
        for p in inspect.signature(cl.ex.export).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert len(keywords) > 25
    missing = [p.name for p in keywords if "--" + p.name.replace("_", "-") not in flags]
    assert missing == []
    for p in keywords:
        if p.name != "gene_symbols":  # an alias, stored as gene_id_column
            assert getattr(args, p.name) == p.default, p.name
    assert args.out_dir is None


def test_new_spellings_and_flags(h5ad: Path, tmp_path: Path) -> None:
    result = run(
        "export", h5ad, tmp_path / "a", "--var-quantization", "8", "--obs-continuous-quantization", "16",
        "--obs-categorical-dtype", "uint16", "--var-names", "sym1", "--dataset-name", "First",
        "--dataset-id", "first", "--dataset-description", "one", "--n-jobs", "1", "--memory-budget", "1M",
        "--no-progress", "--centroid-outlier-quantile", "none", "--gene-symbols", "symbol",
        "--no-connectivities",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dec = decode(tmp_path / "a")
    assert dec.identity["id"] == "first" and dec.identity["description"] == "one"
    assert list(dec.genes) == ["sym1"] and dec.edges is None
    assert dec.identity["export_settings"] == {
        "compression": None,
        "var_quantization": 8,
        "obs_continuous_quantization": 16,
        "obs_categorical_dtype": "uint16",
    }
    assert dec.centroids and all(
        positions == [] for by_dim in dec.centroids.values() for positions in by_dim.values()
    )
    bad = run("export", h5ad, tmp_path / "b", "--memory-budget", "lots")
    assert bad.returncode == 2 and "--memory-budget: must be a number of bytes" in bad.stderr


@pytest.mark.parametrize("n_jobs", ["0", "-5", "1.5", "x"])
def test_bad_n_jobs_is_a_usage_error(h5ad: Path, tmp_path: Path, n_jobs: str) -> None:
    result = run("export", h5ad, tmp_path / "x", "--n-jobs", n_jobs)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error == (
        "cellucid export: error: argument --n-jobs/--jobs: must be a positive number of "
        f"threads, or -1 for all cores, not {n_jobs!r}"
    )
    assert not (tmp_path / "x").exists()


def test_export_without_out_dir_goes_to_exports(h5ad: Path, tmp_path: Path) -> None:
    result = run("export", h5ad, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(Path("exports") / "data")
    assert decode(tmp_path / "exports" / "data").identity["name"] == "data"
    named = run("export", h5ad, "--dataset-id", "pbmc", cwd=tmp_path)
    assert named.returncode == 0 and named.stdout.strip() == str(Path("exports") / "pbmc")
    assert run("catalog", tmp_path / "exports").returncode == 0
    assert run("validate", tmp_path / "exports").returncode == 0
