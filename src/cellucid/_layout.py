"""Where an export's files are, in either layout, and which layout an export is in.

Every payload file name and manifest path pattern of both layouts is built from one table,
:data:`TEMPLATES`; writers, the reader, the validator and the server ask this module for
paths, fill and split patterns with it, and tell an export's layout with
:func:`detect_layout` (the rule is in its docstring). The names the templates use (folders,
extensions, how a key becomes a file name) are those of :mod:`cellucid._format`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from ._format import (
    CONNECTIVITY_DIR,
    CONNECTIVITY_MANIFEST,
    EXT,
    IDENTITY_FILE,
    LAYOUTS,
    OBS_DIR,
    OBS_MANIFEST,
    VAR_DIR,
    VAR_MANIFEST,
    VECTORS_DIR,
    LayoutName,
    gz,
    safe_filename_component,
)

FieldKind = Literal["obs_values", "obs_codes", "obs_outliers", "var_values"]

#: every payload file of an export, by kind (a compressed file adds ``.gz``): ``{stem}``
#: is a field's stem (its index in the current layout, its sanitized key in the legacy
#: one; a vector field's position or id), ``{ext}`` the extension of its dtype and
#: ``{dim}`` a dimension
TEMPLATES: dict[str, str] = {
    "points": "points_{dim}d.bin",
    "vectors": VECTORS_DIR + "/{stem}_{dim}d.bin",
    "obs_values": OBS_DIR + "/{stem}.values.{ext}",
    "obs_codes": OBS_DIR + "/{stem}.codes.{ext}",
    "obs_outliers": OBS_DIR + "/{stem}.outliers.{ext}",
    "var_values": VAR_DIR + "/{stem}.values.{ext}",
    "edges_src": CONNECTIVITY_DIR + "/edges.src.bin",
    "edges_dst": CONNECTIVITY_DIR + "/edges.dst.bin",
    "edges_weights": CONNECTIVITY_DIR + "/edges.weights.f64.bin",
}
#: the placeholder a manifest's path patterns hold for the field stem, by layout; ``{ext}``
#: stays in the codes pattern, filled per field with its codes dtype's extension
PLACEHOLDERS: dict[LayoutName, str] = {"current": "{index}", "legacy": "{key}"}
EXT_PLACEHOLDER = "{ext}"
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def points_path(dim: int) -> str:
    """Return the points file of dimension ``dim`` (the writer adds ``.gz``)."""
    return TEMPLATES["points"].replace("{dim}", str(dim))


def edges_path(part: Literal["src", "dst", "weights"]) -> str:
    """Return the edge file holding the sources, destinations or weights."""
    return TEMPLATES[f"edges_{part}"]


def _template_regex(template: str) -> str:
    """Return a regular expression of the file names ``template`` makes (any stem, ``.gz`` or not)."""
    exts = "(?:" + "|".join(map(re.escape, EXT.values())) + ")"
    pattern = re.escape(template)
    for holder, regex in (("{stem}", "[^/]+"), ("{ext}", exts), ("{dim}", "[123]")):
        pattern = pattern.replace(re.escape(holder), regex)
    return pattern + r"(?:\.gz)?"


def _folder_regex(folder: str) -> re.Pattern[str]:
    inside = [
        t.removeprefix(f"{folder}/") for t in TEMPLATES.values() if t.startswith(f"{folder}/")
    ]
    return re.compile("|".join(map(_template_regex, inside)))


#: names of the files directly in a dataset folder, in either layout
EXPORT_TOP_FILES = re.compile(
    "|".join(map(re.escape, (IDENTITY_FILE, OBS_MANIFEST, VAR_MANIFEST, CONNECTIVITY_MANIFEST)))
    + "|"
    + _template_regex(TEMPLATES["points"])
)
#: names of the files in each payload folder, in either layout
EXPORT_FOLDER_FILES = {
    folder: _folder_regex(folder) for folder in (OBS_DIR, VAR_DIR, CONNECTIVITY_DIR, VECTORS_DIR)
}


@dataclass(frozen=True)
class Layout:
    """How one layout names payload files and opens manifest field entries.

    The current layout names a field's files by its integer index, the legacy layout by
    its sanitized key; field entries start with ``[index, key]`` and ``[key]``.
    """

    name: LayoutName

    @property
    def placeholder(self) -> str:
        """The placeholder of manifest path patterns."""
        return PLACEHOLDERS[self.name]

    @property
    def weighted_edges(self) -> bool:
        """Whether edges carry a weights file."""
        return self.name == "current"

    def stem(self, index: int | None, key: object) -> str:
        """Return the file stem of a field: its index or its sanitized key."""
        return str(index) if self.name == "current" else safe_filename_component(key)

    def vector_stem(self, position: int, field_id: str) -> str:
        """Return the file stem of a vector field: its position or its id."""
        return str(position) if self.name == "current" else field_id

    # --- manifest field entries ---
    @property
    def head_length(self) -> int:
        """How many items open a manifest field entry (``[index, key]`` or ``[key]``)."""
        return 2 if self.name == "current" else 1

    def entry_head(self, index: int, key: str) -> list:
        """Return the leading items of a manifest field entry."""
        return [index, key] if self.name == "current" else [key]

    def entry_split(self, entry: list) -> tuple[object, object, list]:
        """Return the index (None in legacy), key and remaining items of a field entry."""
        if self.name == "current":
            return entry[0], entry[1], entry[2:]
        return None, entry[0], entry[1:]

    # --- paths and patterns ---
    def field_path(self, kind: FieldKind, index: int, key: object, ext: str) -> str:
        """Return the payload file of one field (the writer adds ``.gz``)."""
        return TEMPLATES[kind].replace("{stem}", self.stem(index, key)).replace("{ext}", ext)

    def vector_path(self, position: int, field_id: str, dim: int) -> str:
        """Return the payload file of a vector field in dimension ``dim`` (without ``.gz``)."""
        stem = self.vector_stem(position, field_id)
        return TEMPLATES["vectors"].replace("{stem}", stem).replace("{dim}", str(dim))

    def pattern(self, kind: FieldKind, ext: str | None, compression: int | None = None) -> str:
        """Return the manifest path pattern of ``kind``; ``ext`` None keeps ``{ext}``."""
        pattern = TEMPLATES[kind].replace("{stem}", self.placeholder)
        return gz(pattern if ext is None else pattern.replace("{ext}", ext), compression)

    def pattern_end(self, kind: FieldKind, ext: str | None) -> str:
        """Return how a pattern of ``kind`` must end before ``.gz`` (its file name part)."""
        return self.pattern(kind, ext).rsplit("/", 1)[1]

    def fill(self, pattern: object, index: object, key: object, ext: str | None = None) -> str:
        """Return the file a manifest path pattern names for one field."""
        if not isinstance(pattern, str):
            msg = f"Invalid path pattern {pattern!r} in the obs or var manifest."
            raise ValueError(msg)
        path = pattern.replace(self.placeholder, self.stem(index, key))  # type: ignore[arg-type]
        return path if ext is None else path.replace(EXT_PLACEHOLDER, ext)

    def split(self, pattern: str, path: str) -> str | None:
        """Return the stem that fills ``pattern`` to make ``path`` (None: it does not).

        The inverse of :meth:`fill`: ``split(p, fill(p, i, key)) == stem(i, key)``.
        """
        return split(pattern, self.placeholder, path)


def split(pattern: str, holder: str, path: str) -> str | None:
    """Return what stands for ``holder`` in ``path``, made from ``pattern`` (None: it is not).

    Any other placeholder of ``pattern`` (``{ext}``, ``{dim}``) stands for one or more
    characters of a file name.
    """
    regex = re.escape(pattern).replace(re.escape(holder), "(?P<stem>[^/]+)", 1)
    match = re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", regex), path)
    return match["stem"] if match and "stem" in match.groupdict() else None


def placeholders(pattern: str) -> list[str]:
    """Return the placeholders (``{...}``) of a path pattern, sorted."""
    return sorted(_PLACEHOLDER.findall(pattern))


def layout(name: str) -> Layout:
    """Return the :class:`Layout` called ``name``, or raise a clear error."""
    if name not in LAYOUTS:
        msg = f"layout must be one of {LAYOUTS}, got {name!r}."
        raise ValueError(msg)
    return Layout(name)  # type: ignore[arg-type]


# --- which layout an export is in -------------------------------------------------------------

#: one thing that names a layout: (the layout, the file, what in it names the layout)
_Sign = tuple[LayoutName, str, str]


class MixedLayoutError(ValueError):
    """The files of an export name both layouts.

    ``first`` is the layout the export's first sign names, ``file`` the file of the first
    sign against it and ``found`` what the two signs are.
    """

    def __init__(self, first: _Sign, other: _Sign) -> None:
        self.first: LayoutName = first[0]
        self.file = other[1]
        self.found = (
            f"{other[1]} {other[2]} (the {other[0]} layout) beside "
            f"{first[1]} {first[2]} (the {first[0]} layout)"
        )
        super().__init__(
            f"The export mixes layouts: {self.found}; every file of an export has one layout, "
            "export it again."
        )


def _pattern_signs(obs: object, var: object) -> Iterator[_Sign]:
    """Yield what the obs and var path patterns name: ``{index}`` current, ``{key}`` legacy."""
    patterns: list[tuple[str, str, object]] = []
    schemas = obs.get("_obsSchemas") if isinstance(obs, dict) else None
    if isinstance(schemas, dict):
        for kind, names in (
            ("continuous", ("pathPattern",)),
            ("categorical", ("codesPathPattern", "outlierPathPattern")),
        ):
            schema = schemas.get(kind)
            if isinstance(schema, dict):
                patterns += [
                    (OBS_MANIFEST, f"_obsSchemas.{kind}.{n}", schema.get(n)) for n in names
                ]
    schema = var.get("_varSchema") if isinstance(var, dict) else None
    if isinstance(schema, dict):
        patterns.append((VAR_MANIFEST, "_varSchema.pathPattern", schema.get("pathPattern")))
    for file, where, pattern in patterns:
        if not isinstance(pattern, str):
            continue
        named = [name for name, holder in PLACEHOLDERS.items() if holder in pattern]
        if len(named) == 1:  # a pattern holding both placeholders names neither
            yield named[0], file, f"{where} {pattern!r}"


def _edge_signs(conn: object) -> Iterator[_Sign]:
    """Yield what the connectivity manifest names: with a ``weightsPath`` current, else legacy."""
    if isinstance(conn, dict) and "sourcesPath" in conn:
        weighted = "weightsPath" in conn
        what = "with a weightsPath" if weighted else "without a weightsPath"
        yield ("current" if weighted else "legacy"), CONNECTIVITY_MANIFEST, what


def _vector_signs(identity: object) -> Iterator[_Sign]:
    """Yield what the vector files name: by the field's position current, by its id legacy."""
    vf = identity.get("vector_fields") if isinstance(identity, dict) else None
    fields = vf.get("fields") if isinstance(vf, dict) else None
    if not isinstance(fields, dict):
        return
    for position, (field_id, field) in enumerate(fields.items()):
        files = field.get("files") if isinstance(field, dict) else None
        for dim_key, path in files.items() if isinstance(files, dict) else ():
            if not isinstance(path, str):
                continue
            stem = split(TEMPLATES["vectors"], "{stem}", path.removesuffix(".gz"))
            named = [
                name
                for name in LAYOUTS
                if stem is not None and stem == Layout(name).vector_stem(position, str(field_id))
            ]
            if len(named) == 1:
                what = f"vector_fields.fields[{field_id!r}].files[{dim_key}] {path!r}"
                yield named[0], IDENTITY_FILE, what


