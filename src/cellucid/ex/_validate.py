"""Check an export directory against what the Cellucid viewer accepts.

:func:`validate` walks one dataset directory (or an exports root with ``datasets.json``),
checks every rule of the format page (``FORMAT.md``) for both layouts and returns a
:class:`ValidationReport` listing every :class:`Problem` it found. Payloads are streamed in
chunks of a few MiB (gzip is inflated incrementally), so memory stays bounded and the
time is linear in the size of the export.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import struct
import sys
import unicodedata
import urllib.parse
import zlib
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._format import (
    CATALOG_ENTRY_OPTIONAL_KEYS,
    CATALOG_ENTRY_REQUIRED_KEYS,
    CATALOG_FILE,
    CATALOG_KEYS,
    CATALOG_VERSION,
    CATEGORICAL_SCHEMA_KEYS,
    CODES_MISSING,
    CONNECTIVITY_MANIFEST,
    CONNECTIVITY_MANIFEST_KEYS,
    CONTINUOUS_SCHEMA_KEYS,
    CREATED_AT_FORMAT,
    DIMENSIONS,
    EDGE_FORMAT,
    EMBEDDINGS_KEYS,
    EXPORT_SETTINGS_KEYS,
    EXT,
    FLOAT_DTYPE,
    ID_MAX_LENGTH,
    ID_PATTERN,
    IDENTITY_FILE,
    IDENTITY_OPTIONAL_KEYS,
    IDENTITY_REQUIRED_KEYS,
    IDENTITY_VERSION,
    MANIFEST_FORMAT,
    MAX_CATEGORIES,
    MAX_JSON_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_QUANT,
    MAX_SAFE_INTEGER,
    OBS_MANIFEST,
    OBS_MANIFEST_KEYS,
    QUANT_DTYPE,
    SOURCE_OPTIONAL_KEYS,
    SOURCE_REQUIRED_KEYS,
    STATS_KEYS,
    VAR_MANIFEST,
    VAR_MANIFEST_KEYS,
    VECTOR_BASIS,
    VECTOR_FIELD_KEYS,
    VECTOR_FIELDS_KEYS,
    VECTORS_DIR,
    WEIGHT_DTYPE,
    Layout,
    gzip_ceiling,
    index_dtype,
    is_blank,
    layout,
)
from ._publish import recover

__all__ = ["RULES", "Problem", "ValidationReport", "validate"]

logger = logging.getLogger("cellucid")

#: bytes read from disk / inflated at a time
_CHUNK = 4 * 2**20
#: edges checked at a time (src, dst and weights in lockstep)
_EDGE_CHUNK = 2**20
#: the regular expression of ``created_at``
_CREATED_AT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_RESERVED_FLAGS = 0xE0
_INDEX_DTYPES = {"uint16": 2, "uint32": 4}
#: deflate cannot expand more than 1032-fold (258 bytes from 2 bits): a ``.gz`` file of
#: ``n`` bytes that should inflate past ``1032 n`` is refused before inflating it
_MAX_INFLATE_RATIO = 1032
#: what ``encodeURIComponent`` leaves as it is besides letters and digits
_URI_UNRESERVED = "-_.!~*'()"
#: the viewer's connectivity working set: bytes per edge (+ per edge with uint16 indices,
#: which it widens) and per cell, at most 512 MiB (connectivity-manifest-contract.js)
_EDGE_WORKING_BYTES = 44
_UINT16_EDGE_WORKING_BYTES = 4
_CELL_WORKING_BYTES = 4
_MAX_CONNECTIVITY_WORKING_BYTES = 512 * 2**20
#: the largest cell count the viewer's uint32 cell axis addresses
_MAX_CONNECTIVITY_CELLS = 2**32
_FLOAT_MAX = int(sys.float_info.max)
#: the manifests a dataset can advertise
_KNOWN_MANIFESTS = frozenset({OBS_MANIFEST, VAR_MANIFEST, CONNECTIVITY_MANIFEST})

#: every rule the validator checks: its id -> the section of the format page and what it says
RULES: dict[str, str] = {
    # files and JSON (sections 1, 2)
    "file.missing": "1/5/10: a file the identity, a manifest or the catalog declares is missing",
    "json.parse": "2: a JSON file is not valid UTF-8 JSON (NaN/Infinity included)",
    "json.size": "2: a JSON file is larger than 64 MiB",
    "payload.length": "2: decoded payload length is exactly n_elements x itemsize (raw file size and plausible gzip size checked before reading)",
    "payload.size": "2: a payload is at most 512 MiB decoded",
    "path.syntax": "2: paths are relative POSIX: no leading /, no \\ % ? #, no scheme, no empty/./.. components, no control characters",
    "path.duplicate": "9/11: every payload path is declared once (connectivity paths differ; legacy keys that sanitize alike)",
    "path.url": "2: embedding file paths and catalog directory paths are URL-canonical (encodeURIComponent(decodeURIComponent(part)) == part)",
    "path.symlink": "1: no file or folder of an export is a symbolic link leading out of it (nor a dataset folder out of its exports root)",
    # gzip (section 3)
    "gzip.magic": "3: a .gz path holds a gzip stream (magic 1f 8b)",
    "gzip.method": "3: gzip method is 8 (deflate)",
    "gzip.flags": "3: gzip reserved flag bits are clear",
    "gzip.members": "3: exactly one gzip member",
    "gzip.trailing": "3: no bytes after the gzip member",
    "gzip.isize": "3: the trailer ISIZE equals the expected decoded length",
    "gzip.crc": "3: the trailer CRC32 matches the decoded data",
    "gzip.corrupt": "3: the gzip member is complete and its deflate stream valid",
    "gzip.header_crc": "3: when FHCRC is set, the header CRC-16 matches the header bytes",
    "gzip.ceiling": "3: a .gz file is at most raw + 5 (ceil(raw / 65535) + 1) + 18 + 1024 bytes (checked before inflating)",
    "compression.value": "3: a manifest's compression is null or an integer 1-9",
    "compression.suffix": "3: a manifest's paths end in .gz exactly when its compression is set",
    "compression.mixed": "3: the folder picker wants one compression for every file (manifests, points, vectors, export_settings)",
    # identity (section 5)
    "identity.keys": "5: exactly the required and optional identity keys",
    "identity.version": "5: version is 2",
    "identity.id": "5: id matches ^[A-Za-z0-9][A-Za-z0-9._-]*$, not ending in '.', 1-180 characters",
    "identity.name": "5: name is a non-empty string (JavaScript trim)",
    "identity.description": "5: description is a string",
    "identity.data_version": "5: cellucid_data_version is a non-empty string (JavaScript trim)",
    "identity.created_at": "5: created_at is YYYY-MM-DDTHH:MM:SSZ (ASCII digits) and a real UTC time",
    "stats.keys": "5: stats has exactly its seven keys",
    "stats.value": "5: stats counts are non-negative integers, has_connectivity a boolean",
    "stats.sum": "5: n_obs_fields = n_categorical_fields + n_continuous_fields",
    "stats.n_edges": "5: n_edges is an integer when connected, null otherwise",
    "embeddings.keys": "5: embeddings has exactly available_dimensions, default_dimension, files",
    "embeddings.dimensions": "5: available_dimensions is non-empty, strictly increasing, within 1/2/3",
    "embeddings.default": "5: default_dimension is one of the available dimensions",
    "embeddings.files": "5: files has exactly one key '<d>d' per available dimension",
    "points.finite": "6: every point coordinate is finite",
    "vectors.finite": "6: every vector component is finite",
    "obs_fields.entry": "5: obs_fields entries are {key, kind: continuous} or {key, kind: category, n_categories}",
    "obs_fields.unique": "5: obs_fields keys are unique",
    "obs_fields.counts": "5: obs_fields counts match stats",
    "obs_fields.order": "5: obs_fields equal the obs manifest's order, continuous first (legacy: the same fields)",
    "obs_fields.n_categories": "5: n_categories equals the manifest's number of categories",
    "export_settings.keys": "5: export_settings has exactly its four keys",
    "export_settings.value": "5: export_settings values are in range (compression, bits, codes dtype)",
    "export_settings.mismatch": "5: export_settings agree with the manifests",
    "source.keys": "5: source has name and optionally url, citation, filename",
    "source.value": "5: source.name, url, citation, filename are non-empty strings (JavaScript trim)",
    "vector_fields.keys": "5: vector_fields has exactly default_field and fields",
    "vector_fields.default": "5: default_field is a declared, non-empty field id, never null",
    "vector_fields.fields": "5: fields is a non-empty object with non-empty ids (JavaScript trim)",
    "vector_field.keys": "5/11: a vector field has exactly label, basis, available_dimensions, default_dimension, files (legacy: basis optional)",
    "vector_field.dimensions": "5: available_dimensions strictly increasing, a subset of the embedding dimensions",
    "vector_field.default": "5: default_dimension is the largest available dimension",
    "vector_field.files": "5: files has one path per available dimension",
    "vector_field.label": "5: folder picker: label equals the field id (legacy: a non-empty string)",
    "vector_field.basis": "5: folder picker: basis is 'umap'",
    "vector_field.path": "5/11: folder picker: paths exactly vectors/<i>_<d>d.bin[.gz] (legacy: vectors/<id>_<d>d.bin[.gz])",
    "files.unadvertised": "5: a manifest on disk that the identity does not advertise",
    # obs (section 7)
    "obs.keys": "7: the obs manifest has exactly its 8 keys",
    "obs.format": "7: _format is 'compact_v1'",
    "obs.n_points": "7: n_points is an integer > 0",
    "obs.n_cells": "5: obs n_points equals stats.n_cells",
    "obs.quantile": "7: centroid_outlier_quantile is null or 0 < q < 1",
    "obs.latent_key": "7: latent_key is null or a non-empty string",
    "obs.schemas": "7: _obsSchemas is an object with continuous/categorical exactly when such fields exist",
    "obs.entry": "7/11: field entries have the layout's shape and length",
    "obs.index": "7: indices across both lists are exactly 0..N-1, each once",
    "obs.key": "7: obs keys are non-empty and unique",
    "schema.keys": "7/8: a schema has exactly its keys (quantizationBits only when quantized)",
    "schema.kind": "8: the var schema's kind is 'continuous'",
    "schema.dtype": "4/7/8: quantized/bits/dtype/ext pair exactly (8/uint8/u8, 16/uint16/u16, float32/f32)",
    "schema.pattern": "7/8/11: path patterns hold exactly the layout's placeholder and end as the format says",
    "quant.bounds": "4: quantization min, max are finite with min <= max",
    "categories.value": "7: categories are unique finite JSON scalars (no null, nothing that parses to +-Inf)",
    "categories.count": "7: at most 255 (uint8) / 65535 (uint16) categories",
    "codes.dtype": "7: codesDtype is uint8 or uint16",
    "codes.missing_value": "7: codesMissingValue is 255 (uint8) / 65535 (uint16)",
    "codes.range": "7: every code is < len(categories) or the missing code",
    "centroids.value": "7: centroidsByDim keyed 1/2/3, exactly {category, position, n_points}, at most one per category; category is the identical JSON value",
    "outliers.range": "7: outlier quantiles decode to NaN or a number in [0, 1]",
    # var (section 8)
    "var.keys": "8: the var manifest has exactly its 7 keys",
    "var.format": "8: _format is 'compact_v1'",
    "var.n_points": "8: n_points is an integer > 0",
    "var.n_cells": "5: var n_points equals stats.n_cells",
    "var.n_genes": "5: the var manifest lists stats.n_genes genes",
    "var.gene_id_column": "8: var_gene_id_column is null or a non-empty string",
    "var.quantization": "8: quantization is null/8/16 and equals the schema's bits",
    "var.entry": "8/11: gene entries have the layout's shape and length",
    "var.index": "8: gene indices are exactly 0..N-1",
    "var.name": "8: gene names are non-empty and unique",
    # connectivity (section 9)
    "connectivity.keys": "9/11: exactly the 12 (legacy: 9) connectivity keys",
    "connectivity.format": "9: format is 'edge_pairs'",
    "connectivity.value": "9: n_cells (at most 2^32), n_edges, max_neighbors integers; weight_dtype float64, weight_bytes 8",
    "connectivity.index_dtype": "9: index dtype is the smallest that fits (uint16/2 up to 65536 cells, else uint32/4)",
    "connectivity.n_edges": "9: n_edges <= n_cells (n_cells - 1) / 2",
    "connectivity.max_neighbors": "9: max_neighbors <= min(n_cells - 1, n_edges), 0 exactly when n_edges is 0",
    "connectivity.working_set": "9 (viewer): 44 bytes per edge (48 with uint16 indices) + 4 per cell fit the viewer's 512 MiB connectivity working set",
    "connectivity.stats": "5: the connectivity manifest's n_cells and n_edges match stats",
    "edges.upper": "9: src < dst for every edge",
    "edges.order": "9: edges strictly increasing by (src, dst)",
    "edges.range": "9: edge indices < n_cells",
    "edges.weights": "9: weights finite and > 0",
    "edges.max_neighbors": "9: max_neighbors is the true maximum degree",
    # catalog (section 10)
    "catalog.keys": "10: datasets.json has exactly version, default, datasets",
    "catalog.version": "10: version is 1",
    "catalog.default": "10: default is one of the dataset ids",
    "catalog.entry": "10: an entry has exactly id, path and optionally name, description, n_cells, n_genes",
    "catalog.path": "10: entry paths are relative directories ending in '/', unique",
    "catalog.id": "10: entry ids are unique and equal their identity's id",
    "catalog.mismatch": "10: optional name, description, n_cells, n_genes equal the identity's",
}


@dataclass(frozen=True)
class Problem:
    """One broken rule of the export format.

    Parameters
    ----------
    file
        The file the problem is in, relative to the validated path (POSIX separators).
    rule
        A short stable identifier of the rule, such as ``"identity.keys"`` or ``"gzip.isize"``.
    found
        What the file holds.
    expected
        What the viewer accepts.

    Examples
    --------
    >>> p = Problem("obs_manifest.json", "obs.n_points", "0", "an integer > 0")
    >>> str(p)
    'obs_manifest.json: [obs.n_points] found 0; expected an integer > 0'
    """

    file: str
    rule: str
    found: str
    expected: str

    def __str__(self) -> str:
        return f"{self.file}: [{self.rule}] found {self.found}; expected {self.expected}"

    def to_dict(self) -> dict[str, str]:
        """Return the problem as a JSON-serializable dict."""
        return {
            "file": self.file,
            "rule": self.rule,
            "found": self.found,
            "expected": self.expected,
        }


class ValidationReport:
    """The result of :func:`validate`: every problem found in an export.

    A report is truthy when the export has no problems.

    Parameters
    ----------
    path
        The validated directory.
    layout
        ``"current"`` or ``"legacy"`` (``"mixed"`` for an exports root whose datasets differ).
    problems
        Every problem found, in the order they were found.
    datasets
        Each validated dataset directory (relative to ``path``, ``"."`` for ``path`` itself)
        mapped to its layout.

    Examples
    --------
    >>> report = ValidationReport(Path("out"), "current", [])
    >>> bool(report), report.ok
    (True, True)
    >>> print(report)
    out: valid current-layout export, no problems
    """

    def __init__(
        self,
        path: Path,
        layout: str,
        problems: list[Problem],
        datasets: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.layout = layout
        self.problems = list(problems)
        self.datasets = dict(datasets) if datasets is not None else {".": layout}

    @property
    def ok(self) -> bool:
        """Whether the export has no problems."""
        return not self.problems

    @property
    def rules(self) -> set[str]:
        """The identifiers of the rules that are broken."""
        return {p.rule for p in self.problems}

    def __bool__(self) -> bool:
        return self.ok

    def __len__(self) -> int:
        return len(self.problems)

    def __repr__(self) -> str:
        return f"ValidationReport(path={str(self.path)!r}, layout={self.layout!r}, problems={len(self.problems)})"

    def __str__(self) -> str:
        if self.ok:
            return f"{self.path}: valid {self.layout}-layout export, no problems"
        lines = [f"{self.path}: {len(self.problems)} problem(s) in a {self.layout}-layout export"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-serializable dict.

        Examples
        --------
        >>> ValidationReport(Path("out"), "current", []).to_dict()["ok"]
        True
        """
        return {
            "path": str(self.path),
            "layout": self.layout,
            "ok": self.ok,
            "datasets": dict(self.datasets),
            "problems": [p.to_dict() for p in self.problems],
        }

    def raise_if_problems(self) -> None:
        """Raise a :class:`ValueError` listing every problem, if there is any.

        Examples
        --------
        >>> ValidationReport(Path("out"), "current", []).raise_if_problems()
        """
        if self.problems:
            msg = str(self)
            raise ValueError(msg)


