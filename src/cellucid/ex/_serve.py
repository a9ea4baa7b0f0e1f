"""``cl.ex.serve``: a local HTTP server for export folders and the viewer UI.

Built on the standard library's threading HTTP server. It answers the viewer's
``/_cellucid/*`` endpoints, serves the files the exports declare (byte for byte, ``.gz``
as stored, single ranges), and the viewer's own files from the local viewer cache. It
binds 127.0.0.1 by default, refuses requests whose ``Host`` is not this server (DNS
rebinding) and grants CORS to the viewer's origins only.
"""

from __future__ import annotations

import contextlib
import errno
import html
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .._format import CATALOG_FILE
from ._declared import load_datasets, open_beneath
from ._events import DELIVERED, EVENTS_PATH, MAX_EVENT_BYTES, EventError, EventRouter
from ._viewer_cache import cache_home, prepare_viewer

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

logger = logging.getLogger("cellucid")

DEFAULT_PORT = 8765
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_DELIVERED = json.dumps(DELIVERED).encode()
_ALLOWED_ORIGIN = re.compile(
    r"^(?:https?://(?:localhost|127\.0\.0\.1)(?::\d{1,5})?"
    r"|https://(?:[A-Za-z0-9-]+\.)*cellucid\.com)$"
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: the idle time after which a kept-alive connection is closed
_IDLE_SECONDS = 30


class Server:
    """A cellucid server: the exports it serves, its address, and how to stop it.

    :func:`serve` with ``block=False`` returns one, running; :func:`show` starts one. Use
    it as a context manager, or call :meth:`stop`. The parameters are those of
    :func:`serve`.

    Parameters
    ----------
    path
        An export folder, or an exports root with ``datasets.json``.
    host
        The interface to bind.
    port
        The port; 0 picks a free one.
    allowed_hosts
        More host names (``name`` or ``name:port``) the server answers to.
    viewer_url
        Address of the hosted viewer the viewer cache is filled from.
    viewer_cache
        The viewer cache folder.
    update_viewer
        Refresh the viewer cache first.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        allowed_hosts: Iterable[str] = (),
        viewer_url: str | None = None,
        viewer_cache: str | os.PathLike[str] | None = None,
        update_viewer: bool = False,
    ) -> None:
        # the export and the port first: they fail fast, before any download
        self.datasets = load_datasets(Path(path))
        self.root = self.datasets[0].base
        self._httpd = _HTTPServer(self, host, port)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._allowed_hosts = _host_rules(host, self.port, allowed_hosts)
        self._loop: threading.Thread | None = None
        #: the viewers shown through this server, which post their events to it
        self.events = EventRouter()
        if not (host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)):
            logger.warning(
                "serving on %s: anyone who can reach port %d of this machine can read these "
                "exports (there is no authentication)",
                host or "all interfaces",
                self.port,
            )
        self.viewer_cache = Path(viewer_cache) if viewer_cache else cache_home() / "viewer"
        try:
            self.viewer, self.viewer_problem = prepare_viewer(
                viewer_url, self.viewer_cache, update=update_viewer
            )
        except BaseException:
            self._httpd.server_close()
            raise
        if self.viewer is None:
            logger.warning(
                "the viewer UI is unavailable (%s); run `cellucid serve --update-viewer` once online",
                self.viewer_problem,
            )

    @property
    def url(self) -> str:
        """The address to open in a browser (loopback when bound to all interfaces)."""
        host = self.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> Server:
        """Serve in a daemon thread and return at once."""
        self._loop = threading.Thread(
            target=self._httpd.serve_forever, name=f"cellucid-serve-{self.port}", daemon=True
        )
        self._loop.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (from another thread) or Ctrl-C."""
        self._loop = threading.current_thread()
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._loop = None
            self.stop()

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        loop = self._loop
        if loop is not None and loop.is_alive() and loop is not threading.current_thread():
            self._httpd.shutdown()
            if loop.daemon:
                loop.join()
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<cellucid server at {self.url} ({len(self.datasets)} datasets)>"

    # -- what each path answers --
    def health(self) -> dict[str, Any]:
        """Return the body of ``/_cellucid/health``."""
        from .. import __version__

        return {"status": "ok", "type": "exported", "version": __version__}

    def info(self) -> dict[str, Any]:
        """Return the body of ``/_cellucid/info``."""
        from .. import __version__

        return {"version": __version__, "host": self.host, "port": self.port, "mode": "standalone"}

    def listing(self) -> dict[str, Any]:
        """Return the body of ``/_cellucid/datasets``."""
        datasets = [d.current() for d in self.datasets]
        return {"datasets": [{"id": d.id, "path": d.url_path, "name": d.name} for d in datasets]}

    def _open_file(self, path: str) -> tuple[BinaryIO, str] | None:
        """Open the dataset file at URL ``path``; None unless a dataset declares it."""
        if path == f"/{CATALOG_FILE}" and self.datasets[0].prefix:
            try:
                return open_beneath(self.root, CATALOG_FILE), _JSON
            except FileNotFoundError:
                return None
        for index, dataset in enumerate(self.datasets):
            if not path.startswith(dataset.url_path):
                continue
            dataset = self.datasets[index] = dataset.current()
            relpath = path[len(dataset.url_path) :]
            if relpath not in dataset.files:
                return None
            try:
                file = dataset.open(relpath)
            except FileNotFoundError:
                return None
            return file, _JSON if relpath.endswith(".json") else "application/octet-stream"
        return None

    def _host_allowed(self, value: str | None) -> bool:
        """Whether a request's ``Host`` header names this server (DNS-rebinding check)."""
        if not value:
            return False
        match = re.match(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$", value.strip())
        if match is None:
            return False
        name, port = match[1].lower(), int(match[2]) if match[2] else 80
        name = name[1:-1] if name.startswith("[") else name
        for rule_name, rule_port in self._allowed_hosts:
            if rule_name in (name, "*ip*" if _is_ip(name) else None) and rule_port in (port, None):
                return True
        return False


class _HTTPServer(ThreadingHTTPServer):
    """The threading HTTP server, keeping track of its connections to close them on stop."""

    daemon_threads = True
    request_queue_size = 64  # a browser opens several connections at once

    def __init__(self, app: Server, host: str, port: int) -> None:
        self.app = app
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, 10048):  # 10048: WSAEADDRINUSE
                msg = (
                    f"Port {port} on {host} is already in use (another `cellucid serve`?). "
                    "Pass another port, or port 0 to pick a free one."
                )
            else:
                msg = f"Cannot serve on {host}:{port}: {e.strerror or e}."
            raise OSError(e.errno, msg) from None

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections[request] = threading.current_thread()
        try:
            super().finish_request(request, client_address)
        finally:
            with self._lock:
                self._connections.pop(request, None)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cellucid"
    sys_version = ""
    timeout = _IDLE_SECONDS
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # -- methods --
    def do_GET(self) -> None:
        self._get(head=False)

    def do_HEAD(self) -> None:
        self._get(head=True)

    def do_OPTIONS(self) -> None:
        if self._refuse_host():
            return
        self.send_response(HTTPStatus.NO_CONTENT)
        self._common_headers()
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        if self._refuse_host():
            return
        if self._path() != EVENTS_PATH:
            self.close_connection = True  # the body is not read
            self._text(HTTPStatus.METHOD_NOT_ALLOWED, "Only GET, HEAD and OPTIONS are served.\n")
            return
        try:
            self.server.app.events.deliver(self.headers.get("Content-Type"), self._body())
        except EventError as e:
            self._text(e.status, f"{e}\n")
        else:
            self._send(HTTPStatus.OK, _JSON, _DELIVERED, head=False, cache="no-store")

    def _body(self) -> bytes:
        """Read the request's body: its declared length, at most an event's size."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isascii() or not length.isdigit():
            self.close_connection = True
            raise EventError(HTTPStatus.LENGTH_REQUIRED, "send the event with a Content-Length")
        if int(length) > MAX_EVENT_BYTES:
            self.close_connection = True
            raise EventError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "an event is at most 1 MiB")
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            self.close_connection = True
            raise EventError(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
        return body

    # -- GET and HEAD --
    def _get(self, *, head: bool) -> None:
        if self._refuse_host():
            return
        app = self.server.app
        path = self._path()
        if path is None:
            self._text(HTTPStatus.NOT_FOUND, "Not found.\n", head=head)
        elif path.startswith("/_cellucid/"):
            endpoints = {
                "/_cellucid/health": app.health,
                "/_cellucid/info": app.info,
                "/_cellucid/datasets": app.listing,
            }
            if path in endpoints:
                body = json.dumps(endpoints[path]()).encode()
                self._send(HTTPStatus.OK, _JSON, body, head=head, cache="no-store")
            else:
                self._text(HTTPStatus.NOT_FOUND, "Not found.\n", head=head)
        elif path in ("/", "/index.html") or path.startswith("/assets/"):
            self._viewer(path, head=head)
        else:
            opened = app._open_file(path)
            if opened is None:
                self._text(
                    HTTPStatus.NOT_FOUND,
                    "Not found: only the files an export declares are served.\n",
                    head=head,
                )
            else:
                file, content_type = opened
                cache = "no-cache" if content_type == _JSON else "public, max-age=3600"
                self._send_file(file, content_type, cache, head=head)

    def _viewer(self, path: str, *, head: bool) -> None:
        app = self.server.app
        if app.viewer is None:
            body = _offline_page(app).encode()
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, _HTML, body, head=head, cache="no-store")
            return
        opened = app.viewer.open("index.html" if path in ("/", "/index.html") else path[1:])
        if opened is None:
            self._text(HTTPStatus.NOT_FOUND, "Not found.\n", head=head)
            return
        file, asset = opened
        cache = "no-cache" if asset.path == "index.html" else "public, max-age=3600"
        self._send_file(file, asset.content_type, cache, head=head)

    def _send_file(self, file: BinaryIO, content_type: str, cache: str, *, head: bool) -> None:
        with file:
            size = os.fstat(file.fileno()).st_size
            span = _parse_range(self.headers.get("Range"), size)
            if span == "unsatisfiable":
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self._common_headers()
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Type", _TEXT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = span if span is not None else (0, size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK)
            self._common_headers()
            self.send_header("Content-Type", content_type)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", cache)
            if span is not None:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if not head and end >= start:
                try:
                    self.connection.sendfile(file, start, end - start + 1)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

    # -- helpers --
    def _path(self) -> str | None:
        """Return the request's path if it is canonical (no ``%``, backslash, dot or empty segments)."""
        # the request line as sent: self.path has had a leading "//" collapsed already
        words = self.requestline.split(" ")
        raw = words[1] if len(words) == 3 else self.path
        target = raw.split("?", 1)[0].split("#", 1)[0]
        if not target.startswith("/") or "%" in target or "\\" in target:
            return None
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in target):
            return None
        segments = target[1:].split("/")
        inner = segments[:-1] if segments[-1] == "" else segments  # "/dir/" ends in ""
        if any(s in ("", ".", "..") or s.startswith(".") for s in inner):
            return None
        return target

    def _refuse_host(self) -> bool:
        if self.server.app._host_allowed(self.headers.get("Host")):
            return False
        self.close_connection = True
        self._text(
            HTTPStatus.MISDIRECTED_REQUEST,
            "This cellucid server answers only requests addressed to itself (Host check); "
            "open it as http://127.0.0.1:<port>/ or start it with --allow-host NAME.\n",
            head=self.command == "HEAD",
        )
        return True

    def _common_headers(self) -> None:
        origin = self.headers.get("Origin")
        if origin and _ALLOWED_ORIGIN.match(origin):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Content-Type, Range")
            self.send_header("Access-Control-Expose-Headers", "Content-Length, Content-Range")
        self.send_header("Vary", "Origin")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")

    def _send(
        self, status: HTTPStatus, content_type: str, body: bytes, *, head: bool, cache: str
    ) -> None:
        self.send_response(status)
        self._common_headers()
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _text(self, status: HTTPStatus, message: str, *, head: bool = False) -> None:
        self._send(status, _TEXT, message.encode(), head=head, cache="no-store")


