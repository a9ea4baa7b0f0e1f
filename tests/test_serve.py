"""The server over real HTTP on 127.0.0.1: endpoints, files, ranges, CORS, Host check, hostile paths."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
from _data import make_adata
from _http import get_json, request

import cellucid as cl
from cellucid.cli import main
from cellucid.ex._declared import ExportError

DATASET_PATH = re.compile(r"^/(?:[A-Za-z0-9][A-Za-z0-9._-]{0,179}/)?$")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test reaches the internet or the user's cache: no viewer download, a private cache."""
    monkeypatch.setenv("CELLUCID_OFFLINE", "1")
    monkeypatch.setenv("CELLUCID_CACHE_DIR", str(tmp_path / "cache"))


def _export(adata, out_dir, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fixture's NaN obs columns
        return cl.ex.export(adata, out_dir, **kwargs)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """An exports root with a gzip current export, a raw current one and a legacy one."""
    root = tmp_path_factory.mktemp("exports")
    paths = {
        "gz": _export(make_adata(), root / "gz", compression=6, dataset_name="PBMC gz"),
        "raw": _export(make_adata(seed=1), root / "raw", var_quantization=8),
        "legacy": _export(make_adata(seed=2), root / "legacy", layout="legacy"),
    }
    cl.ex.write_catalog(root, default="raw")
    paths["root"] = root
    return paths


@pytest.fixture
def serving():
    """Start servers with ``serving(path, **kwargs)``; all are stopped after the test."""
    servers = []

    def start(path, **kwargs):
        server = cl.ex.serve(path, port=0, open_browser=False, block=False, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _files_on_disk(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


# --- the endpoints --------------------------------------------------------------------------


def test_endpoints_answer_exactly_the_documented_bodies(exports, serving):
    server = serving(exports["gz"])
    assert server.port != 0  # port 0 picked a free one
    assert get_json(server.port, "/_cellucid/health") == {
        "status": "ok",
        "type": "exported",
        "version": cl.__version__,
    }
    assert get_json(server.port, "/_cellucid/info") == {
        "version": cl.__version__,
        "host": "127.0.0.1",
        "port": server.port,
        "mode": "standalone",
    }
    identity = json.loads((exports["gz"] / "dataset_identity.json").read_text())
    assert get_json(server.port, "/_cellucid/datasets") == {
        "datasets": [{"id": identity["id"], "path": "/", "name": "PBMC gz"}]
    }
    for endpoint in ("health", "info", "datasets"):
        response = request(server.port, f"/_cellucid/{endpoint}")
        assert response.headers["Cache-Control"] == "no-store"
        head = request(server.port, f"/_cellucid/{endpoint}", method="HEAD")
        assert head.status == 200
        assert head.body == b""
        assert head.headers["Content-Length"] == str(len(response.body))
    assert request(server.port, "/_cellucid/ws").status == 404


def test_pbmc68k_reduced_is_served_whole(tmp_path, serving):
    """The issue's "done when": every declared file of a pbmc68k_reduced export, byte for byte."""
    import scanpy as sc

    folder = _export(
        sc.datasets.pbmc68k_reduced(),
        tmp_path / "pbmc",
        compression=6,
        var_quantization=8,
        dataset_name="PBMC 68k reduced",
    )
    server = serving(folder)
    identity = json.loads((folder / "dataset_identity.json").read_text())
    assert get_json(server.port, "/_cellucid/datasets") == {
        "datasets": [{"id": identity["id"], "path": "/", "name": "PBMC 68k reduced"}]
    }
    on_disk = _files_on_disk(folder)
    assert len(on_disk) > 765  # a file per gene, and the rest
    assert set(server.datasets[0].files) == set(on_disk)
    for relpath, file in on_disk.items():
        response = request(server.port, f"/{relpath}")
        assert (response.status, response.body) == (200, file.read_bytes()), relpath


def test_exports_root_lists_each_dataset_folder(exports, serving):
    server = serving(exports["root"])
    listing = get_json(server.port, "/_cellucid/datasets")
    catalog = json.loads((exports["root"] / "datasets.json").read_text())
    assert listing == {
        "datasets": [
            {"id": e["id"], "path": f"/{e['path']}", "name": e["name"]} for e in catalog["datasets"]
        ]
    }
    assert {d["path"] for d in listing["datasets"]} == {"/gz/", "/raw/", "/legacy/"}
    assert all(DATASET_PATH.match(d["path"]) for d in listing["datasets"])
    for entry in listing["datasets"]:
        identity = get_json(server.port, f"{entry['path']}dataset_identity.json")
        assert identity["id"] == entry["id"]
        assert identity["name"] == entry["name"]
    assert (
        request(server.port, "/datasets.json").body
        == (exports["root"] / "datasets.json").read_bytes()
    )
    # one dataset's files are not reachable through another's path
    assert request(server.port, "/gz/../raw/dataset_identity.json").status == 404
    assert request(server.port, "/dataset_identity.json").status == 404


@pytest.mark.parametrize("name", ["gz", "raw", "legacy"])
def test_every_declared_file_is_served_byte_for_byte(exports, serving, name):
    folder = exports[name]
    server = serving(folder)
    on_disk = _files_on_disk(folder)
    # the export declares exactly what it wrote: every file is served, none is missing
    assert set(server.datasets[0].files) == set(on_disk)
    if name == "legacy":
        assert any(p.startswith("var/GENE") for p in on_disk)  # files named by key
    for relpath, file in on_disk.items():
        response = request(server.port, f"/{relpath}", headers={"Accept-Encoding": "gzip"})
        assert response.status == 200, relpath
        assert response.body == file.read_bytes(), relpath
        expected_type = (
            "application/json" if relpath.endswith(".json") else "application/octet-stream"
        )
        assert response.headers["Content-Type"] == expected_type
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Content-Length"] == str(file.stat().st_size)
        assert "Content-Encoding" not in response.headers
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        if relpath.endswith(".gz"):
            assert response.body[:2] == b"\x1f\x8b"  # sent as stored, not inflated


def test_the_same_files_under_a_root(exports, serving):
    server = serving(exports["root"])
    for name in ("gz", "legacy"):
        for relpath, file in _files_on_disk(exports[name]).items():
            response = request(server.port, f"/{name}/{relpath}")
            assert (response.status, response.body) == (200, file.read_bytes()), relpath


def test_head_sends_the_headers_of_get_without_a_body(exports, serving):
    server = serving(exports["gz"])
    get = request(server.port, "/points_3d.bin.gz")
    head = request(server.port, "/points_3d.bin.gz", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    for key in ("Content-Type", "Content-Length", "Accept-Ranges", "Cache-Control"):
        assert head.headers[key] == get.headers[key]
    assert request(server.port, "/obs/99.values.f32", method="HEAD").status == 404


def test_single_ranges(exports, serving):
    server = serving(exports["gz"])
    data = (exports["gz"] / "points_3d.bin.gz").read_bytes()
    n = len(data)

    def ranged(value):
        return request(server.port, "/points_3d.bin.gz", headers={"Range": value})

    first = ranged("bytes=0-0")  # the viewer's existence probe
    assert (first.status, first.body) == (206, data[:1])
    assert first.headers["Content-Range"] == f"bytes 0-0/{n}"
    assert first.headers["Content-Length"] == "1"
    middle = ranged("bytes=10-99")
    assert (middle.status, middle.body) == (206, data[10:100])
    assert middle.headers["Content-Range"] == f"bytes 10-99/{n}"
    tail = ranged("bytes=-16")
    assert (tail.status, tail.body) == (206, data[-16:])
    assert tail.headers["Content-Range"] == f"bytes {n - 16}-{n - 1}/{n}"
    open_ended = ranged(f"bytes={n - 5}-")
    assert (open_ended.status, open_ended.body) == (206, data[-5:])
    past_end = ranged(f"bytes={n - 2}-{n + 100}")  # clipped to the file
    assert (past_end.status, past_end.body) == (206, data[-2:])
    for unsatisfiable in (f"bytes={n}-", f"bytes={n + 10}-{n + 20}", "bytes=-0"):
        refused = ranged(unsatisfiable)
        assert refused.status == 416, unsatisfiable
        assert refused.headers["Content-Range"] == f"bytes */{n}"
        assert refused.body == b""
    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3"):  # not one byte range: whole file
        whole = ranged(ignored)
        assert (whole.status, whole.body) == (200, data), ignored
    head = request(server.port, "/points_3d.bin.gz", method="HEAD", headers={"Range": "bytes=0-9"})
    assert (head.status, head.headers["Content-Length"], head.body) == (206, "10", b"")


# --- CORS and the Host check -----------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://www.cellucid.com",
        "https://beta.cellucid.com",
        "http://localhost:5173",
        "https://localhost:8443",
        "http://127.0.0.1:8765",
    ],
)
def test_cors_allows_the_viewer_origins(exports, serving, origin):
    server = serving(exports["gz"])
    for method in ("GET", "HEAD"):
        response = request(
            server.port, "/dataset_identity.json", method=method, headers={"Origin": origin}
        )
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Vary"] == "Origin"
        assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST, OPTIONS"
        assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, Range"
        assert response.headers["Access-Control-Expose-Headers"] == "Content-Length, Content-Range"
    preflight = request(
        server.port,
        "/points_3d.bin.gz",
        method="OPTIONS",
        headers={"Origin": origin, "Access-Control-Request-Headers": "range"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://www.cellucid.com",  # the hosted viewer is https only
        "https://cellucid.com.evil.example",
        "https://evilcellucid.com",
        "http://localhost.evil.example:8765",
        "null",
    ],
)
def test_cors_refuses_other_origins(exports, serving, origin):
    server = serving(exports["gz"])
    response = request(server.port, "/dataset_identity.json", headers={"Origin": origin})
    assert response.status == 200  # served, but the browser does not hand it to the page
    assert not any(key.startswith("Access-Control-") for key in response.headers)
    preflight = request(
        server.port, "/dataset_identity.json", method="OPTIONS", headers={"Origin": origin}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_host_check_refuses_other_names_with_421(exports, serving):
    server = serving(exports["gz"], allowed_hosts=["tunnel.example.org"])
    port = server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "tunnel.example.org"):
        assert request(port, "/_cellucid/health", host=host).status == 200, host
    for host in (
        f"evil.example:{port}",  # DNS rebinding: a foreign name resolving to 127.0.0.1
        "evil.example",
        f"localhost:{port + 1}",  # another port
        f"127.0.0.1:{port}@evil",
        None,  # no Host at all
    ):
        for method in ("GET", "HEAD", "OPTIONS"):
            refused = request(port, "/dataset_identity.json", method=method, host=host)
            assert refused.status == 421, (host, method)
            assert b"dataset" not in refused.body
    assert (
        request(port, "/_cellucid/events", method="POST", host="evil.example", body=b"{}").status
        == 421
    )


# --- hostile paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/../gz/dataset_identity.json",
        "/obs/../dataset_identity.json",
        "/./dataset_identity.json",
        "//dataset_identity.json",
        "/obs//0.codes.u8.gz",
        "/%2e%2e/gz/dataset_identity.json",
        "/%2E%2E%2Fdataset_identity.json",
        "/dataset%5fidentity.json",  # an escape of an ordinary character: not canonical either
        "/obs%2f0.codes.u8.gz",
        "/obs\\0.codes.u8.gz",
        "/..\\dataset_identity.json",
        "/obs/",  # no listings
        "/obs",
        "/var/",
        "http://127.0.0.1/dataset_identity.json",  # absolute form
        "/.hidden",
        "/obs/99.values.f32.gz",  # undeclared
        "/notes.txt",  # on disk, undeclared
        "/obs/0.codes.u8",  # declared only with .gz
    ],
)
def test_hostile_and_undeclared_paths_get_404(exports, serving, tmp_path, path):
    folder = tmp_path / "export"
    shutil.copytree(exports["gz"], folder)
    (folder / "notes.txt").write_text("private")
    (folder / ".hidden").write_text("private")
    server = serving(folder)
    for method in ("GET", "HEAD"):
        response = request(server.port, path, method=method)
        assert response.status == 404, (path, method)
        assert b"private" not in response.body


