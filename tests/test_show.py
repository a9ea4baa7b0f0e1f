"""``cl.ex.show``: the AnnData export cache, the iframe, the server behind it."""

from __future__ import annotations

import html
import json
import os
import re
import sys
import time
import types
import warnings

import numpy as np
import pytest
from _data import make_adata
from _http import get_json, request

import cellucid as cl
from cellucid.ex import _show

URL = re.compile(
    r"^http://127\.0\.0\.1:(\d+)/\?jupyter=true&viewerId=[0-9a-f]{16}&viewerToken=[0-9a-f]{32}$"
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLUCID_OFFLINE", "1")
    monkeypatch.setenv("CELLUCID_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def exports_made(monkeypatch):
    """Count the exports show() writes."""
    calls = []

    def counting_export(adata, out_dir, **kwargs):
        calls.append(out_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return cl.ex.export(adata, out_dir, **kwargs)

    monkeypatch.setattr(_show, "export", counting_export)
    return calls


@pytest.fixture
def viewers():
    shown = []
    yield shown
    for viewer in shown:
        viewer.stop()


def test_show_exports_once_and_serves_the_iframe(tmp_path, exports_made, viewers, capsys):
    adata = make_adata(n_cells=120, n_genes=6)
    before = adata.copy()
    viewer = cl.ex.show(adata, var_quantization=8)
    viewers.append(viewer)
    match = URL.match(viewer.url)
    assert match, viewer.url
    port = int(match[1])
    assert port == viewer.server.port
    assert capsys.readouterr().out.strip() == f"Cellucid viewer: {viewer.url}"  # no notebook here
    assert viewer.html.startswith(
        f'<iframe src="{html.escape(viewer.url)}" width="100%" height="600"'
    )
    assert "&amp;viewerId=" in viewer.html
    listing = get_json(port, "/_cellucid/datasets")
    assert listing == {
        "datasets": [{"id": "AnnData-120-cells", "path": "/", "name": "AnnData (120 cells)"}]
    }
    (out_dir,) = exports_made
    assert out_dir.parent == tmp_path / "cache" / "exports"
    assert request(port, "/var_manifest.json").body == (out_dir / "var_manifest.json").read_bytes()
    # adata untouched
    assert (adata.X != before.X).nnz == 0
    assert adata.obs.equals(before.obs)

    # the same content again (even another object): no second export
    again = cl.ex.show(adata.copy(), var_quantization=8)
    viewers.append(again)
    assert len(exports_made) == 1
    assert again.server.datasets[0].base == out_dir.resolve()
    assert again.url != viewer.url  # a new server and a new viewer id

    # other keywords or other values: another export
    viewers.append(cl.ex.show(adata))
    adata.obs["score"] = np.arange(adata.n_obs, dtype=float)
    viewers.append(cl.ex.show(adata))
    assert len(exports_made) == 3
    assert len(set(exports_made)) == 3


def test_the_cache_keeps_the_last_used_exports(tmp_path, viewers, monkeypatch):
    cache = tmp_path / "cache" / "exports"
    hour = 3600
    shown = []
    for seed in range(4):  # each shown, then left unused for 4, 3, 2 and 1.5 hours
        viewer = cl.ex.show(make_adata(n_cells=30, n_genes=2, seed=seed))
        shown.append(viewer.server.datasets[0].base)
        ago = time.time() - (4, 3, 2, 1.5)[seed] * hour
        os.utime(shown[-1], (ago, ago))
        if seed == 2:
            viewers.append(viewer)  # still shown by this process
        else:
            viewer.stop()
    # a folder named like a cached export but holding a user's file is never removed
    foreign = cache / ("f" * 32)
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    os.utime(foreign, (0, 0))
    assert all(path.is_dir() for path in shown)  # 5 by default: none pruned yet
    monkeypatch.setattr(_show, "CACHED_EXPORTS_KEPT", 2)
    # showing the second again marks it used; a new export prunes the rest but the last 2
    viewers.append(cl.ex.show(make_adata(n_cells=30, n_genes=2, seed=1)))
    viewers.append(cl.ex.show(make_adata(n_cells=30, n_genes=2, seed=9)))
    kept = {path.name for path in cache.iterdir()}
    assert {shown[1].name, shown[2].name, foreign.name} <= kept
    assert not {shown[0].name, shown[3].name} & kept
    assert len(kept) == 4  # and the new export
    assert (foreign / "notes.txt").read_text() == "mine"
    assert not [name for name in kept if name.startswith(".")]  # nothing left aside
    # one used within the hour is kept whatever the count
    assert _show.prune_cache(cache, keep=0) == []
    # a viewer stopped twice counts once: another viewer of its export still keeps it
    twin, stopped = cl.ex.show(shown[2]), cl.ex.show(shown[2])
    viewers.pop(0).stop()
    stopped.stop()
    stopped.stop()
    assert _show.prune_cache(cache, keep=0) == []
    # once its viewers stop, the old one goes
    twin.stop()
    assert _show.prune_cache(cache, keep=0) == [shown[2]]


def test_show_an_export_folder_and_stop(tmp_path, viewers):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folder = cl.ex.export(make_adata(n_cells=50, n_genes=3), tmp_path / "pbmc")
    viewer = cl.ex.show(folder, height=400)
    assert 'height="400"' in viewer.html
    port = viewer.server.port
    assert get_json(port, "/_cellucid/health")["status"] == "ok"
    page = request(port, "/")  # no viewer cache offline: the page that says what to do
    assert page.status == 503
    viewer.stop()
    with pytest.raises(OSError):  # noqa: PT011
        request(port, "/_cellucid/health")
    with pytest.raises(TypeError, match="apply to an AnnData"):
        cl.ex.show(folder, obs_keys=["cell_type"])
    with pytest.raises(TypeError, match="chooses the export folder"):
        cl.ex.show(make_adata(n_cells=20, n_genes=2), out_dir=tmp_path / "x")


def test_the_viewers_events_reach_its_callbacks(tmp_path, viewers):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folder = cl.ex.export(make_adata(n_cells=50, n_genes=3), tmp_path / "pbmc")
    first, second = cl.ex.show(folder), cl.ex.show(folder)
    viewers.extend([first, second])
    selections = []
    first.on("selection", selections.append)
    query = dict(part.split("=") for part in first.url.split("?")[1].split("&"))
    event = {"viewerId": query["viewerId"], "viewerToken": query["viewerToken"]}
    body = json.dumps({**event, "type": "selection", "cells": [0, 7]}).encode()
    headers = {"Content-Type": "application/json"}
    port = first.server.port
    response = request(port, "/_cellucid/events", method="POST", headers=headers, body=body)
    assert response.status == 200 and json.loads(response.body) == {
        "status": "ok",
        "delivered": True,
    }
    assert selections == [{"viewerId": query["viewerId"], "type": "selection", "cells": [0, 7]}]
    assert first.events == selections
    # the other viewer's server knows neither this id nor its token
    other = request(
        second.server.port, "/_cellucid/events", method="POST", headers=headers, body=body
    )
    assert other.status == 404 and second.events == []


def test_show_through_a_proxy(tmp_path, viewers):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folder = cl.ex.export(make_adata(n_cells=50, n_genes=3), tmp_path / "pbmc")
    viewer = cl.ex.show(folder, proxy_url="https://hub.example.org/user/me/proxy/{port}")
    viewers.append(viewer)
    port = viewer.server.port
    assert viewer.url.startswith(
        f"https://hub.example.org/user/me/proxy/{port}/?jupyter=true&viewerId="
    )
    # the proxy forwards requests addressed to its own name: the Host check lets them in
    assert request(port, "/_cellucid/health", host="hub.example.org").status == 200
    assert request(port, "/_cellucid/health", host="other.example.org").status == 421


def test_show_displays_the_iframe_in_a_notebook(monkeypatch, tmp_path, viewers, capsys):
    displayed = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(config={"IPKernelApp": {}})
    display = types.ModuleType("IPython.display")
    display.HTML = lambda markup: ("HTML", markup)
    display.display = displayed.append
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folder = cl.ex.export(make_adata(n_cells=50, n_genes=3), tmp_path / "pbmc")
    viewer = cl.ex.show(folder)
    viewers.append(viewer)
    assert displayed == [("HTML", viewer.html)]
    assert capsys.readouterr().out == ""


def test_content_hash_follows_what_export_reads():
    adata = make_adata(n_cells=80, n_genes=5)
    key = _show.content_hash(adata, {})
    assert _show.content_hash(adata.copy(), {}) == key
    assert _show.content_hash(adata, {"n_jobs": 2, "progress": False}) == key  # no effect on files
    assert _show.content_hash(adata, {"compression": 6}) != key
    changed = adata.copy()
    changed.obsm["X_umap"][0, 0] += 1
    assert _show.content_hash(changed, {}) != key
    changed = adata.copy()
    changed.obs["cell_type"] = changed.obs["cell_type"].cat.rename_categories(lambda c: c.upper())
    assert _show.content_hash(changed, {}) != key
    changed = adata.copy()
    changed.X.data[0] += 1.0
    assert _show.content_hash(changed, {}) != key
    changed = adata.copy()
    changed.var_names = [f"g{i}" for i in range(adata.n_vars)]
    assert _show.content_hash(changed, {}) != key