def validate(path: str | Path, *, strict: bool = False) -> ValidationReport:
    """Check an export directory against every rule the Cellucid viewer enforces.

    Parameters
    ----------
    path
        A dataset directory (holding ``dataset_identity.json``) or an exports root (holding
        ``datasets.json``: the catalog and every dataset it lists are checked, and problems
        name files relative to the root, e.g. ``"ds1/obs_manifest.json"``).
    strict
        Raise a :class:`ValueError` listing every problem instead of returning a report
        with problems.

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
    path = Path(path)
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


# --- small helpers ------------------------------------------------------------------------


def _type_name(value: object) -> str:
    """Return the JSON type name of a parsed JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object, limit: int = 160) -> str:
    """Return a short readable form of a value for a problem message."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = f"<a {_type_name(value)} nested too deeply to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raw(value: object) -> str:
    """Return a parsed JSON value as JSON text (strings quoted), shortened for a message."""
    try:
        return _show(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return _show(value)


def _is_int(value: object) -> bool:
    """Whether a JSON value is a safe integer as the viewer sees it (``2.0`` is; ``true`` is not)."""
    if type(value) is int:
        return abs(value) <= MAX_SAFE_INTEGER
    return (
        type(value) is float
        and math.isfinite(value)
        and value.is_integer()
        and abs(value) <= MAX_SAFE_INTEGER
    )


def _is_nonneg_int(value: object) -> bool:
    return _is_int(value) and value >= 0  # type: ignore[operator]


def _is_number(value: object) -> bool:
    """Whether a JSON value is a finite number (booleans are not numbers)."""
    if type(value) is int:  # an integer past float64's range parses to Infinity in JavaScript
        return abs(value) <= _FLOAT_MAX
    return type(value) is float and math.isfinite(value)


def _is_nonempty_str(value: object) -> bool:
    """Whether a JSON value is a string the viewer calls non-empty (after JavaScript's trim)."""
    return isinstance(value, str) and not is_blank(value)


def _url_error(path: str) -> str | None:
    """Return the first part of ``path`` that is not URL-canonical, as the viewer checks it."""
    for part in path.split("/"):
        try:
            decoded = urllib.parse.unquote(part, errors="strict")
        except UnicodeDecodeError:
            return part
        if urllib.parse.quote(decoded, safe=_URI_UNRESERVED) != part:
            return part
    return None


def _path_error(path: object) -> str | None:
    """Return why ``path`` is not a valid relative POSIX path for a manifest, or ``None``."""
    if not isinstance(path, str) or not path:
        return "not a non-empty string"
    if path.startswith("/"):
        return "a leading '/'"
    for char in "\\%?#":
        if char in path:
            return f"the character {char!r}"
    if any(unicodedata.category(c) == "Cc" for c in path):
        return "a control character"
    if _SCHEME.match(path):
        return "a URL scheme"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"an empty, '.' or '..' component ({part!r})"
    return None


def _category_key(value: object) -> tuple[str, object] | None:
    """Return a hashable identity of a category label as JavaScript compares them."""
    if isinstance(value, bool):
        return ("b", value)
    if type(value) in (int, float):
        try:
            number = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an integer past float64: JavaScript parses it as Infinity
            return None
        return ("n", number) if math.isfinite(number) else None
    if isinstance(value, str):
        return ("s", value)
    return None


def _reject_constant(name: str) -> None:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


class _Fail:
    """A JSON file that could not be read (the problem is already reported)."""


_FAILED = _Fail()


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}{rel}"


# --- datasets -------------------------------------------------------------------------------


@dataclass
class _ValueSchema:
    quantized: bool
    bits: int | None
    dtype: str
    pattern: str


@dataclass
class _CatSchema:
    codes_pattern: str | None
    outlier_pattern: str | None
    outlier_quantized: bool | None
    outlier_dtype: str | None


@dataclass
class _ObsField:
    kind: str  # "continuous" or "category"
    key: object
    index: int | None
    n_categories: int | None = None
    codes_dtype: str | None = None