def test_symlinks_are_not_followed(exports, serving, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(exports["gz"], folder)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"secret")
    # a declared payload replaced by a symlink to a file outside the export
    (folder / "points_2d.bin.gz").unlink()
    (folder / "points_2d.bin.gz").symlink_to(secret)
    # a declared folder replaced by a symlink to a copy of itself
    shutil.move(folder / "var", tmp_path / "var-elsewhere")
    (folder / "var").symlink_to(tmp_path / "var-elsewhere", target_is_directory=True)
    server = serving(folder)
    assert request(server.port, "/points_2d.bin.gz").status == 404
    assert request(server.port, "/var/0.values.f32.gz").status == 404
    assert request(server.port, "/points_3d.bin.gz").status == 200
    # a symlink planted after the server started is refused too
    (folder / "points_3d.bin.gz").unlink()
    (folder / "points_3d.bin.gz").symlink_to(secret)
    response = request(server.port, "/points_3d.bin.gz")
    assert response.status == 404
    assert b"secret" not in response.body


def test_a_symlinked_dataset_folder_is_refused(exports, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "gz").symlink_to(exports["gz"], target_is_directory=True)
    (root / "datasets.json").write_text(
        json.dumps({"version": 1, "default": "gz", "datasets": [{"id": "gz", "path": "gz/"}]})
    )
    with pytest.raises(ExportError, match="symlink"):
        cl.ex.serve(root, port=0, open_browser=False, block=False)


