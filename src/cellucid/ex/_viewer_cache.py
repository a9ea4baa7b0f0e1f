"""A local copy of the hosted viewer's files, so that the server can serve the viewer UI itself.

The viewer refuses an ``http://`` data server from its ``https://`` page, so the local server
serves the viewer from its own origin. Its files come from the hosted site's inventory
(``cellucid-web-assets.json``: path, size, sha256 and content type of every asset); each is
checked for size and sha256, the set is staged in a new folder, and a small pointer file
is replaced atomically to make it the current one. A server reads only the current build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ._declared import canonical, open_beneath

logger = logging.getLogger("cellucid")

#: where the viewer is hosted
DEFAULT_VIEWER_URL = "https://www.cellucid.com"
INVENTORY_FILE = "cellucid-web-assets.json"
_POINTER = "current.json"
_BUILD_DIR = re.compile(r"^build-[0-9a-f]{12}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_TYPE = re.compile(r"^[a-z]+/[a-z0-9.+-]+(?:; ?charset=[A-Za-z0-9_-]+)?$")
#: the largest asset and the largest viewer accepted (a hostile inventory cannot fill the disk)
_MAX_ASSET_BYTES = 64 * 2**20
_MAX_TOTAL_BYTES = 512 * 2**20
_MAX_INVENTORY_BYTES = 4 * 2**20


class ViewerUnavailableError(RuntimeError):
    """The hosted viewer could not be downloaded (offline, or its files did not verify)."""


def cache_home() -> Path:
    """Return cellucid's cache folder: ``$CELLUCID_CACHE_DIR``, else the user's cache folder."""
    env = os.environ.get("CELLUCID_CACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "cellucid"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cellucid"


def default_viewer_url() -> str:
    """Return ``$CELLUCID_VIEWER_URL``, else the hosted viewer's address."""
    return os.environ.get("CELLUCID_VIEWER_URL") or DEFAULT_VIEWER_URL


def offline() -> bool:
    """Whether ``$CELLUCID_OFFLINE`` forbids downloading the viewer."""
    return os.environ.get("CELLUCID_OFFLINE", "") not in ("", "0")


@dataclass(frozen=True)
class Asset:
    """One file of the viewer: where it goes, its size, sha256 and content type."""

    path: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class ViewerBuild:
    """A verified build of the viewer in the cache: its folder and its assets by path."""

    folder: Path
    build_id: str
    viewer_url: str
    assets: dict[str, Asset]

    def open(self, path: str) -> tuple[BinaryIO, Asset] | None:
        """Open the asset at ``path`` (``index.html``, ``assets/...``); None when unknown."""
        asset = self.assets.get(path)
        if asset is None:
            return None
        try:
            return open_beneath(self.folder, path), asset
        except FileNotFoundError:
            return None


def parse_inventory(document: Any) -> tuple[str, list[Asset]]:
    """Check an asset inventory; return its build id and assets, or raise a clear error."""
    if not (
        isinstance(document, dict)
        and document.get("version") == 1
        and isinstance(document.get("build_id"), str)
        and isinstance(document.get("assets"), list)
    ):
        msg = f"{INVENTORY_FILE} is not a version 1 inventory with a build_id and assets."
        raise ViewerUnavailableError(msg)
    assets, total = [], 0
    for item in document["assets"]:
        if not isinstance(item, dict):
            msg = f"{INVENTORY_FILE} lists an asset that is not an object: {item!r:.80}."
            raise ViewerUnavailableError(msg)
        path, size, sha = item.get("path"), item.get("bytes"), item.get("sha256")
        if not (canonical(path) and (path == "index.html" or path.startswith("assets/"))):
            continue  # the server only ever serves /, /index.html and /assets/...
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _MAX_ASSET_BYTES:
            msg = f"{INVENTORY_FILE}: asset {path!r} has an invalid size {size!r}."
            raise ViewerUnavailableError(msg)
        if not isinstance(sha, str) or not _SHA256.match(sha):
            msg = f"{INVENTORY_FILE}: asset {path!r} has an invalid sha256 {sha!r:.80}."
            raise ViewerUnavailableError(msg)
        content_type = item.get("content_type")
        if not (isinstance(content_type, str) and _CONTENT_TYPE.match(content_type)):
            content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        total += size
        assets.append(Asset(path, size, sha, content_type))
    paths = [a.path for a in assets]
    if "index.html" not in paths or len(set(paths)) != len(paths) or total > _MAX_TOTAL_BYTES:
        msg = f"{INVENTORY_FILE} must list index.html once, each asset once, at most {_MAX_TOTAL_BYTES // 2**20} MiB."
        raise ViewerUnavailableError(msg)
    return document["build_id"], assets


def load_viewer(cache_dir: str | os.PathLike[str] | None = None) -> ViewerBuild | None:
    """Return the current verified viewer build of the cache, or None when there is none."""
    cache = Path(cache_dir) if cache_dir is not None else cache_home() / "viewer"
    try:
        pointer = json.loads((cache / _POINTER).read_text(encoding="utf-8"))
        build = pointer["build"]
        if not (isinstance(build, str) and _BUILD_DIR.match(build)):
            return None
        folder = cache / build
        with open_beneath(folder, INVENTORY_FILE) as f:
            build_id, assets = parse_inventory(json.loads(f.read(_MAX_INVENTORY_BYTES)))
        for asset in assets:  # a damaged cache is no cache: size and sha256 again
            with open_beneath(folder, asset.path) as f:
                if _sha256(f, asset.size + 1) != (asset.size, asset.sha256):
                    logger.warning("the viewer cache in %s is damaged (%s)", cache, asset.path)
                    return None
    except (OSError, ValueError, KeyError, TypeError, ViewerUnavailableError):
        return None
    return ViewerBuild(
        folder, build_id, str(pointer.get("viewer_url", "")), {a.path: a for a in assets}
    )


