"""Writer of ``datasets.json``: the catalog of several datasets under one exports root."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._format import CATALOG_FILE, CATALOG_VERSION, IDENTITY_FILE
from ._cloud import is_remote, mirrored, renamed, single_dataset
from ._payload import dumps_identity, write_json
from ._store import Destination, local_path, refuse_local_options
from ._validate._dataset import _DatasetChecker
from ._validate._files import _escapes, _resolved
from ._validate._values import _url_error

logger = logging.getLogger("cellucid")


def write_catalog(
    exports_root: str | Path,
    *,
    default: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Path | str:
    """Write ``datasets.json`` listing every dataset folder directly under ``exports_root``.

    Each folder holding a ``dataset_identity.json`` becomes an entry with its id, path,
    name, description and cell and gene counts, in folder-name order. Each dataset is
    checked before it is listed (its identity and manifests, as :func:`validate` checks
    them, without reading payloads): a dataset the viewer would refuse, a folder name that
    is not URL-canonical (the error says what to rename it to) or a folder that is a link
    out of ``exports_root`` is refused.

    In an object store, a dataset that :func:`export` published there (see
    :doc:`/user_guide/large_data`) is listed at its current version (``pbmc/v-<token>/``):
    write the catalog again after re-exporting one of them.

    Parameters
    ----------
    exports_root
        The folder holding one sub-folder per exported dataset, or its URL
        (``s3://bucket/exports``, any store fsspec reaches).
    default
        Id of the dataset the viewer opens first; defaults to the first entry.
    storage_options
        Options of the fsspec filesystem when ``exports_root`` is a URL.

    Returns
    -------
    The path of the written ``datasets.json`` (its URL, a string, in an object store).

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> _ = cl.ex.export(adata, "exports/pbmc", overwrite=True)
    >>> cl.ex.write_catalog("exports", default="pbmc")  # doctest: +ELLIPSIS
    PosixPath('exports/datasets.json')

    """
    if is_remote(exports_root):
        return _write_remote_catalog(str(exports_root), default, storage_options)
    refuse_local_options(exports_root, storage_options)
    root = local_path(exports_root)
    target = root / CATALOG_FILE
    write_json(target, _catalog_text(root, default))
    logger.info("wrote %s", target)
    return target


def _write_remote_catalog(
    url: str, default: str | None, storage_options: Mapping[str, Any] | None
) -> str:
    """:func:`write_catalog` of an exports root in an object store (one PUT)."""
    url = url.rstrip("/")
    with mirrored(url, storage_options) as local:
        try:
            text = _catalog_text(local, default, published=True)
        except (ValueError, FileNotFoundError) as e:
            raise renamed(e, local, url) from None
    Destination.from_target(url, storage_options).write_bytes(CATALOG_FILE, text.encode("ascii"))
    logger.info("wrote %s/%s", url, CATALOG_FILE)
    return f"{url}/{CATALOG_FILE}"


def _catalog_text(root: Path, default: str | None, *, published: bool = False) -> str:
    """Return the text of ``datasets.json`` for the dataset folders under ``root``.

    ``published``: a folder that is a published one-dataset root (an object-store export)
    is listed at the version its own ``datasets.json`` points to.
    """
    if not root.is_dir():
        msg = f"exports_root {root} is not a folder."
        raise FileNotFoundError(msg)
    entries = []
    base = _resolved(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if published:
            folder = single_dataset(folder)
        if not (folder / IDENTITY_FILE).is_file():
            continue
        entries.append(_entry(folder, base, folder.relative_to(root).as_posix()))
    if not entries:
        msg = f"No dataset folders (with {IDENTITY_FILE}) under {root}."
        raise ValueError(msg)
    ids = [e["id"] for e in entries]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        msg = f"Dataset ids must be unique in a catalog; {duplicated} appear more than once under {root}."
        raise ValueError(msg)
    if default is None:
        default = ids[0]
    elif default not in ids:
        msg = f"default {default!r} is not one of the datasets under {root}: {ids}."
        raise ValueError(msg)
    logger.info("listed %d datasets under %s", len(entries), root)
    return dumps_identity({"version": CATALOG_VERSION, "default": default, "datasets": entries})


def catalog_entry(identity: dict, path: str) -> dict:
    """Return the catalog entry of the dataset at ``path`` (ending in ``/``) with ``identity``."""
    stats = identity["stats"]
    return {
        "id": identity["id"],
        "path": path,
        "name": identity["name"],
        "description": identity["description"],
        "n_cells": stats["n_cells"],
        "n_genes": stats["n_genes"],
    }


def _entry(folder: Path, base: Path, name: str) -> dict:
    """Return the catalog entry of a dataset folder, checked as the viewer would check it."""
    if _escapes(folder, base):
        msg = (
            f"{folder} is a link leading out of the exports root {base}: a catalog lists only "
            "dataset folders inside it. Move or copy the dataset there."
        )
        raise ValueError(msg)
    if _url_error(name) is not None:
        better = re.sub(r"[^A-Za-z0-9._~!*'()-]+", "-", name).strip("-") or "dataset"
        msg = (
            f"Dataset folder {name!r} under {folder.parent} is not URL-canonical (the viewer "
            f"fetches it by URL): rename it, e.g. to {better!r}, then write the catalog again."
        )
        raise ValueError(msg)
    checker = _DatasetChecker(folder, f"{name}/", scan_payloads=False)
    checker.run()
    if checker.problems:
        more = len(checker.problems) - 1
        msg = (
            f"Dataset folder {name!r} under {folder.parent} is not listed: {checker.problems[0]}"
            + (f" (and {more} more: cellucid validate lists them)" if more else "")
            + ". Fix or re-export that dataset."
        )
        raise ValueError(msg)
    return catalog_entry(checker.documents[0], f"{name}/")
