"""The var manifest (``var_manifest.json``) and its gene payloads."""

from __future__ import annotations

from ..._format import (
    MAX_QUANT,
    VAR_MANIFEST,
    VAR_MANIFEST_KEYS,
)
from ._compact import CompactChecker
from ._context import _ObsField
from ._values import (
    _is_int,
    _is_nonempty_str,
    _raw,
    _type_name,
)


class VarChecker(CompactChecker):
    """The var manifest: its gene entries, schema and (selected) gene payloads."""

    rel, prefix, keys = VAR_MANIFEST, "var", VAR_MANIFEST_KEYS

    def check_manifest(self, man: dict, n_points: int | None) -> None:
        rel = self.rel
        gid = man.get("var_gene_id_column")
        if "var_gene_id_column" in man and not (gid is None or _is_nonempty_str(gid)):
            self.ctx.add(rel, "var.gene_id_column", _raw(gid), "null or a non-empty string")
        compression = self.ctx.check_compression_value(rel, man)
        schema = None
        if "_varSchema" in man:
            schema = self.check_value_schema(
                rel, man["_varSchema"], "_varSchema", compression, var=True
            )
        quant = man.get("quantization")
        if "quantization" in man:
            if not (quant is None or (_is_int(quant) and quant in MAX_QUANT)):
                self.ctx.add(rel, "var.quantization", _raw(quant), "null, 8 or 16")
            elif schema is not None and (None if quant is None else int(quant)) != schema.bits:
                self.ctx.add(
                    rel,
                    "var.quantization",
                    _raw(quant),
                    f"{_raw(schema.bits)} (the schema's quantizationBits)",
                )
        if schema is not None:
            self.facts.var_schema_known = True
            self.facts.var_schema_bits = schema.bits
        fields = man.get("fields")
        if "fields" in man and not isinstance(fields, list):
            self.ctx.add(
                rel, "var.entry", f"fields is {_type_name(fields)}", "an array of gene entries"
            )
        fields = fields if isinstance(fields, list) else []
        if self.facts.n_genes is not None and "fields" in man and len(fields) != self.facts.n_genes:
            self.ctx.add(
                rel, "var.n_genes", f"{len(fields)} genes", f"stats.n_genes = {self.facts.n_genes}"
            )
        head = self.facts.lay.head_length
        parsed: list[_ObsField] = []
        for i, entry in enumerate(fields):
            field = self.parse_value_entry(f"fields[{i}]", entry, head, schema, "gene")
            if field is not None:
                parsed.append(field)
        self.check_indices_and_keys(rel, parsed, len(fields), "var")
        n = n_points if isinstance(n_points, int) else self.facts.n_cells
        if schema is None:
            return
        for field in parsed:
            path = self.field_path(
                rel, schema.pattern, field, None, f"gene {_raw(field.key)} values"
            )
            if self.ctx.genes is not None and field.key not in self.ctx.genes:
                continue
            if path is not None and n is not None:
                for _ in self.ctx.scan(path, schema.dtype, n):
                    pass
