"""Exports to object stores: a real S3 server (moto) on 127.0.0.1 reached through s3fs, and memory://."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from _data import files_under, make_adata

import cellucid as cl
from cellucid.cli import main
from cellucid.ex import _store
from cellucid.ex._store import Destination

fsspec = pytest.importorskip("fsspec", reason="the test group installs fsspec")
s3fs = pytest.importorskip("s3fs", reason="the test group installs s3fs")
moto_server = pytest.importorskip("moto.server", reason="the test group installs moto[server]")

pytestmark = pytest.mark.filterwarnings("ignore:obs.*exported as missing:UserWarning")


@pytest.fixture
def adata() -> ad.AnnData:
    """Smaller than conftest's: every file is a request to the S3 server."""
    return make_adata(150, 12)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, aws_isolated: None) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # byte-identical created_at
    monkeypatch.setenv("CI", "1")


def remote_files(url: str, options: dict) -> dict[str, bytes]:
    dest = Destination.from_target(url, options)
    return {rel: dest.read_bytes(rel) for rel in dest.files()}


def current_version(url: str, options: dict) -> str:
    catalog = json.loads(Destination.from_target(url, options).read_bytes("datasets.json"))
    (entry,) = catalog["datasets"]
    return entry["path"].rstrip("/")


def assert_same_data(a: ad.AnnData, b: ad.AnnData) -> None:
    assert a.shape == b.shape
    assert (abs(a.X - b.X) > 0).nnz == 0 if hasattr(a.X, "nnz") else np.array_equal(a.X, b.X)
    assert list(a.var_names) == list(b.var_names)
    assert a.obs.equals(b.obs)
    assert a.obsm.keys() == b.obsm.keys()
    for key in a.obsm:
        np.testing.assert_array_equal(a.obsm[key], b.obsm[key])
    assert (a.obsp["connectivities"] != b.obsp["connectivities"]).nnz == 0


# --- export, validate, read ------------------------------------------------------------------


def test_s3_export_is_the_local_export_published_and_reads_back_the_same(
    adata: ad.AnnData, s3: tuple[str, dict], tmp_path: Path
) -> None:
    bucket, options = s3
    url = f"{bucket}/exports/pbmc"
    assert cl.ex.export(adata, url, storage_options=options, compression=6) == url
    local = cl.ex.export(adata, tmp_path / "pbmc", compression=6)
    # the version holds exactly the local export's bytes; datasets.json points at it
    version = current_version(url, options)
    stored = remote_files(url, options)
    assert {k.partition("/")[2]: v for k, v in stored.items() if k != "datasets.json"} == (
        files_under(local)
    )
    catalog = json.loads(stored["datasets.json"])
    assert catalog["default"] == "pbmc"
    assert catalog["datasets"][0]["path"] == f"{version}/"
    report = cl.ex.validate(url, storage_options=options)
    assert report.ok, str(report)
    assert str(report) == f"{url}: valid current-layout export, no problems"
    assert_same_data(cl.ex.read(url, storage_options=options), cl.ex.read(local))
    some = list(adata.var_names[3:6])
    back = cl.ex.read(url, storage_options=options, var_names=some)
    assert list(back.var_names) == some


def test_memory_url_round_trip(adata: ad.AnnData, tmp_path: Path) -> None:
    url = f"memory://m{uuid.uuid4().hex[:8]}/exports/ds"
    cl.ex.export(adata, url, var_quantization=8)
    assert cl.ex.validate(url).ok
    local = cl.ex.export(adata, tmp_path / "ds", var_quantization=8)
    assert_same_data(cl.ex.read(url), cl.ex.read(local))


def test_file_url_is_a_local_path(adata: ad.AnnData, tmp_path: Path) -> None:
    out = cl.ex.export(adata, f"file://{tmp_path}/ds")
    assert out == tmp_path / "ds"
    assert (tmp_path / "ds" / "dataset_identity.json").is_file()
    assert cl.ex.validate(f"file://{tmp_path}/ds").ok
    with pytest.raises(ValueError, match=r"storage_options are for URLs .* is a local path"):
        cl.ex.export(adata, tmp_path / "other", storage_options={"anon": True})
    assert not (tmp_path / "other").exists()


