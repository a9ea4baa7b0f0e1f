"""Where an export's files go in an object store: a prefix any fsspec store reaches.

A :class:`Destination` names one prefix (``s3://``, ``gs://``, ``az://``, ``memory://`` ...
with ``storage_options``) and writes files under it by relative POSIX path. It is small
and picklable (it holds the URL and the options; the fsspec filesystem is made again where
it is unpickled), so dask workers write payloads to the same place as the client::

    dest = Destination.from_target("s3://bucket/exports/pbmc", {"anon": False})
    with dest.open_write("var/0.values.u8.gz") as f:
        f.write(payload)

A local ``out_dir`` (a path, or a ``file://`` URL) has no :class:`Destination`: it is
written in a staging folder and swapped in (:mod:`cellucid.ex._publish`). For an object
store, the export's new version prefix (``CloudExport.version_dest``, see
:mod:`cellucid.ex._cloud`) is one: dask workers given it (pickled) write gene payloads
there, and the client uploads the rest beside them before publishing.

Writing is all-or-nothing per object: :meth:`Destination.open_write` spools the bytes
locally and sends them in one upload, :meth:`~Destination.write_bytes` sends its bytes in
one, so an error or a kill never leaves a partial object. Object stores have no rename nor
folders: publishing several files so that readers never see half of them is
:mod:`cellucid.ex._cloud`'s job, not this module's.

fsspec is imported only for URLs (the optional ``cellucid[cloud]`` extra). A missing
protocol package (s3fs, gcsfs, adlfs) is one clear :class:`ImportError` saying which
package to install.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: the package each protocol needs (fsspec names some of them in its own message)
PROTOCOL_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "adl": "adlfs",
}
#: bytes held in memory before an object being written spills to a local temporary file
_SPOOL_BYTES = 8 * 2**20
_COPY_CHUNK = 4 * 2**20


def is_url(target: object) -> bool:
    """Whether ``target`` is a URL (``<scheme>://...``) rather than a local path."""
    return isinstance(target, str) and _URL.match(target) is not None


def local_path(target: str | os.PathLike[str]) -> Path | None:
    """Return the local path ``target`` names (a path, or a ``file://`` URL); None for other URLs."""
    if not is_url(target):
        return Path(target)
    parts = urlsplit(str(target))
    if parts.scheme.lower() != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        msg = f"{target}: a file:// URL names a local path (file:///abs/path); got host {parts.netloc!r}."
        raise ValueError(msg)
    return Path(unquote(parts.path))


def refuse_local_options(target: object, storage_options: Mapping[str, Any] | None) -> None:
    """Refuse ``storage_options`` given with a local path: they would be silently ignored."""
    if storage_options and local_path(target) is not None:
        msg = f"storage_options are for URLs (s3://, gs://, ...); {target} is a local path."
        raise ValueError(msg)


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Return the fsspec filesystem of ``url`` and the path in it (no trailing ``/``).

    Raises an :class:`ImportError` of one line naming the package to install when fsspec
    or the protocol's package is missing, a :class:`ValueError` for an unknown protocol.
    """
    protocol = urlsplit(url).scheme.lower()
    try:
        import fsspec
    except ImportError:
        msg = f"{protocol}:// destinations need fsspec: pip install 'cellucid[cloud]'"
        raise ImportError(msg) from None
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError:
        package = PROTOCOL_PACKAGES.get(protocol, f"the fsspec package for {protocol}://")
        msg = f"{protocol}:// needs {package}: pip install {package}"
        raise ImportError(msg) from None
    except ValueError:
        msg = f"{url}: unknown protocol {protocol}:// (fsspec knows none of that name)."
        raise ValueError(msg) from None
    try:
        fs = cls(**dict(storage_options or {}))
    except TypeError as e:
        msg = f"storage_options for {protocol}://: {e}"
        raise ValueError(msg) from None
    return fs, cls._strip_protocol(url).rstrip("/")


class Destination:
    """A prefix in an object store to write files to (never a local path).

    Make one with :meth:`from_target`. Paths given to the methods are relative POSIX paths
    under the prefix (``"var/0.values.u8"``); ``""`` is the prefix itself.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        if not is_url(url) or local_path(url) is not None:
            msg = (
                f"{url} is a local path: local exports are staged and swapped in, not written here."
            )
            raise ValueError(msg)
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        # made at once (missing package, bad options fail here, not in a worker)
        self._fs, self._root = filesystem(self.url, self.storage_options)

    @classmethod
    def from_target(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> Destination:
        """Return the destination of the store URL ``url`` (refusing options given with a local path)."""
        refuse_local_options(url, storage_options)
        return cls(os.fspath(url), storage_options)

    def __getstate__(self) -> dict:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], state["storage_options"])

    def __repr__(self) -> str:
        return f"Destination({self.url!r})"

    def child(self, relpath: str) -> Destination:
        """Return the destination of the sub-prefix ``relpath``."""
        _check_rel(relpath)
        return Destination(f"{self.url}/{relpath}", self.storage_options)

    def _full(self, relpath: str) -> str:
        _check_rel(relpath)
        return posixpath.join(self._root, relpath) if relpath else self._root

    @contextmanager
    def open_write(self, relpath: str) -> Iterator[BinaryIO]:
        """Yield a binary file; ``relpath`` appears, whole, only when the block ends without error.

        The bytes are spooled locally (in memory up to 8 MiB), then sent in one upload: an
        fsspec file would store what it holds even when the block fails.
        """
        full = self._full(relpath)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            yield spool
            spool.flush()
            spool.seek(0)
            with self._fs.open(full, "wb") as out:
                shutil.copyfileobj(spool, out, _COPY_CHUNK)

    def write_bytes(self, relpath: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` as ``relpath`` in one upload."""
        self._fs.pipe_file(self._full(relpath), bytes(data))

    def put(self, local: str | os.PathLike[str], relpath: str) -> None:
        """Copy the local file ``local`` to ``relpath`` (one upload)."""
        self._fs.put_file(os.fspath(local), self._full(relpath))

    def exists(self, relpath: str = "") -> bool:
        """Whether ``relpath`` is a file or a non-empty folder (an object store has no empty ones)."""
        self._fs.invalidate_cache(self._full(relpath))
        return bool(self._fs.exists(self._full(relpath)))

    def listdir(self, relpath: str = "") -> list[str]:
        """Return the names directly under ``relpath``, sorted (``[]`` when there is nothing)."""
        full = self._full(relpath)
        self._fs.invalidate_cache(full)
        try:
            entries = self._fs.ls(full, detail=False)
        except FileNotFoundError:
            return []
        return sorted({posixpath.basename(e.rstrip("/")) for e in entries if e.rstrip("/") != full})

    def files(self, relpath: str = "") -> dict[str, int]:
        """Return every file under ``relpath`` (recursively) as relative path -> size in bytes."""
        full = self._full(relpath)
        self._fs.invalidate_cache(full)  # s3fs caches listings: others may have written since
        try:
            listed = self._fs.find(full, detail=True)
        except FileNotFoundError:
            return {}
        prefix = full.rstrip("/") + "/"
        return dict(
            sorted(
                (name[len(prefix) :], int(info.get("size") or 0))
                for name, info in listed.items()
                if name.startswith(prefix) and info.get("type", "file") == "file"
            )
        )

    def size(self, relpath: str) -> int:
        """Return the size of file ``relpath`` in bytes."""
        return int(self._fs.size(self._full(relpath)))

    def read_bytes(self, relpath: str, *, limit: int | None = None) -> bytes:
        """Return the bytes of ``relpath``; with ``limit``, at most ``limit + 1`` of them are read."""
        with self.open_read(relpath) as f:
            return f.read() if limit is None else f.read(limit + 1)

    def open_read(self, relpath: str) -> BinaryIO:
        """Open ``relpath`` for reading (binary)."""
        return self._fs.open(self._full(relpath), "rb")

    def get(self, relpath: str, local: str | os.PathLike[str], *, limit: int) -> int:
        """Copy ``relpath`` to the local file ``local``, at most ``limit`` bytes; return the bytes copied."""
        copied = 0
        with self.open_read(relpath) as src, open(local, "wb") as dst:
            while copied < limit:
                block = src.read(min(_COPY_CHUNK, limit - copied))
                if not block:
                    break
                dst.write(block)
                copied += len(block)
        return copied

    def remove(self, relpath: str = "") -> None:
        """Remove the file or prefix ``relpath`` (recursively); nothing when it does not exist."""
        full = self._full(relpath)
        self._fs.invalidate_cache(full)  # a cached listing may not hold what workers wrote
        with suppress(FileNotFoundError):
            if self._fs.isdir(full):
                self._fs.rm(full, recursive=True)
            else:
                self._fs.rm_file(full)


def _check_rel(relpath: str) -> None:
    """Refuse a path that is not relative POSIX inside the folder (no ``..``, no leading ``/``)."""
    if not relpath:
        return
    parts = relpath.split("/")
    if relpath.startswith("/") or "\\" in relpath or any(p in ("", ".", "..") for p in parts):
        msg = f"{relpath!r} is not a relative path inside the destination."
        raise ValueError(msg)
