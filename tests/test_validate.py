"""``cl.ex.validate``: valid exports pass clean, and each rule of the format, broken alone, is reported."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import struct
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _data import make_adata, shared_dir
from _mutate import CATALOG_MUTATIONS, DS, MUTATIONS, CatalogMutation, Mutation

import cellucid as cl
from cellucid.ex import _validate
from cellucid.ex._validate import (
    RULES,
    Problem,
    ValidationReport,
    _connectivity,
    _dataset,
    _files,
    _payloads,
    validate,
)
from cellucid.ex._validate._values import _path_error

UPSTREAM = ("synthetic-cell-types-2d", "synthetic-development-3d", "synthetic-trajectory-1d")
LEGACY_REFERENCES = Path(__file__).parent / "data" / "legacy"
Q8_GZ6 = (("compression", 6), ("obs_continuous_quantization", 8), ("var_quantization", 8))


# --- valid exports to start from -------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A valid dataset to break: an upstream fixture or an export of ours with some options."""

    name: str
    features: frozenset[str]
    upstream: str | None = None
    options: tuple[tuple[str, object], ...] = ()


BASES = [
    Base("upstream-2d", frozenset({"current", "gz", "quant"}), upstream="synthetic-cell-types-2d"),
    Base(
        "upstream-3d",
        frozenset({"current", "gz", "quant", "vectors"}),
        upstream="synthetic-development-3d",
    ),
    Base(
        "current-f32",
        frozenset({"current", "raw", "f32", "vectors"}),
        options=(("layout", "current"),),
    ),
    Base(
        "current-q8-gz6",
        frozenset({"current", "gz", "quant", "vectors"}),
        options=(("layout", "current"), *Q8_GZ6),
    ),
    Base(
        "legacy-f32",
        frozenset({"legacy", "raw", "f32", "vectors"}),
        options=(("layout", "legacy"),),
    ),
    Base(
        "legacy-q8-gz6",
        frozenset({"legacy", "gz", "quant", "vectors"}),
        options=(("layout", "legacy"), *Q8_GZ6),
    ),
]


@pytest.fixture(scope="session")
def upstream_root() -> Path:
    shared = shared_dir()
    root = shared / "fixtures" / "upstream-demo" / "exports" if shared is not None else None
    if root is None or not (root / "datasets.json").is_file():
        pytest.skip("the upstream fixtures (shared/fixtures/upstream-demo) are not here")
    return root


@pytest.fixture(scope="session")
def exporter() -> Callable[..., Path]:
    return cl.ex.export


def small_adata(layout: str = "current") -> ad.AnnData:
    adata = make_adata(n_cells=150, n_genes=12, seed=3)
    if layout == "legacy":  # names that only the current layout keeps apart
        adata = adata[:, [n for n in adata.var_names if n not in ("HLA-A/B", "MT CO1")]].copy()
    return adata


def run_export(
    exporter: Callable[..., Path], adata: ad.AnnData, out: Path, **options: object
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return exporter(adata, out, **options)


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory, exporter: Callable[..., Path]
) -> Callable[[tuple], Path]:
    """Export the small AnnData once per set of options."""
    cache: dict[tuple, Path] = {}

    def get(options: tuple[tuple[str, object], ...]) -> Path:
        if options not in cache:
            opts = dict(options)
            name = "-".join(f"{k}{v}" for k, v in options).replace("_", "")
            out = tmp_path_factory.mktemp("exports") / name
            cache[options] = run_export(
                exporter, small_adata(str(opts.get("layout", "current"))), out, **opts
            )
        return cache[options]

    return get


@pytest.fixture
def base_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Base], Path]:
    def copy(base: Base) -> Path:
        if base.upstream is not None:
            source = request.getfixturevalue("upstream_root") / base.upstream
        else:
            source = request.getfixturevalue("exported")(base.options)
        target = tmp_path / source.name
        shutil.copytree(source, target)
        return target

    return copy


# --- valid exports pass clean ----------------------------------------------------------------


def test_upstream_root_is_valid(upstream_root: Path) -> None:
    report = validate(upstream_root)
    assert report.ok, str(report)
    assert report.layout == "current"
    assert set(report.datasets) == set(UPSTREAM)