def count_fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the remote files a reader downloads (relative to the URL it reads)."""
    fetched: list[str] = []
    original = Destination.get

    def counting_get(self: Destination, relpath: str, local: object, *, limit: int) -> int:
        fetched.append(relpath)
        return original(self, relpath, local, limit=limit)

    monkeypatch.setattr(Destination, "get", counting_get)
    return fetched


def test_remote_validate_fetches_no_payload_its_manifests_rule_out(
    adata: ad.AnnData, s3: tuple[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, options = s3
    url = f"{bucket}/ds"
    cl.ex.export(adata, url, storage_options=options)
    version = current_version(url, options)
    dest = Destination.from_target(f"{url}/{version}", options)
    # a gene payload 100x its declared size, and a points file cut short
    declared = dest.size("var/1.values.f32")
    dest.write_bytes("var/1.values.f32", b"\0" * (declared * 100))
    dest.write_bytes("points_2d.bin", dest.read_bytes("points_2d.bin")[:-8])
    fetched = count_fetches(monkeypatch)
    report = cl.ex.validate(url, storage_options=options)
    problems = {(p.file, p.rule) for p in report.problems}
    assert (f"{version}/var/1.values.f32", "payload.length") in problems
    assert (f"{version}/points_2d.bin", "payload.length") in problems
    # neither bad file was downloaded; every good payload was, once
    assert f"{version}/var/1.values.f32" not in fetched
    assert f"{version}/points_2d.bin" not in fetched
    assert f"{version}/var/2.values.f32" in fetched
    assert len(fetched) == len(set(fetched))
    with pytest.raises(ValueError, match=r"var/1\.values\.f32.*payload\.length"):
        cl.ex.read(url, storage_options=options)


def test_remote_json_over_the_limit_is_not_fetched(
    adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellucid import _format
    from cellucid.ex._validate import _files

    url = f"memory://m{uuid.uuid4().hex[:8]}/ds"
    cl.ex.export(adata, url)
    size = Destination.from_target(url).size(f"{current_version(url, {})}/obs_manifest.json")
    monkeypatch.setattr(_format, "MAX_JSON_BYTES", size - 1)
    monkeypatch.setattr(_files, "MAX_JSON_BYTES", size - 1)
    fetched = count_fetches(monkeypatch)
    report = cl.ex.validate(url)
    assert {p.rule for p in report.problems if p.file.endswith("obs_manifest.json")} == {
        "json.size"
    }
    assert not [f for f in fetched if f.endswith("obs_manifest.json")]
    assert any(f.endswith("var_manifest.json") for f in fetched)


def test_nothing_at_a_url_is_one_clear_error(s3: tuple[str, dict]) -> None:
    bucket, options = s3
    with pytest.raises(FileNotFoundError, match=rf"No export at '{bucket}/none'"):
        cl.ex.validate(f"{bucket}/none", storage_options=options)
    with pytest.raises(FileNotFoundError, match=rf"No export at '{bucket}/none'"):
        cl.ex.read(f"{bucket}/none", storage_options=options)


# --- publication -----------------------------------------------------------------------------


def test_overwrite_keeps_the_previous_export_readable_until_the_switch(
    s3: tuple[str, dict], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket, options = s3
    url = f"{bucket}/exports/ds"
    old, new = make_adata(150, 12, seed=1), make_adata(150, 12, seed=2)
    cl.ex.export(old, url, storage_options=options, dataset_description="old")
    old_back = cl.ex.read(url, storage_options=options)
    old_version = current_version(url, options)
    seen: dict[str, object] = {}
    lock = threading.Lock()
    put, write_bytes = Destination.put, Destination.write_bytes

    def reader(moment: str) -> None:
        # a reader coming in now: it lists the prefix, validates and reads the old export
        assert current_version(url, options) == old_version
        assert cl.ex.validate(url, storage_options=options).ok
        assert_same_data(cl.ex.read(url, storage_options=options), old_back)
        seen[moment] = Destination.from_target(url, options).listdir()

    def put_then_read(self: Destination, local: object, relpath: str) -> None:
        put(self, local, relpath)
        with lock:
            if relpath.startswith("var/") and "mid-upload" not in seen:
                reader("mid-upload")

    def read_before_switch(self: Destination, relpath: str, data: bytes) -> None:
        if relpath == "datasets.json":
            reader("before the switch")
        write_bytes(self, relpath, data)

    monkeypatch.setattr(Destination, "put", put_then_read)
    monkeypatch.setattr(Destination, "write_bytes", read_before_switch)
    cl.ex.export(new, url, storage_options=options, overwrite=True, dataset_description="new")
    monkeypatch.undo()
    # while the new version was uploaded, it sat beside the old one, unreferenced
    assert len(seen["mid-upload"]) == len(seen["before the switch"]) == 3
    new_version = current_version(url, options)
    assert new_version != old_version
    assert set(seen["before the switch"]) == {"datasets.json", old_version, new_version}
    # after the switch: the new export only; the old version is gone, not mixed in
    assert Destination.from_target(url, options).listdir() == sorted(["datasets.json", new_version])
    back = cl.ex.read(url, storage_options=options)
    assert json.loads(back.uns["cellucid"]["identity"])["description"] == "new"
    assert_same_data(back, cl.ex.read(cl.ex.export(new, tmp_path / "ds")))
    # a reader still holding the old catalog finds nothing there any more
    with pytest.raises(FileNotFoundError, match="nothing is stored there"):
        cl.ex.read(f"{url}/{old_version}", storage_options=options)


_KILLED_EXPORT = """
import json, sys, time
from pathlib import Path
import anndata as ad
import cellucid as cl
from cellucid.ex._store import Destination

