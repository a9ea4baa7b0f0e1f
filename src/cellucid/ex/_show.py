"""``cl.ex.show``: the viewer in a notebook, for an export folder or an AnnData."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import html
import logging
import os
import re
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._format import IDENTITY_FILE
from ._export import export
from ._publish import remove_export
from ._serve import Server
from ._settings import Resources
from ._viewer_cache import cache_home

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from anndata import AnnData

logger = logging.getLogger("cellucid")

#: how many cached exports :func:`show` keeps (the last used), and for how long a cached
#: export counts as in use (another kernel may show it) whatever their number
CACHED_EXPORTS_KEPT = 5
_IN_USE_SECONDS = 3600
#: a cached export's folder name: :func:`content_hash`
_CACHED_NAME = re.compile(r"[0-9a-f]{32}")
#: the folders the viewers of this process serve (the count of viewers of each)
_SHOWN: Counter[Path] = Counter()
#: export keywords that do not change the written files (left out of the cache key)
_NOT_IN_KEY = frozenset(f.name for f in dataclasses.fields(Resources))


class Viewer:
    """A viewer shown by :func:`show`: its address, the server behind it, and its events.

    The viewer posts events (a selection, a hover, ...) to the server; each is a dict with
    at least ``"type"`` and ``"viewerId"``. :meth:`on` runs a function on each event as it
    arrives, :attr:`events` lists the latest ones.
    """

    def __init__(self, server: Server, url: str, html: str, viewer_id: str) -> None:
        #: the server serving the data and the viewer
        self.server = server
        #: the address the iframe opens (through the proxy, when one was given)
        self.url = url
        #: the ``<iframe>`` element displayed in the notebook
        self.html = html
        #: the id in :attr:`url`, which the viewer's events name
        self.viewer_id = viewer_id
        self._shown = True  # counted in _SHOWN until stopped

    def on(self, type: str, callback: Callable[[dict[str, Any]], object]) -> None:
        """Call ``callback(event)`` for every event of ``type`` the viewer posts.

        ``type="*"`` means every event. The callback runs in the server's thread that
        received the event; an exception in it is logged and answered with an error.
        """
        self.server.events.inbox(self.viewer_id).on(type, callback)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The latest events the viewer posted, oldest first (the last 1000)."""
        return self.server.events.inbox(self.viewer_id).events

    def stop(self) -> None:
        """Stop the server; the iframe stops updating. Stopping again does nothing."""
        if self._shown:
            self._shown = False
            _SHOWN.subtract([self.server.root])
        self.server.stop()

    def __repr__(self) -> str:
        return f"<cellucid viewer at {self.url}>"


