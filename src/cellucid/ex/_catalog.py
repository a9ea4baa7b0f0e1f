"""Writer of ``datasets.json``: the catalog of several datasets under one exports root."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .._format import CATALOG_FILE, CATALOG_VERSION, IDENTITY_FILE
from ._payload import dumps_identity, write_json

logger = logging.getLogger("cellucid")


def write_catalog(exports_root: str | Path, *, default: str | None = None) -> Path:
    """Write ``datasets.json`` listing every dataset folder directly under ``exports_root``.

    Each folder holding a ``dataset_identity.json`` becomes an entry with its id, path,
    name, description and cell and gene counts, in folder-name order.

    Parameters
    ----------
    exports_root
        The folder holding one sub-folder per exported dataset.
    default
        Id of the dataset the viewer opens first; defaults to the first entry.

    Returns
    -------
    The path of the written ``datasets.json``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> _ = cl.ex.export(adata, "exports/pbmc", overwrite=True)
    >>> cl.ex.write_catalog("exports", default="pbmc")  # doctest: +ELLIPSIS
    PosixPath('exports/datasets.json')

    """
    root = Path(exports_root)
    if not root.is_dir():
        msg = f"exports_root {root} is not a folder."
        raise FileNotFoundError(msg)
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = folder / IDENTITY_FILE
        if not path.is_file():
            continue
        try:
            identity = json.loads(path.read_text(encoding="utf-8"))
            stats = identity["stats"]
            entry = {
                "id": identity["id"],
                "path": f"{folder.name}/",
                "name": identity["name"],
                "description": identity["description"],
                "n_cells": stats["n_cells"],
                "n_genes": stats["n_genes"],
            }
        except (ValueError, KeyError, TypeError) as e:
            msg = f"{path} is not a valid dataset identity ({e!r}); re-export that dataset."
            raise ValueError(msg) from e
        entries.append(entry)
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
    target = root / CATALOG_FILE
    write_json(
        target,
        dumps_identity({"version": CATALOG_VERSION, "default": default, "datasets": entries}),
    )
    logger.info("wrote %s with %d datasets", target, len(entries))
    return target
