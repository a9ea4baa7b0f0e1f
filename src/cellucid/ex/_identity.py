"""Writer of ``dataset_identity.json``: what the dataset is, its counts and its files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .._format import (
    CREATED_AT_FORMAT,
    ID_MAX_LENGTH,
    ID_PATTERN,
    IDENTITY_FILE,
    IDENTITY_VERSION,
    is_blank,
)
from ._payload import dumps_identity, write_json


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


def write_identity(root: Path, identity: dict) -> None:
    """Write ``dataset_identity.json`` with the keys in the order the format lists them."""
    write_json(
        Path(root) / IDENTITY_FILE, dumps_identity({"version": IDENTITY_VERSION, **identity})
    )
