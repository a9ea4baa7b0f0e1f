"""The viewer-UI cache, against a fake hosted site on 127.0.0.1 (nothing reaches the internet)."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest
from _data import make_adata
from _http import FakeViewerSite, closed_port_url, request

import cellucid as cl
from cellucid.cli import main
from cellucid.ex._viewer_cache import ViewerUnavailableError, load_viewer

INDEX = b"<!doctype html><title>Cellucid</title><script src='assets/app.js'></script>"
APP = b"console.log('viewer build 1');" * 100
STYLE = b"body { margin: 0 }"


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CELLUCID_OFFLINE", raising=False)
    monkeypatch.setenv("CELLUCID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CELLUCID_VIEWER_URL", closed_port_url())  # never the real site


@pytest.fixture
def site():
    fake = FakeViewerSite({"index.html": INDEX, "assets/app.js": APP, "assets/style.css": STYLE})
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return cl.ex.export(make_adata(n_cells=60, n_genes=4), tmp_path_factory.mktemp("e") / "x")


def test_update_downloads_verifies_and_serves_the_viewer(site, tmp_path, export_dir):
    cache = tmp_path / "viewer"
    folder = cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache)
    assert folder.parent == cache
    assert (folder / "index.html").read_bytes() == INDEX
    build = load_viewer(cache)
    assert build is not None
    assert build.build_id == "build-1"
    assert set(build.assets) == {"index.html", "assets/app.js", "assets/style.css"}

    server = cl.ex.serve(
        export_dir, port=0, open_browser=False, block=False, viewer_cache=cache, viewer_url=site.url
    )
    try:
        for path, body in (("/", INDEX), ("/index.html", INDEX), ("/assets/app.js", APP)):
            response = request(server.port, path)
            assert (response.status, response.body) == (200, body), path
        assert request(server.port, "/").headers["Content-Type"] == "text/html; charset=utf-8"
        assert request(server.port, "/assets/app.js").headers["Content-Type"] == "text/javascript"
        ranged = request(server.port, "/assets/app.js", headers={"Range": "bytes=0-6"})
        assert (ranged.status, ranged.body) == (206, APP[:7])
        # only the inventory's files: nothing else of the cache folder
        for path in (
            "/assets/missing.js",
            "/cellucid-web-assets.json",
            "/assets/",
            "/assets/../index.html",
        ):
            assert request(server.port, path).status == 404, path
        # the data is served beside the viewer
        assert request(server.port, "/dataset_identity.json").status == 200
    finally:
        server.stop()


def test_an_up_to_date_cache_downloads_nothing_more(site, tmp_path):
    cache = tmp_path / "viewer"
    first = cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache)
    site.requests.clear()
    assert cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache) == first
    assert site.requests == ["cellucid-web-assets.json"]


def test_a_new_build_is_swapped_in_and_the_oldest_removed(site, tmp_path):
    cache = tmp_path / "viewer"
    builds = []
    for n in (1, 2, 3):
        app = f"console.log('viewer build {n}');".encode()
        site.files["assets/app.js"] = app
        entry = next(a for a in site.inventory["assets"] if a["path"] == "assets/app.js")
        entry.update(sha256=hashlib.sha256(app).hexdigest(), bytes=len(app))
        site.inventory["build_id"] = f"build-{n}"
        builds.append(cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache))
        assert load_viewer(cache).build_id == f"build-{n}"
        assert (builds[-1] / "assets/app.js").read_bytes() == app
    # the current build and the previous one (a running server may still use it) remain
    assert not builds[0].exists()
    assert builds[1].exists()
    assert builds[2].exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "0" * 64}, "sha256"),
        ({"bytes": len(APP) + 1}, "bytes"),
    ],
)
def test_a_bad_asset_leaves_the_cache_unchanged(site, tmp_path, change, message):
    cache = tmp_path / "viewer"
    good = cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache)
    site.inventory["build_id"] = "build-2"
    next(a for a in site.inventory["assets"] if a["path"] == "assets/app.js").update(change)
    with pytest.raises(ViewerUnavailableError, match=message):
        cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache)
    assert load_viewer(cache).folder == good
    assert load_viewer(cache).build_id == "build-1"
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [good.name]  # no staging left


def test_a_bad_sha256_on_an_empty_cache_leaves_no_cache(site, tmp_path):
    cache = tmp_path / "viewer"
    next(a for a in site.inventory["assets"] if a["path"] == "index.html")["sha256"] = "f" * 64
    with pytest.raises(ViewerUnavailableError, match="The cache was left unchanged"):
        cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache)
    assert load_viewer(cache) is None


def test_a_damaged_cache_is_no_cache(site, tmp_path):
    cache = tmp_path / "viewer"
    folder = cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache)
    (folder / "assets/app.js").write_bytes(APP.replace(b"1", b"2"))  # same size, other bytes
    assert load_viewer(cache) is None


@pytest.mark.parametrize(
    ("inventory", "message"),
    [
        ({"version": 2, "build_id": "x", "assets": []}, "version 1"),
        ({"version": 1, "build_id": "x", "assets": []}, "index.html"),
        (
            {
                "version": 1,
                "build_id": "x",
                "assets": [{"path": "index.html", "sha256": "x", "bytes": 3}],
            },
            "invalid sha256",
        ),
        (
            {
                "version": 1,
                "build_id": "x",
                "assets": [{"path": "index.html", "sha256": "0" * 64, "bytes": 2**40}],
            },
            "invalid size",
        ),
    ],
)
def test_a_hostile_inventory_is_refused(site, tmp_path, inventory, message):
    site.inventory = inventory
    with pytest.raises(ViewerUnavailableError, match=message):
        cl.ex.update_viewer(viewer_url=site.url, cache_dir=tmp_path / "viewer")


def test_inventory_paths_outside_the_viewer_are_not_downloaded(site, tmp_path):
    site.files["../escape.js"] = b"x"
    site.files["sw.js"] = b"x"
    for path in ("../escape.js", "sw.js", "assets/%2e%2e/x.js", "/assets/abs.js"):
        site.inventory["assets"].append(
            {"path": path, "sha256": hashlib.sha256(b"x").hexdigest(), "bytes": 1}
        )
    folder = cl.ex.update_viewer(viewer_url=site.url, cache_dir=tmp_path / "viewer" / "c")
    assert set(load_viewer(folder.parent).assets) == {
        "index.html",
        "assets/app.js",
        "assets/style.css",
    }
    assert not (tmp_path / "viewer" / "escape.js").exists()
    assert "sw.js" not in site.requests


def test_offline_with_a_cache_serves_the_cache(site, tmp_path, export_dir):
    cache = tmp_path / "viewer"
    cl.ex.update_viewer(viewer_url=site.url, cache_dir=cache)
    site.stop()  # the hosted site goes away
    server = cl.ex.serve(
        export_dir,
        port=0,
        open_browser=False,
        block=False,
        viewer_cache=cache,
        viewer_url=site.url,
        update_viewer=True,  # the refresh fails; the cached viewer is served
    )
    try:
        assert request(server.port, "/").body == INDEX
    finally:
        server.stop()


def test_offline_without_a_cache_answers_503(tmp_path, export_dir):
    offline = closed_port_url()
    with pytest.raises(ViewerUnavailableError, match="could not reach"):
        cl.ex.update_viewer(viewer_url=offline, cache_dir=tmp_path / "viewer")
    server = cl.ex.serve(
        export_dir,
        port=0,
        open_browser=False,
        block=False,
        viewer_cache=tmp_path / "viewer",
        viewer_url=offline,
    )
    try:
        page = request(server.port, "/")
        assert page.status == 503
        assert b"could not reach" in page.body
        assert str(tmp_path / "viewer").encode() in page.body  # where to put a cache
        assert request(server.port, "/_cellucid/health").status == 200  # the data is served
    finally:
        server.stop()


def test_cellucid_offline_forbids_any_download(site, tmp_path, export_dir, monkeypatch):
    monkeypatch.setenv("CELLUCID_OFFLINE", "1")
    server = cl.ex.serve(
        export_dir,
        port=0,
        open_browser=False,
        block=False,
        viewer_cache=tmp_path / "v",
        viewer_url=site.url,
    )
    try:
        assert request(server.port, "/").status == 503
    finally:
        server.stop()
    assert site.requests == []


@pytest.mark.usefixtures("_restore_logging")
def test_cli_update_viewer(site, tmp_path, capsys):
    cache = tmp_path / "viewer"
    assert (
        main(["serve", "--update-viewer", "--viewer-url", site.url, "--viewer-cache", str(cache)])
        == 0
    )
    assert capsys.readouterr().out.strip() == str(load_viewer(cache).folder)
    offline = closed_port_url()
    code = main(["serve", "--update-viewer", "--viewer-url", offline, "--viewer-cache", str(cache)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("cellucid serve: error: could not reach")
    assert "Traceback" not in err
    assert main(["serve"]) == 2


def test_the_default_cache_follows_cellucid_cache_dir(site, tmp_path):
    folder = cl.ex.update_viewer(viewer_url=site.url)
    assert folder.parent == tmp_path / "cache" / "viewer"
    pointer = json.loads((folder.parent / "current.json").read_text())
    assert pointer == {"build": folder.name, "build_id": "build-1", "viewer_url": site.url}
