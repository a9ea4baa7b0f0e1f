"""Publishing an export without losing data: what overwrite replaces, atomic JSON, the swap, the lock, kills."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import pytest
from _data import make_adata

import cellucid as cl
from cellucid.ex import _export, _publish

pytestmark = pytest.mark.filterwarnings("ignore:obs\\[:UserWarning")

_TOKEN = "0123456789ab"


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return make_adata(120, 12)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an export starts collecting: refusals must come before any work."""

    def started(*args: object, **kwargs: object) -> None:
        msg = "the export started working before refusing its target"
        raise AssertionError(msg)

    monkeypatch.setattr(_export, "collect", started)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), links as their target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = os.readlink(p).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def hidden(parent: Path) -> list[str]:
    """The hidden entries (staging, old, lock, temporary) in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- item 1: overwrite replaces only an earlier export ----------------------------------------


@pytest.mark.parametrize(
    ("extra", "found"),
    [
        ("docs/thesis.txt", "docs/"),
        ("README.md", "README.md"),
        ("var/notes.txt", "var/notes.txt"),
        ("obs/sub/0.values.f32", "obs/sub"),
    ],
)
def test_overwrite_refuses_a_folder_with_user_files(
    adata: ad.AnnData, tmp_path: Path, extra: str, found: str, request: pytest.FixtureRequest
) -> None:
    target = tmp_path / "u"
    cl.ex.export(adata, target)
    (target / extra).parent.mkdir(parents=True, exist_ok=True)
    (target / extra).write_text("mine")
    before = snapshot(target)
    request.getfixturevalue("no_work")
    with pytest.raises(
        FileExistsError, match=f"Refusing to replace .*{found}.*which an export does not write"
    ):
        cl.ex.export(adata, target, overwrite=True)
    assert snapshot(target) == before
    assert hidden(tmp_path) == []


def test_overwrite_refuses_links_and_folders_without_identity(
    adata: ad.AnnData, tmp_path: Path, no_work: None
) -> None:
    target = tmp_path / "u"
    target.mkdir()
    (target / "obs_manifest.json").write_text("{}")  # only format names, but no identity
    with pytest.raises(FileExistsError, match=r"has no dataset_identity\.json"):
        cl.ex.export(adata, target, overwrite=True)
    (target / "dataset_identity.json").write_text("{}")
    (target / "points_2d.bin").symlink_to(tmp_path / "elsewhere.bin")
    with pytest.raises(FileExistsError, match=r"points_2d.bin \(a link\)"):
        cl.ex.export(adata, target, overwrite=True)
    assert (target / "points_2d.bin").is_symlink()


def test_overwrite_replaces_an_earlier_export_of_either_layout_and_nothing_more(
    adata: ad.AnnData, tmp_path: Path
) -> None:
    target = tmp_path / "ds"
    cl.ex.export(adata, target, layout="legacy", compression=6, var_quantization=8)
    assert {p.name for p in target.iterdir()} >= {"obs", "var", "connectivity", "vectors"}
    cl.ex.export(adata, target, overwrite=True)
    assert cl.ex.validate(target).layout == "current"
    cl.ex.export(adata, target, overwrite=True, layout="legacy")
    assert cl.ex.validate(target).layout == "legacy"
    empty = tmp_path / "empty"
    empty.mkdir()
    cl.ex.export(adata, empty, overwrite=True)  # an empty folder holds nothing to lose
    assert cl.ex.validate(empty).ok
    assert hidden(tmp_path) == []
    for layout in ("legacy", "current"):  # one file more, and it is no longer replaced
        (target / "vectors" / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match=r"it holds vectors/notes\.txt"):
            cl.ex.export(adata, target, overwrite=True, layout=layout)
        assert (target / "vectors" / "notes.txt").read_text() == "mine"
        (target / "vectors" / "notes.txt").unlink()
        cl.ex.export(adata, target, overwrite=True, layout=layout)


def test_overwrite_refuses_a_mount_point(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "disk"
    cl.ex.export(adata, target)  # an earlier export, at the root of a mounted disk
    ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == target or ismount(p))
    with pytest.raises(FileExistsError, match="it is a mount point"):
        cl.ex.export(adata, target, overwrite=True)
    assert hidden(tmp_path) == [] and (target / "dataset_identity.json").is_file()


def test_overwrite_refuses_an_exports_root(adata: ad.AnnData, tmp_path: Path) -> None:
    root = tmp_path / "exports"
    for name in ("a", "b"):
        cl.ex.export(adata, root / name, dataset_id=name)
    before = snapshot(root)
    with pytest.raises(FileExistsError, match=r"exports root \(it holds a/, b/\)"):
        cl.ex.export(adata, root, overwrite=True)
    cl.ex.write_catalog(root)
    before = snapshot(root)
    with pytest.raises(FileExistsError, match=r"exports root \(it holds datasets.json, a/, b/\)"):
        cl.ex.export(adata, root, overwrite=True)
    assert snapshot(root) == before


def test_overwrite_refuses_the_folder_of_the_input_file(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    cl.ex.export(make_adata(60, 4), data)  # an earlier export that also holds the input
    make_adata(60, 4).write_h5ad(data / "pbmc.h5ad")
    before = snapshot(data)
    request.getfixturevalue("no_work")
    backed = ad.read_h5ad(data / "pbmc.h5ad", backed="r")
    try:
        with pytest.raises(FileExistsError, match=r"it holds the input file .*pbmc\.h5ad"):
            cl.ex.export(backed, data, overwrite=True)
    finally:
        backed.file.close()
    assert snapshot(data) == before


def test_refuses_the_working_directory_and_its_parents(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_work: None
) -> None:
    work = tmp_path / "project" / "analysis"
    work.mkdir(parents=True)
    (work / "notebook.ipynb").write_text("{}")
    monkeypatch.chdir(work)
    for out_dir in (".", "", "..", tmp_path, work, "/"):
        for overwrite in (False, True):
            with pytest.raises(FileExistsError, match="it is the working directory or holds it"):
                cl.ex.export(adata, out_dir, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["analysis", "notebook.ipynb", "project"]


# --- item 5: a symbolic link as out_dir is refused ----------------------------------------------


def test_symlink_out_dir_is_refused(adata: ad.AnnData, tmp_path: Path, no_work: None) -> None:
    real = tmp_path / "real"
    link = tmp_path / "link"
    real.mkdir()
    (real / "dataset_identity.json").write_text("{}")
    link.symlink_to(real, target_is_directory=True)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for out_dir in (link, dangling):
        for overwrite in (False, True):
            with pytest.raises(
                FileExistsError, match=r"is a symbolic link .*does not replace links"
            ):
                cl.ex.export(adata, out_dir, overwrite=overwrite)
    assert link.is_symlink() and dangling.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "link", "real"]
    assert [p.name for p in real.iterdir()] == ["dataset_identity.json"]


# --- item 2: JSON written outside a staging folder is atomic ------------------------------------


def run_python(code: str, *, cwd: Path, fsize: int | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python, optionally with files limited to ``fsize`` bytes (a full disk)."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "CI": "1"},
        preexec_fn=limit if fsize is not None else None,
        check=False,
    )


def test_catalog_write_on_a_full_disk_keeps_the_old_catalog(
    adata: ad.AnnData, tmp_path: Path
) -> None:
    root = tmp_path / "exports"
    for i in range(3):
        cl.ex.export(adata, root / f"d{i}", dataset_description="a long description. " * 100)
    cl.ex.write_catalog(root, default="d1")
    old = (root / "datasets.json").read_bytes()
    assert len(old) > 4096
    # the disk is "full" past 4 KiB: the new catalog cannot be written
    result = run_python(
        """
        import cellucid as cl
        cl.ex.write_catalog("exports", default="d2")
        """,
        cwd=tmp_path,
        fsize=4096,
    )
    assert result.returncode != 0
    assert "File too large: 'exports/datasets.json'" in result.stderr
    assert (root / "datasets.json").read_bytes() == old
    json.loads(old)
    assert hidden(root) == []


def test_write_json_failing_midway_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellucid.ex import _payload

    target = tmp_path / "datasets.json"
    target.write_text('{"version": 1}')
    real_write = os.write

    def short_then_full(fd: int, data: memoryview) -> int:
        monkeypatch.setattr(os, "write", full)
        return real_write(fd, data[:5])

    def full(fd: int, data: memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError, match="No space left") as info:
        _payload.write_json(target, json.dumps({"version": 1, "datasets": ["x" * 100]}))
    assert info.value.filename == str(target)  # not the temporary file's name
    monkeypatch.undo()
    assert target.read_text() == '{"version": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datasets.json"]


# --- item 3: the swap is recoverable ------------------------------------------------------------


def interrupted_swap(adata: ad.AnnData, target: Path) -> bytes:
    """Leave ``target`` as a crash between the two renames of the swap does; return its identity."""
    cl.ex.export(adata, target, dataset_description="previous")
    identity = (target / "dataset_identity.json").read_bytes()
    os.replace(target, target.parent / f".{target.name}.old-{_TOKEN}")
    stage = target.parent / f".{target.name}.staging-{_TOKEN}"
    stage.mkdir()
    (stage / "obs").mkdir()
    (stage / "obs" / "0.values.f32").write_bytes(b"half")
    (target.parent / f".{target.name}.lock").write_text("999999\n")  # its owner died
    return identity


@pytest.mark.parametrize("reader", ["validate", "read", "export", "check_target"])
def test_interrupted_swap_is_restored_by_the_next_reader_or_export(
    adata: ad.AnnData, tmp_path: Path, reader: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "ds"
    identity = interrupted_swap(adata, target)
    assert not target.exists()
    with caplog.at_level(logging.WARNING, logger="cellucid"):
        if reader == "validate":
            assert cl.ex.validate(target).ok
        elif reader == "read":
            assert cl.ex.read(target).n_obs == adata.n_obs
        elif reader == "check_target":
            with pytest.raises(FileExistsError, match="pass overwrite=True"):
                cl.ex.export(adata, target)  # restored, then refused as it exists
        else:
            cl.ex.export(adata, target, overwrite=True, dataset_description="next")
    assert "restored" in caplog.text and f".ds.old-{_TOKEN}" in caplog.text
    assert f"removed {tmp_path / f'.ds.staging-{_TOKEN}'}" in caplog.text
    assert hidden(tmp_path) == []
    now = json.loads((target / "dataset_identity.json").read_text())
    assert now["description"] == ("next" if reader == "export" else "previous")
    if reader != "export":
        assert (target / "dataset_identity.json").read_bytes() == identity


def test_validate_of_an_exports_root_restores_its_datasets(
    adata: ad.AnnData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "exports"
    for name in ("a", "b"):
        cl.ex.export(adata, root / name, dataset_id=name)
    cl.ex.write_catalog(root)
    interrupted = root / f".a.old-{_TOKEN}"
    os.replace(root / "a", interrupted)
    with caplog.at_level(logging.WARNING, logger="cellucid"):
        assert cl.ex.validate(root).ok
    assert f"restored {root / 'a'} from {interrupted.name}" in caplog.text
    assert hidden(root) == []


def test_leftovers_after_a_completed_swap_are_removed(adata: ad.AnnData, tmp_path: Path) -> None:
    target = tmp_path / "ds"
    cl.ex.export(adata, target)
    old = tmp_path / f".ds.old-{_TOKEN}"
    cl.ex.export(adata, old.with_name("elsewhere"))
    os.replace(old.with_name("elsewhere"), old)  # a crash before the old export was deleted
    other = tmp_path / f".other.staging-{_TOKEN}"  # another target's: not ours to touch
    other.mkdir()
    assert cl.ex.validate(target).ok
    assert hidden(tmp_path) == [other.name]


def test_a_failing_second_rename_puts_the_previous_export_back(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ds"
    cl.ex.export(adata, target, dataset_description="previous")
    before = snapshot(target)
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if ".staging-" in str(src):
            raise OSError(5, "Input/output error", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(_publish.os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"):
        cl.ex.export(adata, target, overwrite=True)
    assert snapshot(target) == before
    assert hidden(tmp_path) == []


def test_readers_leave_a_running_export_alone(adata: ad.AnnData, tmp_path: Path) -> None:
    target = tmp_path / "ds"
    interrupted_swap(adata, target)
    with _publish._locked(target, target):  # an export of target is running
        with pytest.raises(FileNotFoundError):
            cl.ex.validate(target)
        with pytest.raises(
            FileExistsError, match=rf"Another export \(process {os.getpid()}\) is writing"
        ):
            cl.ex.export(adata, target, overwrite=True)
        assert not target.exists() and f".ds.old-{_TOKEN}" in hidden(tmp_path)
    assert cl.ex.validate(target).ok


# --- item 4: kills, SIGTERM, two exports at once ----------------------------------------------


_PAUSED_EXPORT = """
import sys, time
from pathlib import Path
from cellucid.ex import _payload

