"""An independent reader of exports for the tests: decodes every file and asserts FORMAT.md's rules.

Written from the spec, not from the package, so that the tests do not check the writers
against themselves.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DTYPES = {"float32": "<f4", "uint8": "u1", "uint16": "<u2", "float64": "<f8", "uint32": "<u4"}
EXTS = {"f32": "float32", "u8": "uint8", "u16": "uint16"}
MAX_Q = {8: 254, 16: 65534}
# JavaScript's String.prototype.trim() removes these (the viewer's "non-empty")
JS_WHITESPACE = (
    "\t\n\v\f\r \xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000\ufeff")
)


def non_blank(text: object) -> bool:
    return isinstance(text, str) and bool(text.strip(JS_WHITESPACE))


@dataclass
class Decoded:
    layout: str
    identity: dict
    obs_manifest: dict
    points: dict[int, np.ndarray] = field(default_factory=dict)
    vectors: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    continuous: dict[str, np.ndarray] = field(default_factory=dict)  # decoded float values
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[str, list] = field(default_factory=dict)
    centroids: dict[str, dict] = field(default_factory=dict)
    outliers: dict[str, np.ndarray] = field(default_factory=dict)
    genes: dict[str, np.ndarray] = field(default_factory=dict)
    var_manifest: dict | None = None
    edges: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
    connectivity_manifest: dict | None = None
    files: set[str] = field(default_factory=set)


def check_path(path: str) -> None:
    assert path and not path.startswith("/") and "\\" not in path, path
    assert not re.search(r"[%?#]|^[a-z][a-z0-9+.-]*:|[\x00-\x1f]", path), path
    assert all(part not in ("", ".", "..") for part in path.split("/")), path


def read_payload(
    root: Path, rel: str, dtype: str, n_elements: int, compression: int | None, seen: set
) -> np.ndarray:
    check_path(rel)
    assert rel.endswith(".gz") == bool(compression), (rel, compression)
    raw = (root / rel).read_bytes()
    expected = n_elements * np.dtype(DTYPES[dtype]).itemsize
    if rel.endswith(".gz"):
        assert raw[:4] == b"\x1f\x8b\x08\x00", rel  # magic, deflate, no flags (no file name)
        assert raw[4:8] == b"\x00\x00\x00\x00", rel  # mtime 0
        assert raw[9] == 0xFF, rel  # OS byte
        d = __import__("zlib").decompressobj(-15)
        data = d.decompress(raw[10:])
        assert d.eof and len(d.unused_data) == 8, rel  # one member, then only its trailer
        assert struct.unpack("<I", d.unused_data[4:])[0] == expected, rel  # ISIZE
        assert data == gzip.decompress(raw)
        # the viewer's transfer ceiling: stored blocks' worst case, header, trailer, 1 KiB
        assert len(raw) <= expected + 5 * (-(-expected // 65535) + 1) + 18 + 1024, rel
    else:
        data = raw
    assert len(data) == expected, (rel, len(data), expected)
    seen.add(rel)
    return np.frombuffer(data, dtype=DTYPES[dtype])


def dequantize(codes: np.ndarray, vmin: float, vmax: float, bits: int) -> np.ndarray:
    out = vmin + codes.astype(np.float64) * (vmax - vmin) / MAX_Q[bits]
    out[codes > MAX_Q[bits]] = np.nan
    return out.astype(np.float32)


def decode(root: Path, *, layout: str | None = None) -> Decoded:
    """Decode an export, asserting the format's rules on the way.

    ``layout`` is the one the export was written in; None tells it from the obs schemas'
    placeholders, which an export without obs fields does not have.
    """
    root = Path(root)
    identity = json.loads((root / "dataset_identity.json").read_text())
    assert set(identity) >= {
        "version",
        "id",
        "name",
        "description",
        "cellucid_data_version",
        "stats",
        "embeddings",
        "obs_fields",
    }
    assert set(identity) <= {
        "version",
        "id",
        "name",
        "description",
        "cellucid_data_version",
        "stats",
        "embeddings",
        "obs_fields",
        "created_at",
        "export_settings",
        "source",
        "vector_fields",
    }
    assert identity["version"] == 2
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", identity["id"]) and not identity[
        "id"
    ].endswith(".")
    assert (
        non_blank(identity["name"])
        and isinstance(identity["description"], str)
        and non_blank(identity["cellucid_data_version"])
    )
    assert all(non_blank(v) for v in identity.get("source", {}).values())
    assert all(non_blank(f["key"]) for f in identity["obs_fields"])
    if "created_at" in identity:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", identity["created_at"])
    stats = identity["stats"]
    assert set(stats) == {
        "n_cells",
        "n_genes",
        "n_obs_fields",
        "n_categorical_fields",
        "n_continuous_fields",
        "has_connectivity",
        "n_edges",
    }
    n = stats["n_cells"]
    assert stats["n_obs_fields"] == stats["n_categorical_fields"] + stats["n_continuous_fields"]
    settings = identity["export_settings"]
    assert set(settings) == {
        "compression",
        "var_quantization",
        "obs_continuous_quantization",
        "obs_categorical_dtype",
    }
    comp = settings["compression"]
    seen: set[str] = set()

    obs = json.loads((root / "obs_manifest.json").read_text())
    assert set(obs) == {
        "_format",
        "n_points",
        "centroid_outlier_quantile",
        "latent_key",
        "compression",
        "_obsSchemas",
        "_continuousFields",
        "_categoricalFields",
    }
    if layout is None:
        layout = "legacy" if "{key}" in json.dumps(obs["_obsSchemas"]) else "current"
    out = Decoded(layout, identity, obs)

    emb = identity["embeddings"]
    assert set(emb) == {"available_dimensions", "default_dimension", "files"}
    dims = emb["available_dimensions"]
    assert (
        dims == sorted(set(dims))
        and set(dims) <= {1, 2, 3}
        and emb["default_dimension"] == max(dims)
    )
    assert set(emb["files"]) == {f"{d}d" for d in dims}
    for d in dims:
        path = emb["files"][f"{d}d"]
        assert path == f"points_{d}d.bin" + (".gz" if comp else "")
        pts = read_payload(root, path, "float32", n * d, comp, seen).reshape(n, d)
        # the legacy layout's float32 arithmetic may round past 1 by a few ulps
        assert np.isfinite(pts).all()
        assert np.abs(pts).max() <= (1.0 if layout == "current" else 1 + 1e-5)
        out.points[d] = pts

    if "vector_fields" in identity:
        vf = identity["vector_fields"]
        assert (
            set(vf) == {"default_field", "fields"}
            and vf["default_field"] in vf["fields"]
            and vf["fields"]
        )
        for i, (fid, entry) in enumerate(vf["fields"].items()):
            assert set(entry) == {
                "label",
                "basis",
                "available_dimensions",
                "default_dimension",
                "files",
            }
            assert entry["label"] == fid and entry["basis"] == "umap"
            fdims = entry["available_dimensions"]
            assert fdims == sorted(set(fdims)) and set(fdims) <= set(dims)
            assert entry["default_dimension"] == max(fdims)
            out.vectors[fid] = {}
            for d in fdims:
                stem = str(i) if layout == "current" else fid
                assert entry["files"][f"{d}d"] == f"vectors/{stem}_{d}d.bin" + (
                    ".gz" if comp else ""
                )
                vec = read_payload(
                    root, entry["files"][f"{d}d"], "float32", n * d, comp, seen
                ).reshape(n, d)
                assert np.isfinite(vec).all()
                out.vectors[fid][d] = vec

    assert obs["_format"] == "compact_v1" and obs["n_points"] == n and obs["compression"] == comp
    q = obs["centroid_outlier_quantile"]
    assert q is None or 0 < q < 1
    schemas = obs["_obsSchemas"]
    assert isinstance(schemas, dict)
    assert ("continuous" in schemas) == bool(obs["_continuousFields"])
    assert ("categorical" in schemas) == bool(obs["_categoricalFields"])
    gzs = ".gz" if comp else ""
    ph = "{index}" if layout == "current" else "{key}"
    bits = settings["obs_continuous_quantization"]
    indices = []
    if "continuous" in schemas:
        s = schemas["continuous"]
        quantized = s["quantized"]
        assert set(s) == {"pathPattern", "ext", "dtype", "quantized"} | (
            {"quantizationBits"} if quantized else set()
        )
        assert quantized == (bits is not None)
        if quantized:
            assert (s["quantizationBits"], s["dtype"], s["ext"]) in {
                (8, "uint8", "u8"),
                (16, "uint16", "u16"),
            }
            assert s["quantizationBits"] == bits
        else:
            assert (s["dtype"], s["ext"]) == ("float32", "f32")
        assert s["pathPattern"] == f"obs/{ph}.values.{s['ext']}{gzs}"
        for entry in obs["_continuousFields"]:
            head = 2 if layout == "current" else 1
            assert len(entry) == head + (2 if quantized else 0)
            key = entry[head - 1]
            if layout == "current":
                indices.append(entry[0])
            stem = (
                str(entry[0])
                if layout == "current"
                else re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "field"
            )
            values = read_payload(
                root, s["pathPattern"].replace(ph, stem), s["dtype"], n, comp, seen
            )
            if quantized:
                vmin, vmax = entry[head:]
                assert np.isfinite([vmin, vmax]).all() and vmin <= vmax
                assert (values <= MAX_Q[bits] + 1).all()
                values = dequantize(values, vmin, vmax, bits)
            out.continuous[key] = values
    if "categorical" in schemas:
        s = schemas["categorical"]
        assert set(s) == {
            "codesPathPattern",
            "outlierPathPattern",
            "outlierExt",
            "outlierDtype",
            "outlierQuantized",
        }
        assert s["codesPathPattern"] == f"obs/{ph}.codes.{{ext}}{gzs}"
        assert s["outlierPathPattern"] == f"obs/{ph}.outliers.{s['outlierExt']}{gzs}"
        assert EXTS[s["outlierExt"]] == s["outlierDtype"] and s["outlierQuantized"] == (
            bits is not None
        )
        for entry in obs["_categoricalFields"]:
            head = 2 if layout == "current" else 1
            assert len(entry) == head + 4 + (2 if s["outlierQuantized"] else 0)
            key = entry[head - 1]
            cats, dtype, missing, cents = entry[head : head + 4]
            if layout == "current":
                indices.append(entry[0])
            assert all(c is not None and not isinstance(c, (list, dict)) for c in cats)
            assert len({json.dumps(c) for c in cats}) == len(cats)
            assert (dtype, missing) in {("uint8", 255), ("uint16", 65535)}
            assert len(cats) <= missing  # codes 0 .. missing - 1
            stem = (
                str(entry[0])
                if layout == "current"
                else re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "field"
            )
            ext = {"uint8": "u8", "uint16": "u16"}[dtype]
            codes = read_payload(
                root,
                s["codesPathPattern"].replace(ph, stem).replace("{ext}", ext),
                dtype,
                n,
                comp,
                seen,
            )
            assert ((codes < len(cats)) | (codes == missing)).all()
            outl = read_payload(
                root, s["outlierPathPattern"].replace(ph, stem), s["outlierDtype"], n, comp, seen
            )
            if s["outlierQuantized"]:
                outl = dequantize(outl, *entry[head + 4 :], bits)
            finite = outl[~np.isnan(outl)]
            assert ((finite >= -1e-6) & (finite <= 1 + 1e-6)).all()
            assert set(cents) <= {str(d) for d in dims}
            for d, lst in cents.items():
                assert len({json.dumps(c["category"]) for c in lst}) == len(lst)
                for c in lst:
                    assert set(c) == {"category", "position", "n_points"} and c["category"] in cats
                    assert len(c["position"]) == int(d) and np.isfinite(c["position"]).all()
            out.codes[key], out.categories[key], out.centroids[key], out.outliers[key] = (
                codes,
                cats,
                cents,
                outl,
            )
    if layout == "current":
        assert sorted(indices) == list(range(len(indices)))
    keys = [f["key"] for f in identity["obs_fields"]]
    assert len(set(keys)) == len(keys)
    cont_keys = [e[1 if layout == "current" else 0] for e in obs["_continuousFields"]]
    cat_keys = [e[1 if layout == "current" else 0] for e in obs["_categoricalFields"]]
    if layout == "current":
        assert (
            keys == cont_keys + cat_keys
        )  # continuous first, then categorical, position by position
    else:
        assert sorted(keys) == sorted(
            cont_keys + cat_keys
        )  # the legacy layout keeps obs_keys order
    for f in identity["obs_fields"]:
        if f["kind"] == "continuous":
            assert set(f) == {"key", "kind"}
        else:
            assert set(f) == {"key", "kind", "n_categories"} and f["n_categories"] == len(
                out.categories[f["key"]]
            )
    assert stats["n_continuous_fields"] == len(cont_keys) and stats["n_categorical_fields"] == len(
        cat_keys
    )
    used = {e[3 if layout == "current" else 2] for e in obs["_categoricalFields"]}
    # the folder picker: every field's codes in the declared dtype
    assert used <= {settings["obs_categorical_dtype"]}, (used, settings)

    has_var = (root / "var_manifest.json").exists()
    assert has_var == (stats["n_genes"] > 0)
    if has_var:
        var = json.loads((root / "var_manifest.json").read_text())
        assert set(var) == {
            "_format",
            "n_points",
            "var_gene_id_column",
            "compression",
            "quantization",
            "_varSchema",
            "fields",
        }
        assert (
            var["n_points"] == n
            and var["compression"] == comp
            and len(var["fields"]) == stats["n_genes"]
        )
        vbits = var["quantization"]
        assert vbits == settings["var_quantization"]
        s = var["_varSchema"]
        assert set(s) == {"kind", "pathPattern", "ext", "dtype", "quantized"} | (
            {"quantizationBits"} if vbits else set()
        )
        assert s["kind"] == "continuous" and s["quantized"] == (vbits is not None)
        assert s["pathPattern"] == f"var/{ph}.values.{s['ext']}{gzs}"
        names = []
        for i, entry in enumerate(var["fields"]):
            head = 2 if layout == "current" else 1
            assert len(entry) == head + (2 if vbits else 0)
            if layout == "current":
                assert entry[0] == i
            name = entry[head - 1]
            names.append(name)
            stem = (
                str(i)
                if layout == "current"
                else re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "field"
            )
            values = read_payload(
                root, s["pathPattern"].replace(ph, stem), s["dtype"], n, comp, seen
            )
            if vbits:
                assert entry[head] <= entry[head + 1]
                values = dequantize(values, *entry[head:], vbits)
            out.genes[name] = values
        assert len(set(names)) == len(names) and all(non_blank(nm) for nm in names)
        out.var_manifest = var

    has_conn = (root / "connectivity_manifest.json").exists()
    assert has_conn == stats["has_connectivity"]
    if has_conn:
        conn = json.loads((root / "connectivity_manifest.json").read_text())
        weighted = layout == "current"
        expected_keys = {
            "format",
            "n_cells",
            "n_edges",
            "max_neighbors",
            "index_bytes",
            "index_dtype",
            "sourcesPath",
            "destinationsPath",
            "compression",
        }
        assert set(conn) == expected_keys | (
            {"weightsPath", "weight_dtype", "weight_bytes"} if weighted else set()
        )
        m = conn["n_edges"]
        assert conn["format"] == "edge_pairs" and conn["n_cells"] == n and m == stats["n_edges"]
        assert m <= n * (n - 1) // 2
        assert (conn["index_dtype"], conn["index_bytes"]) == (
            ("uint16", 2) if n <= 65536 else ("uint32", 4)
        )
        src = read_payload(root, conn["sourcesPath"], conn["index_dtype"], m, comp, seen).astype(
            np.int64
        )
        dst = read_payload(
            root, conn["destinationsPath"], conn["index_dtype"], m, comp, seen
        ).astype(np.int64)
        assert conn["sourcesPath"] == "connectivity/edges.src.bin" + gzs
        assert conn["destinationsPath"] == "connectivity/edges.dst.bin" + gzs
        assert (src < dst).all() and (dst < n).all()
        key = src * n + dst
        assert (np.diff(key) > 0).all()  # strictly increasing by (src, dst)
        degree = np.bincount(src, minlength=n) + np.bincount(dst, minlength=n)
        assert conn["max_neighbors"] == (int(degree.max()) if m else 0)
        assert conn["max_neighbors"] <= min(n - 1, m)
        w = None
        if weighted:
            assert (conn["weight_dtype"], conn["weight_bytes"]) == ("float64", 8)
            assert conn["weightsPath"] == "connectivity/edges.weights.f64.bin" + gzs
            w = read_payload(root, conn["weightsPath"], "float64", m, comp, seen)
            assert np.isfinite(w).all() and (w > 0).all()
        out.edges = (src, dst, w)
        out.connectivity_manifest = conn

    # nothing on disk that no manifest declares
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    manifests = {
        "dataset_identity.json",
        "obs_manifest.json",
        "var_manifest.json",
        "connectivity_manifest.json",
    }
    assert on_disk - manifests == seen, sorted(on_disk - manifests - seen)
    for name in manifests & on_disk:
        text = (root / name).read_text()
        assert text.isascii() and not text.endswith("\n")
        if name != "dataset_identity.json":
            assert json.dumps(json.loads(text), separators=(",", ":")) == text
        else:
            assert json.dumps(json.loads(text), indent=2) == text
    out.files = seen
    return out
