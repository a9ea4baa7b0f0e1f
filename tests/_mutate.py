"""Break one rule of an export at a time: helpers and the table of mutations the validator must catch.

Each :class:`Mutation` edits a copy of a valid dataset directory (JSON or payload bytes,
re-gzipping as needed) so that exactly one rule of the format is broken; ``extra`` lists
rules that necessarily break with it (e.g. a wrong ``n_points`` also makes payloads short).
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cellucid._format import CODES_MISSING, MAX_CATEGORIES, MAX_QUANT, safe_filename_component
from cellucid._layout import detect_layout
from cellucid.ex._validate import _connectivity, _files, _payloads

IDENTITY = "dataset_identity.json"
OBS = "obs_manifest.json"
VAR = "var_manifest.json"
CONN = "connectivity_manifest.json"
CATALOG = "datasets.json"


class DS:
    """A dataset directory to edit."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.mp = monkeypatch

    # --- JSON ---
    def json(self, rel: str) -> Any:
        return json.loads((self.path / rel).read_text())

    def write_json(self, rel: str, obj: Any) -> None:
        (self.path / rel).write_text(json.dumps(obj))

    @contextmanager
    def edit(self, rel: str) -> Iterator[Any]:
        obj = self.json(rel)
        yield obj
        self.write_json(rel, obj)

    # --- payloads ---
    def raw(self, rel: str) -> bytes:
        return (self.path / rel).read_bytes()

    def write_raw(self, rel: str, data: bytes) -> None:
        (self.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.path / rel).write_bytes(data)

    def read(self, rel: str) -> bytes:
        data = self.raw(rel)
        return gzip.decompress(data) if rel.endswith(".gz") else data

    def write(self, rel: str, data: bytes) -> None:
        self.write_raw(rel, gzip.compress(data, mtime=0) if rel.endswith(".gz") else data)

    def array(self, rel: str, dtype: str) -> np.ndarray:
        return np.frombuffer(self.read(rel), dtype=np.dtype(dtype).newbyteorder("<")).copy()

    def write_array(self, rel: str, array: np.ndarray) -> None:
        self.write(rel, np.ascontiguousarray(array).tobytes())

    def move(self, old: str, new: str, *, recompress: bool = False) -> None:
        """Rename a payload; with ``recompress`` its bytes follow the new name's suffix."""
        data = self.read(old) if recompress else self.raw(old)
        (self.path / old).unlink()
        if recompress:
            self.write(new, data)
        else:
            self.write_raw(new, data)

    # --- where things are ---
    @property
    def layout(self) -> str:
        return detect_layout(
            self.json(IDENTITY), self.json(OBS), self._maybe(VAR), self._maybe(CONN)
        )

    def _maybe(self, rel: str) -> Any:
        return self.json(rel) if (self.path / rel).is_file() else None

    @property
    def head(self) -> int:
        return 2 if self.layout == "current" else 1

    def fill(self, pattern: str, entry: list, ext: str | None = None) -> str:
        if self.layout == "current":
            path = pattern.replace("{index}", str(entry[0]))
        else:
            path = pattern.replace("{key}", safe_filename_component(entry[0]))
        return path.replace("{ext}", ext) if ext else path

    def cont_path(self, i: int = 0) -> str:
        man = self.json(OBS)
        return self.fill(
            man["_obsSchemas"]["continuous"]["pathPattern"], man["_continuousFields"][i]
        )

    def codes_path(self, i: int = 0) -> str:
        man = self.json(OBS)
        entry = man["_categoricalFields"][i]
        dtype = entry[self.head + 1]
        return self.fill(
            man["_obsSchemas"]["categorical"]["codesPathPattern"],
            entry,
            "u8" if dtype == "uint8" else "u16",
        )

    def outlier_path(self, i: int = 0) -> str:
        man = self.json(OBS)
        return self.fill(
            man["_obsSchemas"]["categorical"]["outlierPathPattern"], man["_categoricalFields"][i]
        )

    def var_path(self, i: int = 0) -> str:
        man = self.json(VAR)
        return self.fill(man["_varSchema"]["pathPattern"], man["fields"][i])

    def points_path(self) -> tuple[int, str]:
        files = self.json(IDENTITY)["embeddings"]["files"]
        key = sorted(files)[0]
        return int(key[0]), files[key]

    def vector(self) -> tuple[str, int, str]:
        """The first vector field: its id, first dimension and file."""
        fields = self.json(IDENTITY)["vector_fields"]["fields"]
        field_id = next(iter(fields))
        d = fields[field_id]["available_dimensions"][0]
        return field_id, d, fields[field_id]["files"][f"{d}d"]

    def edges(self) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray | None]:
        man = self.json(CONN)
        src = self.array(man["sourcesPath"], man["index_dtype"])
        dst = self.array(man["destinationsPath"], man["index_dtype"])
        w = self.array(man["weightsPath"], "float64") if "weightsPath" in man else None
        return man, src, dst, w

    def write_edges(
        self, man: dict, src: np.ndarray, dst: np.ndarray, w: np.ndarray | None
    ) -> None:
        self.write_array(man["sourcesPath"], src)
        self.write_array(man["destinationsPath"], dst)
        if w is not None:
            self.write_array(man["weightsPath"], w)

    def gz_payload(self) -> str:
        """A compressed payload with some data in it (the first codes file)."""
        return self.codes_path(0)

    @property
    def compressed(self) -> bool:
        return self.json(OBS)["compression"] is not None


@dataclass(frozen=True)
class Mutation:
    name: str
    rule: str
    fn: Callable[[DS], None]
    needs: frozenset[str] = frozenset()
    extra: frozenset[str] = frozenset()


MUTATIONS: list[Mutation] = []