write_many = _payload.PayloadWriter.write_many

def pause_in_genes(self, files, **kwargs):
    paths = write_many(self, files, **kwargs)
    if any(p.startswith("var/") for p in paths):
        self.wait_for(self.mark())
        Path("paused").write_text("")  # the staging folder holds payloads of every kind now
        time.sleep(120)
    return paths

_payload.PayloadWriter.write_many = pause_in_genes
from cellucid.cli import main
sys.exit(main(["export", "input.h5ad", "exports/ds", "--overwrite", "--description", "killed"]))
"""


@pytest.fixture
def paused_export(adata: ad.AnnData, tmp_path: Path) -> Iterator[tuple]:
    """A previous export at exports/ds, and a CLI export replacing it, paused in its genes."""
    adata.write_h5ad(tmp_path / "input.h5ad")
    target = tmp_path / "exports" / "ds"
    cl.ex.export(adata, target, dataset_description="previous")
    before = snapshot(target)
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_EXPORT],
        cwd=tmp_path,
        env={**os.environ, "CI": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "paused").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the export did not reach its genes"
        time.sleep(0.05)
    staging = [p for p in target.parent.iterdir() if ".ds.staging-" in p.name]
    assert len(staging) == 1 and (staging[0] / "obs_manifest.json").is_file()
    try:
        yield proc, target, before
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_sigkill_midway_keeps_the_previous_export_and_the_next_export_cleans_up(
    paused_export: tuple, adata: ad.AnnData, caplog: pytest.LogCaptureFixture
) -> None:
    proc, target, before = paused_export
    # a second export of the same folder while the first runs is refused at once
    with pytest.raises(
        FileExistsError, match=rf"Another export \(process {proc.pid}\) is writing .*ds now"
    ):
        cl.ex.export(adata, target, overwrite=True)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert snapshot(target) == before
    assert any(".ds.staging-" in name for name in hidden(target.parent))  # SIGKILL cleans nothing
    shutil.copytree(target, target.parent.parent / "copy")  # validate (which cleans up) a copy
    assert cl.ex.validate(target.parent.parent / "copy").ok
    with caplog.at_level(logging.WARNING, logger="cellucid"):
        cl.ex.export(adata, target, overwrite=True, dataset_description="next")
    assert "left by an interrupted export" in caplog.text
    assert hidden(target.parent) == []
    assert cl.ex.validate(target).ok
    assert json.loads((target / "dataset_identity.json").read_text())["description"] == "next"


@pytest.mark.parametrize(
    ("sig", "message"), [(signal.SIGTERM, "terminated (SIGTERM)"), (signal.SIGINT, "interrupted")]
)
def test_sigterm_midway_cleans_up_like_ctrl_c(
    paused_export: tuple, adata: ad.AnnData, sig: signal.Signals, message: str
) -> None:
    proc, target, before = paused_export
    proc.send_signal(sig)
    assert proc.wait(60) == 130
    stderr = proc.communicate()[1]
    assert stderr.strip().splitlines()[-1] == f"cellucid export: {message}"
    assert "Traceback" not in stderr
    assert hidden(target.parent) == []  # staging and lock removed by the killed export itself
    assert snapshot(target) == before
    assert cl.ex.validate(target).ok
    cl.ex.export(adata, target, overwrite=True)
    assert hidden(target.parent) == []


# --- messages name the user's path -------------------------------------------------------------


def test_errors_while_writing_name_out_dir_not_the_staging_folder(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellucid.ex import _payload

    def full(self: object, jobs: list, *_: object) -> None:
        raise OSError(28, "No space left on device", jobs[0][0])

    monkeypatch.setattr(_payload.PayloadWriter, "_write_files", full)
    target = tmp_path / "ds"
    with pytest.raises(OSError, match="No space left on device") as info:
        cl.ex.export(adata, target, n_jobs=1)
    assert str(info.value.filename).startswith(f"{target}{os.sep}")
    assert ".staging-" not in str(info.value)
    assert hidden(tmp_path) == [] and not target.exists()
    assert (
        _publish.public_path(f"'{tmp_path}/.ds.v2.staging-{_TOKEN}/obs'")
        == f"'{tmp_path}/ds.v2/obs'"
    )


def test_remove_export_removes_an_export_and_nothing_else(
    adata: ad.AnnData, tmp_path: Path
) -> None:
    out = cl.ex.export(adata, tmp_path / "pbmc", progress=False)
    _publish.remove_export(out)
    assert sorted(os.listdir(tmp_path)) == []  # no leftover, no lock file
    # a user's file in it, a folder no export wrote, a file: refused, untouched
    out = cl.ex.export(adata, tmp_path / "pbmc", progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"pbmc was not removed: it holds notes\.txt"):
        _publish.remove_export(out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "dataset_identity.json").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"it has no dataset_identity\.json"):
        _publish.remove_export(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="it is not a folder"):
        _publish.remove_export(tmp_path / "file")
    # refused while an export of it runs
    (out / "notes.txt").unlink()
    with _publish._locked(out, out), pytest.raises(FileExistsError, match="Another export"):
        _publish.remove_export(out)
    assert (out / "dataset_identity.json").is_file()