def _parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """Return the ``(first, last)`` byte of a single range, ``"unsatisfiable"`` or None (whole file).

    A header that is not one well-formed byte range (several ranges, another unit) is
    ignored, as HTTP allows: the whole file is sent.
    """
    match = _RANGE.match(value.strip()) if value else None
    if match is None or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        if match[2] and int(match[2]) < start:
            return None  # malformed
        if start >= size:
            return "unsatisfiable"
        return start, min(int(match[2]) if match[2] else size - 1, size - 1)
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        return "unsatisfiable"
    return max(0, size - suffix), size - 1


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _host_rules(host: str, port: int, allowed: Iterable[str]) -> list[tuple[str, int | None]]:
    """Return the ``(name, port)`` pairs a ``Host`` header may hold; port None: any port.

    Loopback names and IP literals (which DNS rebinding cannot use) on the bound port,
    the bound name, and the explicitly allowed host names (``name`` or ``name:port``).
    """
    rules: list[tuple[str, int | None]] = [("localhost", port), ("*ip*", port)]
    if host and not _is_ip(host):
        rules.append((host.lower(), port))
    for item in allowed:
        name, _, item_port = item.strip().lower().rpartition(":")
        if not name or not item_port.isdigit():
            name, item_port = item.strip().lower(), ""
        if name:
            rules.append((name.strip("[]"), int(item_port) if item_port else None))
    return rules


