"""The identity (``dataset_identity.json``): its keys, stats, embeddings, source and settings.

What needs the manifests (``obs_fields``, the settings they must agree with) is checked
after them, from the facts they established.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

from ..._format import (
    CODES_MISSING,
    CONNECTIVITY_MANIFEST,
    CREATED_AT_FORMAT,
    EXPORT_SETTINGS_KEYS,
    IDENTITY_FILE,
    IDENTITY_OPTIONAL_KEYS,
    IDENTITY_REQUIRED_KEYS,
    IDENTITY_VERSION,
    MAX_QUANT,
    OBS_MANIFEST,
    SOURCE_OPTIONAL_KEYS,
    SOURCE_REQUIRED_KEYS,
    STATS_KEYS,
    VAR_MANIFEST,
)
from ._context import Context, Part
from ._points import PointsChecker
from ._values import (
    _check_id,
    _is_int,
    _is_nonempty_str,
    _is_nonneg_int,
    _level,
    _raw,
    _show,
    _type_name,
    _valid_compression,
)

#: the regular expression of ``created_at``
_CREATED_AT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


class IdentityChecker(Part):
    """The identity document; its embeddings and vector fields through :attr:`points`."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        #: the embeddings and vector fields declare the points and vectors files
        self.points = PointsChecker(ctx)

    def check_identity_head(self, ident: object) -> None:
        rel = IDENTITY_FILE
        if not self.ctx.check_keys(
            rel, ident, "identity.keys", IDENTITY_REQUIRED_KEYS, IDENTITY_OPTIONAL_KEYS
        ):
            return
        if "version" in ident and not (
            _is_int(ident["version"]) and ident["version"] == IDENTITY_VERSION
        ):
            self.ctx.add(rel, "identity.version", _raw(ident["version"]), f"{IDENTITY_VERSION}")
        if "id" in ident:
            _check_id(self.ctx.add, rel, ident["id"], "identity.id")
        if "name" in ident and not _is_nonempty_str(ident["name"]):
            self.ctx.add(rel, "identity.name", _raw(ident["name"]), "a non-empty string")
        if "description" in ident and not isinstance(ident["description"], str):
            self.ctx.add(
                rel, "identity.description", _raw(ident["description"]), 'a string (may be "")'
            )
        if "cellucid_data_version" in ident and not _is_nonempty_str(
            ident["cellucid_data_version"]
        ):
            self.ctx.add(
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
            self.points.check_embeddings(ident["embeddings"])
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
            self.ctx.add(
                IDENTITY_FILE,
                "identity.created_at",
                _raw(value),
                "a real UTC time as YYYY-MM-DDTHH:MM:SSZ",
            )

    def check_stats(self, stats: object) -> None:
        rel = IDENTITY_FILE
        if not self.ctx.check_keys(rel, stats, "stats.keys", STATS_KEYS, what="stats"):
            return
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
                    self.ctx.add(
                        rel,
                        "stats.value",
                        f"stats.{key} = {_raw(stats[key])}",
                        "a non-negative integer",
                    )
        has_conn = stats.get("has_connectivity")
        if "has_connectivity" in stats and not isinstance(has_conn, bool):
            self.ctx.add(
                rel, "stats.value", f"stats.has_connectivity = {_raw(has_conn)}", "true or false"
            )
            has_conn = None
        n_edges = stats.get("n_edges")
        if "n_edges" in stats:
            if n_edges is not None and not _is_nonneg_int(n_edges):
                self.ctx.add(
                    rel,
                    "stats.value",
                    f"stats.n_edges = {_raw(n_edges)}",
                    "a non-negative integer or null",
                )
            elif has_conn is True and n_edges is None:
                self.ctx.add(
                    rel,
                    "stats.n_edges",
                    "null with has_connectivity true",
                    "an integer when connected",
                )
            elif has_conn is False and n_edges is not None:
                self.ctx.add(
                    rel,
                    "stats.n_edges",
                    f"{_raw(n_edges)} with has_connectivity false",
                    "null when not connected",
                )
        if all(
            k in good for k in ("n_obs_fields", "n_categorical_fields", "n_continuous_fields")
        ) and (good["n_obs_fields"] != good["n_categorical_fields"] + good["n_continuous_fields"]):
            self.ctx.add(
                rel,
                "stats.sum",
                f"n_obs_fields {good['n_obs_fields']}, n_categorical_fields {good['n_categorical_fields']}, "
                f"n_continuous_fields {good['n_continuous_fields']}",
                "n_obs_fields = n_categorical_fields + n_continuous_fields",
            )
        self.facts.stats = good
        self.facts.n_cells = good.get("n_cells")
        self.facts.n_genes = good.get("n_genes")
        self.facts.has_connectivity = has_conn if isinstance(has_conn, bool) else None
        self.facts.n_edges = int(n_edges) if _is_nonneg_int(n_edges) else None

    def check_source(self, source: object) -> None:
        rel = IDENTITY_FILE
        if not self.ctx.check_keys(
            rel, source, "source.keys", SOURCE_REQUIRED_KEYS, SOURCE_OPTIONAL_KEYS, what="source"
        ):
            return
        for key in ("name", *sorted(SOURCE_OPTIONAL_KEYS)):
            if key in source and not _is_nonempty_str(source[key]):
                self.ctx.add(
                    rel,
                    "source.value",
                    f"source.{key} = {_raw(source[key])}",
                    "a non-empty string" + (" when present" if key != "name" else ""),
                )

    def check_export_settings_values(self, es: object) -> None:
        rel = IDENTITY_FILE
        if not self.ctx.check_keys(
            rel, es, "export_settings.keys", EXPORT_SETTINGS_KEYS, what="export_settings"
        ):
            return
        good = dict(es)
        if not _valid_compression(es.get("compression")):
            self.ctx.add(
                rel,
                "export_settings.value",
                f"compression = {_raw(es.get('compression'))}",
                "null or an integer 1-9",
            )
            good.pop("compression", None)
        else:
            self.facts.compressions["dataset_identity.json export_settings.compression"] = _level(
                es.get("compression")
            )
        for key in ("var_quantization", "obs_continuous_quantization"):
            value = es.get(key)
            if not (value is None or (_is_int(value) and value in MAX_QUANT)):
                self.ctx.add(
                    rel, "export_settings.value", f"{key} = {_raw(value)}", "null, 8 or 16"
                )
                good.pop(key, None)
        allowed = set(CODES_MISSING) | ({"auto"} if self.facts.layout == "legacy" else set())
        if not (
            isinstance(es.get("obs_categorical_dtype"), str)
            and es["obs_categorical_dtype"] in allowed
        ):
            self.ctx.add(
                rel,
                "export_settings.value",
                f"obs_categorical_dtype = {_raw(es.get('obs_categorical_dtype'))}",
                '"uint8" or "uint16"',
            )
            good.pop("obs_categorical_dtype", None)
        self.facts.export_settings = good

    def check_obs_fields(self, fields: object) -> None:
        rel = IDENTITY_FILE
        if not isinstance(fields, list):
            self.ctx.add(rel, "obs_fields.entry", _type_name(fields), "a list of field objects")
            return
        parsed: list[tuple[object, str, object]] = []
        for i, entry in enumerate(fields):
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if kind == "continuous":
                keys = frozenset({"key", "kind"})
            elif kind == "category":
                keys = frozenset({"key", "kind", "n_categories"})
            else:
                self.ctx.add(
                    rel,
                    "obs_fields.entry",
                    f"obs_fields[{i}] = {_raw(entry)}",
                    'an object with kind "continuous" or "category"',
                )
                continue
            assert isinstance(entry, dict)
            if set(entry) != keys:
                self.ctx.add(
                    rel,
                    "obs_fields.entry",
                    f"obs_fields[{i}] keys {sorted(entry)}",
                    f"exactly {sorted(keys)}",
                )
                continue
            if not _is_nonempty_str(entry["key"]):
                self.ctx.add(
                    rel,
                    "obs_fields.entry",
                    f"obs_fields[{i}].key = {_raw(entry['key'])}",
                    "a non-empty string",
                )
                continue
            if kind == "category" and not _is_nonneg_int(entry["n_categories"]):
                self.ctx.add(
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
            self.ctx.add(rel, "obs_fields.unique", f"duplicate keys {_raw(dupes)}", "unique keys")
        stats = self.facts.stats
        if len(parsed) == len(fields):
            counts = {
                "n_obs_fields": len(parsed),
                "n_continuous_fields": sum(p[1] == "continuous" for p in parsed),
                "n_categorical_fields": sum(p[1] == "category" for p in parsed),
            }
            for key, count in counts.items():
                if key in stats and stats[key] != count:
                    self.ctx.add(
                        rel,
                        "obs_fields.counts",
                        f"{count} {key[2:]} in obs_fields",
                        f"stats.{key} = {stats[key]}",
                    )
        manifest = self.facts.obs_fields
        if manifest is None or len(parsed) != len(fields):
            return
        mine = [(f.key, f.kind) for f in manifest]
        theirs = [(p[0], p[1]) for p in parsed]
        if self.facts.layout == "legacy":
            # the original design listed obs_fields in obs_keys order: same fields, any order
            if sorted(map(_show, mine)) != sorted(map(_show, theirs)):
                self.ctx.add(
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
            self.ctx.add(
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
                self.ctx.add(
                    rel,
                    "obs_fields.n_categories",
                    f"{key}: {n_cat}",
                    f"{field.n_categories} (the obs manifest's categories)",
                )

    def check_export_settings_agree(self) -> None:
        es = self.facts.export_settings
        if not es:
            return
        rel = IDENTITY_FILE
        if "compression" in es:
            level = _level(es["compression"])
            for manifest in (OBS_MANIFEST, VAR_MANIFEST, CONNECTIVITY_MANIFEST):
                if (
                    manifest in self.facts.compressions
                    and self.facts.compressions[manifest] != level
                ):
                    self.ctx.add(
                        rel,
                        "export_settings.mismatch",
                        f"compression {_raw(level)}",
                        f"{_raw(self.facts.compressions[manifest])} ({manifest})",
                    )
        quantizations = (
            (
                "var_quantization",
                self.facts.var_schema_known,
                self.facts.var_schema_bits,
                VAR_MANIFEST,
            ),
            (
                "obs_continuous_quantization",
                self.facts.obs_has_continuous,
                self.facts.obs_schema_bits,
                OBS_MANIFEST,
            ),
        )
        for key, known, bits, manifest in quantizations:
            if key in es and known and es[key] != bits:
                self.ctx.add(
                    rel,
                    "export_settings.mismatch",
                    f"{key} {_raw(es[key])}",
                    f"{_raw(bits)} ({manifest})",
                )
        dtype = es.get("obs_categorical_dtype")
        if (
            dtype not in (None, "auto")
            and self.facts.codes_dtypes
            and dtype not in self.facts.codes_dtypes
        ):
            self.ctx.add(
                rel,
                "export_settings.mismatch",
                f"obs_categorical_dtype {dtype!r}",
                f"one of the codes dtypes used: {sorted(self.facts.codes_dtypes)}",
            )