class _DatasetChecker:
    """Check one dataset directory; problems name files as ``prefix + relative path``."""

    def __init__(
        self,
        directory: Path,
        prefix: str,
        *,
        scan_payloads: bool = True,
        genes: Collection[object] | None = None,
    ) -> None:
        self.dir = directory
        self.base = _resolved(directory)
        self.prefix = prefix
        #: False checks the JSON documents only (no payload is opened)
        self.scan_payloads = scan_payloads
        #: the gene names whose payloads are read (None: every gene)
        self.genes = None if genes is None else set(genes)
        self.problems: list[Problem] = []
        self.layout = "current"
        self.lay: Layout = layout("current")
        # what the checks learn, for the cross-file checks
        self.n_cells: int | None = None
        self.n_genes: int | None = None
        self.has_connectivity: bool | None = None
        self.n_edges: int | None = None
        self.dims: list[int] = []
        self.declared: dict[str, str] = {}
        self.compressions: dict[str, int | None] = {}
        self.gz_paths: dict[str, bool] = {}
        self.obs_fields: list[_ObsField] | None = None
        self.obs_schema_bits: int | None = None
        self.obs_has_continuous = False
        self.var_schema_bits: int | None = None
        self.var_schema_known = False
        self.codes_dtypes: set[str] = set()

    # -- reporting --
    def add(self, rel: str, rule: str, found: object, expected: object) -> None:
        found_text = found if isinstance(found, str) else _raw(found)
        expected_text = expected if isinstance(expected, str) else _raw(expected)
        self.problems.append(Problem(_join(self.prefix, rel), rule, found_text, expected_text))

    # -- files --
    def escapes(self, path: Path) -> bool:
        """Whether ``path`` leads out of the dataset directory (through a symbolic link)."""
        return _escapes(path, self.base)

    def load_json(self, rel: str, *, required: bool = True) -> Any:
        return _load_json(self.dir / rel, rel, self.add, required=required, base=self.base)

    def check_keys(
        self,
        rel: str,
        obj: object,
        rule: str,
        required: frozenset[str],
        optional: frozenset[str] = frozenset(),
        what: str = "",
    ) -> bool:
        return _check_keys(self.add, rel, obj, rule, required, optional, what)

    # -- payloads --
    def declare(self, rel: str, path: object, what: str) -> str | None:
        """Check a payload path declared in ``rel``; return it when it can be opened."""
        error = _path_error(path)
        if error is not None:
            self.add(
                rel, "path.syntax", f"{what} {_raw(path)} has {error}", "a relative POSIX path"
            )
            return None
        assert isinstance(path, str)
        if path in self.declared:
            self.add(
                rel,
                "path.duplicate",
                f"{what} {path!r} is also {self.declared[path]}",
                "every payload file declared once",
            )
        else:
            self.declared[path] = what
        return path

    def payload_problem(self, rel: str, expected: int) -> tuple[str, str, str] | None:
        """Return why payload ``rel`` cannot hold ``expected`` bytes, judged without reading it.

        The declared size must be within the viewer's limit, an uncompressed file must be
        exactly that size, and a ``.gz`` file must be within the transfer ceiling and large
        enough for deflate to inflate to it. ``None`` when it may hold them.
        """
        if expected > MAX_PAYLOAD_BYTES:
            return (
                "payload.size",
                f"{expected} bytes declared",
                f"at most {MAX_PAYLOAD_BYTES} bytes decoded",
            )
        path = self.dir / rel
        if not _is_file(path):
            return ("file.missing", "no such file", "the payload file its manifest declares")
        if self.escapes(path):
            return (
                "path.symlink",
                "a symbolic link leading out of the export",
                "a file inside the export",
            )
        try:
            size = path.stat().st_size
        except OSError as exc:
            return ("file.missing", f"an unreadable file ({exc})", "a readable payload file")
        if not rel.endswith(".gz"):
            if size != expected:
                return ("payload.length", f"a file of {size} bytes", f"{expected} bytes")
            return None
        ceiling = gzip_ceiling(expected)
        if size > ceiling:
            return (
                "gzip.ceiling",
                f"a {size}-byte file for {expected} decoded bytes",
                f"at most {ceiling} bytes",
            )
        if expected > _MAX_INFLATE_RATIO * size:
            return (
                "payload.length",
                f"a {size}-byte gzip file, which cannot inflate to {expected} bytes",
                f"{expected} bytes decoded",
            )
        return None

    def payload_chunks(
        self, rel: str, dtype: np.dtype, n_elements: int, chunk: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield the decoded elements of payload ``rel`` in chunks, reporting envelope problems.

        Nothing is read when the sizes are implausible (:meth:`payload_problem`), and
        decoding stops at the first byte past the expected length.
        """
        dtype = np.dtype(dtype).newbyteorder("<")
        itemsize = dtype.itemsize
        expected = n_elements * itemsize
        if not self.scan_payloads:
            return
        problem = self.payload_problem(rel, expected)
        if problem is not None:
            self.add(rel, *problem)
            return
        path = self.dir / rel
        chunk_bytes = (chunk or max(1, _CHUNK // itemsize)) * itemsize
        state = _GzipState()
        blocks = (
            _gunzip_blocks(path, rel, self.add, state, expected)
            if rel.endswith(".gz")
            else _raw_blocks(path, expected)
        )
        buf = bytearray()
        total = 0
        try:
            for block in blocks:
                part = block[: expected - total]
                total += len(block)
                buf += part
                while len(buf) >= chunk_bytes:
                    yield np.frombuffer(bytes(buf[:chunk_bytes]), dtype)
                    del buf[:chunk_bytes]
                if total > expected:
                    break
        except OSError as exc:
            self.add(rel, "file.missing", f"an unreadable file ({exc})", "a readable payload file")
            state.fatal = True
        finally:
            blocks.close()
        usable = len(buf) - len(buf) % itemsize
        if usable:
            yield np.frombuffer(bytes(buf[:usable]), dtype)
        if state.fatal:
            return
        if total > expected:
            self.add(
                rel,
                "payload.length",
                f"more than {expected} bytes decoded (stopped there)",
                f"{expected} bytes ({n_elements} x {itemsize})",
            )
        elif total != expected:
            self.add(
                rel,
                "payload.length",
                f"{total} bytes decoded",
                f"{expected} bytes ({n_elements} x {itemsize})",
            )

    def scan(self, rel: str, dtype: np.dtype | str, n_elements: int) -> Iterator[np.ndarray]:
        return self.payload_chunks(rel, np.dtype(dtype), n_elements)

    # -- the run --
    def run(self) -> None:
        identity = self.load_json(IDENTITY_FILE)
        obs = self.load_json(OBS_MANIFEST)
        var = self.load_json(VAR_MANIFEST, required=False)
        conn = self.load_json(CONNECTIVITY_MANIFEST, required=False)
        #: the parsed identity and manifests (``_FAILED`` when unreadable, None when absent)
        self.documents = (identity, obs, var, conn)
        self.layout = _detect_layout(obs, var, conn)
        self.lay = layout(self.layout)
        logger.debug("validating %s (%s layout)", self.dir, self.layout)

        identity_ok = isinstance(identity, dict)
        if not isinstance(identity, _Fail):
            self.check_identity_head(identity)
        if (
            isinstance(obs, dict)
            and _is_int(obs.get("n_points"))
            and obs["n_points"] > 0
            and self.n_cells is None
        ):
            self.n_cells = int(obs["n_points"])
        if not isinstance(obs, _Fail):
            self.check_obs(obs)
        if var is not None and not isinstance(var, _Fail):
            self.check_var(var)
        if conn is not None and not isinstance(conn, _Fail):
            self.check_connectivity(conn)
        if identity_ok:
            self.check_identity_tail(identity)
            self.check_presence(var, conn)
        self.check_unadvertised()
        self.check_compression()

    # -- identity --
    def check_identity_head(self, ident: object) -> None:
        rel = IDENTITY_FILE
        if not self.check_keys(
            rel, ident, "identity.keys", IDENTITY_REQUIRED_KEYS, IDENTITY_OPTIONAL_KEYS
        ):
            return
        assert isinstance(ident, dict)
        if "version" in ident and not (
            _is_int(ident["version"]) and ident["version"] == IDENTITY_VERSION
        ):
            self.add(rel, "identity.version", _raw(ident["version"]), f"{IDENTITY_VERSION}")
        if "id" in ident:
            _check_id(self.add, rel, ident["id"], "identity.id")
        if "name" in ident and not _is_nonempty_str(ident["name"]):
            self.add(rel, "identity.name", _raw(ident["name"]), "a non-empty string")
        if "description" in ident and not isinstance(ident["description"], str):
            self.add(
                rel, "identity.description", _raw(ident["description"]), 'a string (may be "")'
            )
        if "cellucid_data_version" in ident and not _is_nonempty_str(
            ident["cellucid_data_version"]
        ):
            self.add(
                rel,
                "identity.data_version",
                _raw(ident["cellucid_data_version"]),
                "a non-empty string",
            )
        if "created_at" in ident:
            self.check_created_at(ident["created_at"])
        if "stats" in ident:
            self.check_stats(ident["stats"])
        if "embeddings" in ident:
            self.check_embeddings(ident["embeddings"])
        if "source" in ident:
            self.check_source(ident["source"])
        if "export_settings" in ident:
            self.check_export_settings_values(ident["export_settings"])

    def check_created_at(self, value: object) -> None:
        good = isinstance(value, str) and _CREATED_AT.match(value) is not None
        if good:
            try:
                datetime.strptime(value, CREATED_AT_FORMAT)  # type: ignore[arg-type]
            except ValueError:
                good = False
        if not good:
            self.add(
                IDENTITY_FILE,
                "identity.created_at",
                _raw(value),
                "a real UTC time as YYYY-MM-DDTHH:MM:SSZ",
            )

    def check_stats(self, stats: object) -> None:
        rel = IDENTITY_FILE
        if not self.check_keys(rel, stats, "stats.keys", STATS_KEYS, what="stats"):
            return
        assert isinstance(stats, dict)
        counts = (
            "n_cells",
            "n_genes",
            "n_obs_fields",
            "n_categorical_fields",
            "n_continuous_fields",
        )
        good: dict[str, int] = {}
        for key in counts:
            if key in stats:
                if _is_nonneg_int(stats[key]):
                    good[key] = int(stats[key])
                else:
                    self.add(
                        rel,
                        "stats.value",
                        f"stats.{key} = {_raw(stats[key])}",
                        "a non-negative integer",
                    )
        has_conn = stats.get("has_connectivity")
        if "has_connectivity" in stats and not isinstance(has_conn, bool):
            self.add(
                rel, "stats.value", f"stats.has_connectivity = {_raw(has_conn)}", "true or false"
            )
            has_conn = None
        n_edges = stats.get("n_edges")
        if "n_edges" in stats:
            if n_edges is not None and not _is_nonneg_int(n_edges):
                self.add(
                    rel,
                    "stats.value",
                    f"stats.n_edges = {_raw(n_edges)}",
                    "a non-negative integer or null",
                )
            elif has_conn is True and n_edges is None:
                self.add(
                    rel,
                    "stats.n_edges",
                    "null with has_connectivity true",
                    "an integer when connected",
                )
            elif has_conn is False and n_edges is not None:
                self.add(
                    rel,
                    "stats.n_edges",
                    f"{_raw(n_edges)} with has_connectivity false",
                    "null when not connected",
                )
        if all(
            k in good for k in ("n_obs_fields", "n_categorical_fields", "n_continuous_fields")
        ) and (good["n_obs_fields"] != good["n_categorical_fields"] + good["n_continuous_fields"]):
            self.add(
                rel,
                "stats.sum",
                f"n_obs_fields {good['n_obs_fields']}, n_categorical_fields {good['n_categorical_fields']}, "
                f"n_continuous_fields {good['n_continuous_fields']}",
                "n_obs_fields = n_categorical_fields + n_continuous_fields",
            )
        self.stats = good
        self.n_cells = good.get("n_cells")
        self.n_genes = good.get("n_genes")
        self.has_connectivity = has_conn if isinstance(has_conn, bool) else None
        self.n_edges = int(n_edges) if _is_nonneg_int(n_edges) else None

    def check_embeddings(self, emb: object) -> None:
        rel = IDENTITY_FILE
        if not self.check_keys(rel, emb, "embeddings.keys", EMBEDDINGS_KEYS, what="embeddings"):
            return
        assert isinstance(emb, dict)
        dims = emb.get("available_dimensions")
        dims_ok = _check_dimensions(dims, DIMENSIONS)
        if not dims_ok:
            self.add(
                rel,
                "embeddings.dimensions",
                _raw(dims),
                "a non-empty, strictly increasing list of 1, 2, 3",
            )
            dims = (
                [d for d in dims if d in DIMENSIONS and _is_int(d)]
                if isinstance(dims, list)
                else []
            )
        dims = sorted({int(d) for d in dims})
        self.dims = dims
        default = emb.get("default_dimension")
        if "default_dimension" in emb and not (_is_int(default) and default in dims):
            self.add(
                rel, "embeddings.default", _raw(default), f"one of the available dimensions {dims}"
            )
        files = emb.get("files")
        if "files" not in emb:
            return
        wanted = {f"{d}d" for d in dims}
        if not isinstance(files, dict) or set(files) != wanted:
            found = sorted(files) if isinstance(files, dict) else files
            self.add(
                rel,
                "embeddings.files",
                _raw(found),
                f"an object with exactly the keys {sorted(wanted)}",
            )
            if not isinstance(files, dict):
                return
        self.points_paths: dict[int, str] = {}
        for d in dims:
            if f"{d}d" not in files:
                continue
            path = self.declare(rel, files[f"{d}d"], f"embeddings.files[{d}d]")
            if path is None:
                continue
            self.gz_paths[f"{rel} embeddings.files[{d}d]"] = path.endswith(".gz")
            self.points_paths[d] = path
            part = _url_error(path)
            if part is not None:
                self.add(
                    rel,
                    "path.url",
                    f"embeddings.files[{d}d] {path!r}: part {part!r}",
                    "URL-canonical parts: letters, digits and - _ . ! ~ * ' ( ) only",
                )

    def check_points(self) -> None:
        for d, path in getattr(self, "points_paths", {}).items():
            if self.n_cells is None:
                continue
            bad = 0
            for chunk in self.scan(path, "<f4", self.n_cells * d):
                bad += int(np.count_nonzero(~np.isfinite(chunk)))
            if bad:
                self.add(
                    path, "points.finite", f"{bad} NaN/Inf value(s)", "finite float32 coordinates"
                )

    def check_source(self, source: object) -> None:
        rel = IDENTITY_FILE
        if not self.check_keys(
            rel, source, "source.keys", SOURCE_REQUIRED_KEYS, SOURCE_OPTIONAL_KEYS, what="source"
        ):
            return
        assert isinstance(source, dict)
        if "name" in source and not _is_nonempty_str(source["name"]):
            self.add(
                rel, "source.value", f"source.name = {_raw(source['name'])}", "a non-empty string"
            )
        for key in sorted(SOURCE_OPTIONAL_KEYS):
            if key in source and not _is_nonempty_str(source[key]):
                self.add(
                    rel,
                    "source.value",
                    f"source.{key} = {_raw(source[key])}",
                    "a non-empty string when present",
                )

    def check_export_settings_values(self, es: object) -> None:
        rel = IDENTITY_FILE
        self.export_settings: dict | None = None
        if not self.check_keys(
            rel, es, "export_settings.keys", EXPORT_SETTINGS_KEYS, what="export_settings"
        ):
            return
        assert isinstance(es, dict)
        good = dict(es)
        if not _valid_compression(es.get("compression")):
            self.add(
                rel,
                "export_settings.value",
                f"compression = {_raw(es.get('compression'))}",
                "null or an integer 1-9",
            )
            good.pop("compression", None)
        else:
            self.compressions["dataset_identity.json export_settings.compression"] = _level(
                es.get("compression")
            )
        for key in ("var_quantization", "obs_continuous_quantization"):
            value = es.get(key)
            if not (value is None or (_is_int(value) and value in MAX_QUANT)):
                self.add(rel, "export_settings.value", f"{key} = {_raw(value)}", "null, 8 or 16")
                good.pop(key, None)
        allowed = set(CODES_MISSING) | ({"auto"} if self.layout == "legacy" else set())
        if not (
            isinstance(es.get("obs_categorical_dtype"), str)
            and es["obs_categorical_dtype"] in allowed
        ):
            self.add(
                rel,
                "export_settings.value",
                f"obs_categorical_dtype = {_raw(es.get('obs_categorical_dtype'))}",
                '"uint8" or "uint16"',
            )
            good.pop("obs_categorical_dtype", None)
        self.export_settings = good

    def check_identity_tail(self, ident: dict) -> None:
        """Check what in the identity needs the manifests: obs_fields, vectors, points, settings."""
        if "obs_fields" in ident:
            self.check_obs_fields(ident["obs_fields"])
        if "vector_fields" in ident:
            self.check_vector_fields(ident["vector_fields"])
        self.check_points()
        self.check_export_settings_agree()

    def check_obs_fields(self, fields: object) -> None:
        rel = IDENTITY_FILE
        if not isinstance(fields, list):
            self.add(rel, "obs_fields.entry", _type_name(fields), "a list of field objects")
            return
        parsed: list[tuple[object, str, object]] = []
        for i, entry in enumerate(fields):
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if kind == "continuous":
                keys = frozenset({"key", "kind"})
            elif kind == "category":
                keys = frozenset({"key", "kind", "n_categories"})
            else:
                self.add(
                    rel,
                    "obs_fields.entry",
                    f"obs_fields[{i}] = {_raw(entry)}",
                    'an object with kind "continuous" or "category"',
                )
                continue
            assert isinstance(entry, dict)
            if set(entry) != keys:
                self.add(
                    rel,
                    "obs_fields.entry",
                    f"obs_fields[{i}] keys {sorted(entry)}",
                    f"exactly {sorted(keys)}",
                )
                continue
            if not _is_nonempty_str(entry["key"]):
                self.add(
                    rel,
                    "obs_fields.entry",
                    f"obs_fields[{i}].key = {_raw(entry['key'])}",
                    "a non-empty string",
                )
                continue
            if kind == "category" and not _is_nonneg_int(entry["n_categories"]):
                self.add(
                    rel,
                    "obs_fields.entry",
                    f"obs_fields[{i}].n_categories = {_raw(entry['n_categories'])}",
                    "a non-negative integer",
                )
                continue
            parsed.append((entry["key"], kind, entry.get("n_categories")))
        keys = [p[0] for p in parsed]
        dupes = sorted(k for k, n in Counter(keys).items() if n > 1)  # type: ignore[type-var]
        if dupes:
            self.add(rel, "obs_fields.unique", f"duplicate keys {_raw(dupes)}", "unique keys")
        stats = getattr(self, "stats", {})
        if len(parsed) == len(fields):
            counts = {
                "n_obs_fields": len(parsed),
                "n_continuous_fields": sum(p[1] == "continuous" for p in parsed),
                "n_categorical_fields": sum(p[1] == "category" for p in parsed),
            }
            for key, count in counts.items():
                if key in stats and stats[key] != count:
                    self.add(
                        rel,
                        "obs_fields.counts",
                        f"{count} {key[2:]} in obs_fields",
                        f"stats.{key} = {stats[key]}",
                    )
        manifest = self.obs_fields
        if manifest is None or len(parsed) != len(fields):
            return
        mine = [(f.key, f.kind) for f in manifest]
        theirs = [(p[0], p[1]) for p in parsed]
        if self.layout == "legacy":
            # the original design listed obs_fields in obs_keys order: same fields, any order
            if sorted(map(_show, mine)) != sorted(map(_show, theirs)):
                self.add(
                    rel,
                    "obs_fields.order",
                    f"fields {_raw(theirs)}",
                    f"the obs manifest's fields {_raw(mine)}",
                )
        elif mine != theirs:
            at = next(
                (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                min(len(mine), len(theirs)),
            )
            self.add(
                rel,
                "obs_fields.order",
                f"position {at}: {_raw(theirs[at] if at < len(theirs) else 'end of list')}",
                f"{_raw(mine[at] if at < len(mine) else 'end of list')} (the obs manifest's order, continuous first)",
            )
        by_key = {f.key: f for f in manifest if f.kind == "category" and isinstance(f.key, str)}
        for key, kind, n_cat in parsed:
            field = by_key.get(key)  # type: ignore[call-overload]
            if (
                kind == "category"
                and field is not None
                and field.n_categories is not None
                and field.n_categories != n_cat
            ):
                self.add(
                    rel,
                    "obs_fields.n_categories",
                    f"{key}: {n_cat}",
                    f"{field.n_categories} (the obs manifest's categories)",
                )

    def check_vector_fields(self, vf: object) -> None:
        rel = IDENTITY_FILE
        if not self.check_keys(
            rel, vf, "vector_fields.keys", VECTOR_FIELDS_KEYS, what="vector_fields"
        ):
            return
        assert isinstance(vf, dict)
        fields = vf.get("fields")
        if "fields" in vf and (not isinstance(fields, dict) or not fields):
            self.add(
                rel, "vector_fields.fields", _raw(fields), "a non-empty object of vector fields"
            )
            fields = None
        if isinstance(fields, dict):
            blank = [k for k in fields if is_blank(k)]
            if blank:
                self.add(
                    rel,
                    "vector_fields.fields",
                    f"field ids {_raw(blank)}",
                    "non-empty field ids (after JavaScript's trim)",
                )
        default = vf.get("default_field")
        if "default_field" in vf and not (
            _is_nonempty_str(default) and isinstance(fields, dict) and default in fields
        ):
            declared = sorted(fields) if isinstance(fields, dict) else []
            self.add(
                rel,
                "vector_fields.default",
                _raw(default),
                f"one of the declared fields {declared}",
            )
        if not isinstance(fields, dict):
            return
        legacy = self.layout == "legacy"
        optional = frozenset({"basis"}) if legacy else frozenset()
        required = VECTOR_FIELD_KEYS - optional
        for position, (field_id, field) in enumerate(fields.items()):
            where = f"vector_fields.fields[{field_id!r}]"
            if not self.check_keys(rel, field, "vector_field.keys", required, optional, what=where):
                continue
            assert isinstance(field, dict)
            if not legacy and "label" in field and field["label"] != field_id:
                self.add(
                    rel,
                    "vector_field.label",
                    f"{where}.label = {_raw(field['label'])}",
                    f"{field_id!r} (the field id)",
                )
            elif legacy and "label" in field and not _is_nonempty_str(field["label"]):
                self.add(
                    rel,
                    "vector_field.label",
                    f"{where}.label = {_raw(field['label'])}",
                    "a non-empty string",
                )
            if "basis" in field and field["basis"] != VECTOR_BASIS:
                self.add(
                    rel,
                    "vector_field.basis",
                    f"{where}.basis = {_raw(field['basis'])}",
                    f"{VECTOR_BASIS!r}",
                )
            dims = field.get("available_dimensions")
            if "available_dimensions" in field and not _check_dimensions(dims, self.dims):
                self.add(
                    rel,
                    "vector_field.dimensions",
                    f"{where}.available_dimensions = {_raw(dims)}",
                    f"a non-empty, strictly increasing subset of {self.dims}",
                )
            if not (
                isinstance(dims, list)
                and dims
                and all(_is_int(d) and d in DIMENSIONS for d in dims)
            ):
                continue
            dims = sorted({int(d) for d in dims})
            if "default_dimension" in field and field["default_dimension"] != max(dims):
                self.add(
                    rel,
                    "vector_field.default",
                    f"{where}.default_dimension = {_raw(field['default_dimension'])}",
                    f"{max(dims)} (the largest)",
                )
            files = field.get("files")
            wanted = {f"{d}d" for d in dims}
            if not isinstance(files, dict) or set(files) != wanted:
                found = sorted(files) if isinstance(files, dict) else files
                self.add(
                    rel,
                    "vector_field.files",
                    f"{where}.files: {_raw(found)}",
                    f"exactly the keys {sorted(wanted)}",
                )
                if not isinstance(files, dict):
                    continue
            for d in dims:
                if f"{d}d" not in files:
                    continue
                path = self.declare(rel, files[f"{d}d"], f"{where}.files[{d}d]")
                if path is None:
                    continue
                self.gz_paths[f"{rel} {where}.files[{d}d]"] = path.endswith(".gz")
                stem = self.lay.vector_stem(position, str(field_id))
                want = f"{VECTORS_DIR}/{stem}_{d}d.bin"
                if path.removesuffix(".gz") != want:
                    self.add(
                        rel,
                        "vector_field.path",
                        f"{where}.files[{d}d] = {path!r}",
                        f"{want!r} (+ '.gz' when compressed)",
                    )
                if self.n_cells is None:
                    continue
                bad = 0
                for chunk in self.scan(path, "<f4", self.n_cells * d):
                    bad += int(np.count_nonzero(~np.isfinite(chunk)))
                if bad:
                    self.add(
                        path, "vectors.finite", f"{bad} NaN/Inf value(s)", "finite float32 vectors"
                    )

    # -- obs and var manifests --
    def check_compact_head(
        self, rel: str, man: object, prefix: str, keys: frozenset
    ) -> int | bool | None:
        """Check what the obs and var manifests share: key set, ``_format``, ``n_points``.

        Returns False when the key set is wrong (nothing more to check), else ``n_points``
        (None when unusable).
        """
        if not self.check_keys(rel, man, f"{prefix}.keys", keys):
            return False
        assert isinstance(man, dict)
        if "_format" in man and man["_format"] != MANIFEST_FORMAT:
            self.add(rel, f"{prefix}.format", _raw(man["_format"]), MANIFEST_FORMAT)
        n_points = man.get("n_points")
        if "n_points" in man and not (_is_int(n_points) and n_points > 0):
            self.add(rel, f"{prefix}.n_points", _raw(n_points), "an integer > 0")
            return None
        if n_points is None:
            return None
        if self.n_cells is not None and int(n_points) != self.n_cells:
            self.add(
                rel,
                f"{prefix}.n_cells",
                f"n_points {int(n_points)}",
                f"stats.n_cells = {self.n_cells}",
            )
        return int(n_points)

    def check_obs(self, man: object) -> None:
        rel = OBS_MANIFEST
        head = self.check_compact_head(rel, man, "obs", OBS_MANIFEST_KEYS)
        if head is False:
            return
        assert isinstance(man, dict)
        n_points = head
        q = man.get("centroid_outlier_quantile")
        if "centroid_outlier_quantile" in man and not (q is None or (_is_number(q) and 0 < q < 1)):
            self.add(rel, "obs.quantile", _raw(q), "null or a number strictly between 0 and 1")
        lk = man.get("latent_key")
        if "latent_key" in man and not (lk is None or _is_nonempty_str(lk)):
            self.add(rel, "obs.latent_key", _raw(lk), "null or a non-empty string")
        compression = self.check_compression_value(rel, man)
        cont = man.get("_continuousFields")
        cat = man.get("_categoricalFields")
        for name, value in (("_continuousFields", cont), ("_categoricalFields", cat)):
            if name in man and not isinstance(value, list):
                self.add(
                    rel, "obs.entry", f"{name} is {_type_name(value)}", "an array of field entries"
                )
        cont = cont if isinstance(cont, list) else []
        cat = cat if isinstance(cat, list) else []
        schemas = man.get("_obsSchemas")
        cont_schema: _ValueSchema | None = None
        cat_schema: _CatSchema | None = None
        if "_obsSchemas" in man:
            if not isinstance(schemas, dict):
                self.add(
                    rel,
                    "obs.schemas",
                    f"_obsSchemas is {_type_name(schemas)} {_raw(schemas)}",
                    "an object",
                )
            else:
                wanted = ({"continuous"} if cont else set()) | ({"categorical"} if cat else set())
                if set(schemas) != wanted:
                    self.add(
                        rel,
                        "obs.schemas",
                        f"schemas {sorted(schemas)}",
                        f"exactly {sorted(wanted)} (one per kind of field present)",
                    )
                if "continuous" in schemas:
                    cont_schema = self.check_value_schema(
                        rel, schemas["continuous"], "_obsSchemas.continuous", compression, var=False
                    )
                if "categorical" in schemas:
                    cat_schema = self.check_cat_schema(rel, schemas["categorical"], compression)
        if cont_schema is not None and cont:
            self.obs_schema_bits = cont_schema.bits
            self.obs_has_continuous = True
        head = 2 if self.layout == "current" else 1
        fields: list[_ObsField] = []
        entries_ok = True
        for i, entry in enumerate(cont):
            field = self.parse_continuous_entry(
                rel, "_continuousFields", i, entry, head, cont_schema
            )
            entries_ok &= field is not None
            if field is not None:
                fields.append(field)
        cat_entries: list[tuple[_ObsField, list]] = []
        for i, entry in enumerate(cat):
            parsed = self.parse_categorical_entry(rel, i, entry, head, cat_schema)
            entries_ok &= parsed is not None
            if parsed is not None:
                fields.append(parsed[0])
                cat_entries.append(parsed)
        self.check_indices_and_keys(rel, fields, len(cont) + len(cat), "obs")
        if (
            entries_ok
            and isinstance(man.get("_continuousFields"), list)
            and isinstance(man.get("_categoricalFields"), list)
        ):
            self.obs_fields = fields
        n = n_points if isinstance(n_points, int) else self.n_cells
        # payloads
        for field in fields:
            if field.kind == "continuous" and cont_schema is not None:
                path = self.field_path(
                    rel, cont_schema.pattern, field, "{ext}", f"{_raw(field.key)} values"
                )
                if path is not None and n is not None:
                    for _ in self.scan(path, cont_schema.dtype, n):
                        pass
        for field, entry in cat_entries:
            if cat_schema is None:
                continue
            if cat_schema.codes_pattern is not None and field.codes_dtype is not None:
                path = self.field_path(
                    rel,
                    cat_schema.codes_pattern,
                    field,
                    EXT[field.codes_dtype],
                    f"{_raw(field.key)} codes",
                )
                if path is not None and n is not None:
                    self.check_codes(path, field, n)
            if cat_schema.outlier_pattern is not None and cat_schema.outlier_dtype is not None:
                path = self.field_path(
                    rel, cat_schema.outlier_pattern, field, "{ext}", f"{_raw(field.key)} outliers"
                )
                if path is not None and n is not None:
                    bounds = entry[head + 4 : head + 6] if cat_schema.outlier_quantized else None
                    self.check_outliers(path, cat_schema, bounds, n)

    def field_path(
        self,
        rel: str,
        pattern: str,
        field: _ObsField | tuple[int | None, object],
        ext: str,
        what: str,
    ) -> str | None:
        index, key = (field.index, field.key) if isinstance(field, _ObsField) else field
        if not isinstance(key, str):  # reported as a key problem; names no file
            return None
        if self.layout == "current":
            if index is None:
                return None
            path = pattern.replace("{index}", str(index))
        else:
            path = pattern.replace("{key}", self.lay.stem(0, key))
        path = path.replace("{ext}", ext)
        return self.declare(rel, path, what)

    def check_value_schema(
        self, rel: str, schema: object, where: str, compression: object, *, var: bool
    ) -> _ValueSchema | None:
        base = CONTINUOUS_SCHEMA_KEYS | ({"kind"} if var else set())
        quantized = schema.get("quantized") if isinstance(schema, dict) else None
        required = base | ({"quantizationBits"} if quantized is True else set())
        if (
            not self.check_keys(rel, schema, "schema.keys", frozenset(required), what=where)
            or set(schema) != required
        ):  # type: ignore[arg-type]
            return None
        assert isinstance(schema, dict)
        if var and schema.get("kind") != "continuous":
            self.add(
                rel, "schema.kind", f"{where}.kind = {_raw(schema.get('kind'))}", '"continuous"'
            )
        dtype, ext = schema.get("dtype"), schema.get("ext")
        bits = schema.get("quantizationBits")
        if quantized is True:
            good = (
                _is_int(bits)
                and bits in QUANT_DTYPE
                and dtype == QUANT_DTYPE[int(bits)]
                and ext == EXT[dtype]
            )
            expect = '8/"uint8"/"u8" or 16/"uint16"/"u16"'
        else:
            good = quantized is False and dtype == "float32" and ext == "f32"
            expect = 'quantized false with "float32"/"f32"'
        if not good:
            self.add(
                rel,
                "schema.dtype",
                f"{where}: quantized {_raw(quantized)}, bits {_raw(bits)}, dtype {_raw(dtype)}, ext {_raw(ext)}",
                expect,
            )
            return None
        pattern = schema.get("pathPattern")
        if not self.check_pattern(
            rel,
            pattern,
            f"{where}.pathPattern",
            f".values.{ext}",
            compression,
            exact_dir="var" if var else None,
        ):
            return None
        assert isinstance(pattern, str)
        return _ValueSchema(
            quantized is True, int(bits) if quantized is True else None, str(dtype), pattern
        )

    def check_cat_schema(self, rel: str, schema: object, compression: object) -> _CatSchema | None:
        where = "_obsSchemas.categorical"
        if (
            not self.check_keys(rel, schema, "schema.keys", CATEGORICAL_SCHEMA_KEYS, what=where)
            or set(schema) != CATEGORICAL_SCHEMA_KEYS
        ):  # type: ignore[arg-type]
            return None
        assert isinstance(schema, dict)
        oq, odt, oext = (
            schema.get("outlierQuantized"),
            schema.get("outlierDtype"),
            schema.get("outlierExt"),
        )
        if oq is True:
            good = isinstance(odt, str) and odt in CODES_MISSING and oext == EXT[odt]
        else:
            good = oq is False and odt == "float32" and oext == "f32"
        if not good:
            self.add(
                rel,
                "schema.dtype",
                f"{where}: outlierQuantized {_raw(oq)}, outlierDtype {_raw(odt)}, outlierExt {_raw(oext)}",
                'true with "uint8"/"u8" or "uint16"/"u16", or false with "float32"/"f32"',
            )
        codes = schema.get("codesPathPattern")
        codes_ok = self.check_pattern(
            rel, codes, f"{where}.codesPathPattern", ".codes.{ext}", compression, extra="{ext}"
        )
        outl = schema.get("outlierPathPattern")
        outl_ok = good and self.check_pattern(
            rel, outl, f"{where}.outlierPathPattern", f".outliers.{oext}", compression
        )
        return _CatSchema(
            codes if codes_ok else None,  # type: ignore[arg-type]
            outl if outl_ok else None,  # type: ignore[arg-type]
            oq if good else None,  # type: ignore[arg-type]
            odt if good else None,  # type: ignore[arg-type]
        )

    def check_pattern(
        self,
        rel: str,
        pattern: object,
        where: str,
        ending: str,
        compression: object,
        *,
        extra: str | None = None,
        exact_dir: str | None = None,
    ) -> bool:
        ph = self.lay.placeholder
        if not isinstance(pattern, str):
            self.add(rel, "schema.pattern", f"{where} = {_raw(pattern)}", "a path pattern string")
            return False
        holders = sorted(_PLACEHOLDER.findall(pattern))
        wanted = sorted([ph] + ([extra] if extra else []))
        body = pattern.removesuffix(".gz")
        want_end = f"{ph}{ending}"
        bad = holders != wanted or not body.endswith(want_end)
        if exact_dir is not None:
            bad = bad or body != f"{exact_dir}/{want_end}"
            expect = f"exactly '{exact_dir}/{want_end}[.gz]'"
        else:
            expect = f"exactly the placeholders {wanted}, ending '{want_end}[.gz]'"
        if bad:
            self.add(rel, "schema.pattern", f"{where} = {pattern!r}", expect)
            return False
        sample = pattern.replace(ph, "0").replace("{ext}", "u8")
        error = _path_error(sample)
        if error is not None:
            self.add(
                rel, "path.syntax", f"{where} {pattern!r} has {error}", "a relative POSIX path"
            )
            return False
        self.check_suffix(rel, where, pattern, compression)
        return True

    def check_suffix(self, rel: str, where: str, path: str, compression: object) -> None:
        if not _valid_compression(compression):
            return
        if path.endswith(".gz") != bool(compression):
            self.add(
                rel,
                "compression.suffix",
                f"{where} {path!r} with compression {_raw(compression)}",
                "'.gz' exactly when compression is a level",
            )

    def check_compression_value(self, rel: str, man: dict) -> object:
        if "compression" not in man:
            return None
        value = man["compression"]
        if not _valid_compression(value):
            self.add(rel, "compression.value", _raw(value), "null or an integer 1-9")
            return _FAILED
        self.compressions[rel] = _level(value)
        return value

    def parse_continuous_entry(
        self,
        rel: str,
        list_name: str,
        i: int,
        entry: object,
        head: int,
        schema: _ValueSchema | None,
    ) -> _ObsField | None:
        lengths = (
            (head + 2,)
            if schema is not None and schema.quantized
            else (head,)
            if schema is not None
            else (head, head + 2)
        )
        if not isinstance(entry, list) or len(entry) not in lengths:
            shape = "[index, key(, min, max)]" if head == 2 else "[key(, min, max)]"
            self.add(
                rel,
                "obs.entry",
                f"{list_name}[{i}] = {_raw(entry)}",
                f"{shape} with {' or '.join(map(str, lengths))} items",
            )
            return None
        index = entry[0] if head == 2 else None
        key = entry[head - 1]
        if len(entry) == head + 2:
            self.check_bounds(rel, f"{list_name}[{i}] ({_raw(key)})", entry[head], entry[head + 1])
        return _ObsField("continuous", key, index)  # type: ignore[arg-type]

    def check_bounds(self, rel: str, where: str, vmin: object, vmax: object) -> bool:
        if not (_is_number(vmin) and _is_number(vmax) and vmin <= vmax):  # type: ignore[operator]
            self.add(
                rel,
                "quant.bounds",
                f"{where}: min {_raw(vmin)}, max {_raw(vmax)}",
                "finite numbers with min <= max",
            )
            return False
        return True

    def parse_categorical_entry(
        self, rel: str, i: int, entry: object, head: int, schema: _CatSchema | None
    ) -> tuple[_ObsField, list] | None:
        quant = schema.outlier_quantized if schema is not None else None
        base = head + 4
        lengths = (base + 2,) if quant is True else (base,) if quant is False else (base, base + 2)
        where = f"_categoricalFields[{i}]"
        if not isinstance(entry, list) or len(entry) not in lengths:
            shape = "[index, key, categories, codesDtype, codesMissingValue, centroidsByDim(, outlierMin, outlierMax)]"
            if head == 1:
                shape = "[key, categories, codesDtype, codesMissingValue, centroidsByDim(, outlierMin, outlierMax)]"
            self.add(
                rel,
                "obs.entry",
                f"{where} = {_raw(entry)}",
                f"{shape} with {' or '.join(map(str, lengths))} items",
            )
            return None
        index = entry[0] if head == 2 else None
        key, categories, dtype, missing, centroids = entry[head - 1 : head + 4]
        where = f"{where} ({_raw(key)})"
        n_cat = None
        if not isinstance(categories, list):
            self.add(
                rel,
                "categories.value",
                f"{where}: {_raw(categories)}",
                "an array of category labels",
            )
        else:
            n_cat = len(categories)
            ids = [_category_key(c) for c in categories]
            if any(k is None for k in ids):
                bad = [c for c, k in zip(categories, ids, strict=True) if k is None]
                self.add(
                    rel,
                    "categories.value",
                    f"{where}: labels {_raw(bad)}",
                    "strings, finite numbers or booleans (no null)",
                )
            elif len(set(ids)) != len(ids):
                counts = Counter(ids)
                dupes = [c for c, k in zip(categories, ids, strict=True) if counts[k] > 1]
                self.add(
                    rel,
                    "categories.value",
                    f"{where}: duplicate labels {_raw(dupes)}",
                    "unique labels",
                )
        codes_dtype = None
        if not isinstance(dtype, str) or dtype not in CODES_MISSING:
            self.add(rel, "codes.dtype", f"{where}: {_raw(dtype)}", '"uint8" or "uint16"')
        else:
            codes_dtype = str(dtype)
            self.codes_dtypes.add(codes_dtype)
            if not (type(missing) in (int, float) and missing == CODES_MISSING[codes_dtype]):
                self.add(
                    rel,
                    "codes.missing_value",
                    f"{where}: {_raw(missing)}",
                    f"{CODES_MISSING[codes_dtype]} for {codes_dtype}",
                )
            if n_cat is not None and n_cat > MAX_CATEGORIES[codes_dtype]:
                self.add(
                    rel,
                    "categories.count",
                    f"{where}: {n_cat} categories",
                    f"at most {MAX_CATEGORIES[codes_dtype]} for {codes_dtype}",
                )
        self.check_centroids(
            rel, where, centroids, categories if isinstance(categories, list) else None
        )
        if len(entry) == base + 2:
            self.check_bounds(rel, f"{where} outliers", entry[base], entry[base + 1])
        return _ObsField("category", key, index, n_cat, codes_dtype), entry  # type: ignore[arg-type]

    def check_centroids(
        self, rel: str, where: str, centroids: object, categories: list | None
    ) -> None:
        expect = 'an object keyed "1"/"2"/"3" of lists of {"category", "position", "n_points"}, at most one per category'
        if not isinstance(centroids, dict):
            self.add(rel, "centroids.value", f"{where}: {_raw(centroids)}", expect)
            return
        exact = {_category_key(c) for c in categories} if categories is not None else set()
        for dim_key, items in centroids.items():
            if dim_key not in ("1", "2", "3") or not isinstance(items, list):
                self.add(
                    rel, "centroids.value", f"{where}: key {dim_key!r} -> {_raw(items)}", expect
                )
                continue
            d = int(dim_key)
            seen: set[object] = set()
            for j, item in enumerate(items):
                at = f"{where} centroidsByDim[{dim_key!r}][{j}]"
                if not isinstance(item, dict) or set(item) != {"category", "position", "n_points"}:
                    self.add(
                        rel,
                        "centroids.value",
                        f"{at} = {_raw(item)}",
                        'exactly {"category", "position", "n_points"}',
                    )
                    continue
                pos = item["position"]
                if not (
                    isinstance(pos, list) and len(pos) == d and all(_is_number(x) for x in pos)
                ):
                    self.add(
                        rel,
                        "centroids.value",
                        f"{at}.position = {_raw(pos)}",
                        f"{d} finite numbers",
                    )
                if not _is_nonneg_int(item["n_points"]) or (
                    self.n_cells is not None and item["n_points"] > self.n_cells
                ):
                    self.add(
                        rel,
                        "centroids.value",
                        f"{at}.n_points = {_raw(item['n_points'])}",
                        "a non-negative integer <= n_cells",
                    )
                label = item["category"]
                ident = _category_key(label)
                if ident is None:
                    self.add(
                        rel,
                        "centroids.value",
                        f"{at}.category = {_raw(label)}",
                        "one of the field's categories",
                    )
                    continue
                if categories is not None and ident not in exact:
                    self.add(
                        rel,
                        "centroids.value",
                        f"{at}.category = {_raw(label)}",
                        "one of the field's categories, as the identical JSON value",
                    )
                    continue
                if ident in seen:
                    self.add(
                        rel,
                        "centroids.value",
                        f"{at}.category = {_raw(label)} again",
                        "at most one centroid per category",
                    )
                seen.add(ident)

    def check_indices_and_keys(
        self, rel: str, fields: list[_ObsField], n_entries: int, what: str
    ) -> None:
        if self.layout == "current":
            indices = [f.index for f in fields]
            bad = [i for i in indices if not _is_nonneg_int(i)]
            if bad:
                self.add(rel, f"{what}.index", f"indices {_raw(bad)}", "non-negative integers")
            elif len(fields) == n_entries and sorted(int(i) for i in indices) != list(
                range(n_entries)
            ):  # type: ignore[arg-type]
                self.add(
                    rel,
                    f"{what}.index",
                    f"indices {_raw(sorted(indices))}",
                    f"exactly 0..{n_entries - 1}, each once",
                )
            for f in fields:
                if f.index is not None and _is_int(f.index):
                    f.index = int(f.index)
        keys = [f.key for f in fields]
        rule = "obs.key" if what == "obs" else "var.name"
        bad_keys = [k for k in keys if not _is_nonempty_str(k)]
        if bad_keys:
            self.add(rel, rule, f"keys {_raw(bad_keys)}", "non-empty strings")
        good = [k for k in keys if _is_nonempty_str(k)]
        dupes = sorted(k for k, n in Counter(good).items() if n > 1)  # type: ignore[type-var]
        if dupes:
            self.add(rel, rule, f"duplicate {_raw(dupes)}", "unique keys")

    def check_codes(self, path: str, field: _ObsField, n: int) -> None:
        assert field.codes_dtype is not None
        missing = CODES_MISSING[field.codes_dtype]
        n_cat = field.n_categories
        bad = 0
        worst = 0
        for chunk in self.scan(path, field.codes_dtype, n):
            if n_cat is None:
                continue
            out = (chunk >= n_cat) & (chunk != missing)
            count = int(np.count_nonzero(out))
            if count:
                bad += count
                worst = max(worst, int(chunk[out].max()))
        if bad:
            self.add(
                path,
                "codes.range",
                f"{bad} code(s) out of range, up to {worst}",
                f"codes < {n_cat} or {missing} (missing)",
            )

    def check_outliers(self, path: str, schema: _CatSchema, bounds: list | None, n: int) -> None:
        dtype = schema.outlier_dtype
        assert dtype is not None
        if not schema.outlier_quantized:
            bad = 0
            for chunk in self.scan(path, "<f4", n):
                with np.errstate(invalid="ignore"):
                    ok = np.isnan(chunk) | ((chunk >= 0) & (chunk <= 1))
                bad += int(np.count_nonzero(~ok))
            if bad:
                self.add(
                    path,
                    "outliers.range",
                    f"{bad} value(s) outside [0, 1]",
                    "NaN or a number in [0, 1]",
                )
            return
        bits = 8 if dtype == "uint8" else 16
        max_q = MAX_QUANT[bits]
        lo, hi = None, None
        for chunk in self.scan(path, dtype, n):
            valid = chunk[chunk <= max_q]
            if valid.size:
                cmin, cmax = int(valid.min()), int(valid.max())
                lo = cmin if lo is None else min(lo, cmin)
                hi = cmax if hi is None else max(hi, cmax)
        if lo is None or hi is None or bounds is None or not all(_is_number(b) for b in bounds):
            return
        vmin, vmax = float(bounds[0]), float(bounds[1])
        decoded = [float(np.float32(vmin + q * (vmax - vmin) / max_q)) for q in (lo, hi)]
        if decoded[0] < 0 or decoded[1] > 1:
            self.add(
                path,
                "outliers.range",
                f"codes {lo}..{hi} decode to {decoded[0]:.6g}..{decoded[1]:.6g} (outlierMin {vmin}, outlierMax {vmax})",
                "quantiles in [0, 1]",
            )

    # -- var manifest --
    def check_var(self, man: object) -> None:
        rel = VAR_MANIFEST
        head = self.check_compact_head(rel, man, "var", VAR_MANIFEST_KEYS)
        if head is False:
            return
        assert isinstance(man, dict)
        n_points = head
        gid = man.get("var_gene_id_column")
        if "var_gene_id_column" in man and not (gid is None or _is_nonempty_str(gid)):
            self.add(rel, "var.gene_id_column", _raw(gid), "null or a non-empty string")
        compression = self.check_compression_value(rel, man)
        schema = None
        if "_varSchema" in man:
            schema = self.check_value_schema(
                rel, man["_varSchema"], "_varSchema", compression, var=True
            )
        quant = man.get("quantization")
        if "quantization" in man:
            if not (quant is None or (_is_int(quant) and quant in MAX_QUANT)):
                self.add(rel, "var.quantization", _raw(quant), "null, 8 or 16")
            elif schema is not None and (None if quant is None else int(quant)) != schema.bits:
                self.add(
                    rel,
                    "var.quantization",
                    _raw(quant),
                    f"{_raw(schema.bits)} (the schema's quantizationBits)",
                )
        if schema is not None:
            self.var_schema_known = True
            self.var_schema_bits = schema.bits
        fields = man.get("fields")
        if "fields" in man and not isinstance(fields, list):
            self.add(
                rel, "var.entry", f"fields is {_type_name(fields)}", "an array of gene entries"
            )
        fields = fields if isinstance(fields, list) else []
        if self.n_genes is not None and "fields" in man and len(fields) != self.n_genes:
            self.add(rel, "var.n_genes", f"{len(fields)} genes", f"stats.n_genes = {self.n_genes}")
        head = 2 if self.layout == "current" else 1
        lengths = (
            (head + 2,)
            if schema is not None and schema.quantized
            else (head,)
            if schema is not None
            else (head, head + 2)
        )
        parsed: list[_ObsField] = []
        for i, entry in enumerate(fields):
            if not isinstance(entry, list) or len(entry) not in lengths:
                shape = "[index, name(, min, max)]" if head == 2 else "[name(, min, max)]"
                self.add(
                    rel,
                    "var.entry",
                    f"fields[{i}] = {_raw(entry)}",
                    f"{shape} with {' or '.join(map(str, lengths))} items",
                )
                continue
            field = _ObsField("gene", entry[head - 1], entry[0] if head == 2 else None)
            if len(entry) == head + 2:
                self.check_bounds(
                    rel, f"fields[{i}] ({_raw(field.key)})", entry[head], entry[head + 1]
                )
            parsed.append(field)
        self.check_indices_and_keys(rel, parsed, len(fields), "var")
        n = n_points if isinstance(n_points, int) else self.n_cells
        if schema is None:
            return
        for field in parsed:
            path = self.field_path(
                rel, schema.pattern, field, "{ext}", f"gene {_raw(field.key)} values"
            )
            if self.genes is not None and field.key not in self.genes:
                continue
            if path is not None and n is not None:
                for _ in self.scan(path, schema.dtype, n):
                    pass

    # -- connectivity --
    def check_connectivity(self, man: object) -> None:
        rel = CONNECTIVITY_MANIFEST
        weighted = self.lay.weighted_edges
        if not self.check_keys(
            rel, man, "connectivity.keys", CONNECTIVITY_MANIFEST_KEYS[self.layout]
        ):
            return
        assert isinstance(man, dict)
        if "format" in man and man["format"] != EDGE_FORMAT:
            self.add(rel, "connectivity.format", _raw(man["format"]), EDGE_FORMAT)
        vals: dict[str, int] = {}
        highest = {"n_cells": _MAX_CONNECTIVITY_CELLS}
        for key, lowest in (("n_cells", 1), ("n_edges", 0), ("max_neighbors", 0)):
            value = man.get(key)
            if key in man:
                if _is_int(value) and lowest <= value <= highest.get(key, value):  # type: ignore[operator]
                    vals[key] = int(value)  # type: ignore[call-overload]
                else:
                    self.add(
                        rel,
                        "connectivity.value",
                        f"{key} = {_raw(value)}",
                        f"an integer >= {lowest}"
                        + (f" and <= {highest[key]}" if key in highest else ""),
                    )
        if weighted:
            if "weight_dtype" in man and man["weight_dtype"] != "float64":
                self.add(
                    rel,
                    "connectivity.value",
                    f"weight_dtype = {_raw(man['weight_dtype'])}",
                    '"float64"',
                )
            if "weight_bytes" in man and not (
                _is_int(man["weight_bytes"]) and man["weight_bytes"] == WEIGHT_DTYPE.itemsize
            ):
                self.add(
                    rel, "connectivity.value", f"weight_bytes = {_raw(man['weight_bytes'])}", "8"
                )
        compression = self.check_compression_value(rel, man)
        n_cells, n_edges, max_nb = (
            vals.get("n_cells"),
            vals.get("n_edges"),
            vals.get("max_neighbors"),
        )
        if n_cells is not None and self.n_cells is not None and n_cells != self.n_cells:
            self.add(
                rel, "connectivity.stats", f"n_cells {n_cells}", f"stats.n_cells = {self.n_cells}"
            )
        if n_edges is not None and self.n_edges is not None and n_edges != self.n_edges:
            self.add(
                rel, "connectivity.stats", f"n_edges {n_edges}", f"stats.n_edges = {self.n_edges}"
            )
        idt_name, idt_bytes = man.get("index_dtype"), man.get("index_bytes")
        if n_cells is not None:
            want = index_dtype(n_cells)
            want_name = "uint16" if want.itemsize == 2 else "uint32"
            if idt_name != want_name or not (_is_int(idt_bytes) and idt_bytes == want.itemsize):
                self.add(
                    rel,
                    "connectivity.index_dtype",
                    f"index_dtype {_raw(idt_name)}, index_bytes {_raw(idt_bytes)}",
                    f"{want_name!r}/{want.itemsize} for {n_cells} cells",
                )
        if n_cells is not None and n_edges is not None and n_edges > n_cells * (n_cells - 1) // 2:
            self.add(
                rel,
                "connectivity.n_edges",
                f"n_edges {n_edges}",
                f"at most n_cells (n_cells - 1) / 2 = {n_cells * (n_cells - 1) // 2}",
            )
        if max_nb is not None and n_edges is not None and n_cells is not None:
            limit = min(n_cells - 1, n_edges)
            if max_nb > limit or (max_nb == 0) != (n_edges == 0):
                self.add(
                    rel,
                    "connectivity.max_neighbors",
                    f"max_neighbors {max_nb} with n_edges {n_edges}",
                    f"<= min(n_cells - 1, n_edges) = {limit}, and 0 exactly when n_edges is 0",
                )
        if n_cells is not None and n_edges is not None and weighted:
            per_edge = _EDGE_WORKING_BYTES + (
                _UINT16_EDGE_WORKING_BYTES if index_dtype(n_cells).itemsize == 2 else 0
            )
            working = per_edge * n_edges + _CELL_WORKING_BYTES * n_cells
            if working > _MAX_CONNECTIVITY_WORKING_BYTES:
                self.add(
                    rel,
                    "connectivity.working_set",
                    f"{n_edges} edges and {n_cells} cells need {working} bytes in the viewer",
                    f"at most {_MAX_CONNECTIVITY_WORKING_BYTES} bytes "
                    f"({per_edge} per edge + {_CELL_WORKING_BYTES} per cell)",
                )
        keys = ["sourcesPath", "destinationsPath"] + (["weightsPath"] if weighted else [])
        paths: dict[str, str | None] = {}
        for key in keys:
            if key not in man:
                paths[key] = None
                continue
            path = self.declare(rel, man[key], key)
            if path is not None:
                self.check_suffix(rel, key, path, compression)
            paths[key] = path
        if n_cells is None or n_edges is None:
            return
        self.check_edges(paths, n_cells, n_edges, max_nb, weighted)

    def cells_checked(self, n_cells: int) -> bool:
        """Whether ``n_cells`` is the identity's count and a points file on disk fits it."""
        if self.n_cells is not None and n_cells != self.n_cells:
            return False
        points = getattr(self, "points_paths", {})
        return any(
            self.payload_problem(path, n_cells * d * FLOAT_DTYPE.itemsize) is None
            for d, path in points.items()
        )

    def check_edges(
        self,
        paths: dict[str, str | None],
        n_cells: int,
        n_edges: int,
        max_nb: int | None,
        weighted: bool,
    ) -> None:
        idt = index_dtype(n_cells)
        its: list[Iterator[np.ndarray]] = []
        for key in ("sourcesPath", "destinationsPath", "weightsPath"):
            path = paths.get(key)
            if path is not None:
                dtype = WEIGHT_DTYPE if key == "weightsPath" else idt
                its.append(self.payload_chunks(path, dtype, n_edges, _EDGE_CHUNK))
        complete = len(its) == (3 if weighted else 2)
        src_path = paths.get("sourcesPath") or CONNECTIVITY_MANIFEST
        w_path = paths.get("weightsPath") or CONNECTIVITY_MANIFEST
        n_upper = n_order = n_range = n_weight = seen = 0
        prev: tuple[int, int] | None = None
        # degrees are counted in an array sized by cells, so only for a cell count that the
        # identity and a points file on disk back (never for one a payload or manifest claims)
        count_degrees = complete and self.cells_checked(n_cells)
        degree = np.zeros(0, dtype=np.int32)  # grows to the largest index seen (< n_cells)
        if complete:
            for chunks in zip(*its, strict=False):
                m = min(len(c) for c in chunks)
                src = chunks[0][:m].astype(np.int64)
                dst = chunks[1][:m].astype(np.int64)
                if m == 0:
                    continue
                seen += m
                n_upper += int(np.count_nonzero(src >= dst))
                inside = (src < n_cells) & (dst < n_cells)
                n_range += m - int(np.count_nonzero(inside))
                s_all = src if prev is None else np.concatenate(([prev[0]], src))
                d_all = dst if prev is None else np.concatenate(([prev[1]], dst))
                increasing = (s_all[1:] > s_all[:-1]) | (
                    (s_all[1:] == s_all[:-1]) & (d_all[1:] > d_all[:-1])
                )
                n_order += int(np.count_nonzero(~increasing))
                prev = (int(src[-1]), int(dst[-1]))
                ends = np.concatenate((src[inside], dst[inside]))
                if count_degrees and ends.size:
                    top = int(ends.max()) + 1
                    if top > degree.size:
                        grown = min(max(top, 2 * degree.size), n_cells)
                        degree = np.concatenate((degree, np.zeros(grown - degree.size, np.int32)))
                    if top <= 4 * ends.size:
                        degree[:top] += np.bincount(ends, minlength=top)
                    else:
                        np.add.at(degree, ends, 1)
                if weighted:
                    w = chunks[2][:m]
                    n_weight += int(np.count_nonzero(~(np.isfinite(w) & (w > 0))))
        for it in its:  # finish every file so its envelope is checked
            for _ in it:
                pass
        if n_upper:
            self.add(
                src_path,
                "edges.upper",
                f"{n_upper} edge(s) with src >= dst",
                "src < dst (upper triangle only)",
            )
        if n_order:
            self.add(
                src_path,
                "edges.order",
                f"{n_order} edge(s) out of order",
                "edges strictly increasing by (src, dst)",
            )
        if n_range:
            self.add(
                src_path,
                "edges.range",
                f"{n_range} edge(s) with an index >= {n_cells}",
                f"indices < n_cells = {n_cells}",
            )
        if n_weight:
            self.add(
                w_path,
                "edges.weights",
                f"{n_weight} weight(s) not finite or <= 0",
                "finite weights > 0",
            )
        if count_degrees and seen == n_edges and not n_range and max_nb is not None:
            true_max = int(degree.max()) if degree.size else 0
            if true_max != max_nb:
                self.add(
                    CONNECTIVITY_MANIFEST,
                    "edges.max_neighbors",
                    f"max_neighbors {max_nb}",
                    f"{true_max} (the true maximum degree)",
                )

    # -- cross-file --
    def check_presence(self, var: object, conn: object) -> None:
        if self.n_genes is not None:
            if self.n_genes > 0 and var is None:
                self.add(
                    VAR_MANIFEST,
                    "file.missing",
                    "no such file",
                    f"a var manifest (stats.n_genes = {self.n_genes})",
                )
            elif self.n_genes == 0 and var is not None:
                self.add(
                    VAR_MANIFEST,
                    "files.unadvertised",
                    "a var manifest on disk",
                    "none: stats.n_genes is 0",
                )
        if self.has_connectivity is not None:
            if self.has_connectivity and conn is None:
                self.add(
                    CONNECTIVITY_MANIFEST,
                    "file.missing",
                    "no such file",
                    "a connectivity manifest (stats.has_connectivity)",
                )
            elif not self.has_connectivity and conn is not None:
                self.add(
                    CONNECTIVITY_MANIFEST,
                    "files.unadvertised",
                    "a connectivity manifest on disk",
                    "none: stats.has_connectivity is false",
                )

    def check_unadvertised(self) -> None:
        try:
            names = sorted(p.name for p in self.dir.glob("*_manifest.json"))
        except OSError:
            return
        for name in names:
            if name not in _KNOWN_MANIFESTS:
                self.add(
                    name,
                    "files.unadvertised",
                    "a manifest the identity does not advertise",
                    f"only {sorted(_KNOWN_MANIFESTS)}",
                )

    def check_compression(self) -> None:
        levels = {k: v for k, v in self.compressions.items()}
        distinct = set(levels.values())
        if len(distinct) > 1:
            self.add(
                IDENTITY_FILE,
                "compression.mixed",
                ", ".join(f"{k}: {_raw(v)}" for k, v in levels.items()),
                "one compression setting for every file",
            )
            return
        if not distinct:
            return
        level = distinct.pop()
        wrong = [k for k, gz in self.gz_paths.items() if gz != bool(level)]
        if wrong:
            self.add(
                IDENTITY_FILE,
                "compression.mixed",
                f"{'.gz' if not level else 'no .gz'} on {', '.join(wrong)}",
                f"every file {'gzipped' if level else 'uncompressed'} (compression {_raw(level)})",
            )

    def check_export_settings_agree(self) -> None:
        es = getattr(self, "export_settings", None)
        if not es:
            return
        rel = IDENTITY_FILE
        if "compression" in es:
            level = _level(es["compression"])
            for manifest in (OBS_MANIFEST, VAR_MANIFEST, CONNECTIVITY_MANIFEST):
                if manifest in self.compressions and self.compressions[manifest] != level:
                    self.add(
                        rel,
                        "export_settings.mismatch",
                        f"compression {_raw(level)}",
                        f"{_raw(self.compressions[manifest])} ({manifest})",
                    )
        quantizations = (
            ("var_quantization", self.var_schema_known, self.var_schema_bits, VAR_MANIFEST),
            (
                "obs_continuous_quantization",
                self.obs_has_continuous,
                self.obs_schema_bits,
                OBS_MANIFEST,
            ),
        )
        for key, known, bits, manifest in quantizations:
            if key in es and known and es[key] != bits:
                self.add(
                    rel,
                    "export_settings.mismatch",
                    f"{key} {_raw(es[key])}",
                    f"{_raw(bits)} ({manifest})",
                )
        dtype = es.get("obs_categorical_dtype")
        if dtype not in (None, "auto") and self.codes_dtypes and dtype not in self.codes_dtypes:
            self.add(
                rel,
                "export_settings.mismatch",
                f"obs_categorical_dtype {dtype!r}",
                f"one of the codes dtypes used: {sorted(self.codes_dtypes)}",
            )


# --- files, gzip ----------------------------------------------------------------------------


class _GzipState:
    def __init__(self) -> None:
        self.fatal = False


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (a name the OS refuses is no file)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _raw_blocks(path: Path, limit: int) -> Iterator[bytes]:
    """Yield the bytes of a file, stopping at the first byte past ``limit``."""
    left = limit + 1
    with open(path, "rb") as f:
        while left > 0 and (block := f.read(min(_CHUNK, left))):
            left -= len(block)
            yield block


def _read_exact(f: Any, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _read_zero_terminated(f: Any) -> bytes:
    out = bytearray()
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError
        out += byte
        if byte == b"\x00":
            return bytes(out)


def _gunzip_blocks(
    path: Path, rel: str, add: Any, state: _GzipState, limit: int
) -> Iterator[bytes]:
    """Yield the decoded blocks of a one-member gzip file, reporting every envelope problem.

    Inflating stops at the first byte past ``limit`` (the trailer is then not checked).
    """
    with open(path, "rb") as f:
        header = f.read(10)
        if header[:2] != _GZIP_MAGIC:
            add(
                rel,
                "gzip.magic",
                f"first bytes {header[:2].hex() or 'none'}",
                "1f8b (a gzip file, as the '.gz' suffix says)",
            )
            state.fatal = True
            return
        if len(header) < 10:
            add(rel, "gzip.corrupt", "a truncated gzip header", "a complete gzip member")
            state.fatal = True
            return
        if header[2] != 8:
            add(rel, "gzip.method", f"method {header[2]}", "8 (deflate)")
            state.fatal = True
            return
        flags = header[3]
        if flags & _GZIP_RESERVED_FLAGS:
            add(rel, "gzip.flags", f"flags 0x{flags:02x}", "reserved flag bits 5-7 clear")
        seen = bytearray(header)
        try:
            if flags & 4:
                xlen = _read_exact(f, 2)
                seen += xlen + _read_exact(f, int.from_bytes(xlen, "little"))
            if flags & 8:
                seen += _read_zero_terminated(f)
            if flags & 16:
                seen += _read_zero_terminated(f)
            if flags & 2:
                stored = int.from_bytes(_read_exact(f, 2), "little")
                actual = zlib.crc32(seen) & 0xFFFF
                if stored != actual:
                    add(
                        rel,
                        "gzip.header_crc",
                        f"header CRC-16 {stored:04x}",
                        f"{actual:04x} (the CRC of the header bytes)",
                    )
        except EOFError:
            add(rel, "gzip.corrupt", "a truncated gzip header", "a complete gzip member")
            state.fatal = True
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        crc = 0
        size = 0
        try:
            while not inflater.eof:
                data = f.read(_CHUNK)
                if not data:
                    break
                while True:
                    want = min(_CHUNK, limit + 1 - size)
                    out = inflater.decompress(data, want)
                    if out:
                        crc = zlib.crc32(out, crc)
                        size += len(out)
                        yield out
                        if size > limit:  # longer than declared: stop inflating here
                            return
                    data = inflater.unconsumed_tail
                    if inflater.eof or (not data and len(out) < want):
                        break
        except zlib.error as exc:
            add(rel, "gzip.corrupt", f"a broken deflate stream ({exc})", "a valid gzip member")
            state.fatal = True
            return
        if not inflater.eof:
            add(rel, "gzip.corrupt", "a truncated deflate stream", "a complete gzip member")
            state.fatal = True
            return
        tail = inflater.unused_data
        if len(tail) < 10:
            tail += f.read(10 - len(tail))
        trailer, rest = tail[:8], tail[8:]
        if len(trailer) < 8:
            add(rel, "gzip.corrupt", "a truncated gzip trailer", "a complete gzip member")
            state.fatal = True
            return
        stored_crc, isize = struct.unpack("<II", trailer)
        if stored_crc != crc:
            add(
                rel,
                "gzip.crc",
                f"CRC32 {stored_crc:08x} in the trailer",
                f"{crc:08x} (the CRC of the decoded data)",
            )
        # ISIZE must be the expected length; a file whose data has another length (and a
        # matching ISIZE) is reported once, as payload.length
        if isize != size % 2**32:
            add(rel, "gzip.isize", f"ISIZE {isize}", f"{size % 2**32} (the decoded length)")
        if rest:
            if rest[:2] == _GZIP_MAGIC:
                add(rel, "gzip.members", "more than one gzip member", "exactly one gzip member")
            else:
                add(
                    rel,
                    "gzip.trailing",
                    "bytes after the gzip member",
                    "nothing after the gzip trailer",
                )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _escapes(path: Path, base: Path) -> bool:
    """Whether ``path`` resolves (following every symbolic link) to outside ``base``."""
    try:
        return not path.resolve(strict=True).is_relative_to(base)
    except (OSError, RuntimeError):
        return True


def _load_json(
    path: Path, rel: str, add: Any, *, required: bool = True, base: Path | None = None
) -> Any:
    """Read a JSON file; on failure report the problem and return ``_FAILED`` (``None`` if absent)."""
    if not _is_file(path):
        if required:
            add(rel, "file.missing", "no such file", "a JSON file")
            return _FAILED
        return None
    if base is not None and _escapes(path, base):
        add(rel, "path.symlink", "a symbolic link leading out of the export", "a file inside it")
        return _FAILED
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            add(rel, "json.size", f"{size} bytes", f"at most {MAX_JSON_BYTES} bytes")
            return _FAILED
        text = path.read_bytes().decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        add(rel, "json.parse", f"unreadable JSON ({_show(str(exc), 120)})", "valid UTF-8 JSON")
        return _FAILED


def _check_keys(
    add: Any,
    rel: str,
    obj: object,
    rule: str,
    required: frozenset[str],
    optional: frozenset[str] = frozenset(),
    what: str = "",
) -> bool:
    prefix = f"{what}: " if what else ""
    expect = f"an object with keys {sorted(required)}" + (
        f" (optional {sorted(optional)})" if optional else ""
    )
    if not isinstance(obj, dict):
        add(rel, rule, f"{prefix}{_type_name(obj)}", expect)
        return False
    missing = sorted(required - obj.keys())
    extra = sorted(obj.keys() - required - optional)
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"unexpected {extra}"] if extra else []
        )
        add(rel, rule, prefix + ", ".join(parts), expect)
    return True