def detect_layout(identity: object, obs: object, var: object, conn: object) -> LayoutName:
    """Return the layout of an export, from its parsed identity and manifests.

    The rule: three sources can name a layout, asked in this order, and the first that
    names one decides:

    1. the obs and var manifests' path patterns: ``{index}`` names the current layout,
       ``{key}`` the legacy one;
    2. the connectivity manifest: with a ``weightsPath`` current, without legacy;
    3. the vector fields' files: ``vectors/<position>_<d>d.bin`` current,
       ``vectors/<field id>_<d>d.bin`` legacy.

    An export none of them names (no obs field, gene, graph or vector field) has the same
    files in both layouts and is current. The sources after the deciding one are not
    asked (the validator checks them against the layout found). Documents that are
    missing or not objects (None, or a parse failure) name nothing.

    Raises
    ------
    MixedLayoutError
        The deciding source names both layouts (e.g. an obs pattern with ``{index}`` and
        a var pattern with ``{key}``); its message names both files.
    """
    for signs in (_pattern_signs(obs, var), _edge_signs(conn), _vector_signs(identity)):
        first = next(signs, None)
        if first is None:
            continue
        other = next((sign for sign in signs if sign[0] != first[0]), None)
        if other is not None:
            raise MixedLayoutError(first, other)
        return first[0]
    return "current"
