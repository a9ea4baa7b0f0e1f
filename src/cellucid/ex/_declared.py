"""The files an export declares, and opening them without following a symlink.

The server treats every export as hostile: it serves only the JSON documents and the
payloads their manifests name, each under one canonical path, and opens them one folder
at a time so that no symlink (planted before or during serving) leads out of the export.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .._format import (
    CATALOG_FILE,
    CONNECTIVITY_MANIFEST,
    EXT,
    ID_MAX_LENGTH,
    ID_PATTERN,
    IDENTITY_FILE,
    MAX_JSON_BYTES,
    OBS_MANIFEST,
    VAR_MANIFEST,
)
from .._layout import Layout, detect_layout, layout

#: one path segment the viewer can request unescaped: encodeURIComponent's own characters,
#: not starting with a dot (no ".", "..", nor hidden files such as staging folders)
_SEGMENT = re.compile(r"^[A-Za-z0-9_~!*'()-][A-Za-z0-9._~!*'()-]*$")
#: a dataset folder of an exports root, as the viewer accepts it in /_cellucid/datasets
_DATASET_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,179}$")
_JSON_DOCUMENTS = (IDENTITY_FILE, OBS_MANIFEST, VAR_MANIFEST, CONNECTIVITY_MANIFEST)


class ExportError(ValueError):
    """An export (or exports root) that cannot be served, with a one-line reason."""


def canonical(relpath: object) -> bool:
    """Whether ``relpath`` is a relative path of canonical, URL-safe segments."""
    return isinstance(relpath, str) and all(_SEGMENT.match(p) for p in relpath.split("/"))


def open_beneath(root: Path, relpath: str) -> BinaryIO:
    """Open the regular file ``root/relpath`` for reading, following no symlink on the way.

    Raises :class:`FileNotFoundError` when a part of the path is missing, a symlink, or not
    a folder / regular file (a FIFO or device is refused without blocking on it).
    """
    if not canonical(relpath):
        raise FileNotFoundError(relpath)
    parts = relpath.split("/")
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    flags = os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        if os.open in os.supports_dir_fd and nofollow:
            directory = getattr(os, "O_DIRECTORY", 0)
            dir_fd = os.open(root, os.O_RDONLY | directory)
            try:
                for part in parts[:-1]:
                    inner = os.open(part, os.O_RDONLY | directory | nofollow, dir_fd=dir_fd)
                    os.close(dir_fd)
                    dir_fd = inner
                fd = os.open(parts[-1], flags, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        else:  # no openat (Windows): check each part, then open
            path = root
            for part in parts:
                path = path / part
                if path.is_symlink():
                    raise FileNotFoundError(relpath)
            fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise FileNotFoundError(relpath) from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(relpath)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def load_json(root: Path, relpath: str) -> Any:
    """Parse the JSON document ``root/relpath`` (at most the format's 64 MiB)."""
    with open_beneath(root, relpath) as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        msg = f"{relpath} is larger than the {MAX_JSON_BYTES // 2**20} MiB the viewer reads."
        raise ExportError(msg)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        msg = f"{relpath} is not valid JSON ({e}); re-export the dataset."
        raise ExportError(msg) from None


def _signature(base: Path, prefix: str) -> tuple | None:
    """Return what changes when the export is written again (its identity file is replaced)."""
    try:
        with open_beneath(base, prefix + IDENTITY_FILE) as f:
            st = os.fstat(f.fileno())
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class Dataset:
    """One served export: where it is, its URL path and the files it declares.

    Files are opened from ``base`` (the resolved served folder) through ``prefix`` (the
    dataset's sub-folder of an exports root, or ``""``), so not even the dataset folder
    itself may be a symlink.
    """

    base: Path
    prefix: str
    id: str
    name: str
    files: frozenset[str]
    signature: tuple | None

    @property
    def url_path(self) -> str:
        """The dataset's path in ``/_cellucid/datasets``: ``/`` or ``/<folder>/``."""
        return f"/{self.prefix}"

    @classmethod
    def load(cls, base: Path, prefix: str = "") -> Dataset:
        """Read the export at ``base/prefix`` and collect its declared files."""
        where = base / prefix / IDENTITY_FILE
        try:
            identity = load_json(base, prefix + IDENTITY_FILE)
        except FileNotFoundError:
            msg = f"{where} is missing (or a symlink): {base / prefix} is not a Cellucid export."
            raise ExportError(msg) from None
        if not isinstance(identity, dict):
            msg = f"{where} is not a JSON object; re-export the dataset."
            raise ExportError(msg)
        dataset_id, name = identity.get("id"), identity.get("name")
        if not (
            isinstance(dataset_id, str)
            and ID_PATTERN.match(dataset_id)
            and len(dataset_id) <= ID_MAX_LENGTH
        ):
            msg = f"{where} has an invalid id {dataset_id!r}; re-export the dataset."
            raise ExportError(msg)
        if not isinstance(name, str) or not name.strip():
            msg = f"{where} has no name; re-export the dataset."
            raise ExportError(msg)
        files = declared_files(base, prefix, identity)
        return cls(base, prefix, dataset_id, name, frozenset(files), _signature(base, prefix))

    def current(self) -> Dataset:
        """Return this dataset, re-read when its export was written again meanwhile."""
        if _signature(self.base, self.prefix) == self.signature:
            return self
        try:
            return Dataset.load(self.base, self.prefix)
        except (ExportError, OSError):
            return self  # mid-rewrite: keep the last good declaration

    def open(self, relpath: str) -> BinaryIO:
        """Open one of the dataset's files (``relpath`` relative to the dataset folder)."""
        return open_beneath(self.base, self.prefix + relpath)


def declared_files(base: Path, prefix: str, identity: dict) -> set[str]:
    """Return the relative paths of the JSON documents and payloads the export declares.

    Only files present on disk as regular files are kept; a declared path that is not
    canonical (``..``, ``%``, a backslash, empty or dot segments) is dropped.
    """
    manifests = {}
    for name in (OBS_MANIFEST, VAR_MANIFEST, CONNECTIVITY_MANIFEST):
        try:
            manifests[name] = load_json(base, prefix + name)
        except FileNotFoundError:
            manifests[name] = None
    obs, var, conn = (manifests[n] for n in (OBS_MANIFEST, VAR_MANIFEST, CONNECTIVITY_MANIFEST))
    try:
        lay = layout(detect_layout(identity, obs, var, conn))
        paths = list(_payload_paths(identity, obs, var, conn, lay))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        msg = f"{base / prefix} has manifests the server cannot read ({e}); run `cellucid validate` on it."
        raise ExportError(msg) from None
    paths += [name for name in _JSON_DOCUMENTS if name == IDENTITY_FILE or manifests.get(name)]
    return {p for p in paths if canonical(p) and _is_regular(base, prefix + p)}


def _is_regular(base: Path, relpath: str) -> bool:
    try:
        open_beneath(base, relpath).close()
    except FileNotFoundError:
        return False
    return True


def _payload_paths(identity: dict, obs: Any, var: Any, conn: Any, lay: Layout) -> Any:
    """Yield every payload path the identity and manifests name (unchecked)."""
    yield from (identity.get("embeddings") or {}).get("files", {}).values()
    for field in ((identity.get("vector_fields") or {}).get("fields") or {}).values():
        yield from (field.get("files") or {}).values()
    if isinstance(obs, dict):
        schemas = obs.get("_obsSchemas") or {}
        continuous = schemas.get("continuous") or {}
        for entry in obs.get("_continuousFields") or []:
            index, key, _ = lay.entry_split(entry)
            yield lay.fill(continuous.get("pathPattern"), index, str(key))
        categorical = schemas.get("categorical") or {}
        for entry in obs.get("_categoricalFields") or []:
            index, key, rest = lay.entry_split(entry)
            codes_ext = EXT.get(rest[1], "")
            yield lay.fill(categorical.get("codesPathPattern"), index, str(key), codes_ext)
            yield lay.fill(categorical.get("outlierPathPattern"), index, str(key))
    if isinstance(var, dict):
        pattern = (var.get("_varSchema") or {}).get("pathPattern")
        for entry in var.get("fields") or []:
            index, key, _ = lay.entry_split(entry)
            yield lay.fill(pattern, index, str(key))
    if isinstance(conn, dict):
        for key in ("sourcesPath", "destinationsPath", "weightsPath"):
            if key in conn:
                yield conn[key]


def load_datasets(path: Path) -> list[Dataset]:
    """Return the datasets served from ``path``: one export folder, or an exports root.

    An exports root lists its datasets in ``datasets.json``; each must be a complete export
    in a direct sub-folder whose identity id equals the catalog entry's id.
    """
    if not path.is_dir():
        msg = (
            f"{path} is not a folder; pass an export folder or an exports root with {CATALOG_FILE}."
        )
        raise ExportError(msg)
    root = path.resolve()
    if (root / IDENTITY_FILE).is_file():
        return [Dataset.load(root)]
    if not (root / CATALOG_FILE).is_file():
        msg = (
            f"{path} holds neither {IDENTITY_FILE} nor {CATALOG_FILE}: pass an export folder, or "
            "an exports root after `cellucid catalog` wrote its catalog."
        )
        raise ExportError(msg)
    catalog = load_json(root, CATALOG_FILE)
    entries = catalog.get("datasets") if isinstance(catalog, dict) else None
    if not isinstance(entries, list) or not entries:
        msg = f"{path / CATALOG_FILE} lists no datasets; run `cellucid catalog {path}` again."
        raise ExportError(msg)
    datasets = []
    for entry in entries:
        folder = entry.get("path") if isinstance(entry, dict) else None
        if not (
            isinstance(folder, str)
            and folder.endswith("/")
            and _DATASET_DIR.match(folder[:-1])
            and folder[:-1] != "assets"  # the viewer's own files live under /assets/
        ):
            msg = (
                f"{path / CATALOG_FILE}: dataset path {folder!r} is not one folder directly under "
                "the root (letters, digits, '.', '_', '-', ending in '/', not 'assets/')."
            )
            raise ExportError(msg)
        dataset = Dataset.load(root, folder)
        if dataset.id != entry.get("id"):
            msg = (
                f"{path / CATALOG_FILE}: entry {entry.get('id')!r} points at {folder!r}, whose "
                f"identity id is {dataset.id!r}; run `cellucid catalog {path}` again."
            )
            raise ExportError(msg)
        datasets.append(dataset)
    ids = [d.id for d in datasets]
    if len(set(ids)) != len(ids) or len({d.url_path for d in datasets}) != len(ids):
        msg = f"{path / CATALOG_FILE} lists a dataset id or path twice."
        raise ExportError(msg)
    return datasets
