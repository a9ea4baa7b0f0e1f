"""``cellucid-validate-changed``: the ``cellucid-validate`` pre-commit hook.

pre-commit passes the paths of the changed files; each is mapped to the export it
belongs to, and every such export is validated once:

- ``datasets.json`` itself: its exports root (the catalog and every dataset it lists);
- a file under a folder holding ``dataset_identity.json``: that dataset folder;
- anything else: nothing (the hook runs on every file; non-export files are skipped).

Exit 0 when every export touched is valid, 1 otherwise (the problems are printed).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from ._format import CATALOG_FILE, IDENTITY_FILE


def export_folders(paths: Iterable[str | Path], *, top: Path | None = None) -> list[Path]:
    """Return the exports the files ``paths`` belong to, each once, in order.

    Folders are looked for from each file up to ``top`` (the working directory, the
    repository's root under pre-commit), never above it.
    """
    top = (top or Path.cwd()).resolve()
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.name == CATALOG_FILE:
            found.setdefault(path.parent, None)
            continue
        for folder in path.parents:
            if not (top / folder).resolve().is_relative_to(top):
                break
            if (folder / IDENTITY_FILE).is_file():
                found.setdefault(folder, None)
                break
    roots = [f for f in found if (f / CATALOG_FILE).is_file()]
    # a dataset under a root whose catalog changed too is checked with that root
    return [f for f in found if not any(f != r and f.is_relative_to(r) for r in roots)]


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the exports the given files belong to; return the exit code."""
    from .ex import validate

    failed = 0
    for folder in export_folders(sys.argv[1:] if argv is None else argv):
        report = validate(folder)
        if not report.ok:
            failed += 1
            print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
