"""What the README and the docs tell a new user: where the viewer is, how to open an export, no machine paths."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path

import pytest

from cellucid.ex._progress import progress_enabled

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_the_viewer_and_three_ways_to_open_an_export(page: str) -> None:
    text = (ROOT / page).read_text()
    assert "https://www.cellucid.com" in text
    assert "?exportsBaseUrl=" in text  # a static host
    assert "folder picker" in text.lower() or "Folder picker" in text
    assert "GitHub" in text


def code_cells(page: Path) -> list[str]:
    return re.findall(r"```\{code-cell\} ipython3\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", ["quickstart.md", "tutorials/inspect_export.md"])
def test_quickstart_and_inspect_tutorial_plot_the_export(page: str) -> None:
    cells = code_cells(DOCS / page)
    plots = [c for c in cells if "sc.pl.embedding(" in c or "plt.subplots(" in c]
    assert plots and any("cl.ex.read(" in c or "back" in c for c in plots)
    if page == "quickstart.md":
        assert "```{figure}" in (DOCS / page).read_text()


def test_no_machine_specific_paths_in_readmes_and_docs() -> None:
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *DOCS.rglob("*.md")]
    pages = [p for p in pages if "_build" not in p.parts and "generated" not in p.parts]
    machine = re.compile(r"/work/|/home/\w|/root/|\S+venv\S*/bin/python \S*benchmarks")
    assert [str(p) for p in pages if machine.search(p.read_text())] == []
    # the notebooks work in a scratch folder, so their outputs show relative paths
    for page in pages:
        for cell in code_cells(page):
            assert "Path(tempfile.mkdtemp()) /" not in cell, page


def test_docs_build_shows_no_progress_bar_nor_widget_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = (DOCS / "conf.py").read_text()
    assert 'os.environ.setdefault("TQDM_DISABLE", "1")' in conf
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["doc"]
    assert any(str(d).startswith("ipywidgets") for d in doc)
    # in a notebook kernel, the bar is on unless TQDM_DISABLE (or CI) is set
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert progress_enabled(None) is True
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_enabled(None) is False