def _check_id(add: Any, rel: str, value: object, rule: str) -> bool:
    good = (
        isinstance(value, str)
        and 1 <= len(value) <= ID_MAX_LENGTH
        and ID_PATTERN.match(value) is not None
        and not value.endswith(".")
    )
    if not good:
        add(
            rel,
            rule,
            _raw(value),
            f"{ID_PATTERN.pattern}, not ending in '.', 1-{ID_MAX_LENGTH} characters",
        )
    return good


def _check_dimensions(dims: object, allowed: Any) -> bool:
    if not isinstance(dims, list) or not dims:
        return False
    if not all(_is_int(d) and d in allowed for d in dims):
        return False
    return all(a < b for a, b in itertools.pairwise(dims))


def _valid_compression(value: object) -> bool:
    return value is None or (_is_int(value) and 1 <= value <= 9)  # type: ignore[operator]


def _level(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _detect_layout(obs: object, var: object, conn: object) -> str:
    """Guess the layout from path patterns, entry heads and edge weights (majority vote)."""
    votes = {"current": 0, "legacy": 0}
    patterns: list[object] = []
    if isinstance(obs, dict) and isinstance(obs.get("_obsSchemas"), dict):
        for schema in obs["_obsSchemas"].values():
            if isinstance(schema, dict):
                patterns += [
                    schema.get("pathPattern"),
                    schema.get("codesPathPattern"),
                    schema.get("outlierPathPattern"),
                ]
    if isinstance(var, dict) and isinstance(var.get("_varSchema"), dict):
        patterns.append(var["_varSchema"].get("pathPattern"))
    for pattern in patterns:
        if isinstance(pattern, str):
            if "{key}" in pattern:
                votes["legacy"] += 1
            elif "{index}" in pattern:
                votes["current"] += 1
    entries: list[object] = []
    if isinstance(obs, dict):
        for name in ("_continuousFields", "_categoricalFields"):
            if isinstance(obs.get(name), list) and obs[name]:
                entries.append(obs[name][0])
    if isinstance(var, dict) and isinstance(var.get("fields"), list) and var["fields"]:
        entries.append(var["fields"][0])
    for entry in entries:
        if isinstance(entry, list) and entry:
            if isinstance(entry[0], str):
                votes["legacy"] += 1
            elif _is_int(entry[0]):
                votes["current"] += 1
    if isinstance(conn, dict) and "sourcesPath" in conn:
        votes["current" if "weightsPath" in conn else "legacy"] += 1
    return "legacy" if votes["legacy"] > votes["current"] else "current"


# --- exports roots --------------------------------------------------------------------------


def _validate_root(root: Path, *, scan_payloads: bool = True) -> ValidationReport:
    problems: list[Problem] = []
    base = _resolved(root)

    def add(rel: str, rule: str, found: object, expected: object) -> None:
        problems.append(
            Problem(
                rel,
                rule,
                found if isinstance(found, str) else _raw(found),
                expected if isinstance(expected, str) else _raw(expected),
            )
        )

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