@pytest.mark.parametrize("bad_path", ["../gz/", "a/b/", "gz", "assets/", ".gz/", "/gz/"])
def test_catalog_paths_must_be_one_folder(exports, tmp_path, bad_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "datasets.json").write_text(
        json.dumps({"version": 1, "default": "x", "datasets": [{"id": "x", "path": bad_path}]})
    )
    with pytest.raises(ExportError, match="not one folder directly under the root"):
        cl.ex.serve(root, port=0, open_browser=False, block=False)


def test_paths_that_are_not_exports_get_one_clear_line(tmp_path, exports):
    with pytest.raises(ExportError, match=r"neither dataset_identity\.json nor datasets\.json"):
        cl.ex.serve(tmp_path, port=0, open_browser=False, block=False)
    with pytest.raises(ExportError, match="is not a folder"):
        cl.ex.serve(tmp_path / "missing", port=0, open_browser=False, block=False)
    folder = tmp_path / "broken"
    shutil.copytree(exports["raw"], folder)
    (folder / "obs_manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match=r"obs_manifest\.json is not valid JSON"):
        cl.ex.serve(folder, port=0, open_browser=False, block=False)


@pytest.mark.usefixtures("_restore_logging")
def test_cli_refuses_a_folder_that_is_not_an_export(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--port", "0", "--no-browser"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cellucid serve: error: ")
    assert "neither dataset_identity.json nor datasets.json" in err
    assert len(err.strip().splitlines()) == 1


def test_a_rewritten_export_is_picked_up(tmp_path, serving):
    folder = _export(make_adata(n_cells=50, n_genes=5), tmp_path / "x", dataset_name="first")
    server = serving(folder)
    assert get_json(server.port, "/_cellucid/datasets")["datasets"][0]["name"] == "first"
    _export(make_adata(n_cells=50, n_genes=8), folder, dataset_name="second", overwrite=True)
    assert get_json(server.port, "/_cellucid/datasets")["datasets"][0]["name"] == "second"
    assert (
        request(server.port, "/var/7.values.f32").body == (folder / "var/7.values.f32").read_bytes()
    )


# --- events, ports, the viewer page ----------------------------------------------------------


def _post_event(port, event, *, content_type="application/json", **kwargs):
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return request(
        port,
        "/_cellucid/events",
        method="POST",
        headers={"Content-Type": content_type},
        body=body,
        **kwargs,
    )


def test_events_are_delivered_to_the_viewer_that_posted_them(exports, serving):
    server = serving(exports["gz"])
    inbox = server.events.register("0123456789abcdef", "s3cret")
    other = server.events.register("fedcba9876543210", "other")
    seen = []
    inbox.on("selection", seen.append)
    event = {"viewerId": "0123456789abcdef", "viewerToken": "s3cret", "type": "selection"}
    response = _post_event(server.port, {**event, "cells": [1, 5, 9]})
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.body == b'{"status": "ok", "delivered": true}'
    # the token is not handed on; another type reaches events but not the callback
    delivered = {"viewerId": "0123456789abcdef", "type": "selection", "cells": [1, 5, 9]}
    assert seen == [delivered]
    hover = {**event, "type": "hover", "cell": 3}
    assert (
        _post_event(server.port, hover, content_type="application/json; charset=utf-8").status
        == 200
    )
    assert [e["type"] for e in inbox.events] == ["selection", "hover"]
    assert len(seen) == 1
    assert other.events == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ({"viewerId": "0123456789abcdef", "viewerToken": "wrong", "type": "x"}, None, 403),
        ({"viewerId": "0123456789abcdef", "type": "x"}, None, 403),
        ({"viewerId": "0123456789abcdef", "viewerToken": 7, "type": "x"}, None, 403),
        ({"viewerId": "ffffffffffffffff", "viewerToken": "s3cret", "type": "x"}, None, 404),
        ({"viewerId": "0123456789abcdef", "viewerToken": "s3cret", "type": "x"}, "text/plain", 415),
        ({"viewerId": "0123456789abcdef", "viewerToken": "s3cret"}, None, 400),
        ({"viewerId": "0123456789abcdef", "viewerToken": "s3cret", "type": " x"}, None, 400),
        ({"viewerId": "", "viewerToken": "s3cret", "type": "x"}, None, 400),
        (b"[1, 2]", None, 400),
        (b"{not json", None, 400),
        (b"\xff\xfe", None, 400),
        (b"[" * 100_000 + b"]" * 100_000, None, 400),
    ],
)
def test_events_are_refused_with_the_reason(exports, serving, body, content_type, status):
    server = serving(exports["gz"])
    inbox = server.events.register("0123456789abcdef", "s3cret")
    response = _post_event(server.port, body, content_type=content_type or "application/json")
    assert response.status == status, response.body
    assert response.body.endswith(b"\n") and b"Traceback" not in response.body
    assert inbox.events == []


