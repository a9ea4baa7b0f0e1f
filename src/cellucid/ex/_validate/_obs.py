"""The obs manifest (``obs_manifest.json``) and its value, codes and outlier payloads."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..._format import (
    CATEGORICAL_SCHEMA_KEYS,
    CODES_MISSING,
    EXT,
    MAX_CATEGORIES,
    MAX_QUANT,
    OBS_MANIFEST,
    OBS_MANIFEST_KEYS,
)
from ._compact import CompactChecker, _ValueSchema
from ._context import _ObsField
from ._values import (
    _category_key,
    _is_nonempty_str,
    _is_nonneg_int,
    _is_number,
    _raw,
    _type_name,
)


@dataclass
class _CatSchema:
    codes_pattern: str | None
    outlier_pattern: str | None
    outlier_quantized: bool | None
    outlier_dtype: str | None


class ObsChecker(CompactChecker):
    """The obs manifest: continuous and categorical fields, their schemas and payloads."""

    rel, prefix, keys = OBS_MANIFEST, "obs", OBS_MANIFEST_KEYS

    def check_manifest(self, man: dict, n_points: int | None) -> None:
        rel = self.rel
        q = man.get("centroid_outlier_quantile")
        if "centroid_outlier_quantile" in man and not (q is None or (_is_number(q) and 0 < q < 1)):
            self.ctx.add(rel, "obs.quantile", _raw(q), "null or a number strictly between 0 and 1")
        lk = man.get("latent_key")
        if "latent_key" in man and not (lk is None or _is_nonempty_str(lk)):
            self.ctx.add(rel, "obs.latent_key", _raw(lk), "null or a non-empty string")
        compression = self.ctx.check_compression_value(rel, man)
        cont = man.get("_continuousFields")
        cat = man.get("_categoricalFields")
        for name, value in (("_continuousFields", cont), ("_categoricalFields", cat)):
            if name in man and not isinstance(value, list):
                self.ctx.add(
                    rel, "obs.entry", f"{name} is {_type_name(value)}", "an array of field entries"
                )
        cont = cont if isinstance(cont, list) else []
        cat = cat if isinstance(cat, list) else []
        schemas = man.get("_obsSchemas")
        cont_schema: _ValueSchema | None = None
        cat_schema: _CatSchema | None = None
        if "_obsSchemas" in man:
            if not isinstance(schemas, dict):
                self.ctx.add(
                    rel,
                    "obs.schemas",
                    f"_obsSchemas is {_type_name(schemas)} {_raw(schemas)}",
                    "an object",
                )
            else:
                wanted = ({"continuous"} if cont else set()) | ({"categorical"} if cat else set())
                if set(schemas) != wanted:
                    self.ctx.add(
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
            self.facts.obs_schema_bits = cont_schema.bits
            self.facts.obs_has_continuous = True
        head = self.facts.lay.head_length
        fields: list[_ObsField] = []
        entries_ok = True
        for i, entry in enumerate(cont):
            field = self.parse_value_entry(
                f"_continuousFields[{i}]", entry, head, cont_schema, "continuous"
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
            self.facts.obs_fields = fields
        n = n_points if isinstance(n_points, int) else self.facts.n_cells
        # payloads
        for field in fields:
            if field.kind == "continuous" and cont_schema is not None:
                path = self.field_path(
                    rel, cont_schema.pattern, field, None, f"{_raw(field.key)} values"
                )
                if path is not None and n is not None:
                    for _ in self.ctx.scan(path, cont_schema.dtype, n):
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
                    rel, cat_schema.outlier_pattern, field, None, f"{_raw(field.key)} outliers"
                )
                if path is not None and n is not None:
                    bounds = entry[head + 4 : head + 6] if cat_schema.outlier_quantized else None
                    self.check_outliers(path, cat_schema, bounds, n)

    def check_cat_schema(self, rel: str, schema: object, compression: object) -> _CatSchema | None:
        where = "_obsSchemas.categorical"
        if (
            not self.ctx.check_keys(rel, schema, "schema.keys", CATEGORICAL_SCHEMA_KEYS, what=where)
            or set(schema) != CATEGORICAL_SCHEMA_KEYS
        ):  # type: ignore[arg-type]
            return None
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
            self.ctx.add(
                rel,
                "schema.dtype",
                f"{where}: outlierQuantized {_raw(oq)}, outlierDtype {_raw(odt)}, outlierExt {_raw(oext)}",
                'true with "uint8"/"u8" or "uint16"/"u16", or false with "float32"/"f32"',
            )
        codes = schema.get("codesPathPattern")
        codes_ok = self.check_pattern(
            rel, codes, f"{where}.codesPathPattern", "obs_codes", None, compression
        )
        outl = schema.get("outlierPathPattern")
        outl_ok = good and self.check_pattern(
            rel, outl, f"{where}.outlierPathPattern", "obs_outliers", str(oext), compression
        )
        return _CatSchema(
            codes if codes_ok else None,  # type: ignore[arg-type]
            outl if outl_ok else None,  # type: ignore[arg-type]
            oq if good else None,  # type: ignore[arg-type]
            odt if good else None,  # type: ignore[arg-type]
        )

    def parse_categorical_entry(
        self, rel: str, i: int, entry: object, head: int, schema: _CatSchema | None
    ) -> tuple[_ObsField, list] | None:
        quant = schema.outlier_quantized if schema is not None else None
        base = head + 4
        lengths = (base + 2,) if quant is True else (base,) if quant is False else (base, base + 2)
        where = f"_categoricalFields[{i}]"
        shape = "[key, categories, codesDtype, codesMissingValue, centroidsByDim(, outlierMin, outlierMax)]"
        if not self.check_shape(
            where, entry, lengths, "[index, " + shape[1:] if head == 2 else shape
        ):
            return None
        assert isinstance(entry, list)
        index = entry[0] if head == 2 else None
        key, categories, dtype, missing, centroids = entry[head - 1 : head + 4]
        where = f"{where} ({_raw(key)})"
        n_cat = None
        if not isinstance(categories, list):
            self.ctx.add(
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
                self.ctx.add(
                    rel,
                    "categories.value",
                    f"{where}: labels {_raw(bad)}",
                    "strings, finite numbers or booleans (no null)",
                )
            elif len(set(ids)) != len(ids):
                counts = Counter(ids)
                dupes = [c for c, k in zip(categories, ids, strict=True) if counts[k] > 1]
                self.ctx.add(
                    rel,
                    "categories.value",
                    f"{where}: duplicate labels {_raw(dupes)}",
                    "unique labels",
                )
        codes_dtype = None
        if not isinstance(dtype, str) or dtype not in CODES_MISSING:
            self.ctx.add(rel, "codes.dtype", f"{where}: {_raw(dtype)}", '"uint8" or "uint16"')
        else:
            codes_dtype = str(dtype)
            self.facts.codes_dtypes.add(codes_dtype)
            if not (type(missing) in (int, float) and missing == CODES_MISSING[codes_dtype]):
                self.ctx.add(
                    rel,
                    "codes.missing_value",
                    f"{where}: {_raw(missing)}",
                    f"{CODES_MISSING[codes_dtype]} for {codes_dtype}",
                )
            if n_cat is not None and n_cat > MAX_CATEGORIES[codes_dtype]:
                self.ctx.add(
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
            self.ctx.add(rel, "centroids.value", f"{where}: {_raw(centroids)}", expect)
            return
        exact = {_category_key(c) for c in categories} if categories is not None else set()
        for dim_key, items in centroids.items():
            if dim_key not in ("1", "2", "3") or not isinstance(items, list):
                self.ctx.add(
                    rel, "centroids.value", f"{where}: key {dim_key!r} -> {_raw(items)}", expect
                )
                continue
            d = int(dim_key)
            seen: set[object] = set()
            for j, item in enumerate(items):
                at = f"{where} centroidsByDim[{dim_key!r}][{j}]"
                if not isinstance(item, dict) or set(item) != {"category", "position", "n_points"}:
                    self.ctx.add(
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
                    self.ctx.add(
                        rel,
                        "centroids.value",
                        f"{at}.position = {_raw(pos)}",
                        f"{d} finite numbers",
                    )
                if not _is_nonneg_int(item["n_points"]) or (
                    self.facts.n_cells is not None and item["n_points"] > self.facts.n_cells
                ):
                    self.ctx.add(
                        rel,
                        "centroids.value",
                        f"{at}.n_points = {_raw(item['n_points'])}",
                        "a non-negative integer <= n_cells",
                    )
                label = item["category"]
                ident = _category_key(label)
                if ident is None:
                    self.ctx.add(
                        rel,
                        "centroids.value",
                        f"{at}.category = {_raw(label)}",
                        "one of the field's categories",
                    )
                    continue
                if categories is not None and ident not in exact:
                    self.ctx.add(
                        rel,
                        "centroids.value",
                        f"{at}.category = {_raw(label)}",
                        "one of the field's categories, as the identical JSON value",
                    )
                    continue
                if ident in seen:
                    self.ctx.add(
                        rel,
                        "centroids.value",
                        f"{at}.category = {_raw(label)} again",
                        "at most one centroid per category",
                    )
                seen.add(ident)

    def check_codes(self, path: str, field: _ObsField, n: int) -> None:
        assert field.codes_dtype is not None
        missing = CODES_MISSING[field.codes_dtype]
        n_cat = field.n_categories
        bad = 0
        worst = 0
        for chunk in self.ctx.scan(path, field.codes_dtype, n):
            if n_cat is None:
                continue
            out = (chunk >= n_cat) & (chunk != missing)
            count = int(np.count_nonzero(out))
            if count:
                bad += count
                worst = max(worst, int(chunk[out].max()))
        if bad:
            self.ctx.add(
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
            for chunk in self.ctx.scan(path, "<f4", n):
                with np.errstate(invalid="ignore"):
                    ok = np.isnan(chunk) | ((chunk >= 0) & (chunk <= 1))
                bad += int(np.count_nonzero(~ok))
            if bad:
                self.ctx.add(
                    path,
                    "outliers.range",
                    f"{bad} value(s) outside [0, 1]",
                    "NaN or a number in [0, 1]",
                )
            return
        bits = 8 if dtype == "uint8" else 16
        max_q = MAX_QUANT[bits]
        lo, hi = None, None
        for chunk in self.ctx.scan(path, dtype, n):
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
            self.ctx.add(
                path,
                "outliers.range",
                f"codes {lo}..{hi} decode to {decoded[0]:.6g}..{decoded[1]:.6g} (outlierMin {vmin}, outlierMax {vmax})",
                "quantiles in [0, 1]",
            )
