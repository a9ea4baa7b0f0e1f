"""What validation reports: the rule table, one :class:`Problem`, the :class:`ValidationReport`.

The bottom of the package: it imports nothing from the rest of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._store import is_url

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
    "layout.mixed": "1/11: the files name one layout: the obs and var path patterns all hold {index} (current) or all {key} (legacy)",
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
        The validated directory (its URL, kept as a string, for a remote export).
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
        path: Path | str,
        layout: str,
        problems: list[Problem],
        datasets: dict[str, str] | None = None,
    ) -> None:
        self.path = path if is_url(path) else Path(path)
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