@pytest.mark.parametrize("name", UPSTREAM)
def test_upstream_dataset_is_valid(upstream_root: Path, name: str) -> None:
    report = validate(upstream_root / name)
    assert report.ok, str(report)
    assert bool(report) and report.layout == "current"
    assert report.datasets == {".": "current"}


EXPORT_SETTINGS = {
    "f32": {},
    "q8_gz6": dict(Q8_GZ6),
    "q16_u16": {
        "var_quantization": 16,
        "obs_continuous_quantization": 16,
        "obs_categorical_dtype": "uint16",
    },
    "gz1": {"compression": 1},
    "gz9_q8_obs_only": {"compression": 9, "obs_continuous_quantization": 8},
}


@pytest.mark.parametrize("layout", ["current", "legacy"])
@pytest.mark.parametrize("setting", sorted(EXPORT_SETTINGS))
def test_our_exports_are_valid(
    exporter: Callable[..., Path], tmp_path: Path, layout: str, setting: str
) -> None:
    out = run_export(
        exporter, small_adata(layout), tmp_path / "ds", layout=layout, **EXPORT_SETTINGS[setting]
    )
    report = validate(out)
    assert report.ok, str(report)
    assert report.layout == layout


def test_our_exports_root_is_valid(exporter: Callable[..., Path], tmp_path: Path) -> None:
    for name, layout in (("a", "current"), ("b", "legacy")):
        run_export(exporter, small_adata(layout), tmp_path / name, layout=layout, compression=6)
    cl.ex.write_catalog(tmp_path, default="b")
    report = validate(tmp_path)
    assert report.ok, str(report)
    assert report.datasets == {"a": "current", "b": "legacy"}
    assert report.layout == "mixed"


def test_widest_codes_dtype_in_export_settings(
    exporter: Callable[..., Path], tmp_path: Path
) -> None:
    many = make_adata(n_cells=400, n_genes=5, seed=4)
    many.obs["many"] = pd.Categorical([f"c{i % 300}" for i in range(many.n_obs)])
    out = run_export(exporter, many, tmp_path / "ds")
    ident = json.loads((out / "dataset_identity.json").read_text())
    assert ident["export_settings"]["obs_categorical_dtype"] == "uint16"
    report = validate(out)
    assert report.ok, str(report)


def test_without_genes_or_graph(exporter: Callable[..., Path], tmp_path: Path) -> None:
    out = run_export(
        exporter, small_adata(), tmp_path / "ds", var_names=[], connectivities_key=False
    )
    assert not (out / "var_manifest.json").exists()
    assert not (out / "connectivity_manifest.json").exists()
    report = validate(out)
    assert report.ok, str(report)
    # a var manifest the identity does not advertise (n_genes is 0)
    other = run_export(exporter, small_adata(), tmp_path / "other")
    shutil.copy(other / "var_manifest.json", out / "var_manifest.json")
    shutil.copytree(other / "var", out / "var")
    assert validate(out).rules == {"files.unadvertised", "var.n_genes"}


@pytest.mark.parametrize("variant", ["f32", "q8_gz6", "q16_u16"])
def test_original_writer_legacy_exports_are_valid(tmp_path: Path, variant: str) -> None:
    """The original design's own output (cellucid 0.0.9) is a valid legacy export."""
    report = validate(LEGACY_REFERENCES / variant)
    assert report.ok, str(report)
    assert report.layout == "legacy"


# --- every rule, broken alone ----------------------------------------------------------------

CASES = [
    pytest.param(base, mut, id=f"{base.name}-{mut.rule}-{mut.name}")
    for base in BASES
    for mut in MUTATIONS
    if mut.needs <= base.features
]


@pytest.mark.parametrize(("base", "mut"), CASES)
def test_broken_rule_is_reported(
    base_copy: Callable[[Base], Path], monkeypatch: pytest.MonkeyPatch, base: Base, mut: Mutation
) -> None:
    path = base_copy(base)
    assert validate(path).ok
    mut.fn(DS(path, monkeypatch))
    report = validate(path)
    assert mut.rule in report.rules, str(report)
    assert report.rules <= {mut.rule} | mut.extra, str(report)
    assert all(p.file and not p.file.startswith("/") for p in report.problems)