def _offline_page(app: Server) -> str:
    """Return the 503 page of ``/`` when no viewer is cached and it could not be downloaded."""
    reason = html.escape(app.viewer_problem or "no viewer is cached")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cellucid viewer unavailable</title></head>
<body style="font-family: sans-serif; max-width: 44em; margin: 3em auto; line-height: 1.5">
<h1>The Cellucid viewer is not available offline yet</h1>
<p>This server is running and serves your data
(<a href="/_cellucid/datasets">/_cellucid/datasets</a>), but the viewer's own files are
not in its cache, and downloading them failed: {reason}.</p>
<p>To fix it, do one of:</p>
<ul>
<li>connect this machine to the internet once and run
<code>cellucid serve --update-viewer</code> (or <code>cl.ex.update_viewer()</code>);</li>
<li>copy a filled viewer cache folder from another machine to
<code>{html.escape(str(app.viewer_cache))}</code>, or pass one with
<code>--viewer-cache</code> / <code>viewer_cache=</code>.</li>
</ul>
<p>Then restart the server and reload this page.</p>
</body></html>
"""


def serve(
    path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    allowed_hosts: Sequence[str] = (),
    viewer_url: str | None = None,
    viewer_cache: str | os.PathLike[str] | None = None,
    update_viewer: bool = False,
    block: bool = True,
) -> Server | None:
    """Serve an export folder (or an exports root) to the Cellucid viewer.

    Opens ``http://127.0.0.1:<port>/``: the viewer UI, served from this machine, loading
    your data from the same server. The server answers the viewer's ``/_cellucid/health``,
    ``/_cellucid/info`` and ``/_cellucid/datasets`` endpoints and serves only the files the
    export's manifests declare, byte for byte. ``cellucid serve PATH`` does the same from
    a shell.

    The viewer's own files come from a local cache (see :func:`update_viewer`), filled from
    the hosted viewer the first time; offline with an empty cache, ``/`` explains what to do.

    Parameters
    ----------
    path
        An export folder (with ``dataset_identity.json``), or an exports root whose
        ``datasets.json`` lists dataset folders.
    host
        The interface to bind. The default, 127.0.0.1, is reachable from this machine only;
        ``"0.0.0.0"`` exposes the data to everyone on the network, without authentication.
    port
        The port; 0 picks a free one. A port in use is an error (use another one).
    open_browser
        Open the address in the default web browser.
    allowed_hosts
        Host names (``name`` or ``name:port``) besides localhost and IP addresses the
        server answers to, e.g. a proxy's or this machine's name when ``host`` is not
        127.0.0.1. Requests addressed to any other name are refused (DNS rebinding).
    viewer_url
        Address of the hosted viewer the cache is filled from; ``$CELLUCID_VIEWER_URL``,
        else ``https://www.cellucid.com``.
    viewer_cache
        The viewer cache folder; ``$CELLUCID_CACHE_DIR/viewer``, else
        ``~/.cache/cellucid/viewer``.
    update_viewer
        Refresh the viewer cache before serving (it is filled anyway when empty).
        ``$CELLUCID_OFFLINE=1`` forbids any download.
    block
        Serve until Ctrl-C. With ``False``, serve in a background thread and return the
        :class:`Server`.

    Returns
    -------
    None when ``block``, else the running :class:`Server` (call its
    :meth:`~Server.stop`).

    Examples
    --------
    >>> import cellucid as cl
    >>> cl.ex.serve("exports/pbmc")  # doctest: +SKIP
    Serving 1 dataset from exports/pbmc
    Open http://127.0.0.1:8765/ (Ctrl-C to stop)

    """
    server = Server(
        path,
        host=host,
        port=port,
        allowed_hosts=allowed_hosts,
        viewer_url=viewer_url,
        viewer_cache=viewer_cache,
        update_viewer=update_viewer,
    )
    n = len(server.datasets)
    if not block:
        return server.start()
    print(f"Serving {n} dataset{'s' if n != 1 else ''} from {path}")
    print(f"Open {server.url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(server.url,)).start()
    server.serve_forever()
    return None