def test_event_bodies_are_bounded_and_need_a_length(exports, serving):
    server = serving(exports["gz"])
    server.events.register("0123456789abcdef", "s3cret")
    too_big = {"Content-Type": "application/json", "Content-Length": str(2**20 + 1)}
    response = request(server.port, "/_cellucid/events", method="POST", headers=too_big)
    assert response.status == 413  # answered before any of the body is read
    no_length = {"Content-Type": "application/json"}
    response = request(server.port, "/_cellucid/events", method="POST", headers=no_length)
    assert response.status == 411
    response = request(server.port, "/dataset_identity.json", method="POST", body=b"x")
    assert response.status == 405


def test_a_failing_callback_is_logged_and_answered_500(exports, serving, caplog):
    server = serving(exports["gz"])
    inbox = server.events.register("0123456789abcdef", "s3cret")

    def fail(event):
        raise RuntimeError("boom")

    inbox.on("*", fail)
    event = {"viewerId": "0123456789abcdef", "viewerToken": "s3cret", "type": "x"}
    with caplog.at_level("ERROR", logger="cellucid"):
        response = _post_event(server.port, event)
    assert response.status == 500 and b"boom" not in response.body
    assert "a callback of viewer 0123456789abcdef failed" in caplog.text
    assert inbox.events == [{"viewerId": "0123456789abcdef", "type": "x"}]
    server.events.unregister("0123456789abcdef")
    assert _post_event(server.port, event).status == 404


