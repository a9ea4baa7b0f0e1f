"""A short human summary of an export, for ``cellucid info``."""

from __future__ import annotations

import json
from pathlib import Path

from .._format import CATALOG_FILE, IDENTITY_FILE


def _size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _dataset_summary(folder: Path) -> str:
    path = folder / IDENTITY_FILE
    if not path.is_file():
        msg = f"{folder} has no {IDENTITY_FILE}; is it a dataset folder?"
        raise FileNotFoundError(msg)
    identity = json.loads(path.read_text(encoding="utf-8"))
    stats, settings = identity["stats"], identity.get("export_settings", {})
    obs = identity["obs_fields"]
    continuous = [f["key"] for f in obs if f["kind"] == "continuous"]
    categorical = [f"{f['key']} ({f['n_categories']})" for f in obs if f["kind"] == "category"]
    vectors = identity.get("vector_fields", {}).get("fields", {})
    n_files, n_bytes = _size(folder)
    legacy = "{key}" in (folder / "obs_manifest.json").read_text(encoding="utf-8")

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
        f"gzip {settings.get('compression') or 'off'}, layout {'legacy' if legacy else 'current'}",
        f"  on disk      {n_files:,} files, {n_bytes / 1e6:,.1f} MB",
    ]
    if identity.get("description"):
        lines.insert(1, f"  {identity['description']}")
    return "\n".join(lines)


def summarize(path: str | Path) -> str:
    """Return a summary of a dataset folder, or of every dataset listed in an exports root's catalog."""
    path = Path(path)
    catalog = path / CATALOG_FILE
    if catalog.is_file() and not (path / IDENTITY_FILE).is_file():
        entries = json.loads(catalog.read_text(encoding="utf-8"))["datasets"]
        return "\n\n".join(_dataset_summary(path / e["path"]) for e in entries)
    return _dataset_summary(path)
