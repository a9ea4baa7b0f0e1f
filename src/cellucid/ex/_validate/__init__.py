"""Check an export directory against what the Cellucid viewer accepts.

:func:`validate` walks one dataset directory (or an exports root with ``datasets.json``),
checks every rule of the format page (``FORMAT.md``) for both layouts and returns a
:class:`ValidationReport` listing every :class:`Problem` it found. Payloads are streamed in
chunks of a few MiB (gzip is inflated incrementally), so memory stays bounded and the
time is linear in the size of the export.

The package mirrors the writers, each module importing only those listed before it:
``_report`` (the rule table, :class:`Problem`, :class:`ValidationReport`), ``_values``
(JSON values as the viewer sees them), ``_files`` (opening files, strict JSON),
``_payloads`` (bounded raw and gzip decoding), ``_context`` (the facts one file
establishes for the next), one checker per kind of file (``_points``, ``_identity``,
``_compact`` with ``_obs`` and ``_var``, ``_connectivity``), then the drivers ``_dataset``
and ``_catalog`` (an exports root).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..._format import CATALOG_FILE, IDENTITY_FILE
from .._publish import recover
from .._store import is_url, local_path, refuse_local_options
from ._catalog import _validate_root
from ._dataset import _DatasetChecker
from ._report import RULES, Problem, ValidationReport

__all__ = ["RULES", "Problem", "ValidationReport", "validate"]

logger = logging.getLogger("cellucid")


def validate(
    path: str | Path,
    *,
    strict: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> ValidationReport:
    """Check an export directory against every rule the Cellucid viewer enforces.

    Parameters
    ----------
    path
        A dataset directory (holding ``dataset_identity.json``) or an exports root (holding
        ``datasets.json``: the catalog and every dataset it lists are checked, and problems
        name files relative to the root, e.g. ``"ds1/obs_manifest.json"``), or its URL
        (``s3://bucket/exports/pbmc``, any store fsspec reaches).
    strict
        Raise a :class:`ValueError` listing every problem instead of returning a report
        with problems.
    storage_options
        Options of the fsspec filesystem when ``path`` is a URL.

    Returns
    -------
    ValidationReport
        Every problem found; truthy when there is none. Malformed or missing files are
        reported as problems, never raised.

    Notes
    -----
    Every export is treated as untrusted input. Before a payload is read, its declared
    size (from counts the manifests agree on) is checked against the 512 MiB limit and
    against the file on disk: an uncompressed file must have exactly that size, a ``.gz``
    file must be within the viewer's transfer ceiling and large enough for deflate to
    inflate to it. Decoding stops at the first byte past the declared size, and arrays
    are sized by the checked cell count, never by a value read from a payload, so time
    and memory stay bounded by the export's size on disk (a gzip bomb is refused before
    it is inflated). No symbolic link leading out of the dataset folder (or a dataset
    folder out of the exports root) is followed: it is reported as ``path.symlink``.
    A remote export is checked within the same bounds: its listing gives each file's size,
    JSON documents are fetched up to ``MAX_JSON_BYTES``, and a payload is fetched (at most
    its listed size) only once that size passed the checks above.

    Where the viewer and this check differ, this check is stricter: a JSON document
    starting with a UTF-8 byte order mark is refused (the viewer strips it; no writer of
    the format writes one).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or holds neither ``dataset_identity.json`` nor
        ``datasets.json``.
    ValueError
        ``path`` is not a directory, or ``strict`` is set and there are problems.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> out = cl.ex.export(sc.datasets.pbmc68k_reduced(), "exports/pbmc", overwrite=True)
    >>> report = cl.ex.validate(out)
    >>> report.ok, report.layout
    (True, 'current')
    >>> print(report)
    exports/pbmc: valid current-layout export, no problems
    """
    if is_url(path) and local_path(str(path)) is None:
        from .._cloud import mirrored, renamed  # it reads through this package

        with mirrored(str(path), storage_options) as local:
            try:
                report = validate(local)
            except (FileNotFoundError, ValueError) as e:
                raise renamed(e, local, str(path)) from None
        report = ValidationReport(str(path), report.layout, report.problems, report.datasets)
        if strict:
            report.raise_if_problems()
        return report
    refuse_local_options(path, storage_options)
    path = local_path(path)
    recover(path)  # what an interrupted export left beside it
    if not path.exists():
        msg = f"No export at {str(path)!r}: the path does not exist."
        raise FileNotFoundError(msg)
    if not path.is_dir():
        msg = f"{str(path)!r} is not a directory: give a dataset directory or an exports root."
        raise ValueError(msg)
    if (path / CATALOG_FILE).is_file():
        report = _validate_root(path)
    elif (path / IDENTITY_FILE).is_file():
        checker = _DatasetChecker(path, "")
        checker.run()
        report = ValidationReport(path, checker.layout, checker.problems, {".": checker.layout})
    else:
        msg = (
            f"{str(path)!r} is not an export: it holds neither {IDENTITY_FILE} (a dataset "
            f"directory) nor {CATALOG_FILE} (an exports root)."
        )
        raise FileNotFoundError(msg)
    logger.info("validated %s: %d problem(s)", path, len(report.problems))
    if strict:
        report.raise_if_problems()
    return report
