"""Where an export's files go: a local folder, or a prefix in any store fsspec reaches.

A :class:`Destination` names one folder (a local path, or ``s3://``, ``gs://``, ``az://``,
``memory://`` ... with ``storage_options``) and writes files under it by relative POSIX
path. It is small and picklable (it holds the URL and the options; the fsspec filesystem is
made again where it is unpickled), so dask workers can write payloads to the same place as
the client::

    dest = Destination.from_target("s3://bucket/exports/pbmc", {"anon": False})
    with dest.open_write("var/0.values.u8.gz") as f:
        f.write(payload)

For an export, the destination of the dataset's files is the local staging folder (a local
``out_dir``: ``Destination.from_target(stage)`` inside ``staged()``), or the fresh version
prefix the export publishes (an object store: ``CloudExport.version_dest``, see
:mod:`cellucid.ex._cloud`). Payloads written there by anyone (the client, or dask workers
given the pickled destination) are published with the rest, as long as they are written
before the client writes the manifests and ``dataset_identity.json``.

Writing is all-or-nothing per file: a local file is written to a temporary name beside it
and renamed; an object is spooled locally and sent in one upload (``put_file``), so an
error or a kill inside ``open_write`` never leaves a partial object. Object stores have no
rename nor folders: publishing several files so that readers never see half of them is
:mod:`cellucid.ex._cloud`'s job, not this module's.

fsspec is imported only for URLs (the optional ``cellucid[cloud]`` extra); a ``file://``
URL is a local path. A missing protocol package (s3fs, gcsfs, adlfs) is one clear
:class:`ImportError` saying which package to install.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
import uuid
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
    """A folder to write files to: a local path, or a prefix in an object store.

    Make one with :meth:`from_target`. Paths given to the methods are relative POSIX paths
    under the folder (``"var/0.values.u8"``); ``""`` is the folder itself.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url.rstrip("/") if is_url(url) else url
        self.storage_options = dict(storage_options or {})
        self._local = local_path(url)
        self._fs: Any = None
        self._root = ""
        if self._local is None:  # fail at once (missing package, bad options), not in a worker
            self._fs, self._root = filesystem(self.url, self.storage_options)

    @classmethod
    def from_target(
        cls,
        out_dir: str | os.PathLike[str],
        storage_options: Mapping[str, Any] | None = None,
    ) -> Destination:
        """Return the destination of ``out_dir``: a local path or ``file://`` URL, or a store's URL."""
        refuse_local_options(out_dir, storage_options)
        return cls(os.fspath(out_dir), storage_options)

    def __getstate__(self) -> dict:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], state["storage_options"])

    def __repr__(self) -> str:
        return f"Destination({self.url!r})"

    @property
    def is_local(self) -> bool:
        """Whether files go to the local file system (renames are atomic there)."""
        return self._local is not None

    @property
    def path(self) -> Path:
        """The local folder (local destinations only)."""
        if self._local is None:
            msg = f"{self.url} is not a local folder."
            raise ValueError(msg)
        return self._local

    def child(self, relpath: str) -> Destination:
        """Return the destination of the sub-folder ``relpath``."""
        _check_rel(relpath)
        if self._local is not None:
            return Destination(os.fspath(self._local / relpath))
        return Destination(f"{self.url}/{relpath}", self.storage_options)

    def _full(self, relpath: str) -> str:
        _check_rel(relpath)
        if self._local is not None:
            return os.fspath(self._local / relpath) if relpath else os.fspath(self._local)
        return posixpath.join(self._root, relpath) if relpath else self._root

    @contextmanager
    def open_write(self, relpath: str) -> Iterator[BinaryIO]:
        """Yield a binary file; ``relpath`` appears, whole, only when the block ends without error.

        Local: written to ``.<name>.tmp-<token>`` in the same folder, then renamed over
        ``relpath``. Object store: spooled locally, then one upload.
        """
        full = self._full(relpath)
        if self._local is not None:
            target = Path(full)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
            try:
                with open(tmp, "wb") as f:
                    yield f
                os.replace(tmp, target)
            finally:
                with suppress(FileNotFoundError):
                    tmp.unlink()
            return
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            yield spool
            spool.flush()
            spool.seek(0)
            with self._fs.open(full, "wb") as out:
                shutil.copyfileobj(spool, out, _COPY_CHUNK)

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write ``data`` to ``relpath`` as :meth:`open_write` does."""
        with self.open_write(relpath) as f:
            f.write(data)

    def put(self, local: str | os.PathLike[str], relpath: str) -> None:
        """Copy the local file ``local`` to ``relpath`` (one upload for an object store)."""
        if self._local is not None:
            with open(local, "rb") as src, self.open_write(relpath) as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
            return
        self._fs.put_file(os.fspath(local), self._full(relpath))

    def exists(self, relpath: str = "") -> bool:
        """Whether ``relpath`` is a file or a non-empty folder (an object store has no empty ones)."""
        if self._local is not None:
            return os.path.lexists(self._full(relpath))
        self._fs.invalidate_cache(self._full(relpath))
        return bool(self._fs.exists(self._full(relpath)))

    def listdir(self, relpath: str = "") -> list[str]:
        """Return the names directly under ``relpath``, sorted (``[]`` when there is nothing)."""
        full = self._full(relpath)
        if self._local is not None:
            try:
                return sorted(os.listdir(full))
            except (FileNotFoundError, NotADirectoryError):
                return []
        self._fs.invalidate_cache(full)
        try:
            entries = self._fs.ls(full, detail=False)
        except FileNotFoundError:
            return []
        return sorted({posixpath.basename(e.rstrip("/")) for e in entries if e.rstrip("/") != full})

    def files(self, relpath: str = "") -> dict[str, int]:
        """Return every file under ``relpath`` (recursively) as relative path -> size in bytes."""
        full = self._full(relpath)
        if self._local is not None:
            found = {}
            for dirpath, _, filenames in os.walk(full):
                for fname in filenames:
                    p = os.path.join(dirpath, fname)
                    if not os.path.islink(p):
                        found[Path(os.path.relpath(p, full)).as_posix()] = os.path.getsize(p)
            return dict(sorted(found.items()))
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
        if self._local is not None:
            return os.path.getsize(self._full(relpath))
        return int(self._fs.size(self._full(relpath)))

    def read_bytes(self, relpath: str, *, limit: int | None = None) -> bytes:
        """Return the bytes of ``relpath``; with ``limit``, at most ``limit + 1`` of them are read."""
        with self.open_read(relpath) as f:
            return f.read() if limit is None else f.read(limit + 1)

    def open_read(self, relpath: str) -> BinaryIO:
        """Open ``relpath`` for reading (binary)."""
        if self._local is not None:
            return open(self._full(relpath), "rb")
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
        """Remove the file or folder ``relpath`` (recursively); nothing when it does not exist."""
        full = self._full(relpath)
        if self._local is not None:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                with suppress(FileNotFoundError):
                    os.unlink(full)
            return
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
