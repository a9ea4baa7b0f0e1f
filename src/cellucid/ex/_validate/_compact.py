"""What the obs and var manifests (both ``compact_v1``) share: head, schemas, path patterns, entries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..._format import (
    CONTINUOUS_SCHEMA_KEYS,
    EXT,
    MANIFEST_FORMAT,
    QUANT_DTYPE,
)
from ..._layout import FieldKind, placeholders
from ._context import Part, _ObsField
from ._values import (
    _is_int,
    _is_nonempty_str,
    _is_nonneg_int,
    _is_number,
    _path_error,
    _raw,
)


@dataclass
class _ValueSchema:
    quantized: bool
    bits: int | None
    dtype: str
    pattern: str


class CompactChecker(Part):
    """The checks of a compact manifest; :meth:`check_manifest` adds its own."""

    #: the manifest, the prefix of its rules and its key set
    rel: str
    prefix: str
    keys: frozenset[str]

    def check(self, man: object) -> None:
        n_points = self.check_compact_head(man)
        if n_points is not False:
            assert isinstance(man, dict)
            self.check_manifest(man, n_points)

    def check_manifest(self, man: dict, n_points: int | None) -> None:
        raise NotImplementedError

    def check_compact_head(self, man: object) -> int | bool | None:
        """Check what the obs and var manifests share: key set, ``_format``, ``n_points``.

        Returns False when the key set is wrong (nothing more to check), else ``n_points``
        (None when unusable).
        """
        rel, prefix = self.rel, self.prefix
        if not self.ctx.check_keys(rel, man, f"{prefix}.keys", self.keys):
            return False
        if "_format" in man and man["_format"] != MANIFEST_FORMAT:
            self.ctx.add(rel, f"{prefix}.format", _raw(man["_format"]), MANIFEST_FORMAT)
        n_points = man.get("n_points")
        if "n_points" in man and not (_is_int(n_points) and n_points > 0):
            self.ctx.add(rel, f"{prefix}.n_points", _raw(n_points), "an integer > 0")
            return None
        if n_points is None:
            return None
        if self.facts.n_cells is not None and int(n_points) != self.facts.n_cells:
            self.ctx.add(
                rel,
                f"{prefix}.n_cells",
                f"n_points {int(n_points)}",
                f"stats.n_cells = {self.facts.n_cells}",
            )
        return int(n_points)

    def field_path(
        self,
        rel: str,
        pattern: str,
        field: _ObsField | tuple[int | None, object],
        ext: str | None,
        what: str,
    ) -> str | None:
        index, key = (field.index, field.key) if isinstance(field, _ObsField) else field
        if not isinstance(key, str):  # reported as a key problem; names no file
            return None
        if self.facts.layout == "current" and index is None:
            return None
        return self.ctx.declare(rel, self.facts.lay.fill(pattern, index, key, ext), what)

    def check_value_schema(
        self, rel: str, schema: object, where: str, compression: object, *, var: bool
    ) -> _ValueSchema | None:
        base = CONTINUOUS_SCHEMA_KEYS | ({"kind"} if var else set())
        quantized = schema.get("quantized") if isinstance(schema, dict) else None
        required = base | ({"quantizationBits"} if quantized is True else set())
        if (
            not self.ctx.check_keys(rel, schema, "schema.keys", frozenset(required), what=where)
            or set(schema) != required
        ):  # type: ignore[arg-type]
            return None
        if var and schema.get("kind") != "continuous":
            self.ctx.add(
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
            self.ctx.add(
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
            "var_values" if var else "obs_values",
            str(ext),
            compression,
            exact=var,
        ):
            return None
        assert isinstance(pattern, str)
        return _ValueSchema(
            quantized is True, int(bits) if quantized is True else None, str(dtype), pattern
        )

    def check_pattern(
        self,
        rel: str,
        pattern: object,
        where: str,
        kind: FieldKind,
        ext: str | None,
        compression: object,
        *,
        exact: bool = False,
    ) -> bool:
        """Check a path pattern against the layout's pattern of ``kind`` (``ext`` None: ``{ext}`` kept)."""
        lay = self.facts.lay
        if not isinstance(pattern, str):
            self.ctx.add(
                rel, "schema.pattern", f"{where} = {_raw(pattern)}", "a path pattern string"
            )
            return False
        template = lay.pattern(kind, ext)
        wanted = placeholders(template)
        body = pattern.removesuffix(".gz")
        want_end = lay.pattern_end(kind, ext)
        bad = placeholders(pattern) != wanted or not body.endswith(want_end)
        if exact:  # the var pattern's folder is fixed too
            bad = bad or body != template
            expect = f"exactly '{template}[.gz]'"
        else:
            expect = f"exactly the placeholders {wanted}, ending '{want_end}[.gz]'"
        if bad:
            self.ctx.add(rel, "schema.pattern", f"{where} = {pattern!r}", expect)
            return False
        sample = lay.fill(pattern, 0, "0", "u8")
        error = _path_error(sample)
        if error is not None:
            self.ctx.add(
                rel, "path.syntax", f"{where} {pattern!r} has {error}", "a relative POSIX path"
            )
            return False
        self.ctx.check_suffix(rel, where, pattern, compression)
        return True

    def check_indices_and_keys(
        self, rel: str, fields: list[_ObsField], n_entries: int, what: str
    ) -> None:
        if self.facts.layout == "current":
            indices = [f.index for f in fields]
            bad = [i for i in indices if not _is_nonneg_int(i)]
            if bad:
                self.ctx.add(rel, f"{what}.index", f"indices {_raw(bad)}", "non-negative integers")
            elif len(fields) == n_entries and sorted(int(i) for i in indices) != list(
                range(n_entries)
            ):  # type: ignore[arg-type]
                self.ctx.add(
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
            self.ctx.add(rel, rule, f"keys {_raw(bad_keys)}", "non-empty strings")
        good = [k for k in keys if _is_nonempty_str(k)]
        dupes = sorted(k for k, n in Counter(good).items() if n > 1)  # type: ignore[type-var]
        if dupes:
            self.ctx.add(rel, rule, f"duplicate {_raw(dupes)}", "unique keys")

    def check_bounds(self, rel: str, where: str, vmin: object, vmax: object) -> bool:
        if not (_is_number(vmin) and _is_number(vmax) and vmin <= vmax):  # type: ignore[operator]
            self.ctx.add(
                rel,
                "quant.bounds",
                f"{where}: min {_raw(vmin)}, max {_raw(vmax)}",
                "finite numbers with min <= max",
            )
            return False
        return True

    def check_shape(self, where: str, entry: object, lengths: tuple[int, ...], shape: str) -> bool:
        """Whether a field entry is a list of one of the ``lengths``; report it if not."""
        if isinstance(entry, list) and len(entry) in lengths:
            return True
        self.ctx.add(
            self.rel,
            f"{self.prefix}.entry",
            f"{where} = {_raw(entry)}",
            f"{shape} with {' or '.join(map(str, lengths))} items",
        )
        return False

    def parse_value_entry(
        self, where: str, entry: object, head: int, schema: _ValueSchema | None, kind: str
    ) -> _ObsField | None:
        """Parse a continuous field or gene entry: ``[index, key(, min, max)]`` (legacy: no index)."""
        lengths = (
            (head + 2,)
            if schema is not None and schema.quantized
            else (head,)
            if schema is not None
            else (head, head + 2)
        )
        name = "name" if kind == "gene" else "key"
        shape = f"[index, {name}(, min, max)]" if head == 2 else f"[{name}(, min, max)]"
        if not self.check_shape(where, entry, lengths, shape):
            return None
        assert isinstance(entry, list)
        index = entry[0] if head == 2 else None
        key = entry[head - 1]
        if len(entry) == head + 2:
            self.check_bounds(self.rel, f"{where} ({_raw(key)})", entry[head], entry[head + 1])
        return _ObsField(kind, key, index)
