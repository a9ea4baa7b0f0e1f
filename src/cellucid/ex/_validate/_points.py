"""The points and vector-field payloads the identity declares."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..._format import (
    DIMENSIONS,
    EMBEDDINGS_KEYS,
    IDENTITY_FILE,
    VECTOR_BASIS,
    VECTOR_FIELD_KEYS,
    VECTOR_FIELDS_KEYS,
    is_blank,
)
from ._context import Part
from ._values import (
    _check_dimensions,
    _is_int,
    _is_nonempty_str,
    _raw,
    _url_error,
)


class PointsChecker(Part):
    """The embeddings and vector fields of the identity, and the files they declare."""

    def dimension_files(
        self,
        files: object,
        dims: list[int],
        where: str,
        rule: str,
        *,
        shown: str = "",
        expect: str = "exactly the keys",
    ) -> Iterator[tuple[int, str]]:
        """Check that ``files`` has one key ``"<d>d"`` per dimension; yield each path declared.

        A generator, so that what the caller checks of one path is reported before the
        next path is declared.
        """
        rel = IDENTITY_FILE
        wanted = {f"{d}d" for d in dims}
        if not isinstance(files, dict) or set(files) != wanted:
            found = sorted(files) if isinstance(files, dict) else files
            self.ctx.add(rel, rule, f"{shown}{_raw(found)}", f"{expect} {sorted(wanted)}")
            if not isinstance(files, dict):
                return
        for d in dims:
            if f"{d}d" not in files:
                continue
            path = self.ctx.declare(rel, files[f"{d}d"], f"{where}.files[{d}d]")
            if path is None:
                continue
            self.facts.gz_paths[f"{rel} {where}.files[{d}d]"] = path.endswith(".gz")
            yield d, path

    def check_finite(self, path: str, d: int, rule: str, what: str) -> None:
        """Report the NaN/Inf values of a float32 payload of ``d`` values per cell."""
        if self.facts.n_cells is None:
            return
        bad = 0
        for chunk in self.ctx.scan(path, "<f4", self.facts.n_cells * d):
            bad += int(np.count_nonzero(~np.isfinite(chunk)))
        if bad:
            self.ctx.add(path, rule, f"{bad} NaN/Inf value(s)", f"finite float32 {what}")

    def check_embeddings(self, emb: object) -> None:
        rel = IDENTITY_FILE
        if not self.ctx.check_keys(rel, emb, "embeddings.keys", EMBEDDINGS_KEYS, what="embeddings"):
            return
        dims = emb.get("available_dimensions")
        dims_ok = _check_dimensions(dims, DIMENSIONS)
        if not dims_ok:
            self.ctx.add(
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
        self.facts.dims = dims
        default = emb.get("default_dimension")
        if "default_dimension" in emb and not (_is_int(default) and default in dims):
            self.ctx.add(
                rel, "embeddings.default", _raw(default), f"one of the available dimensions {dims}"
            )
        files = emb.get("files")
        if "files" not in emb:
            return
        for d, path in self.dimension_files(
            files, dims, "embeddings", "embeddings.files", expect="an object with exactly the keys"
        ):
            self.facts.points_paths[d] = path
            part = _url_error(path)
            if part is not None:
                self.ctx.add(
                    rel,
                    "path.url",
                    f"embeddings.files[{d}d] {path!r}: part {part!r}",
                    "URL-canonical parts: letters, digits and - _ . ! ~ * ' ( ) only",
                )

    def check_points(self) -> None:
        for d, path in self.facts.points_paths.items():
            self.check_finite(path, d, "points.finite", "coordinates")

    def check_vector_fields(self, vf: object) -> None:
        rel = IDENTITY_FILE
        if not self.ctx.check_keys(
            rel, vf, "vector_fields.keys", VECTOR_FIELDS_KEYS, what="vector_fields"
        ):
            return
        fields = vf.get("fields")
        if "fields" in vf and (not isinstance(fields, dict) or not fields):
            self.ctx.add(
                rel, "vector_fields.fields", _raw(fields), "a non-empty object of vector fields"
            )
            fields = None
        if isinstance(fields, dict):
            blank = [k for k in fields if is_blank(k)]
            if blank:
                self.ctx.add(
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
            self.ctx.add(
                rel,
                "vector_fields.default",
                _raw(default),
                f"one of the declared fields {declared}",
            )
        if not isinstance(fields, dict):
            return
        legacy = self.facts.layout == "legacy"
        optional = frozenset({"basis"}) if legacy else frozenset()
        required = VECTOR_FIELD_KEYS - optional
        for position, (field_id, field) in enumerate(fields.items()):
            where = f"vector_fields.fields[{field_id!r}]"
            if not self.ctx.check_keys(
                rel, field, "vector_field.keys", required, optional, what=where
            ):
                continue
            if not legacy and "label" in field and field["label"] != field_id:
                self.ctx.add(
                    rel,
                    "vector_field.label",
                    f"{where}.label = {_raw(field['label'])}",
                    f"{field_id!r} (the field id)",
                )
            elif legacy and "label" in field and not _is_nonempty_str(field["label"]):
                self.ctx.add(
                    rel,
                    "vector_field.label",
                    f"{where}.label = {_raw(field['label'])}",
                    "a non-empty string",
                )
            if "basis" in field and field["basis"] != VECTOR_BASIS:
                self.ctx.add(
                    rel,
                    "vector_field.basis",
                    f"{where}.basis = {_raw(field['basis'])}",
                    f"{VECTOR_BASIS!r}",
                )
            dims = field.get("available_dimensions")
            if "available_dimensions" in field and not _check_dimensions(dims, self.facts.dims):
                self.ctx.add(
                    rel,
                    "vector_field.dimensions",
                    f"{where}.available_dimensions = {_raw(dims)}",
                    f"a non-empty, strictly increasing subset of {self.facts.dims}",
                )
            if not (
                isinstance(dims, list)
                and dims
                and all(_is_int(d) and d in DIMENSIONS for d in dims)
            ):
                continue
            dims = sorted({int(d) for d in dims})
            if "default_dimension" in field and field["default_dimension"] != max(dims):
                self.ctx.add(
                    rel,
                    "vector_field.default",
                    f"{where}.default_dimension = {_raw(field['default_dimension'])}",
                    f"{max(dims)} (the largest)",
                )
            for d, path in self.dimension_files(
                field.get("files"), dims, where, "vector_field.files", shown=f"{where}.files: "
            ):
                want = self.facts.lay.vector_path(position, str(field_id), d)
                if path.removesuffix(".gz") != want:
                    self.ctx.add(
                        rel,
                        "vector_field.path",
                        f"{where}.files[{d}d] = {path!r}",
                        f"{want!r} (+ '.gz' when compressed)",
                    )
                self.check_finite(path, d, "vectors.finite", "vectors")
