"""Exports in object stores (``s3://``, ``gs://``, ``az://``, ``memory://``): publish, then read.

Object stores have no rename and no folders, so an export there is not swapped in like a
local one (:mod:`cellucid.ex._publish`). It is published as a one-dataset exports root::

    <out_dir>/datasets.json           the pointer: one entry, path "v-<token>/"
    <out_dir>/v-<token>/...           the dataset's files, never modified once written

1. The export is written exactly as a local one (same writers, same bytes) to a fresh
   version prefix ``v-<token>/``: on a dask cluster the workers write the gene payloads
   there themselves (:mod:`cellucid.ex._distributed`); the client writes the rest in a
   local staging folder, then uploads it beside them: payloads first, then the
   manifests, ``dataset_identity.json`` last.
2. ``datasets.json`` is then written in one PUT: this switches readers to the new version.
3. Only then is everything else under ``out_dir`` removed (the previous version, and what
   killed exports left).

The viewer, :func:`~cellucid.ex.validate` and :func:`~cellucid.ex.read` enter through
``datasets.json``, so they see the previous export until the new one is complete, then
the new one; never a mix, since two versions share no object name. A reader that fetched
the old ``datasets.json`` (or identity) before the switch reads unmodified old files until
step 3 removes them; then it gets "not found", never a file of the new export. An export
that fails (or is interrupted) before step 2 removes its partial version (best effort:
after the workers' running writes end) and leaves the previous export in place; one
killed leaves its partial version unreferenced, and the next export removes it. No lock
exists on an object store: run one export per URL at a time.

Reading a remote export (:func:`mirrored`) lists it once and stands in for each file with
a sparse file of its listed size in a local temporary folder. The validator judges those
sizes (against the manifests, the JSON limit) as for a local export, and fetches a file
(at most its listed size) only when it is about to read it, so the same bounds hold.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._format import CATALOG_FILE, CATALOG_VERSION, IDENTITY_FILE
from .._layout import EXPORT_FOLDER_FILES, EXPORT_TOP_FILES
from ._payload import dumps_identity
from ._store import Destination, is_url, local_path
from ._validate._files import BEFORE_READ, _load_json

logger = logging.getLogger("cellucid")

VERSION = re.compile(r"v-[0-9a-f]{12}")
#: parallel uploads of payload files
_UPLOADS = 8
#: a name part a remote export may have (URL-canonical, not hidden)
_PART = re.compile(r"[A-Za-z0-9_~!*'()-][A-Za-z0-9._~!*'()-]*")


def is_remote(target: object) -> bool:
    """Whether ``target`` is a URL of a store other than the local file system."""
    return is_url(target) and local_path(str(target)) is None


def remote_export(
    out_dir: object, storage_options: Mapping[str, Any] | None, *, overwrite: bool
) -> CloudExport | None:
    """Return the :class:`CloudExport` of ``out_dir`` when it is in an object store, else None."""
    return (
        CloudExport(str(out_dir), storage_options, overwrite=overwrite)
        if is_remote(out_dir)
        else None
    )


class CloudExport:
    """One export to an object store: its target checked at once, written, published (or discarded).

    Parameters
    ----------
    url
        ``out_dir``, e.g. ``s3://bucket/exports/pbmc``.
    storage_options
        Passed to the fsspec filesystem.
    overwrite
        Replace an earlier export at ``url`` (nothing else).
    """

    def __init__(
        self, url: str, storage_options: Mapping[str, Any] | None, *, overwrite: bool
    ) -> None:
        self.url = url.rstrip("/")
        self.overwrite = overwrite
        self.dest = check_remote_target(self.url, storage_options, overwrite=overwrite)
        tmp = tempfile.mkdtemp(prefix="cellucid-export-")
        # removed however the export ends (this object is dropped with export()'s frame)
        self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, ignore_errors=True)
        #: where the export is staged locally (the dataset folder, named like the URL)
        self.local_dir = Path(tmp) / urlsplit(self.url).path.rstrip("/").rpartition("/")[2]
        #: the prefix the new version goes to: dask workers write gene payloads there
        #: directly; :meth:`publish` uploads what was staged locally beside them
        self.version = f"v-{uuid.uuid4().hex[:12]}"
        self.version_dest = self.dest.child(self.version)
        self._switched = False  # datasets.json points at this version

    def publish(self, local: Path) -> None:
        """Upload the staged dataset ``local`` as a new version, switch to it, remove the rest."""
        version, target = self.version, self.version_dest
        # the target may have changed while the export ran
        previous = _existing(self.dest, self.url, overwrite=self.overwrite, own=version)
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        payloads = [f for f in files if not f.endswith(".json")]
        documents = sorted(set(files) - set(payloads), key=lambda f: f == IDENTITY_FILE)
        with ThreadPoolExecutor(_UPLOADS) as pool:
            list(pool.map(lambda rel: target.put(local / rel, rel), payloads))
        for rel in documents:  # the manifests, then the identity
            target.put(local / rel, rel)
        identity = json.loads((local / IDENTITY_FILE).read_text(encoding="ascii"))
        from ._catalog import catalog_entry

        catalog = {
            "version": CATALOG_VERSION,
            "default": identity["id"],
            "datasets": [catalog_entry(identity, f"{version}/")],
        }
        self.dest.write_bytes(CATALOG_FILE, dumps_identity(catalog).encode("ascii"))
        self._switched = True
        stale = sorted({rel.split("/")[0] for rel in previous} - {CATALOG_FILE})
        # a dataset stored without a pointer loses its identity first: never a partial one
        for name in sorted(stale, key=lambda n: n != IDENTITY_FILE):
            self.dest.remove(name)
        logger.info("published %s (version %s, %d files uploaded)", self.url, version, len(files))
        self._cleanup()

    def discard(self) -> None:
        """Remove this export's partial version (before the switch only), best effort.

        For a failed export: readers never saw it (``datasets.json`` does not point at it);
        what cannot be removed now is removed by the next export of the URL.
        """
        self._cleanup()
        if self._switched:
            return
        try:
            self.version_dest.remove()
        except Exception as e:  # the export's own error is the one to report
            logger.warning("could not remove the partial export %s: %s", self.version_dest.url, e)


def check_remote_target(
    url: str, storage_options: Mapping[str, Any] | None, *, overwrite: bool
) -> Destination:
    """Refuse, before any work, a URL an export must not write; return its destination.

    Refused: a bucket (or container) itself, an existing prefix without ``overwrite``, and
    with it anything but an earlier export (see :func:`_not_an_export`).
    """
    url = url.rstrip("/")
    if not urlsplit(url).path.strip("/"):
        msg = f"{url}: give a prefix inside the bucket for the dataset, e.g. {url}/<name>."
        raise ValueError(msg)
    dest = Destination.from_target(url, storage_options)
    _existing(dest, url, overwrite=overwrite)
    return dest


def _existing(
    dest: Destination, url: str, *, overwrite: bool, own: str | None = None
) -> dict[str, int]:
    """Return what ``url`` holds (relative path -> size), refusing what overwrite may not replace.

    ``own``: the version prefix this export writes, whose files do not count.
    """
    files = {k: v for k, v in dest.files().items() if own is None or not k.startswith(f"{own}/")}
    if not files:
        return files
    if not overwrite:
        msg = f"{url} exists; pass overwrite=True (--overwrite on the command line) to replace it."
        raise FileExistsError(msg)
    found = _not_an_export(files)
    if found is not None:
        msg = (
            f"Refusing to replace {url}: {found}. overwrite replaces only an earlier "
            "export: export to a new prefix, or move those objects away."
        )
        raise FileExistsError(msg)
    return files


def _export_file(rel: str) -> bool:
    """Whether ``rel`` is a name an export writes inside its dataset folder."""
    folder, _, name = rel.rpartition("/")
    if not folder:
        return EXPORT_TOP_FILES.fullmatch(name) is not None
    names = EXPORT_FOLDER_FILES.get(folder)
    return names is not None and names.fullmatch(name) is not None


def _not_an_export(files: Mapping[str, int]) -> str | None:
    """Say what makes a prefix more than an earlier export (either shape); None if nothing.

    An earlier export is ``datasets.json`` and version prefixes holding export files, or
    the files of one dataset folder (with its ``dataset_identity.json``) as they are locally.
    """
    foreign, datasets, plain = [], [], set()
    for rel in files:
        head, _, rest = rel.partition("/")
        if rel == CATALOG_FILE or (VERSION.fullmatch(head) and _export_file(rest)):
            continue
        if _export_file(rel):
            plain.add(rel)
        elif rel.rpartition("/")[2] in (IDENTITY_FILE, CATALOG_FILE):
            datasets.append(f"{head}/")
        else:
            foreign.append(rel)
    if datasets:
        return f"it is an exports root (it holds {_few(sorted(set(datasets)))})"
    if foreign:
        return f"it holds {_few(foreign)}, which an export does not write"
    if plain and IDENTITY_FILE not in plain:
        return f"it has no {IDENTITY_FILE}, so no export wrote it"
    return None


def _few(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return f"{shown} and {len(names) - n} more" if len(names) > n else shown


# --- reading ---------------------------------------------------------------------------------


@contextmanager
def mirrored(url: str, storage_options: Mapping[str, Any] | None) -> Iterator[Path]:
    """Yield a local folder standing in for the remote export (or exports root) at ``url``.

    Each file an export may hold (by name: an exports root, a published dataset's version,
    a payload folder, a file) is a sparse file of its listed size; the validator judges
    that size (against the manifests, the JSON limit) and fetches the file, at most that
    many bytes, only just before reading it. Other names are left out.
    """
    source = Destination.from_target(url, storage_options)
    listed = source.files()
    if not listed:
        msg = f"No export at {url!r}: nothing is stored there."
        raise FileNotFoundError(msg)
    with tempfile.TemporaryDirectory(prefix="cellucid-read-") as tmp:
        root = Path(tmp) / "export"
        root.mkdir()
        pending: dict[str, tuple[str, int]] = {}
        for rel, size in listed.items():
            if not _readable(rel):
                continue
            here = root / rel
            here.parent.mkdir(parents=True, exist_ok=True)
            with open(here, "wb") as f:
                f.truncate(size)
            pending[os.path.normpath(here)] = (rel, size)

        def fetch(path: Path) -> None:
            entry = pending.pop(os.path.normpath(path), None)
            if entry is not None:
                source.get(entry[0], path, limit=entry[1])

        token = BEFORE_READ.set(fetch)
        try:
            yield root
        finally:
            BEFORE_READ.reset(token)


def _readable(rel: str) -> bool:
    """Whether ``rel`` is a name a reader may open: an export's file under at most two folders."""
    parts = rel.split("/")
    if len(parts) > 4 or not all(_PART.fullmatch(p) for p in parts):
        return False
    tails = ("/".join(parts[i:]) for i in range(min(3, len(parts))))
    return any(t == CATALOG_FILE or _export_file(t) for t in tails)


def single_dataset(root: Path) -> Path:
    """Return the dataset folder of a one-dataset exports root (a published URL), else ``root``."""
    if (root / IDENTITY_FILE).is_file() or not (root / CATALOG_FILE).is_file():
        return root
    catalog = _load_json(root / CATALOG_FILE, CATALOG_FILE, lambda *problem: None)
    try:
        (entry,) = catalog["datasets"]
        path = entry["path"]
    except (ValueError, TypeError, KeyError):
        return root
    if not (isinstance(path, str) and VERSION.fullmatch(path.rstrip("/"))):
        return root
    return root / path.rstrip("/")


def renamed(error: Exception, local: Path, url: str) -> Exception:
    """Return ``error`` (same type) with the mirror's folder named as the URL it stands for."""
    text = str(error).replace(str(local), url)
    if isinstance(error, OSError) and error.errno is not None:
        return type(error)(
            error.errno, error.strerror, str(error.filename).replace(str(local), url)
        )
    return type(error)(text)