def root_copy(request: pytest.FixtureRequest, tmp_path: Path, which: str) -> Path:
    if which == "upstream":
        root = tmp_path / "exports"
        shutil.copytree(request.getfixturevalue("upstream_root"), root)
        return root
    exporter = request.getfixturevalue("exporter")
    root = tmp_path / "exports"
    for name in ("one", "two"):
        run_export(
            exporter, small_adata(), root / name, dataset_name=f"Dataset {name}", compression=6
        )
    cl.ex.write_catalog(root)
    return root


@pytest.mark.parametrize("which", ["upstream", "ours"])
@pytest.mark.parametrize(
    "mut", CATALOG_MUTATIONS, ids=[f"{m.rule}-{m.name}" for m in CATALOG_MUTATIONS]
)
def test_broken_catalog_rule_is_reported(
    request: pytest.FixtureRequest, tmp_path: Path, which: str, mut: CatalogMutation
) -> None:
    root = root_copy(request, tmp_path, which)
    assert validate(root).ok
    mut.fn(root)
    report = validate(root)
    assert mut.rule in report.rules, str(report)
    assert report.rules <= {mut.rule} | mut.extra, str(report)


def test_every_rule_has_a_mutation() -> None:
    covered = {m.rule for m in MUTATIONS} | {m.rule for m in CATALOG_MUTATIONS}
    assert covered == set(RULES)
    source = "".join(p.read_text() for p in Path(_validate.__file__).parent.glob("*.py"))
    used = {r for r in re.findall(r'"([a-z_]+\.[a-z_]+)"', source) if not r.endswith(".json")}
    assert used == set(RULES)