def update_viewer(
    *,
    viewer_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the hosted viewer's files into the local cache (when they changed).

    The server serves the viewer from this cache, so that it works offline and from the
    server's own ``http://`` address. Every file is checked against the size and sha256
    the hosted site's inventory lists; the new files are staged in a new folder and made
    current in one atomic step, so a failed or interrupted update leaves the previous
    cache in use. ``cellucid serve --update-viewer`` does the same from a shell.

    Parameters
    ----------
    viewer_url
        Address of the hosted viewer; ``$CELLUCID_VIEWER_URL``, else
        ``https://www.cellucid.com``.
    cache_dir
        The cache folder; ``$CELLUCID_CACHE_DIR/viewer``, else ``~/.cache/cellucid/viewer``.
    timeout
        Seconds to wait for each download.

    Returns
    -------
    The folder holding the current viewer build.

    Examples
    --------
    >>> import cellucid as cl
    >>> cl.ex.update_viewer()  # doctest: +SKIP
    PosixPath('/home/me/.cache/cellucid/viewer/build-3f2a9c0e41d7')

    """
    base = (viewer_url or default_viewer_url()).rstrip("/")
    cache = Path(cache_dir) if cache_dir is not None else cache_home() / "viewer"
    raw = _download(f"{base}/{INVENTORY_FILE}", _MAX_INVENTORY_BYTES, timeout)
    try:
        if len(raw) > _MAX_INVENTORY_BYTES:
            raise ValueError
        document = json.loads(raw)
    except ValueError:
        msg = f"{base}/{INVENTORY_FILE} is not JSON; is {base} a Cellucid viewer site?"
        raise ViewerUnavailableError(msg) from None
    build_id, assets = parse_inventory(document)
    current = load_viewer(cache)
    if current is not None and current.build_id == build_id and current.viewer_url == base:
        logger.info("the viewer cache in %s is up to date (build %s)", cache, build_id)
        return current.folder

    cache.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    stage = cache / f".staging-{token}"
    try:
        for asset in assets:
            data = _download(f"{base}/{asset.path}", asset.size, timeout)
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != asset.size or digest != asset.sha256:
                msg = (
                    f"{base}/{asset.path} has {len(data)} bytes and sha256 {digest}; the inventory "
                    f"lists {asset.size} bytes and {asset.sha256}. The cache was left unchanged."
                )
                raise ViewerUnavailableError(msg)
            target = stage.joinpath(*asset.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (stage / INVENTORY_FILE).write_bytes(raw)
        folder = cache / f"build-{token}"
        os.replace(stage, folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    previous = current.folder.name if current is not None else None
    pointer = {"build": folder.name, "build_id": build_id, "viewer_url": base}
    tmp = cache / f".{_POINTER}.{token}"
    tmp.write_text(json.dumps(pointer), encoding="utf-8")
    os.replace(tmp, cache / _POINTER)
    # keep the previous build for servers still running on it; older ones go
    for old in cache.iterdir():
        if _BUILD_DIR.match(old.name) and old.name not in (folder.name, previous):
            shutil.rmtree(old, ignore_errors=True)
    logger.info("cached viewer build %s from %s in %s", build_id, base, folder)
    return folder


def prepare_viewer(
    viewer_url: str | None, cache_dir: str | os.PathLike[str] | None, *, update: bool
) -> tuple[ViewerBuild | None, str | None]:
    """Return the viewer build to serve and, when there is none, why.

    Downloads the viewer when ``update`` is true or the cache is empty, unless
    ``$CELLUCID_OFFLINE`` is set; a failed download falls back to the cache.
    """
    build = load_viewer(cache_dir)
    if build is not None and not update:
        return build, None
    if offline():
        return build, "CELLUCID_OFFLINE is set, so the viewer was not downloaded"
    try:
        update_viewer(viewer_url=viewer_url, cache_dir=cache_dir)
    except ViewerUnavailableError as e:
        if build is not None:
            logger.warning("could not update the viewer (%s); serving the cached one", e)
        return build, str(e)
    return load_viewer(cache_dir), None


def _download(url: str, limit: int, timeout: float) -> bytes:
    """Return the body of ``url`` (at most ``limit`` + 1 bytes), or raise a clear error."""
    if not url.startswith(("https://", "http://")):
        msg = f"the viewer address must start with https:// or http://, got {url!r}."
        raise ViewerUnavailableError(msg)
    from .. import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"cellucid/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(limit + 1)
    except urllib.error.HTTPError as e:
        msg = f"{url} answered HTTP {e.code}"
        raise ViewerUnavailableError(msg) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        msg = f"could not reach {url} ({reason})"
        raise ViewerUnavailableError(msg) from None


def _sha256(f: BinaryIO, limit: int) -> tuple[int, str]:
    """Return the size and sha256 of the first ``limit`` bytes of ``f``."""
    digest, size = hashlib.sha256(), 0
    while size < limit:
        block = f.read(min(2**20, limit - size))
        if not block:
            break
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()