def mutation(rule: str, *, needs: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> Callable:
    def register(fn: Callable[[DS], None]) -> Callable[[DS], None]:
        MUTATIONS.append(Mutation(fn.__name__, rule, fn, frozenset(needs), frozenset(extra)))
        return fn

    return register


# ---- files and JSON ----------------------------------------------------------------------


@mutation("file.missing")
def delete_gene_payload(ds: DS) -> None:
    (ds.path / ds.var_path(0)).unlink()


@mutation("file.missing")
def delete_var_manifest(ds: DS) -> None:
    (ds.path / VAR).unlink()


@mutation("file.missing")
def delete_connectivity_manifest(ds: DS) -> None:
    (ds.path / CONN).unlink()


@mutation("file.missing")
def delete_obs_manifest(ds: DS) -> None:
    (ds.path / OBS).unlink()


@mutation("json.parse")
def truncate_obs_manifest(ds: DS) -> None:
    ds.write_raw(OBS, ds.raw(OBS)[:-5])


@mutation("json.parse")
def nan_in_var_manifest(ds: DS) -> None:
    with ds.edit(VAR) as man:
        man["n_points"] = math.nan


@mutation("json.parse")
def latin1_identity(ds: DS) -> None:
    ds.write_raw(IDENTITY, ds.raw(IDENTITY).replace(b'"version"', b'"v\xe9rsion"', 1))


@mutation("json.size")
def oversized_var_manifest(ds: DS) -> None:
    largest = max(p.stat().st_size for p in ds.path.glob("*.json"))
    ds.mp.setattr(_files, "MAX_JSON_BYTES", largest)
    ds.write_raw(VAR, ds.raw(VAR) + b" " * (largest + 1 - len(ds.raw(VAR))))


@mutation("payload.size")
def small_payload_limit(ds: DS) -> None:
    ds.mp.setattr(_payloads, "MAX_PAYLOAD_BYTES", 16)


@mutation("path.duplicate", needs=("vectors",))
def points_path_is_a_vector_file(ds: DS) -> None:
    _, d, path = ds.vector()
    with ds.edit(IDENTITY) as ident:
        ident["embeddings"]["files"][f"{d}d"] = path


@mutation(
    "path.duplicate",
    needs=("current",),
    extra=("edges.upper", "edges.order", "edges.max_neighbors"),
)
def destinations_are_sources(ds: DS) -> None:
    with ds.edit(CONN) as man:
        man["destinationsPath"] = man["sourcesPath"]


@mutation("path.duplicate", needs=("legacy",))
def two_keys_one_file_name(ds: DS) -> None:
    """Legacy: a key that sanitizes like another key's names the same file."""
    with ds.edit(OBS) as man:
        first = man["_continuousFields"][0][0]
        old = man["_continuousFields"][1][0]
        man["_continuousFields"][1][0] = new = f"{first}!"
    with ds.edit(IDENTITY) as ident:
        for entry in ident["obs_fields"]:
            if entry["key"] == old:
                entry["key"] = new


@mutation("path.syntax")
def absolute_points_path(ds: DS) -> None:
    d, path = ds.points_path()
    with ds.edit(IDENTITY) as ident:
        ident["embeddings"]["files"][f"{d}d"] = "/" + path


@mutation("path.syntax")
def dotdot_sources_path(ds: DS) -> None:
    with ds.edit(CONN) as man:
        man["sourcesPath"] = "connectivity/../" + man["sourcesPath"]


# ---- gzip ----------------------------------------------------------------------------------


def _patch_bytes(ds: DS, rel: str, fn: Callable[[bytearray], bytes | bytearray]) -> None:
    ds.write_raw(rel, bytes(fn(bytearray(ds.raw(rel)))))


@mutation("gzip.magic", needs=("gz",))
def not_gzip(ds: DS) -> None:
    _, path = ds.points_path()
    ds.write_raw(path, ds.read(path))


@mutation("gzip.method", needs=("gz",))
def gzip_method_9(ds: DS) -> None:
    def fn(b: bytearray) -> bytearray:
        b[2] = 9
        return b

    _patch_bytes(ds, ds.gz_payload(), fn)


@mutation("gzip.flags", needs=("gz",))
def gzip_reserved_flag(ds: DS) -> None:
    def fn(b: bytearray) -> bytearray:
        b[3] |= 0x40
        return b

    _patch_bytes(ds, ds.gz_payload(), fn)


@mutation("gzip.members", needs=("gz",))
def two_gzip_members(ds: DS) -> None:
    _patch_bytes(ds, ds.gz_payload(), lambda b: b + gzip.compress(b"", mtime=0))


@mutation("gzip.trailing", needs=("gz",))
def trailing_zeros(ds: DS) -> None:
    _patch_bytes(ds, ds.gz_payload(), lambda b: b + b"\x00\x00\x00")


@mutation("gzip.isize", needs=("gz",))
def wrong_isize(ds: DS) -> None:
    def fn(b: bytearray) -> bytearray:
        b[-4:] = (int.from_bytes(b[-4:], "little") + 1).to_bytes(4, "little")
        return b

    _patch_bytes(ds, ds.gz_payload(), fn)


@mutation("gzip.crc", needs=("gz",))
def wrong_crc(ds: DS) -> None:
    def fn(b: bytearray) -> bytearray:
        b[-8] ^= 0xFF
        return b

    _patch_bytes(ds, ds.gz_payload(), fn)


@mutation("gzip.corrupt", needs=("gz",))
def truncated_gzip(ds: DS) -> None:
    _patch_bytes(ds, ds.gz_payload(), lambda b: b[:-12])


@mutation("gzip.corrupt", needs=("gz",))
def garbage_deflate(ds: DS) -> None:
    _patch_bytes(ds, ds.gz_payload(), lambda b: b[:10] + b"\xff" * (len(b) - 10))


# ---- payload lengths, compression ------------------------------------------------------------


@mutation("payload.length")
def codes_one_short(ds: DS) -> None:
    path = ds.codes_path(0)
    ds.write(path, ds.read(path)[:-1])


@mutation("payload.length")
def points_one_value_long(ds: DS) -> None:
    _, path = ds.points_path()
    ds.write(path, ds.read(path) + b"\x00\x00\x00\x00")


@mutation("compression.value")
def compression_10(ds: DS) -> None:
    with ds.edit(OBS) as man:
        man["compression"] = 10


@mutation("compression.value")
def compression_true(ds: DS) -> None:
    with ds.edit(CONN) as man:
        man["compression"] = True


def _toggle_var_gzip(ds: DS, *, manifest_too: bool) -> None:
    man = ds.json(VAR)
    paths = [ds.var_path(i) for i in range(len(man["fields"]))]
    gz = man["_varSchema"]["pathPattern"].endswith(".gz")
    for path in paths:
        ds.move(path, path.removesuffix(".gz") if gz else path + ".gz", recompress=True)
    pattern = man["_varSchema"]["pathPattern"]
    man["_varSchema"]["pathPattern"] = pattern.removesuffix(".gz") if gz else pattern + ".gz"
    if manifest_too:
        man["compression"] = None if gz else 6
    ds.write_json(VAR, man)


@mutation("compression.suffix")
def var_suffix_disagrees(ds: DS) -> None:
    _toggle_var_gzip(ds, manifest_too=False)


@mutation("compression.mixed", extra=("export_settings.mismatch",))
def var_compressed_differently(ds: DS) -> None:
    _toggle_var_gzip(ds, manifest_too=True)


@mutation("compression.mixed")
def points_compressed_differently(ds: DS) -> None:
    d, path = ds.points_path()
    new = path.removesuffix(".gz") if path.endswith(".gz") else path + ".gz"
    ds.move(path, new, recompress=True)
    with ds.edit(IDENTITY) as ident:
        ident["embeddings"]["files"][f"{d}d"] = new


# ---- identity --------------------------------------------------------------------------------


def _identity(fn: Callable[[dict], None]) -> Callable[[DS], None]:
    def apply(ds: DS) -> None:
        with ds.edit(IDENTITY) as ident:
            fn(ident)

    apply.__name__ = fn.__name__
    return apply


def identity_mutation(
    rule: str, *, needs: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> Callable:
    def register(fn: Callable[[dict], None]) -> Callable[[dict], None]:
        MUTATIONS.append(
            Mutation(fn.__name__, rule, _identity(fn), frozenset(needs), frozenset(extra))
        )
        return fn

    return register


@identity_mutation("identity.keys")
def identity_extra_key(ident: dict) -> None:
    ident["extra"] = 1


@identity_mutation("identity.keys")
def identity_without_description(ident: dict) -> None:
    del ident["description"]


@identity_mutation("identity.version")
def version_3(ident: dict) -> None:
    ident["version"] = 3


@identity_mutation("identity.version")
def version_string(ident: dict) -> None:
    ident["version"] = "2"


@identity_mutation("identity.id")
def id_with_space(ident: dict) -> None:
    ident["id"] = "my data"


@identity_mutation("identity.id")
def id_ending_in_dot(ident: dict) -> None:
    ident["id"] = "data."


@identity_mutation("identity.id")
def id_too_long(ident: dict) -> None:
    ident["id"] = "a" * 181


@identity_mutation("identity.name")
def empty_name(ident: dict) -> None:
    ident["name"] = ""


@identity_mutation("identity.description")
def null_description(ident: dict) -> None:
    ident["description"] = None


@identity_mutation("identity.data_version")
def empty_data_version(ident: dict) -> None:
    ident["cellucid_data_version"] = ""


@identity_mutation("identity.created_at")
def created_at_not_a_day(ident: dict) -> None:
    ident["created_at"] = "2026-02-30T00:00:00Z"


@identity_mutation("identity.created_at")
def created_at_without_z(ident: dict) -> None:
    ident["created_at"] = "2026-07-27T00:00:00"


@identity_mutation("stats.keys")
def stats_extra_key(ident: dict) -> None:
    ident["stats"]["n_vectors"] = 1


@identity_mutation("stats.value")
def has_connectivity_one(ident: dict) -> None:
    ident["stats"]["has_connectivity"] = 1


@identity_mutation("stats.value")
def n_genes_true(ident: dict) -> None:
    ident["stats"]["n_genes"] = True


@identity_mutation("stats.value")
def n_cells_negative(ident: dict) -> None:
    ident["stats"]["n_cells"] = -1


@identity_mutation("stats.sum", extra=("obs_fields.counts",))
def n_obs_fields_off(ident: dict) -> None:
    ident["stats"]["n_obs_fields"] += 1


@identity_mutation("stats.n_edges")
def connected_without_n_edges(ident: dict) -> None:
    ident["stats"]["n_edges"] = None


@identity_mutation("embeddings.keys")
def embeddings_extra_key(ident: dict) -> None:
    ident["embeddings"]["extra"] = 1


@identity_mutation("embeddings.dimensions")
def dimensions_repeated(ident: dict) -> None:
    dims = ident["embeddings"]["available_dimensions"]
    ident["embeddings"]["available_dimensions"] = dims + dims[-1:]


@identity_mutation("embeddings.default")
def default_dimension_4(ident: dict) -> None:
    ident["embeddings"]["default_dimension"] = 4


@identity_mutation("embeddings.files")
def points_file_for_4d(ident: dict) -> None:
    ident["embeddings"]["files"]["4d"] = "points_4d.bin"


@identity_mutation("obs_fields.entry")
def obs_field_extra_key(ident: dict) -> None:
    ident["obs_fields"][0]["extra"] = 1


@identity_mutation("obs_fields.entry")
def obs_field_bad_kind(ident: dict) -> None:
    ident["obs_fields"][0]["kind"] = "categorical"


@identity_mutation("obs_fields.unique", extra=("obs_fields.order", "obs_fields.n_categories"))
def obs_fields_duplicate_key(ident: dict) -> None:
    ident["obs_fields"][1]["key"] = ident["obs_fields"][0]["key"]


@identity_mutation("obs_fields.counts")
def counts_shifted(ident: dict) -> None:
    ident["stats"]["n_categorical_fields"] += 1
    ident["stats"]["n_continuous_fields"] -= 1


@identity_mutation("obs_fields.order")
def obs_field_renamed(ident: dict) -> None:
    ident["obs_fields"][-1]["key"] = "renamed"


@identity_mutation("obs_fields.order", needs=("current",))
def categorical_fields_swapped(ident: dict) -> None:
    fields = ident["obs_fields"]
    cats = [i for i, f in enumerate(fields) if f["kind"] == "category"]
    fields[cats[0]], fields[cats[1]] = fields[cats[1]], fields[cats[0]]


@identity_mutation("obs_fields.order", needs=("current",))
def categorical_first(ident: dict) -> None:
    fields = ident["obs_fields"]
    ident["obs_fields"] = [f for f in fields if f["kind"] == "category"] + [
        f for f in fields if f["kind"] != "category"
    ]


@identity_mutation("obs_fields.n_categories")
def n_categories_off(ident: dict) -> None:
    next(f for f in ident["obs_fields"] if f["kind"] == "category")["n_categories"] += 1


@identity_mutation("export_settings.keys")
def export_settings_extra_key(ident: dict) -> None:
    ident["export_settings"]["extra"] = 1


@identity_mutation("export_settings.value")
def categorical_dtype_uint32(ident: dict) -> None:
    ident["export_settings"]["obs_categorical_dtype"] = "uint32"


@identity_mutation("export_settings.value", needs=("current",))
def categorical_dtype_auto(ident: dict) -> None:
    ident["export_settings"]["obs_categorical_dtype"] = "auto"


@identity_mutation("export_settings.value")
def settings_compression_zero(ident: dict) -> None:
    ident["export_settings"]["compression"] = 0


@identity_mutation("export_settings.mismatch")
def var_quantization_differs(ident: dict) -> None:
    es = ident["export_settings"]
    es["var_quantization"] = 16 if es["var_quantization"] == 8 else 8


@identity_mutation("export_settings.mismatch")
def obs_quantization_differs(ident: dict) -> None:
    es = ident["export_settings"]
    es["obs_continuous_quantization"] = 16 if es["obs_continuous_quantization"] == 8 else 8


@identity_mutation("export_settings.mismatch")
def categorical_dtype_differs(ident: dict) -> None:
    ident["export_settings"]["obs_categorical_dtype"] = "uint16"


@identity_mutation("export_settings.mismatch", extra=("compression.mixed",))
def settings_compression_differs(ident: dict) -> None:
    es = ident["export_settings"]
    es["compression"] = None if es["compression"] else 6


@identity_mutation("source.keys")
def source_without_name(ident: dict) -> None:
    ident["source"] = {"url": "https://example.org"}


@identity_mutation("source.keys")
def source_extra_key(ident: dict) -> None:
    ident["source"] = {"name": "x", "doi": "10.1/x"}


@identity_mutation("source.value")
def source_empty_name(ident: dict) -> None:
    ident["source"] = {"name": ""}


@identity_mutation("vector_fields.keys", needs=("vectors",))
def vector_fields_extra_key(ident: dict) -> None:
    ident["vector_fields"]["extra"] = 1


@identity_mutation("vector_fields.default", needs=("vectors",))
def default_field_unknown(ident: dict) -> None:
    ident["vector_fields"]["default_field"] = "nope"


@identity_mutation("vector_fields.default", needs=("vectors",))
def default_field_null(ident: dict) -> None:
    ident["vector_fields"]["default_field"] = None


@identity_mutation("vector_fields.fields", needs=("vectors",), extra=("vector_fields.default",))
def no_vector_fields(ident: dict) -> None:
    ident["vector_fields"]["fields"] = {}


def _first_field(ident: dict) -> dict:
    return next(iter(ident["vector_fields"]["fields"].values()))


@identity_mutation("vector_field.keys", needs=("vectors",))
def vector_field_extra_key(ident: dict) -> None:
    _first_field(ident)["extra"] = 1


@identity_mutation("vector_field.keys", needs=("vectors", "current"))
def vector_field_without_basis(ident: dict) -> None:
    del _first_field(ident)["basis"]


@identity_mutation("vector_field.dimensions", needs=("vectors",))
def vector_dimensions_repeated(ident: dict) -> None:
    field = _first_field(ident)
    field["available_dimensions"] = field["available_dimensions"] * 2


@identity_mutation("vector_field.default", needs=("vectors",))
def vector_default_not_largest(ident: dict) -> None:
    field = _first_field(ident)
    field["default_dimension"] = max(field["available_dimensions"]) - 1


@identity_mutation("vector_field.files", needs=("vectors",))
def vector_file_for_9d(ident: dict) -> None:
    _first_field(ident)["files"]["9d"] = "vectors/x_9d.bin"


@identity_mutation("vector_field.label", needs=("vectors", "current"))
def vector_label_not_id(ident: dict) -> None:
    _first_field(ident)["label"] = "Velocity (UMAP)"


@identity_mutation("vector_field.label", needs=("vectors", "legacy"))
def vector_label_empty(ident: dict) -> None:
    _first_field(ident)["label"] = ""


@identity_mutation("vector_field.basis", needs=("vectors",))
def vector_basis_pca(ident: dict) -> None:
    _first_field(ident)["basis"] = "pca"


@mutation("vector_field.path", needs=("vectors",))
def vector_file_renamed(ds: DS) -> None:
    field_id, d, path = ds.vector()
    new = f"vectors/renamed_{d}d.bin" + (".gz" if path.endswith(".gz") else "")
    ds.move(path, new)
    with ds.edit(IDENTITY) as ident:
        ident["vector_fields"]["fields"][field_id]["files"][f"{d}d"] = new


@mutation("points.finite")
def nan_point(ds: DS) -> None:
    _, path = ds.points_path()
    values = ds.array(path, "float32")
    values[5] = np.nan
    ds.write_array(path, values)


@mutation("vectors.finite", needs=("vectors",))
def inf_vector(ds: DS) -> None:
    _, _, path = ds.vector()
    values = ds.array(path, "float32")
    values[-1] = -np.inf
    ds.write_array(path, values)


# ---- obs manifest ----------------------------------------------------------------------------


def _obs(fn: Callable[[dict], None]) -> Callable[[DS], None]:
    def apply(ds: DS) -> None:
        with ds.edit(OBS) as man:
            fn(man)

    apply.__name__ = fn.__name__
    return apply


def obs_mutation(
    rule: str, *, needs: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> Callable:
    def register(fn: Callable[[dict], None]) -> Callable[[dict], None]:
        MUTATIONS.append(Mutation(fn.__name__, rule, _obs(fn), frozenset(needs), frozenset(extra)))
        return fn

    return register


@obs_mutation("obs.keys")
def obs_extra_key(man: dict) -> None:
    man["extra"] = 1


@obs_mutation("obs.keys")
def obs_without_latent_key(man: dict) -> None:
    del man["latent_key"]


@obs_mutation("obs.format")
def obs_format_v2(man: dict) -> None:
    man["_format"] = "compact_v2"


@obs_mutation("obs.n_points")
def obs_n_points_string(man: dict) -> None:
    man["n_points"] = str(man["n_points"])


@obs_mutation("obs.quantile")
def quantile_one(man: dict) -> None:
    man["centroid_outlier_quantile"] = 1.0


@obs_mutation("obs.latent_key")
def latent_key_empty(man: dict) -> None:
    man["latent_key"] = ""


@obs_mutation("obs.schemas")
def schemas_extra(man: dict) -> None:
    man["_obsSchemas"]["gene"] = {}


@obs_mutation("obs.schemas")
def schemas_list(man: dict) -> None:
    man["_obsSchemas"] = []


@obs_mutation("obs.entry")
def continuous_entry_too_long(man: dict) -> None:
    man["_continuousFields"][0].append(0)


@obs_mutation("obs.entry")
def categorical_entry_too_short(man: dict) -> None:
    man["_categoricalFields"][0].pop()


@mutation("obs.index", needs=("current",))
def obs_index_out_of_range(ds: DS) -> None:
    old = ds.cont_path(0)
    with ds.edit(OBS) as man:
        man["_continuousFields"][0][0] = len(man["_continuousFields"]) + len(
            man["_categoricalFields"]
        )
    ds.move(old, ds.cont_path(0))


@obs_mutation("obs.index", needs=("current",), extra=("file.missing",))
def obs_index_negative(man: dict) -> None:
    man["_continuousFields"][0][0] = -1


@mutation("obs.key", needs=("current",), extra=("obs_fields.unique", "obs_fields.n_categories"))
def obs_keys_repeated(ds: DS) -> None:
    with ds.edit(OBS) as man:
        cats = man["_categoricalFields"]
        old = cats[1][1]
        cats[1][1] = cats[0][1]
    with ds.edit(IDENTITY) as ident:
        for entry in ident["obs_fields"]:
            if entry["key"] == old:
                entry["key"] = cats[0][1]


@obs_mutation("quant.bounds", needs=("quant",))
def continuous_min_above_max(man: dict) -> None:
    entry = man["_continuousFields"][0]
    entry[-2], entry[-1] = entry[-1] + 1, entry[-2]


@obs_mutation("quant.bounds", needs=("quant",))
def outlier_max_string(man: dict) -> None:
    man["_categoricalFields"][0][-1] = "1.0"


@obs_mutation("categories.value", extra=("centroids.value",))
def null_category(man: dict) -> None:
    head = 2 if isinstance(man["_categoricalFields"][0][0], int) else 1
    man["_categoricalFields"][0][head][-1] = None


@obs_mutation("categories.value", extra=("centroids.value",))
def repeated_category(man: dict) -> None:
    head = 2 if isinstance(man["_categoricalFields"][0][0], int) else 1
    cats = man["_categoricalFields"][0][head]
    cats[-1] = cats[0]


@mutation("categories.count", extra=("obs_fields.n_categories",))
def too_many_categories(ds: DS) -> None:
    with ds.edit(OBS) as man:
        entry = man["_categoricalFields"][0]
        head = ds.head
        cats = entry[head]
        entry[head] = cats + [
            f"extra {i}" for i in range(MAX_CATEGORIES[entry[head + 1]] + 1 - len(cats))
        ]


@obs_mutation("codes.dtype")
def codes_uint32(man: dict) -> None:
    head = 2 if isinstance(man["_categoricalFields"][0][0], int) else 1
    man["_categoricalFields"][0][head + 1] = "uint32"


@obs_mutation("codes.missing_value")
def missing_code_254(man: dict) -> None:
    head = 2 if isinstance(man["_categoricalFields"][0][0], int) else 1
    entry = man["_categoricalFields"][0]
    entry[head + 2] = CODES_MISSING[entry[head + 1]] - 1


@obs_mutation("codes.missing_value")
def missing_code_string(man: dict) -> None:
    head = 2 if isinstance(man["_categoricalFields"][0][0], int) else 1
    entry = man["_categoricalFields"][0]
    entry[head + 2] = str(entry[head + 2])


@mutation("codes.range")
def code_past_categories(ds: DS) -> None:
    path = ds.codes_path(0)
    entry = ds.json(OBS)["_categoricalFields"][0]
    dtype = entry[ds.head + 1]
    codes = ds.array(path, dtype)
    codes[7] = len(entry[ds.head])
    ds.write_array(path, codes)


def _centroid_items(man: dict) -> list:
    head = 2 if isinstance(man["_categoricalFields"][0][0], int) else 1
    for entry in man["_categoricalFields"]:
        for items in entry[head + 3].values():
            if items:
                return items
    msg = "no centroids in this export"
    raise AssertionError(msg)


@obs_mutation("centroids.value")
def centroid_negative_n_points(man: dict) -> None:
    _centroid_items(man)[0]["n_points"] = -1


@obs_mutation("centroids.value")
def centroid_short_position(man: dict) -> None:
    _centroid_items(man)[0]["position"].append(0.5)


@obs_mutation("centroids.value")
def centroid_unknown_category(man: dict) -> None:
    _centroid_items(man)[0]["category"] = "no such category"


@obs_mutation("centroids.value")
def centroid_twice(man: dict) -> None:
    items = _centroid_items(man)
    items.append(dict(items[0]))


@obs_mutation("centroids.value")
def centroids_by_dim_4(man: dict) -> None:
    head = 2 if isinstance(man["_categoricalFields"][0][0], int) else 1
    man["_categoricalFields"][0][head + 3]["4"] = []


@mutation("outliers.range")
def outlier_above_one(ds: DS) -> None:
    path = ds.outlier_path(0)
    schema = ds.json(OBS)["_obsSchemas"]["categorical"]
    if schema["outlierQuantized"]:
        with ds.edit(OBS) as man:
            man["_categoricalFields"][0][-1] = 2.0
        dtype = schema["outlierDtype"]
        values = ds.array(path, dtype)
        values[3] = MAX_QUANT[8 if dtype == "uint8" else 16]
    else:
        values = ds.array(path, "float32")
        values[3] = 1.5
    ds.write_array(path, values)


@mutation("obs.n_cells", extra=("payload.length",))
def obs_n_points_off(ds: DS) -> None:
    with ds.edit(OBS) as man:
        man["n_points"] += 1


# ---- var manifest ----------------------------------------------------------------------------


def _var(fn: Callable[[dict], None]) -> Callable[[DS], None]:
    def apply(ds: DS) -> None:
        with ds.edit(VAR) as man:
            fn(man)

    apply.__name__ = fn.__name__
    return apply


def var_mutation(
    rule: str, *, needs: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> Callable:
    def register(fn: Callable[[dict], None]) -> Callable[[dict], None]:
        MUTATIONS.append(Mutation(fn.__name__, rule, _var(fn), frozenset(needs), frozenset(extra)))
        return fn

    return register


@var_mutation("var.keys")
def var_extra_key(man: dict) -> None:
    man["extra"] = 1


@var_mutation("var.format")
def var_format_missing_value(man: dict) -> None:
    man["_format"] = None


@var_mutation("var.n_points")
def var_n_points_zero(man: dict) -> None:
    man["n_points"] = 0


@var_mutation("var.gene_id_column")
def gene_id_column_empty(man: dict) -> None:
    man["var_gene_id_column"] = ""


@var_mutation("var.quantization")
def var_quantization_not_schema(man: dict) -> None:
    man["quantization"] = 16 if man["quantization"] == 8 else 8


@var_mutation("var.quantization")
def var_quantization_12(man: dict) -> None:
    man["quantization"] = 12


@var_mutation("var.entry")
def gene_entry_too_long(man: dict) -> None:
    man["fields"][0].append(1)


@var_mutation("var.entry")
def gene_entry_not_list(man: dict) -> None:
    man["fields"][0] = {"name": man["fields"][0][-1]}


@mutation("var.index", needs=("current",))
def gene_index_out_of_range(ds: DS) -> None:
    old = ds.var_path(0)
    with ds.edit(VAR) as man:
        man["fields"][0][0] = len(man["fields"])
    ds.move(old, ds.var_path(0))


@var_mutation("var.name", needs=("current",))
def gene_names_repeated(man: dict) -> None:
    man["fields"][1][1] = man["fields"][0][1]


@var_mutation("var.name", needs=("legacy",), extra=("path.duplicate",))
def gene_names_repeated_legacy(man: dict) -> None:
    man["fields"][1][0] = man["fields"][0][0]


@var_mutation("quant.bounds", needs=("quant",))
def gene_max_null(man: dict) -> None:
    man["fields"][0][-1] = None


@mutation("var.n_cells", extra=("payload.length",))
def var_n_points_off(ds: DS) -> None:
    with ds.edit(VAR) as man:
        man["n_points"] += 1


@var_mutation("var.n_genes")
def last_gene_dropped(man: dict) -> None:
    man["fields"].pop()


@var_mutation("schema.keys")
def var_schema_extra_key(man: dict) -> None:
    man["_varSchema"]["extra"] = 1


@var_mutation("schema.keys", needs=("quant",))
def var_schema_without_bits(man: dict) -> None:
    del man["_varSchema"]["quantizationBits"]


@obs_mutation("schema.keys")
def categorical_schema_without_ext(man: dict) -> None:
    del man["_obsSchemas"]["categorical"]["outlierExt"]


@var_mutation("schema.kind")
def var_schema_kind(man: dict) -> None:
    man["_varSchema"]["kind"] = "categorical"


@var_mutation("schema.dtype")
def var_schema_ext_disagrees(man: dict) -> None:
    schema = man["_varSchema"]
    schema["ext"] = "u16" if schema["ext"] != "u16" else "u8"


@obs_mutation("schema.dtype")
def outlier_schema_quantized_float(man: dict) -> None:
    schema = man["_obsSchemas"]["categorical"]
    schema["outlierQuantized"] = not schema["outlierQuantized"]


@obs_mutation("schema.pattern")
def continuous_pattern_two_placeholders(man: dict) -> None:
    schema = man["_obsSchemas"]["continuous"]
    schema["pathPattern"] = schema["pathPattern"].replace("obs/", "obs/{index}{key}/", 1)


@obs_mutation("schema.pattern")
def codes_pattern_wrong_ending(man: dict) -> None:
    schema = man["_obsSchemas"]["categorical"]
    schema["codesPathPattern"] = schema["codesPathPattern"].replace(".codes.", ".code.")


@var_mutation("schema.pattern")
def var_pattern_other_folder(man: dict) -> None:
    schema = man["_varSchema"]
    schema["pathPattern"] = "genes/" + schema["pathPattern"].split("/", 1)[1]


@var_mutation("layout.mixed", extra=("schema.pattern",))
def var_pattern_of_the_other_layout(man: dict) -> None:
    """The genes named by key beside obs fields named by index, or the other way round."""
    schema = man["_varSchema"]
    current = "{index}" in schema["pathPattern"]
    schema["pathPattern"] = schema["pathPattern"].replace(
        "{index}" if current else "{key}", "{key}" if current else "{index}"
    )


# ---- connectivity ----------------------------------------------------------------------------


def _conn(fn: Callable[[dict], None]) -> Callable[[DS], None]:
    def apply(ds: DS) -> None:
        with ds.edit(CONN) as man:
            fn(man)

    apply.__name__ = fn.__name__
    return apply


def conn_mutation(
    rule: str, *, needs: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> Callable:
    def register(fn: Callable[[dict], None]) -> Callable[[dict], None]:
        MUTATIONS.append(Mutation(fn.__name__, rule, _conn(fn), frozenset(needs), frozenset(extra)))
        return fn

    return register


@conn_mutation("connectivity.keys")
def connectivity_extra_key(man: dict) -> None:
    man["directed"] = False


@conn_mutation("connectivity.keys", needs=("current",))
def connectivity_without_weights(man: dict) -> None:
    del man["weightsPath"]


@conn_mutation("connectivity.format")
def connectivity_format_csr(man: dict) -> None:
    man["format"] = "csr"


@conn_mutation("connectivity.value")
def max_neighbors_true(man: dict) -> None:
    man["max_neighbors"] = True


@conn_mutation("connectivity.value", needs=("current",))
def weight_bytes_4(man: dict) -> None:
    man["weight_bytes"] = 4


@conn_mutation("connectivity.index_dtype")
def index_dtype_uint32(man: dict) -> None:
    man["index_dtype"] = "uint32"
    man["index_bytes"] = 4


@conn_mutation("connectivity.index_dtype")
def index_bytes_disagree(man: dict) -> None:
    man["index_bytes"] = 4


@mutation("connectivity.n_edges", extra=("payload.length",))
def too_many_edges(ds: DS) -> None:
    with ds.edit(CONN) as man:
        n = man["n_cells"]
        man["n_edges"] = n * (n - 1) // 2 + 1
    with ds.edit(IDENTITY) as ident:
        ident["stats"]["n_edges"] = man["n_edges"]


@conn_mutation("connectivity.max_neighbors", extra=("edges.max_neighbors",))
def max_neighbors_all_cells(man: dict) -> None:
    man["max_neighbors"] = man["n_cells"]


@mutation("connectivity.stats")
def stats_n_edges_off(ds: DS) -> None:
    with ds.edit(IDENTITY) as ident:
        ident["stats"]["n_edges"] += 1


@mutation("edges.upper")
def last_edge_reversed(ds: DS) -> None:
    man, src, dst, w = ds.edges()
    src[-1], dst[-1] = dst[-1], src[-1]
    ds.write_edges(man, src, dst, w)


@mutation("edges.order")
def first_edges_swapped(ds: DS) -> None:
    man, src, dst, w = ds.edges()
    order = np.arange(len(src))
    order[[0, 1]] = [1, 0]
    ds.write_edges(man, src[order], dst[order], None if w is None else w[order])


@mutation("edges.order")
def edge_repeated(ds: DS) -> None:
    man, src, dst, w = ds.edges()
    src[1], dst[1] = src[0], dst[0]
    ds.write_edges(man, src, dst, w)
    # the repeated edge adds one degree at both ends
    with ds.edit(CONN) as m:
        m["max_neighbors"] = _max_degree(src, dst, m["n_cells"])


def _max_degree(src: np.ndarray, dst: np.ndarray, n: int) -> int:
    return int((np.bincount(src, minlength=n) + np.bincount(dst, minlength=n)).max())


@mutation("edges.range")
def last_edge_past_cells(ds: DS) -> None:
    man, src, dst, w = ds.edges()
    dst[-1] = man["n_cells"]
    ds.write_edges(man, src, dst, w)


@mutation("edges.weights", needs=("current",))
def zero_weight(ds: DS) -> None:
    man, src, dst, w = ds.edges()
    assert w is not None
    w[0] = 0.0
    ds.write_edges(man, src, dst, w)


@mutation("edges.weights", needs=("current",))
def nan_weight(ds: DS) -> None:
    man, src, dst, w = ds.edges()
    assert w is not None
    w[-1] = np.nan
    ds.write_edges(man, src, dst, w)


@conn_mutation("edges.max_neighbors")
def max_neighbors_one_less(man: dict) -> None:
    man["max_neighbors"] -= 1


@mutation("files.unadvertised")
def extra_manifest(ds: DS) -> None:
    ds.write_json("extra_manifest.json", {})


@mutation("files.unadvertised")
def connectivity_not_advertised(ds: DS) -> None:
    with ds.edit(IDENTITY) as ident:
        ident["stats"]["has_connectivity"] = False
        ident["stats"]["n_edges"] = None


# ---- the catalog of an exports root ---------------------------------------------------------


@dataclass(frozen=True)
class CatalogMutation:
    name: str
    rule: str
    fn: Callable[[Path], None]
    extra: frozenset[str] = field(default_factory=frozenset)


CATALOG_MUTATIONS: list[CatalogMutation] = []


def catalog_mutation(rule: str, *, extra: tuple[str, ...] = ()) -> Callable:
    def register(fn: Callable[[dict], None]) -> Callable[[dict], None]:
        def apply(root: Path) -> None:
            catalog = json.loads((root / CATALOG).read_text())
            fn(catalog)
            (root / CATALOG).write_text(json.dumps(catalog))

        CATALOG_MUTATIONS.append(CatalogMutation(fn.__name__, rule, apply, frozenset(extra)))
        return fn

    return register


@catalog_mutation("catalog.keys")
def catalog_extra_key(cat: dict) -> None:
    cat["title"] = "x"


@catalog_mutation("catalog.version")
def catalog_version_2(cat: dict) -> None:
    cat["version"] = 2


@catalog_mutation("catalog.default")
def default_unknown(cat: dict) -> None:
    cat["default"] = "nope"


@catalog_mutation("catalog.entry")
def entry_extra_key(cat: dict) -> None:
    cat["datasets"][0]["size"] = 1


@catalog_mutation("catalog.entry")
def entry_without_id(cat: dict) -> None:
    cat["default"] = cat["datasets"][1]["id"]
    del cat["datasets"][0]["id"]


@catalog_mutation("catalog.path")
def path_without_slash(cat: dict) -> None:
    cat["datasets"][0]["path"] = cat["datasets"][0]["path"].rstrip("/")


@catalog_mutation("catalog.path", extra=("catalog.id",))
def path_repeated(cat: dict) -> None:
    cat["datasets"][1]["path"] = cat["datasets"][0]["path"]


@catalog_mutation("path.syntax")
def path_with_dotdot(cat: dict) -> None:
    cat["datasets"][0]["path"] = "../" + cat["datasets"][0]["path"]


@catalog_mutation("file.missing")
def path_to_nothing(cat: dict) -> None:
    cat["datasets"][0]["path"] = "nowhere/"


@catalog_mutation("catalog.id")
def entry_id_not_identity(cat: dict) -> None:
    if cat["default"] == cat["datasets"][0]["id"]:
        cat["default"] = "other"
    cat["datasets"][0]["id"] = "other"


@catalog_mutation("catalog.id")
def entry_ids_repeated(cat: dict) -> None:
    cat["datasets"][1]["id"] = cat["datasets"][0]["id"]


@catalog_mutation("catalog.mismatch")
def n_cells_off(cat: dict) -> None:
    cat["datasets"][0]["n_cells"] = cat["datasets"][0].get("n_cells", 0) + 1


@catalog_mutation("catalog.mismatch")
def entry_n_genes_true(cat: dict) -> None:
    cat["datasets"][0]["n_genes"] = True


@catalog_mutation("catalog.mismatch")
def name_differs(cat: dict) -> None:
    cat["datasets"][0]["name"] = "another name"


@catalog_mutation("catalog.mismatch")
def description_differs(cat: dict) -> None:
    cat["datasets"][0]["description"] = "another description"


# ---- untrusted input: rules from issue 17 and bounds from issue 12 ---------------------------


@mutation("gzip.header_crc", needs=("gz",))
def wrong_header_crc(ds: DS) -> None:
    """FHCRC set and the header's CRC-16 wrong."""
    path = ds.gz_payload()
    data = ds.read(path)
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    header = b"\x1f\x8b\x08\x02\x00\x00\x00\x00\x00\xff"
    crc16 = (zlib.crc32(header) & 0xFFFF) ^ 0x0101
    ds.write_raw(
        path,
        header
        + struct.pack("<H", crc16)
        + body.compress(data)
        + body.flush()
        + struct.pack("<II", zlib.crc32(data), len(data)),
    )


@mutation("gzip.ceiling", needs=("gz",))
def gzip_past_the_ceiling(ds: DS) -> None:
    """A valid member whose header carries 2 KiB of FEXTRA: past the transfer ceiling."""
    path = ds.gz_payload()
    data = ds.read(path)
    body = zlib.compressobj(0, zlib.DEFLATED, -15)
    extra = b"x" * 2048
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + struct.pack("<H", len(extra)) + extra
    ds.write_raw(
        path,
        header
        + body.compress(data)
        + body.flush()
        + struct.pack("<II", zlib.crc32(data), len(data)),
    )


@mutation("payload.length", needs=("gz",))
def gzip_too_small_for_its_length(ds: DS) -> None:
    """Points declared for many more cells than a tiny gzip file can inflate to."""
    _, path = ds.points_path()
    ds.write(path, b"")


@mutation("path.url")
def points_path_with_a_space(ds: DS) -> None:
    d, path = ds.points_path()
    new = path.replace("points_", "points ")
    ds.move(path, new)
    with ds.edit(IDENTITY) as ident:
        ident["embeddings"]["files"][f"{d}d"] = new


@mutation("path.url")
def points_path_non_ascii(ds: DS) -> None:
    d, path = ds.points_path()
    new = path.replace("points_", "p\u00f6ints_")
    ds.move(path, new)
    with ds.edit(IDENTITY) as ident:
        ident["embeddings"]["files"][f"{d}d"] = new


def _link_out(ds: DS, rel: str) -> None:
    """Replace ``rel`` by a link to an identical copy outside the export."""
    target = ds.path.parent / f"outside-{rel.replace('/', '-')}"
    shutil.move(ds.path / rel, target)
    (ds.path / rel).symlink_to(target, target_is_directory=target.is_dir())


@mutation("path.symlink")
def payload_linked_out(ds: DS) -> None:
    _link_out(ds, ds.codes_path(0))


@mutation("path.symlink")
def var_folder_linked_out(ds: DS) -> None:
    _link_out(ds, ds.var_path(0).split("/")[0])


@mutation("path.symlink")
def manifest_linked_out(ds: DS) -> None:
    _link_out(ds, CONN)


@identity_mutation("identity.name")
def name_ideographic_space(ident: dict) -> None:
    ident["name"] = "\u3000"


@identity_mutation("identity.data_version")
def data_version_nbsp(ident: dict) -> None:
    ident["cellucid_data_version"] = " \u00a0"


@identity_mutation("source.value")
def source_url_empty(ident: dict) -> None:
    ident["source"] = {"name": "x", "url": ""}


@identity_mutation("source.value")
def source_citation_blank(ident: dict) -> None:
    ident["source"] = {"name": "x", "citation": " \n", "filename": "pbmc.h5ad"}


@identity_mutation("source.value")
def source_filename_bom(ident: dict) -> None:
    ident["source"] = {"name": "x", "filename": "\ufeff"}


@mutation("obs.key", needs=("current",), extra=("obs_fields.entry",))
def obs_key_blank(ds: DS) -> None:
    with ds.edit(OBS) as man:
        old = man["_continuousFields"][0][1]
        man["_continuousFields"][0][1] = "\t\u2028"
    with ds.edit(IDENTITY) as ident:
        for entry in ident["obs_fields"]:
            if entry["key"] == old:
                entry["key"] = "\t\u2028"


@identity_mutation(
    "vector_fields.fields", needs=("vectors", "current"), extra=("vector_fields.default",)
)
def vector_field_id_blank(ident: dict) -> None:
    vf = ident["vector_fields"]
    fields = vf["fields"]
    first = next(iter(fields))
    vf["fields"] = {("\u205f" if k == first else k): v for k, v in fields.items()}
    vf["fields"]["\u205f"]["label"] = "\u205f"
    vf["default_field"] = "\u205f"


@identity_mutation(
    "vector_fields.fields", needs=("vectors", "current"), extra=("vector_fields.default",)
)
def default_field_empty(ident: dict) -> None:
    """The id "" declared, labelled and the default: every check by key passes."""
    vf = ident["vector_fields"]
    first = next(iter(vf["fields"]))
    vf["fields"] = {("" if k == first else k): v for k, v in vf["fields"].items()}
    vf["fields"][""]["label"] = ""
    vf["default_field"] = ""


@mutation("centroids.value", needs=("current",))
def centroid_category_as_string(ds: DS) -> None:
    """A string category made the number 4711, and one centroid naming it "4711"."""
    with ds.edit(OBS) as man:
        for entry in man["_categoricalFields"]:
            cats, by_dim = entry[2], entry[5]
            items = [i for dim in by_dim.values() for i in dim]
            if not items or not all(type(c) is str for c in cats):
                continue
            label = items[0]["category"]
            cats[cats.index(label)] = 4711
            for item in items:
                if item["category"] == label:
                    item["category"] = 4711
            items[0]["category"] = "4711"
            return
    msg = "no centroids of string categories in this export"
    raise AssertionError(msg)


@mutation("categories.value", needs=("current",), extra=("centroids.value",))
def category_parses_to_infinity(ds: DS) -> None:
    with ds.edit(OBS) as man:
        entry = man["_categoricalFields"][0]
        entry[2][0] = 123456789.25
    ds.write_raw(OBS, ds.raw(OBS).replace(b"123456789.25", b"1e400"))


@identity_mutation("identity.created_at")
def created_at_fullwidth_digit(ident: dict) -> None:
    ident["created_at"] = "\uff12026-01-01T00:00:00Z"


@identity_mutation("stats.value")
def n_genes_past_safe_integer(ident: dict) -> None:
    ident["stats"]["n_genes"] = 2**53


@conn_mutation("connectivity.value", extra=("connectivity.stats",))
def connectivity_cells_past_uint32(man: dict) -> None:
    man["n_cells"] = 2**32 + 1


@mutation("connectivity.working_set", needs=("current",))
def small_connectivity_working_set(ds: DS) -> None:
    ds.mp.setattr(_connectivity, "MAX_CONNECTIVITY_WORKING_BYTES", 1000)


def _move_dataset(root: Path, index: int, new_name: str, *, outside: bool = False) -> None:
    catalog = json.loads((root / CATALOG).read_text())
    entry = catalog["datasets"][index]
    old = root / entry["path"].rstrip("/")
    if outside:
        target = root.parent / f"outside-{new_name}"
        shutil.move(old, target)
        (root / new_name).symlink_to(target, target_is_directory=True)
    else:
        shutil.move(old, root / new_name)
    entry["path"] = f"{new_name}/"
    (root / CATALOG).write_text(json.dumps(catalog))


CATALOG_MUTATIONS += [
    CatalogMutation("catalog_path_with_a_plus", "path.url", lambda r: _move_dataset(r, 0, "a+b")),
    CatalogMutation(
        "catalog_path_non_ascii", "path.url", lambda r: _move_dataset(r, 1, "\u00e9t\u00e9")
    ),
    CatalogMutation(
        "dataset_linked_into_root",
        "path.symlink",
        lambda r: _move_dataset(r, 0, "linked", outside=True),
    ),
]
