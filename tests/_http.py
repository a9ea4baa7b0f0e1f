"""HTTP helpers for the server tests: raw requests on 127.0.0.1 and a fake hosted viewer site."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple


class Response(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str | None = "default",
    body: bytes | None = None,
) -> Response:
    """Send one request exactly as given (path not normalized; ``host=None`` sends no Host)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host == "default":
            host = f"127.0.0.1:{port}"
        if host is not None:
            conn.putheader("Host", host)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        conn.close()


def get_json(port: int, path: str) -> object:
    response = request(port, path)
    assert response.status == 200, response
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.body)


class FakeViewerSite:
    """A stand-in for the hosted viewer on 127.0.0.1: serves files and their inventory.

    ``files`` maps asset paths to their bytes; ``inventory`` may be edited before a
    download (to list a wrong sha256, say). ``requests`` lists the paths requested.
    """

    def __init__(self, files: dict[str, bytes], build_id: str = "build-1") -> None:
        self.files = dict(files)
        self.requests: list[str] = []
        self.inventory = {
            "version": 1,
            "build_id": build_id,
            "assets": [
                {
                    "path": path,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data),
                    "content_type": "text/html; charset=utf-8"
                    if path.endswith(".html")
                    else "text/javascript",
                }
                for path, data in files.items()
            ],
        }
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                site.requests.append(path)
                if path == "cellucid-web-assets.json":
                    data = json.dumps(site.inventory).encode()
                elif path in site.files:
                    data = site.files[path]
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def closed_port_url() -> str:
    """An http:// address on 127.0.0.1 where nothing listens (an offline hosted site)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
