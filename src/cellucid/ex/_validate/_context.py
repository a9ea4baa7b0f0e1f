"""What the checks of one dataset share: its folder, its problems and the facts its files establish.

Each file's checker reads the facts earlier files established (the cell count of the
identity, the layout, the declared paths, ...) and adds its own for the files after it and
for the cross-file checks; :class:`Facts` holds them all from the start.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from ..._layout import Layout, layout
from ._files import _FAILED, _load_json, _resolved
from ._payloads import _payload_chunks
from ._report import Problem
from ._values import _check_keys, _level, _path_error, _problem, _raw, _valid_compression


@dataclass
class _ObsField:
    kind: str  # "continuous", "category" or "gene"
    key: object
    index: int | None
    n_categories: int | None = None
    codes_dtype: str | None = None


@dataclass
class Facts:
    """What the files of a dataset establish, as far as they are valid (None: not known)."""

    lay: Layout = field(default_factory=lambda: layout("current"))
    #: the identity's stats counts that are valid, and the ones the later checks rely on
    stats: dict[str, int] = field(default_factory=dict)
    n_cells: int | None = None
    n_genes: int | None = None
    has_connectivity: bool | None = None
    n_edges: int | None = None
    #: the embedding dimensions and their points files
    dims: list[int] = field(default_factory=list)
    points_paths: dict[int, str] = field(default_factory=dict)
    #: every payload path declared so far -> where it is declared
    declared: dict[str, str] = field(default_factory=dict)
    #: the compression level each manifest (and export_settings) declares
    compressions: dict[str, int | None] = field(default_factory=dict)
    #: whether each path the identity declares ends in .gz
    gz_paths: dict[str, bool] = field(default_factory=dict)
    #: the obs manifest's fields in its order (None: its field lists are not valid)
    obs_fields: list[_ObsField] | None = None
    obs_schema_bits: int | None = None
    obs_has_continuous: bool = False
    var_schema_bits: int | None = None
    var_schema_known: bool = False
    codes_dtypes: set[str] = field(default_factory=set)
    #: the identity's valid export_settings
    export_settings: dict | None = None

    @property
    def layout(self) -> str:
        return self.lay.name


class Context:
    """One dataset directory; problems name files as ``prefix + relative path``."""

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
        self.facts = Facts()

    def add(self, rel: str, rule: str, found: object, expected: object) -> None:
        self.problems.append(_problem(f"{self.prefix}{rel}", rule, found, expected))

    def load_json(self, rel: str, *, required: bool = True) -> Any:
        return _load_json(self.dir / rel, rel, self.add, required=required, base=self.base)

    def check_keys(
        self, rel: str, obj: object, rule: str, *keys: frozenset, what: str = ""
    ) -> TypeGuard[dict]:
        """:func:`_check_keys` of ``obj`` (its required, then optional keys), reported here."""
        return _check_keys(self.add, rel, obj, rule, *keys, what=what)

    def declare(self, rel: str, path: object, what: str) -> str | None:
        """Check a payload path declared in ``rel``; return it when it can be opened."""
        error = _path_error(path)
        if error is not None:
            self.add(
                rel, "path.syntax", f"{what} {_raw(path)} has {error}", "a relative POSIX path"
            )
            return None
        assert isinstance(path, str)
        if path in self.facts.declared:
            self.add(
                rel,
                "path.duplicate",
                f"{what} {path!r} is also {self.facts.declared[path]}",
                "every payload file declared once",
            )
        else:
            self.facts.declared[path] = what
        return path

    def payload_chunks(
        self, rel: str, dtype: np.dtype, n_elements: int, chunk: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield the decoded elements of payload ``rel`` in chunks, reporting its problems."""
        if self.scan_payloads:
            yield from _payload_chunks(self.dir, self.base, rel, self.add, dtype, n_elements, chunk)

    def scan(self, rel: str, dtype: np.dtype | str, n_elements: int) -> Iterator[np.ndarray]:
        return self.payload_chunks(rel, np.dtype(dtype), n_elements)

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
        self.facts.compressions[rel] = _level(value)
        return value


class Part:
    """The checker of one kind of file, on the context of its dataset."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.facts = ctx.facts
