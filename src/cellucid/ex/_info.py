"""A short human summary of an export, for ``cellucid info``."""

from __future__ import annotations

import os
from pathlib import Path

from .._format import CATALOG_FILE, IDENTITY_FILE
from ._validate._catalog import _validate_root
from ._validate._dataset import _DatasetChecker
from ._validate._files import _load_json, _resolved


def _size(path: Path) -> tuple[int, int]:
    """Count the files under ``path`` and their bytes, following no symbolic link."""
    n_files = n_bytes = 0
    for folder, _, names in os.walk(path):  # os.walk does not descend into linked folders
        for name in names:
            file = Path(folder, name)
            if file.is_symlink() or not file.is_file():
                continue
            n_files += 1
            n_bytes += file.stat().st_size
    return n_files, n_bytes


def _refuse(path: Path, problems: list) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more: cellucid validate lists them)"
        msg = f"Cannot summarize {str(path)!r}: {problems[0]}{more if len(problems) > 1 else ''}."
        raise ValueError(msg)


def _dataset_summary(folder: Path) -> str:
    if not (folder / IDENTITY_FILE).is_file():
        msg = f"{folder} has no {IDENTITY_FILE}; is it a dataset folder?"
        raise FileNotFoundError(msg)
    # the JSON documents are checked as validate checks them (no payload is read), so what
    # follows may rely on their shape
    checker = _DatasetChecker(folder, "", scan_payloads=False)
    checker.run()
    _refuse(folder, checker.problems)
    identity = checker.documents[0]
    stats, settings = identity["stats"], identity.get("export_settings", {})
    obs = identity["obs_fields"]
    continuous = [f["key"] for f in obs if f["kind"] == "continuous"]
    categorical = [f"{f['key']} ({f['n_categories']})" for f in obs if f["kind"] == "category"]
    vectors = identity.get("vector_fields", {}).get("fields", {})
    n_files, n_bytes = _size(folder)

    def bits(value: int | None) -> str:
        return f"{value}-bit" if value else "float32"

    graph = f"{stats['n_edges']:,} edges" if stats["has_connectivity"] else "none"
    vector_list = ", ".join(
        f"{k} ({'/'.join(map(str, v['available_dimensions']))}D)" for k, v in vectors.items()
    )
    lines = [
        f"{identity['name']} (id {identity['id']}) — {folder}",
        f"  cells        {stats['n_cells']:,}",
        f"  genes        {stats['n_genes']:,}",
        f"  embeddings   {', '.join(f'{d}D' for d in identity['embeddings']['available_dimensions'])}",
        f"  continuous   {len(continuous)}: {', '.join(continuous) or '-'}",
        f"  categorical  {len(categorical)}: {', '.join(categorical) or '-'}",
        f"  graph        {graph}",
        f"  vectors      {vector_list or 'none'}",
        f"  encoding     genes {bits(settings.get('var_quantization'))}, obs {bits(settings.get('obs_continuous_quantization'))}, "
        f"gzip {settings.get('compression') or 'off'}, layout {checker.layout}",
        f"  on disk      {n_files:,} files, {n_bytes / 1e6:,.1f} MB",
    ]
    if identity.get("description"):
        lines.insert(1, f"  {identity['description']}")
    return "\n".join(lines)


def summarize(path: str | Path) -> str:
    """Return a summary of a dataset folder, or of every dataset listed in an exports root's catalog.

    The identity and manifests are checked first (as :func:`~cellucid.ex.validate` checks
    them, without reading payloads): a broken export raises a ValueError naming the file
    and the rule.
    """
    path = Path(path)
    catalog = path / CATALOG_FILE
    if catalog.is_file() and not (path / IDENTITY_FILE).is_file():
        _refuse(path, _validate_root(path, scan_payloads=False).problems)
        entries = _load_json(catalog, CATALOG_FILE, None, base=_resolved(path))["datasets"]
        return "\n\n".join(_dataset_summary(path / e["path"]) for e in entries)
    return _dataset_summary(path)