put = Destination.put
count = 0

def put_and_pause(self, local, relpath):
    global count
    put(self, local, relpath)
    count += 1
    if count == 10:  # some payloads of the new version are stored now
        Path("paused").write_text("")
        time.sleep(120)

Destination.put = put_and_pause
options = json.loads(sys.argv[2])
cl.ex.export(ad.read_h5ad("input.h5ad"), sys.argv[1], storage_options=options, overwrite=True)
"""


def test_an_export_killed_during_upload_leaves_the_previous_one(
    adata: ad.AnnData, s3: tuple[str, dict], tmp_path: Path
) -> None:
    bucket, options = s3
    url = f"{bucket}/exports/ds"
    cl.ex.export(adata, url, storage_options=options, dataset_description="previous")
    before = remote_files(url, options)
    previous = cl.ex.read(url, storage_options=options)
    make_adata(150, 12, seed=5).write_h5ad(tmp_path / "input.h5ad")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, url, json.dumps(options)],
        cwd=tmp_path,
        env={**os.environ, "CI": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "paused").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the export did not reach its upload"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    # a partial version was stored, unreferenced; the previous export is intact and served
    after = remote_files(url, options)
    partial = {k.split("/")[0] for k in after} - {k.split("/")[0] for k in before}
    assert len(partial) == 1
    (version,) = partial
    assert {k: v for k, v in after.items() if not k.startswith(f"{version}/")} == before
    assert cl.ex.validate(url, storage_options=options).ok
    assert_same_data(cl.ex.read(url, storage_options=options), previous)
    # the next export removes what the killed one left
    cl.ex.export(adata, url, storage_options=options, overwrite=True)
    assert len(Destination.from_target(url, options).listdir()) == 2


def test_overwrite_refuses_a_prefix_holding_anything_else(
    adata: ad.AnnData, s3: tuple[str, dict]
) -> None:
    bucket, options = s3
    url = f"{bucket}/exports/ds"
    with pytest.raises(ValueError, match="give a prefix inside the bucket"):
        cl.ex.export(adata, bucket, storage_options=options)
    cl.ex.export(adata, url, storage_options=options)
    with pytest.raises(FileExistsError, match=r"exists; pass overwrite=True"):
        cl.ex.export(adata, url, storage_options=options)
    dest = Destination.from_target(url, options)
    dest.write_bytes("notes.txt", b"mine")
    before = remote_files(url, options)
    with pytest.raises(
        FileExistsError, match=r"Refusing to replace .*/ds: it holds notes\.txt, which an export"
    ):
        cl.ex.export(adata, url, storage_options=options, overwrite=True)
    with pytest.raises(FileExistsError, match=r"it is an exports root \(it holds ds/\)"):
        cl.ex.export(adata, f"{bucket}/exports", storage_options=options, overwrite=True)
    assert remote_files(url, options) == before
    # an export's files stored as a plain folder (copied there by hand) are an earlier export
    plain = Destination.from_target(f"{bucket}/plain", options)
    version = current_version(url, options)
    for rel, data in before.items():
        if rel.startswith(f"{version}/"):
            plain.write_bytes(rel.partition("/")[2], data)
    cl.ex.validate(f"{bucket}/plain", storage_options=options, strict=True)
    plain.remove("dataset_identity.json")
    with pytest.raises(FileExistsError, match=r"it has no dataset_identity\.json"):
        cl.ex.export(adata, f"{bucket}/plain", storage_options=options, overwrite=True)


def test_write_catalog_lists_published_datasets_at_their_version(s3: tuple[str, dict]) -> None:
    bucket, options = s3
    root = f"{bucket}/exports"
    cl.ex.export(make_adata(150, 12, seed=1), f"{root}/a", storage_options=options)
    cl.ex.export(make_adata(150, 12, seed=2), f"{root}/b", storage_options=options)
    assert cl.ex.write_catalog(root, default="b", storage_options=options) == (
        f"{root}/datasets.json"
    )
    catalog = json.loads(Destination.from_target(root, options).read_bytes("datasets.json"))
    assert [e["path"] for e in catalog["datasets"]] == [
        f"a/{current_version(f'{root}/a', options)}/",
        f"b/{current_version(f'{root}/b', options)}/",
    ]
    report = cl.ex.validate(root, storage_options=options)
    assert report.ok, str(report)


# --- missing packages ------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "package"), [("gs", "gcsfs"), ("az", "adlfs")])
def test_a_missing_protocol_package_is_named(
    adata: ad.AnnData, protocol: str, package: str
) -> None:
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        pass
    else:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(
        ImportError, match=rf"^{protocol}:// needs {package}: pip install {package}$"
    ):
        cl.ex.export(adata, f"{protocol}://bucket/ds")


def test_missing_fsspec_names_the_extra(
    adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec fails
    with pytest.raises(
        ImportError, match=r"^s3:// destinations need fsspec: pip install 'cellucid\[cloud\]'$"
    ):
        cl.ex.export(adata, "s3://bucket/ds")
    # local paths never need it
    cl.ex.export(adata, tmp_path / "ds")
    assert _store.is_url("s3://bucket/ds") and not _store.is_url(str(tmp_path))


# --- the command line ------------------------------------------------------------------------


@pytest.mark.usefixtures("_restore_logging")
def test_cli_exports_validates_and_catalogs_an_s3_url(
    adata: ad.AnnData, s3: tuple[str, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bucket, options = s3
    adata.write_h5ad(tmp_path / "in.h5ad")
    flags = [f"--storage-option={k}={v}" for k, v in options.items()]
    url = f"{bucket}/exports/pbmc"
    assert main(["export", str(tmp_path / "in.h5ad"), url, *flags]) == 0
    assert capsys.readouterr().out.strip() == url
    assert main(["validate", url, *flags]) == 0
    assert "valid current-layout export" in capsys.readouterr().out
    assert main(["catalog", f"{bucket}/exports", *flags]) == 0
    assert capsys.readouterr().out.strip() == f"{bucket}/exports/datasets.json"
    assert main(["validate", f"{bucket}/exports", *flags]) == 0
    capsys.readouterr()
    # refused before the input is read: one line, exit 1
    assert main(["export", str(tmp_path / "missing.h5ad"), url, *flags]) == 1
    assert capsys.readouterr().err.strip() == (
        f"cellucid export: error: {url} exists; pass overwrite=True "
        "(--overwrite on the command line) to replace it."
    )
    assert main(["validate", f"{bucket}/nothing", *flags]) == 3
    assert "No export at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["validate", url, "--storage-option", "no-equals-sign"])
    assert exc.value.code == 2
    assert "must be KEY=VALUE" in capsys.readouterr().err


@pytest.mark.usefixtures("_restore_logging")
def test_cli_storage_option_values_are_json_when_they_parse(
    adata: ad.AnnData, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cellucid.cli import build_parser

    args = build_parser().parse_args(
        ["validate", "s3://b/x", "--storage-option", "anon=true", "--storage-option", "a=b=c"]
    )
    assert dict(args.storage_options) == {"anon": True, "a": "b=c"}
    # options with a local path would be ignored: refused in one line
    assert main(["validate", str(tmp_path), "--storage-option", "anon=true"]) == 3
    err = capsys.readouterr().err
    assert err.strip() == (
        f"cellucid validate: error: storage_options are for URLs (s3://, gs://, ...); "
        f"{tmp_path} is a local path."
    )


def write_then_fail(dest: Destination, relpath: str) -> None:
    with dest.open_write(relpath) as f:
        f.write(b"partial")
        raise RuntimeError


def test_destination_writes_whole_files_or_nothing(s3: tuple[str, dict], tmp_path: Path) -> None:
    import pickle

    bucket, options = s3
    for dest in (
        Destination.from_target(f"{bucket}/d", options),
        Destination.from_target(f"memory://m{uuid.uuid4().hex[:8]}/d"),
    ):
        dest.write_bytes("var/0.values.u8", b"abc")
        with dest.open_write("var/2.values.u8") as f:
            f.write(b"de")
            f.write(b"f")
        # an fsspec file would store "partial" on leaving its with block: the spool does not
        with pytest.raises(RuntimeError):
            write_then_fail(dest, "var/1.values.u8")
        assert dest.files() == {"var/0.values.u8": 3, "var/2.values.u8": 3}
        worker = pickle.loads(pickle.dumps(dest))  # what a dask worker gets
        assert worker.read_bytes("var/2.values.u8") == b"def"
        assert dest.listdir() == ["var"]
        assert dest.read_bytes("var/0.values.u8", limit=1) == b"ab"
        with pytest.raises(ValueError, match="not a relative path"):
            dest.write_bytes("../x", b"")
        dest.remove()
        assert not dest.exists()
    # a local folder has no Destination: it is staged and swapped in, files renamed in place
    for local in (str(tmp_path), f"file://{tmp_path}"):
        with pytest.raises(ValueError, match="is a local path"):
            Destination.from_target(local)


def test_payloads_written_to_the_new_version_directly_are_published(
    adata: ad.AnnData, s3: tuple[str, dict], tmp_path: Path
) -> None:
    """What dask workers do: write gene payloads to ``version_dest`` (pickled) before publish."""
    import pickle

    from cellucid.ex._cloud import CloudExport

    bucket, options = s3
    url = f"{bucket}/ds"
    cloud = CloudExport(url, options, overwrite=False)
    staged = cl.ex.export(adata, tmp_path / "ds")
    expected = cl.ex.read(staged)
    worker = pickle.loads(pickle.dumps(cloud.version_dest))
    for payload in sorted((staged / "var").iterdir()):
        with worker.open_write(f"var/{payload.name}") as f:
            f.write(payload.read_bytes())
        payload.unlink()
    cloud.publish(staged)
    assert current_version(url, options) == cloud.version
    assert cl.ex.validate(url, storage_options=options).ok
    assert_same_data(cl.ex.read(url, storage_options=options), expected)
