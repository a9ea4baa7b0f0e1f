"""Writer of ``dataset_identity.json``: what the dataset is, its counts and its files."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._format import (
    CREATED_AT_FORMAT,
    ID_MAX_LENGTH,
    ID_PATTERN,
    IDENTITY_FILE,
    IDENTITY_VERSION,
    is_blank,
)
from ._payload import dumps_identity, write_json

if TYPE_CHECKING:
    from ._settings import ExportSettings


@dataclass(frozen=True)
class Description:
    """What the identity says the dataset is: its name, id, description and source.

    Checked when made; ``id`` is derived from the name when not given (see
    :func:`dataset_id_for`).
    """

    name: str
    id: str | None = None
    description: str = ""
    source_name: str | None = None
    source_url: str | None = None
    source_citation: str | None = None

    def __post_init__(self) -> None:
        if is_blank(self.name):
            msg = f"dataset_name must not be empty or whitespace (the viewer trims it), got {self.name!r}."
            raise ValueError(msg)
        object.__setattr__(self, "id", dataset_id_for(self.id, self.name))
        source_entry(self.source_name, self.source_url, self.source_citation)  # checks them

    @property
    def source(self) -> dict | None:
        """The identity's ``source`` entry, or None when no source is given."""
        return source_entry(self.source_name, self.source_url, self.source_citation)


@dataclass(frozen=True)
class Written:
    """What the writers of one export wrote, as its identity counts and lists it."""

    n_cells: int
    #: the ``embeddings`` entry (:func:`~cellucid.ex._points.write_points`)
    embeddings: dict
    #: the ``vector_fields`` entry, None without vector fields
    vector_fields: dict | None
    #: the ``obs_fields`` entry (:func:`~cellucid.ex._obs.write_obs`)
    obs_fields: list[dict]
    #: the dtype of every field's category codes, None without categorical fields
    codes_dtype: str | None
    n_genes: int
    #: None without a graph
    n_edges: int | None
    payload_files: int
    payload_bytes: int


def dataset_id_for(dataset_id: str | None, name: str) -> str:
    """Return ``dataset_id`` checked, or one derived from the dataset's name."""
    if dataset_id is None:
        import re

        derived = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("._-")[:ID_MAX_LENGTH].rstrip(".")
        return derived or "dataset"
    if not (
        ID_PATTERN.match(dataset_id)
        and len(dataset_id) <= ID_MAX_LENGTH
        and not dataset_id.endswith(".")
    ):
        msg = (
            f"dataset_id {dataset_id!r} is not a valid id: use 1-{ID_MAX_LENGTH} letters, digits, '.', '_' "
            "or '-', starting with a letter or digit and not ending in '.'."
        )
        raise ValueError(msg)
    return dataset_id


def created_at() -> str:
    """Return the export time in UTC, or ``SOURCE_DATE_EPOCH`` for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            seconds = int(epoch)
        except ValueError:
            msg = f"SOURCE_DATE_EPOCH must be an integer number of seconds, got {epoch!r}."
            raise ValueError(msg) from None
    else:
        seconds = int(time.time())
    return time.strftime(CREATED_AT_FORMAT, time.gmtime(seconds))


def source_entry(name: str | None, url: str | None, citation: str | None) -> dict | None:
    """Return the identity's ``source`` entry, or None when no source is given."""
    if name is None and (url is not None or citation is not None):
        msg = "source_name is required when source_url or source_citation is given."
        raise ValueError(msg)
    if name is None:
        return None
    entry = {"name": name, "url": url, "citation": citation}
    for key, value in entry.items():
        if value is not None and is_blank(value):
            msg = (
                f"source_{key} must be a string that is not empty or whitespace (the viewer trims "
                f"it), got {value!r}; leave it out (None) if there is none."
            )
            raise ValueError(msg)
    return {key: value for key, value in entry.items() if value is not None}


def identity_document(description: Description, settings: ExportSettings, written: Written) -> dict:
    """Return the identity of an export: what it is, its counts, its files and its settings."""
    from .. import __version__

    n_continuous = sum(f["kind"] == "continuous" for f in written.obs_fields)
    # every field's codes have one dtype, declared here (the folder picker checks it)
    codes_dtype = written.codes_dtype or settings.obs_categorical_dtype
    identity = {
        "id": description.id,
        "name": description.name,
        "description": description.description,
        "created_at": created_at(),
        "cellucid_data_version": __version__,
        "stats": {
            "n_cells": written.n_cells,
            "n_genes": written.n_genes,
            "n_obs_fields": len(written.obs_fields),
            "n_categorical_fields": len(written.obs_fields) - n_continuous,
            "n_continuous_fields": n_continuous,
            "has_connectivity": written.n_edges is not None,
            "n_edges": written.n_edges,
        },
        "embeddings": written.embeddings,
        "obs_fields": written.obs_fields,
        "export_settings": {
            "compression": settings.compression,
            "var_quantization": settings.var_quantization,
            "obs_continuous_quantization": settings.obs_continuous_quantization,
            # "auto" without a categorical field
            "obs_categorical_dtype": "uint8" if codes_dtype == "auto" else codes_dtype,
        },
    }
    source = description.source
    if source is not None:
        identity["source"] = source
    if written.vector_fields is not None:
        identity["vector_fields"] = written.vector_fields
    return identity


def write_identity(root: Path, identity: dict) -> None:
    """Write ``dataset_identity.json`` with the keys in the order the format lists them."""
    write_json(
        Path(root) / IDENTITY_FILE, dumps_identity({"version": IDENTITY_VERSION, **identity})
    )
