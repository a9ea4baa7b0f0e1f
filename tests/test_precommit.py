"""The ``cellucid-validate`` pre-commit hook: changed files mapped to their exports, each validated."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from _data import make_adata

import cellucid as cl
from cellucid._precommit import export_folders, main

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.filterwarnings(
    "ignore:obs\\[:UserWarning", "ignore:.*genes have NaN:UserWarning"
)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An analysis repository with two exports and a catalog, as the working directory."""
    monkeypatch.chdir(tmp_path)
    adata = make_adata(60, 5)
    cl.ex.export(adata, dataset_id="good", compression=6)
    cl.ex.export(adata, dataset_id="broken", compression=6)
    cl.ex.write_catalog("exports")
    (tmp_path / "notes.txt").write_text("not an export")
    return tmp_path


def break_export(folder: Path) -> Path:
    manifest = folder / "obs_manifest.json"
    data = json.loads(manifest.read_text())
    data["extra"] = 1
    manifest.write_text(json.dumps(data))
    return manifest


def test_changed_files_map_to_their_exports(repo: Path) -> None:
    changed = ["notes.txt", "exports/good/var/0.values.f32.gz", "exports/good/obs_manifest.json",
               "exports/broken/dataset_identity.json"]  # fmt: skip
    assert export_folders(changed) == [Path("exports/good"), Path("exports/broken")]
    assert export_folders(["notes.txt", "README.md"]) == []
    # the catalog changed: the root is validated, with every dataset it lists
    assert export_folders([*changed, "exports/datasets.json"]) == [Path("exports")]
    # never above the repository
    assert export_folders(["../elsewhere/x.bin"]) == []


def test_hook_passes_a_valid_export_and_fails_a_broken_one(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["notes.txt", "exports/good/obs_manifest.json", "exports/broken/var_manifest.json"])
        == 0
    )
    broken = break_export(repo / "exports" / "broken")
    assert main(["exports/good/obs_manifest.json"]) == 0
    capsys.readouterr()
    assert main(["exports/good/points_2d.bin.gz", str(broken.relative_to(repo))]) == 1
    out = capsys.readouterr().out
    assert "exports/broken: 1 problem(s)" in out and "obs.keys" in out
    assert "exports/good" not in out


def test_hook_is_declared_and_installed(repo: Path) -> None:
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "- id: cellucid-validate\n" in hooks and "entry: cellucid-validate-changed\n" in hooks
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cellucid-validate-changed"] == "cellucid._precommit:main"
    break_export(repo / "exports" / "broken")
    result = subprocess.run(
        [sys.executable, "-m", "cellucid._precommit", "exports/broken/obs_manifest.json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "obs.keys" in result.stdout