def test_problem_in_a_dataset_names_it_relative_to_the_root(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    root = root_copy(request, tmp_path, "upstream")
    name = UPSTREAM[1]
    manifest = root / name / "obs_manifest.json"
    obs = json.loads(manifest.read_text())
    obs["_format"] = "compact_v0"
    manifest.write_text(json.dumps(obs))
    (root / name / "points_3d.bin.gz").unlink()
    report = validate(root)
    assert {(p.file, p.rule) for p in report.problems} == {
        (f"{name}/obs_manifest.json", "obs.format"),
        (f"{name}/points_3d.bin.gz", "file.missing"),
    }
    # a broken catalog entry does not hide the other datasets' problems
    catalog = json.loads((root / "datasets.json").read_text())
    catalog["datasets"][0]["n_genes"] += 1
    (root / "datasets.json").write_text(json.dumps(catalog))
    assert validate(root).rules == {"obs.format", "file.missing", "catalog.mismatch"}


BAD_PATHS = [
    "/points_2d.bin",
    "obs\\0.values.f32",
    "obs/0%20.values.f32",
    "obs/0.values.f32?x=1",
    "obs/0.values.f32#x",
    "https://example.org/points_2d.bin",
    "c:points_2d.bin",
    "obs//0.values.f32",
    "./points_2d.bin",
    "obs/../points_2d.bin",
    "obs/",
    "points\n_2d.bin",
    "points\x7f_2d.bin",
    "",
    None,
    3,
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=[repr(p) for p in BAD_PATHS])
def test_bad_paths(base_copy: Callable[[Base], Path], path: object) -> None:
    assert _path_error(path) is not None
    ds = base_copy(BASES[0])
    ident = json.loads((ds / "dataset_identity.json").read_text())
    ident["embeddings"]["files"]["2d"] = path
    (ds / "dataset_identity.json").write_text(json.dumps(ident))
    assert validate(ds).rules == {"path.syntax"}


@pytest.mark.parametrize(
    "path",
    [
        "points_2d.bin",
        "obs/0.values.u8.gz",
        "a b/c-d_e.f",
        "vectors/x:y_2d.bin",
        "\u00e9t\u00e9.bin",
    ],
)
def test_good_paths(path: str) -> None:
    assert _path_error(path) is None


# --- the report ------------------------------------------------------------------------------


def broken(base_copy: Callable[[Base], Path]) -> Path:
    """A dataset with three problems in three files."""
    ds = base_copy(BASES[1])
    d = DS(ds, pytest.MonkeyPatch())
    with d.edit("dataset_identity.json") as ident:
        ident["version"] = 3
    with d.edit("obs_manifest.json") as man:
        man["n_points"] = 0
    path = d.codes_path(0)
    d.write(path, d.read(path)[:-1])
    return ds


def test_strict_raises_listing_every_problem(base_copy: Callable[[Base], Path]) -> None:
    ds = broken(base_copy)
    report = validate(ds)
    assert len(report.problems) >= 3
    with pytest.raises(ValueError, match="problem") as info:
        validate(ds, strict=True)
    for problem in report.problems:
        assert str(problem) in str(info.value)
    with pytest.raises(ValueError, match=re.escape(str(report.problems[0]))):
        report.raise_if_problems()


def test_strict_returns_a_clean_report(base_copy: Callable[[Base], Path]) -> None:
    report = validate(base_copy(BASES[0]), strict=True)
    assert report.ok
    report.raise_if_problems()
    assert "no problems" in str(report)


def test_report_to_dict_and_str(base_copy: Callable[[Base], Path]) -> None:
    ds = broken(base_copy)
    report = validate(ds)
    assert not report and not report.ok and len(report) == len(report.problems)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["layout"] == "current" and data["path"] == str(ds)
    assert [Problem(**p) for p in data["problems"]] == report.problems
    assert {"identity.version", "obs.n_points", "payload.length"} <= report.rules
    lines = str(report).splitlines()
    assert len(lines) == len(report.problems) + 1
    assert "3 problem" in lines[0] or f"{len(report.problems)} problem" in lines[0]
    for line, problem in zip(lines[1:], report.problems, strict=True):
        assert (
            line
            == f"  - {problem.file}: [{problem.rule}] found {problem.found}; expected {problem.expected}"
        )
    assert "ValidationReport(" in repr(report)
    version = next(p for p in report.problems if p.rule == "identity.version")
    assert (version.file, version.found, version.expected) == ("dataset_identity.json", "3", "2")


def test_report_constructed_directly() -> None:
    problem = Problem("obs_manifest.json", "obs.format", "x", "compact_v1")
    report = ValidationReport(Path("out"), "legacy", [problem])
    assert report.rules == {"obs.format"}
    assert report.to_dict()["datasets"] == {".": "legacy"}
    assert "obs_manifest.json: [obs.format] found x; expected compact_v1" in str(report)


def test_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither"):
        validate(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate(tmp_path / "missing")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(ValueError, match="not a directory"):
        validate(tmp_path / "file.json")


# --- streaming, gzip details, robustness -------------------------------------------------------


def test_small_chunks_give_the_same_answers(
    base_copy: Callable[[Base], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks that carry state across chunks (edge order, code ranges) work at every boundary."""
    monkeypatch.setattr(_payloads, "_CHUNK", 64)
    monkeypatch.setattr(_connectivity, "_EDGE_CHUNK", 5)
    ds = base_copy(BASES[1])
    assert validate(ds).ok
    d = DS(ds, monkeypatch)
    man, src, dst, w = d.edges()
    order = np.arange(len(src))
    order[[4, 5]] = [5, 4]  # across the boundary of the first two chunks of 5 edges
    d.write_edges(man, src[order], dst[order], None if w is None else w[order])
    _, points = d.points_path()
    values = d.array(points, "float32")
    values[-1] = np.nan
    d.write_array(points, values)
    report = validate(ds)
    assert report.rules == {"edges.order", "points.finite"}
    assert "1 edge(s) out of order" in next(
        p.found for p in report.problems if p.rule == "edges.order"
    )


def test_large_payload_streams_in_bounded_memory(tmp_path: Path) -> None:
    n = 16 * 2**20  # 64 MiB of float32 points, about 64 KiB gzipped
    rel = "points_1d.bin.gz"
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(tmp_path / rel, "wb") as f:
        block = np.ones(2**20, dtype="<f4").tobytes()
        for _ in range(n // 2**20):
            f.write(compressor.compress(block))
        f.write(compressor.flush())
    checker = _dataset._DatasetChecker(tmp_path, "")
    tracemalloc.start()
    try:
        total = sum(len(c) for c in checker.scan(rel, "<f4", n))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == n
    assert checker.problems == []
    assert peak < 32 * 2**20


def test_optional_gzip_header_fields_are_accepted(base_copy: Callable[[Base], Path]) -> None:
    """FEXTRA, FNAME, FCOMMENT and FHCRC are not reserved: the header may carry them."""
    ds = base_copy(BASES[0])
    d = DS(ds, pytest.MonkeyPatch())
    path = d.codes_path(0)
    data = d.read(path)
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = body.compress(data) + body.flush()
    header = b"\x1f\x8b\x08" + bytes([4 | 8 | 16 | 2]) + b"\x00" * 4 + b"\x00\xff"
    header += struct.pack("<H", 4) + b"ab\x00\x00" + b"name\x00" + b"comment\x00"
    header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    trailer = struct.pack("<II", zlib.crc32(data), len(data))
    d.write_raw(path, header + deflated + trailer)
    assert gzip.decompress(d.raw(path)) == data
    report = validate(ds)
    assert report.ok, str(report)


JUNK = [None, True, -1, 1.5, "", "x", [], [None], {}, {"x": None}]


def json_locations(obj: object, path: tuple = ()) -> list[tuple]:
    """Every location in a JSON document (list items after the third are skipped)."""
    out = [path]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += json_locations(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:3]):
            out += json_locations(value, (*path, i))
    return out


def set_at(obj: object, path: tuple, value: object) -> object:
    if not path:
        return value
    node = obj
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    return obj


@pytest.mark.parametrize(
    "rel",
    [
        "dataset_identity.json",
        "obs_manifest.json",
        "var_manifest.json",
        "connectivity_manifest.json",
    ],
)
@pytest.mark.parametrize("which", [BASES[1], BASES[5]], ids=lambda b: b.name)
def test_malformed_json_is_a_problem_not_a_crash(
    base_copy: Callable[[Base], Path], rel: str, which: Base
) -> None:
    ds = base_copy(which)
    original = json.loads((ds / rel).read_text())
    locations = json_locations(original)
    assert len(locations) >= 10
    for i, location in enumerate(locations):
        junk = JUNK[i % len(JUNK)]
        doc = set_at(json.loads(json.dumps(original)), location, junk)
        (ds / rel).write_text(json.dumps(doc))
        report = validate(ds)  # must not raise
        if doc != original:
            assert all(p.rule in RULES for p in report.problems)
    (ds / rel).write_text(json.dumps(original))
    assert validate(ds).ok


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_malformed_catalog_is_a_problem_not_a_crash(
    request: pytest.FixtureRequest, tmp_path: Path, junk: object
) -> None:
    root = root_copy(request, tmp_path, "upstream")
    original = json.loads((root / "datasets.json").read_text())
    for location in json_locations(original):
        doc = set_at(json.loads(json.dumps(original)), location, junk)
        (root / "datasets.json").write_text(json.dumps(doc))
        report = validate(root)
        assert doc == original or not report.ok


# --- stricter or not than the viewer (issue 17 item 14) -----------------------------------------


def test_source_filename_and_255_uint8_categories_are_valid(
    base_copy: Callable[[Base], Path],
) -> None:
    """FORMAT.md allows both: source.filename, and 255 categories in uint8 (codes 0-254)."""
    ds = base_copy(BASES[3])
    d = DS(ds, pytest.MonkeyPatch())
    with d.edit("dataset_identity.json") as ident:
        ident["source"] = {"name": "PBMC", "filename": "pbmc.h5ad"}
    with d.edit("obs_manifest.json") as man:
        entry = man["_categoricalFields"][0]
        assert entry[3] == "uint8"
        key, cats = entry[1], entry[2]
        entry[2] = cats + [f"extra {i}" for i in range(255 - len(cats))]
    with d.edit("dataset_identity.json") as ident:
        for field in ident["obs_fields"]:
            if field["key"] == key:
                field["n_categories"] = 255
    report = validate(ds)
    assert report.ok, str(report)


def test_utf8_bom_is_refused(base_copy: Callable[[Base], Path]) -> None:
    """Stricter than the viewer (which strips it): no writer of the format writes a BOM."""
    ds = base_copy(BASES[2])
    path = ds / "obs_manifest.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert validate(ds).rules == {"json.parse"}


def test_centroid_category_must_be_the_identical_json_value(
    base_copy: Callable[[Base], Path],
) -> None:
    ds = base_copy(BASES[2])
    d = DS(ds, pytest.MonkeyPatch())
    with d.edit("obs_manifest.json") as man:
        entry = next(e for e in man["_categoricalFields"] if e[2] == [False, True])
        item = next(i for items in entry[5].values() for i in items if i["category"] is True)
        item["category"] = "true"
    report = validate(ds)
    assert report.rules == {"centroids.value"}, str(report)
    assert '"true"' in report.problems[0].found


# --- readers of untrusted exports: catalog, info --------------------------------------------------


def catalog_root(exporter: Callable[..., Path], tmp_path: Path) -> Path:
    root = tmp_path / "exports"
    for name in ("one", "two"):
        run_export(exporter, small_adata(), root / name, var_names=[], connectivities_key=False)
    return root


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("id", {"a": 1}, "identity.id"),
        ("id", "../../evil", "identity.id"),
        ("name", "\u3000", "identity.name"),
        ("stats", {"n_cells": "many"}, "stats.keys"),
    ],
)
def test_write_catalog_checks_each_identity(
    exporter: Callable[..., Path], tmp_path: Path, key: str, value: object, rule: str
) -> None:
    root = catalog_root(exporter, tmp_path)
    ident = json.loads((root / "two" / "dataset_identity.json").read_text())
    ident[key] = value
    (root / "two" / "dataset_identity.json").write_text(json.dumps(ident))
    with pytest.raises(
        ValueError, match=rf"'two' under .* is not listed: two/dataset_identity\.json: \[{rule}\]"
    ):
        cl.ex.write_catalog(root)
    assert not (root / "datasets.json").exists()


def test_write_catalog_refuses_a_huge_identity(
    exporter: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A description past what the viewer reads (64 MiB of JSON; lowered here) is refused."""
    root = catalog_root(exporter, tmp_path)
    monkeypatch.setattr(_files, "MAX_JSON_BYTES", 100_000)
    ident = json.loads((root / "one" / "dataset_identity.json").read_text())
    ident["description"] = "x" * 100_000
    (root / "one" / "dataset_identity.json").write_text(json.dumps(ident))
    with pytest.raises(ValueError, match=r"one/dataset_identity\.json: \[json\.size\]"):
        cl.ex.write_catalog(root)


def test_write_catalog_refuses_folder_names_that_are_not_url_canonical(
    exporter: Callable[..., Path], tmp_path: Path
) -> None:
    root = catalog_root(exporter, tmp_path)
    (root / "two").rename(root / "two + three")
    with pytest.raises(ValueError, match=r"'two \+ three'.*rename it, e\.g\. to 'two-three'"):
        cl.ex.write_catalog(root)
    (root / "two + three").rename(root / "two-three")
    assert validate(cl.ex.write_catalog(root).parent).ok


def test_write_catalog_refuses_a_dataset_linked_from_outside(
    exporter: Callable[..., Path], tmp_path: Path
) -> None:
    root = catalog_root(exporter, tmp_path)
    (root / "two").rename(tmp_path / "elsewhere")
    (root / "two").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="link leading out of the exports root"):
        cl.ex.write_catalog(root)


def test_info_checks_the_export_first(base_copy: Callable[[Base], Path]) -> None:
    from cellucid.ex._info import summarize

    ds = base_copy(BASES[2])
    assert "cells        150" in summarize(ds)
    d = DS(ds, pytest.MonkeyPatch())
    with d.edit("dataset_identity.json") as ident:
        ident["obs_fields"] = {"key": "x"}
    with pytest.raises(ValueError, match=r"dataset_identity\.json: \[obs_fields\.entry\]"):
        summarize(ds)


def test_info_does_not_follow_links_out(base_copy: Callable[[Base], Path], tmp_path: Path) -> None:
    from cellucid.ex._info import summarize

    ds = base_copy(BASES[2])
    big = tmp_path / "big"
    big.mkdir()
    (big / "blob").write_bytes(b"\x00" * 5_000_000)
    (ds / "extra").symlink_to(big, target_is_directory=True)
    assert "5.0 MB" not in summarize(ds)
    assert "on disk" in summarize(ds)