def show(
    data: AnnData | str | os.PathLike[str],
    *,
    height: int = 600,
    proxy_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    allowed_hosts: Sequence[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    viewer_url: str | None = None,
    viewer_cache: str | os.PathLike[str] | None = None,
    **export_kwargs: Any,
) -> Viewer:
    """Show an AnnData or an export in the Cellucid viewer, inside a notebook.

    Starts a server in a background thread (see :func:`serve`) and displays the viewer in
    an ``<iframe>`` below the cell; outside a notebook it prints the address to open. An
    AnnData is first exported with :func:`export` into a cache folder named by a hash of
    its contents and the export keywords, so showing the same object again reuses that
    export.

    Parameters
    ----------
    data
        An AnnData, an export folder, or an exports root with ``datasets.json``.
    height
        Height of the iframe in pixels.
    proxy_url
        The address under which the browser reaches the server when the kernel runs
        elsewhere (JupyterHub, a remote server, Colab), e.g.
        ``"https://hub.example.org/user/me/proxy/{port}/"`` with jupyter-server-proxy;
        ``{port}`` is replaced by the server's port. Its host name is allowed in the
        server's ``Host`` check. By default the iframe opens ``http://127.0.0.1:<port>/``,
        which is the browser's own machine: right only when the kernel runs there too
        (or through an SSH tunnel on the same port).
    host
        The interface to bind, as in :func:`serve`.
    port
        The port; 0 (the default) picks a free one. Fix it to tunnel it with ``ssh -L``.
    allowed_hosts
        More host names the server answers to, as in :func:`serve`.
    cache_dir
        Where exports of AnnData objects are kept; ``$CELLUCID_CACHE_DIR/exports``, else
        ``~/.cache/cellucid/exports``. Deleting it is safe.
    viewer_url, viewer_cache
        The hosted viewer and the local viewer cache, as in :func:`serve`.
    **export_kwargs
        Keywords of :func:`export` (``obs_keys``, ``var_names``, ``var_quantization``, ...)
        for an AnnData.

    Returns
    -------
    The shown :class:`Viewer`: its ``url``, the ``html`` of the iframe and ``stop()``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> viewer = cl.ex.show(adata)  # doctest: +SKIP
    >>> viewer.stop()  # doctest: +SKIP

    """
    if isinstance(data, str | os.PathLike):
        if export_kwargs:
            msg = f"Export keywords {sorted(export_kwargs)} apply to an AnnData, not to an export folder."
            raise TypeError(msg)
        path = Path(data)
    else:
        path = _cached_export(data, cache_dir, export_kwargs)
    allowed = list(allowed_hosts)
    if proxy_url is not None:
        from urllib.parse import urlsplit

        proxy_host = urlsplit(proxy_url.replace("{port}", "0")).hostname
        if proxy_host:
            allowed.append(proxy_host)
    server = Server(
        path,
        host=host,
        port=port,
        allowed_hosts=allowed,
        viewer_url=viewer_url,
        viewer_cache=viewer_cache,
    ).start()
    base = proxy_url.replace("{port}", str(server.port)) if proxy_url else server.url
    if not base.endswith("/"):
        base += "/"
    # the only query keys the viewer accepts in a notebook; its events name both
    viewer_id, token = secrets.token_hex(8), secrets.token_hex(16)
    server.events.register(viewer_id, token)
    url = f"{base}?jupyter=true&viewerId={viewer_id}&viewerToken={token}"
    iframe = (
        f'<iframe src="{html.escape(url)}" width="100%" height="{int(height)}" '
        'style="border: 0" allow="fullscreen; clipboard-write" title="Cellucid viewer"></iframe>'
    )
    if _in_notebook():
        from IPython.display import HTML, display

        display(HTML(iframe))
    else:
        print(f"Cellucid viewer: {url}")
    _SHOWN.update([server.root])  # the cache keeps what this process shows
    return Viewer(server, url, iframe, viewer_id)


def _in_notebook() -> bool:
    """Whether the code runs in a Jupyter kernel (which can display HTML)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _cached_export(
    adata: AnnData, cache_dir: str | os.PathLike[str] | None, kwargs: dict[str, Any]
) -> Path:
    """Export ``adata`` into the cache, or reuse the export of identical content."""
    if "out_dir" in kwargs or "overwrite" in kwargs:
        msg = "show() chooses the export folder itself; pass out_dir and overwrite to export()."
        raise TypeError(msg)
    kwargs.setdefault("dataset_name", f"AnnData ({adata.n_obs:,} cells)")
    folder = Path(cache_dir) if cache_dir is not None else cache_home() / "exports"
    out_dir = folder / content_hash(adata, kwargs)
    if (out_dir / IDENTITY_FILE).is_file():
        logger.info("showing the cached export %s", out_dir)
        with contextlib.suppress(OSError):
            os.utime(out_dir)  # used now: pruned last
        return out_dir
    try:
        export(adata, out_dir, **kwargs)
    except FileExistsError:  # another show() of the same data finished first
        if not (out_dir / IDENTITY_FILE).is_file():
            raise
    prune_cache(folder)
    return out_dir


def prune_cache(folder: Path, *, keep: int | None = None) -> list[Path]:
    """Remove the cached exports of ``folder`` but the ``keep`` last used; return them.

    ``keep`` defaults to :data:`CACHED_EXPORTS_KEPT`.

    Only folders named like a cached export and holding nothing but an export are removed
    (see :func:`~cellucid.ex._publish.remove_export`); none that a viewer of this process
    shows, and none used in the last hour, which another kernel may be showing.
    """
    cached = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if _CACHED_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                cached.append((entry.stat(follow_symlinks=False).st_mtime, Path(entry.path)))
    cached.sort(reverse=True)
    removed = []
    for used, path in cached[CACHED_EXPORTS_KEPT if keep is None else keep :]:
        if time.time() - used < _IN_USE_SECONDS or _SHOWN[path.resolve()] > 0:
            continue
        try:
            remove_export(path)
        except (OSError, ValueError) as e:  # busy, or not only ours: leave it
            logger.debug("kept %s in the cache: %s", path, e)
        else:
            removed.append(path)
    if removed:
        logger.info("removed %d cached exports not shown recently from %s", len(removed), folder)
    return removed


def content_hash(adata: AnnData, export_kwargs: dict[str, Any]) -> str:
    """Return a hash of everything :func:`export` reads from ``adata``, and of its keywords."""
    from .. import __version__

    digest = hashlib.blake2b(digest_size=16)

    def feed(tag: str, value: Any) -> None:
        digest.update(f"\0{tag}\0".encode())
        if value is None:
            digest.update(b"None")
        elif isinstance(value, pd.DataFrame):
            feed(f"{tag}.index", value.index.to_numpy())
            for column in value.columns:
                series = value[column]
                feed(f"{tag}[{column!r}].dtype", str(series.dtype))
                if isinstance(series.dtype, pd.CategoricalDtype):
                    feed(f"{tag}[{column!r}].categories", series.cat.categories.to_numpy())
                    feed(f"{tag}[{column!r}].codes", series.cat.codes.to_numpy())
                else:
                    feed(f"{tag}[{column!r}]", series.to_numpy())
        elif sparse.issparse(value):
            csr = value.tocsr()
            feed(f"{tag}.shape", str(csr.shape))
            for part in (csr.data, csr.indices, csr.indptr):
                feed(tag, part)
        elif isinstance(value, np.ndarray):
            digest.update(f"{value.dtype.str}{value.shape}".encode())
            if value.dtype.hasobject:
                digest.update(pd.util.hash_array(value.ravel()).data)
            else:
                digest.update(np.ascontiguousarray(value).view(np.uint8).data)
        elif hasattr(value, "dask") and hasattr(value, "name"):  # a dask array: its graph's name
            digest.update(str(value.name).encode())
        elif isinstance(value, str | int | float | bool | tuple | list | dict):
            digest.update(repr(value).encode())
        else:  # e.g. a backed matrix: read it
            try:
                loaded = value[:]
            except (TypeError, ValueError, KeyError, IndexError):
                loaded = None
            if isinstance(loaded, np.ndarray) or sparse.issparse(loaded):
                feed(tag, loaded)
            else:
                digest.update(repr(value).encode())

    feed("cellucid", __version__)
    feed("kwargs", sorted((k, repr(v)) for k, v in export_kwargs.items() if k not in _NOT_IN_KEY))
    feed("obs", adata.obs)
    feed("var", adata.var)
    if adata.isbacked:  # the file on disk stands for X
        st = os.stat(adata.filename)
        feed("X", (str(adata.filename), st.st_size, st.st_mtime_ns, adata.shape))
    else:
        feed("X", adata.X)
    for name, mapping in (("layers", adata.layers), ("obsm", adata.obsm), ("obsp", adata.obsp)):
        for key in sorted(mapping.keys()):
            feed(f"{name}[{key!r}]", mapping[key])
    if adata.raw is not None:
        feed("raw.var", adata.raw.var)
        feed("raw.X", adata.raw.X)
    neighbors = adata.uns.get("neighbors")
    feed(
        "neighbors",
        repr(neighbors.get("connectivities_key")) if hasattr(neighbors, "get") else None,
    )
    return digest.hexdigest()
