"""An exports root: its catalog (``datasets.json``) and every dataset it lists."""

from __future__ import annotations

from pathlib import Path

from ..._format import (
    CATALOG_ENTRY_OPTIONAL_KEYS,
    CATALOG_ENTRY_REQUIRED_KEYS,
    CATALOG_FILE,
    CATALOG_KEYS,
    CATALOG_VERSION,
    IDENTITY_FILE,
)
from ._dataset import _DatasetChecker
from ._files import _escapes, _exists, _Fail, _is_file, _load_json, _resolved
from ._report import Problem, ValidationReport
from ._values import _check_keys, _is_int, _path_error, _problem, _raw, _type_name, _url_error


def _validate_root(root: Path, *, scan_payloads: bool = True) -> ValidationReport:
    """Check the catalog of an exports root and every dataset it lists."""
    problems: list[Problem] = []
    base = _resolved(root)

    def add(rel: str, rule: str, found: object, expected: object) -> None:
        problems.append(_problem(rel, rule, found, expected))

    rel = CATALOG_FILE
    catalog = _load_json(root / rel, rel, add, base=base)
    layouts: dict[str, str] = {}
    if isinstance(catalog, _Fail) or not _check_keys(
        add, rel, catalog, "catalog.keys", CATALOG_KEYS
    ):
        return ValidationReport(root, "current", problems, layouts)
    assert isinstance(catalog, dict)
    if "version" in catalog and not (
        _is_int(catalog["version"]) and catalog["version"] == CATALOG_VERSION
    ):
        add(rel, "catalog.version", _raw(catalog["version"]), f"{CATALOG_VERSION}")
    entries = catalog.get("datasets")
    if "datasets" in catalog and not isinstance(entries, list):
        add(
            rel,
            "catalog.entry",
            f"datasets is {_type_name(entries)}",
            "an array of dataset entries",
        )
    entries = entries if isinstance(entries, list) else []
    ids: list[str] = []
    id_set: set[str] = set()
    paths: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"datasets[{i}]"
        if not _check_keys(
            add,
            rel,
            entry,
            "catalog.entry",
            CATALOG_ENTRY_REQUIRED_KEYS,
            CATALOG_ENTRY_OPTIONAL_KEYS,
            where,
        ):
            continue
        assert isinstance(entry, dict)
        entry_id = entry.get("id")
        if not isinstance(entry_id, str):
            add(rel, "catalog.entry", f"{where}.id = {_raw(entry_id)}", "a string")
            entry_id = None
        elif entry_id in id_set:
            add(rel, "catalog.id", f"{where}.id {entry_id!r} again", "unique dataset ids")
        else:
            ids.append(entry_id)
            id_set.add(entry_id)
        path = entry.get("path")
        if "path" not in entry:
            continue
        if not isinstance(path, str) or not path.endswith("/"):
            add(
                rel,
                "catalog.path",
                f"{where}.path = {_raw(path)}",
                "a relative directory path ending in '/'",
            )
            continue
        error = _path_error(path[:-1])
        if error is not None:
            add(rel, "path.syntax", f"{where}.path {path!r} has {error}", "a relative POSIX path")
            continue
        if path in paths:
            add(rel, "catalog.path", f"{where}.path {path!r} again", "unique dataset paths")
            continue
        paths.add(path)
        part = _url_error(path[:-1])
        if part is not None:
            add(
                rel,
                "path.url",
                f"{where}.path {path!r}: part {part!r}",
                "URL-canonical parts: letters, digits and - _ . ! ~ * ' ( ) only",
            )
        directory = root / path
        if _exists(directory) and _escapes(directory, base):
            add(
                rel,
                "path.symlink",
                f"{where}.path {path!r} leads out of the exports root",
                "a dataset folder inside the exports root (not a link out of it)",
            )
            continue
        if not _is_file(directory / IDENTITY_FILE):
            add(
                f"{path}{IDENTITY_FILE}",
                "file.missing",
                "no such file",
                f"the identity of catalog entry {where}",
            )
            continue
        checker = _DatasetChecker(directory, path, scan_payloads=scan_payloads)
        checker.run()
        problems.extend(checker.problems)
        layouts[path.rstrip("/")] = checker.layout
        identity = _load_json(directory / IDENTITY_FILE, IDENTITY_FILE, lambda *a: None)
        if not isinstance(identity, dict):
            continue
        if entry_id is not None and "id" in identity and identity["id"] != entry_id:
            add(
                rel,
                "catalog.id",
                f"{where}.id {entry_id!r}",
                f"{_raw(identity['id'])} ({path}{IDENTITY_FILE})",
            )
        stats = identity.get("stats") if isinstance(identity.get("stats"), dict) else {}
        mirror = {
            "name": identity.get("name"),
            "description": identity.get("description"),
            "n_cells": stats.get("n_cells"),
            "n_genes": stats.get("n_genes"),
        }
        for key, value in mirror.items():
            if key in entry and (
                entry[key] != value or isinstance(entry[key], bool) != isinstance(value, bool)
            ):
                add(
                    rel,
                    "catalog.mismatch",
                    f"{where}.{key} = {_raw(entry[key])}",
                    f"{_raw(value)} (the dataset identity)",
                )
    if "default" in catalog and not (
        isinstance(catalog["default"], str) and catalog["default"] in id_set
    ):
        add(rel, "catalog.default", _raw(catalog["default"]), f"one of the dataset ids {_raw(ids)}")
    kinds = set(layouts.values())
    overall = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "current")
    return ValidationReport(root, overall, problems, layouts)