def test_events_preflight_from_the_viewers_origin(exports, serving):
    server = serving(exports["gz"])
    headers = {
        "Origin": "https://www.cellucid.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    response = request(server.port, "/_cellucid/events", method="OPTIONS", headers=headers)
    assert response.status == 204
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]


@pytest.mark.usefixtures("_restore_logging")
def test_a_busy_port_is_an_error_that_says_so(exports, serving, capsys):
    first = serving(exports["gz"])
    with pytest.raises(OSError, match=f"Port {first.port} on 127.0.0.1 is already in use"):
        cl.ex.serve(exports["gz"], port=first.port, open_browser=False, block=False)
    code = main(["serve", str(exports["gz"]), "--port", str(first.port), "--no-browser"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"Port {first.port} on 127.0.0.1 is already in use" in err
    assert "Traceback" not in err
    assert get_json(first.port, "/_cellucid/health")["status"] == "ok"  # the first one still serves


def test_the_viewer_page_is_503_without_a_cache(exports, serving):
    server = serving(exports["gz"])
    for path in ("/", "/index.html", "/assets/app.js"):
        response = request(server.port, path)
        assert response.status == 503
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"--update-viewer" in response.body
        assert b"CELLUCID_OFFLINE" in response.body


def test_stop_releases_the_port_and_closes_connections(exports):
    server = cl.ex.serve(exports["gz"], port=0, open_browser=False, block=False)
    port = server.port
    # an idle kept-alive connection must not keep the server alive
    idle = socket.create_connection(("127.0.0.1", port))
    idle.sendall(f"GET /_cellucid/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    answer = b""
    while not answer.endswith(b"}"):  # the health JSON ends the response
        answer += idle.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200")
    server.stop()
    assert idle.recv(4096) == b""  # closed by the server
    idle.close()
    again = cl.ex.serve(exports["gz"], port=port, open_browser=False, block=False)
    try:  # the port is free again
        assert get_json(port, "/_cellucid/health")["status"] == "ok"
    finally:
        again.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("cellucid-serve")]


def test_cli_serves_until_ctrl_c(exports, tmp_path):
    env = {**os.environ, "CELLUCID_OFFLINE": "1", "CELLUCID_CACHE_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cellucid",
            "serve",
            str(exports["root"]),
            "--port",
            "0",
            "--no-browser",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout.readline().startswith("Serving 3 datasets from")
        line = process.stdout.readline()
        match = re.match(r"^Open http://127\.0\.0\.1:(\d+)/ \(Ctrl-C to stop\)$", line.strip())
        assert match, line
        port = int(match[1])
        assert len(get_json(port, "/_cellucid/datasets")["datasets"]) == 3
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        process.kill()
        process.wait()
