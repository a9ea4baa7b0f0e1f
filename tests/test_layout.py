"""The format's paths and layouts in one place: templates, filling and splitting, detection."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _data import make_adata

import cellucid as cl
from cellucid._format import (
    EXT,
    LEGACY_MAX_STEM,
    MAX_FILE_NAME_BYTES,
    OBS_MANIFEST,
    VAR_MANIFEST,
    gz,
    safe_filename_component,
)
from cellucid._layout import (
    EXPORT_FOLDER_FILES,
    EXPORT_TOP_FILES,
    TEMPLATES,
    MixedLayoutError,
    detect_layout,
    layout,
    placeholders,
)
from cellucid.ex._declared import ExportError, load_datasets
from cellucid.ex._info import summarize

FIELD_KINDS = ("obs_values", "obs_codes", "obs_outliers", "var_values")
KEYS = ["score", "percent mito", "HLA-A/B", "naïve T", "..", "CD4+ (a.u.)"]


def _export(adata: ad.AnnData, out: Path, **options: object) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # missing values in make_adata's obs
        return cl.ex.export(adata, out, progress=False, **options)


def _documents(out: Path) -> tuple[object, ...]:
    def load(name: str) -> object:
        return json.loads((out / name).read_text()) if (out / name).is_file() else None

    names = ("dataset_identity.json", OBS_MANIFEST, VAR_MANIFEST, "connectivity_manifest.json")
    return tuple(load(name) for name in names)


# --- templates: fill, split, the writers' files and the manifests' patterns -----------------------


@pytest.mark.parametrize("name", ["current", "legacy"])
@pytest.mark.parametrize("kind", FIELD_KINDS)
@pytest.mark.parametrize("compression", [None, 6])
def test_fill_then_split_gives_back_the_stem(name: str, kind: str, compression: int | None) -> None:
    lay = layout(name)
    for index, key in enumerate(KEYS):
        for ext in EXT.values():
            # the codes pattern keeps {ext}: each field fills it with its codes dtype's
            pattern = lay.pattern(kind, None if kind == "obs_codes" else ext, compression)
            path = lay.fill(pattern, index, key, ext)
            # the file the manifest's pattern names is the one the writer wrote
            assert path == gz(lay.field_path(kind, index, key, ext), compression)
            assert not placeholders(path)
            stem = lay.split(pattern, path)
            assert stem == lay.stem(index, key)
            assert stem == (str(index) if name == "current" else safe_filename_component(key))
            assert EXPORT_FOLDER_FILES[path.split("/")[0]].fullmatch(path.split("/", 1)[1])
    # a key the legacy layout keeps as is comes back itself
    assert lay.split(lay.pattern(kind, "u8"), lay.fill(lay.pattern(kind, "u8"), 7, "CD4")) == (
        "7" if name == "current" else "CD4"
    )


@pytest.mark.parametrize("kind", FIELD_KINDS)
def test_legacy_max_stem_fits_every_field_file(kind: str) -> None:
    """A key of LEGACY_MAX_STEM characters names files of at most MAX_FILE_NAME_BYTES."""
    lay = layout("legacy")
    names = [lay.field_path(kind, 0, "k" * LEGACY_MAX_STEM, ext) + ".gz" for ext in EXT.values()]
    longest = max(len(name.rsplit("/", 1)[1]) for name in names)
    assert longest <= MAX_FILE_NAME_BYTES
    assert kind != "obs_outliers" or longest == MAX_FILE_NAME_BYTES


def test_split_refuses_a_path_the_pattern_does_not_make() -> None:
    lay = layout("current")
    pattern = lay.pattern("var_values", "u8", 6)
    assert lay.split(pattern, "var/3.values.u8.gz") == "3"
    assert lay.split(pattern, "var/3.values.u8") is None
    assert lay.split(pattern, "obs/3.values.u8.gz") is None
    assert lay.split(pattern, "var/a/3.values.u8.gz") is None
    assert layout("legacy").split(pattern, "var/3.values.u8.gz") is None  # no {key} in it


@pytest.mark.parametrize("name", ["current", "legacy"])
def test_patterns_and_vector_paths_are_the_formats(name: str) -> None:
    lay = layout(name)
    ph = "{index}" if name == "current" else "{key}"
    assert lay.placeholder == ph
    assert lay.pattern("obs_values", "u8", 6) == f"obs/{ph}.values.u8.gz"
    assert lay.pattern("obs_codes", None) == f"obs/{ph}.codes.{{ext}}"
    assert lay.pattern("obs_outliers", "f32") == f"obs/{ph}.outliers.f32"
    assert lay.pattern("var_values", "u16", 1) == f"var/{ph}.values.u16.gz"
    assert lay.pattern_end("obs_codes", None) == f"{ph}.codes.{{ext}}"
    stem = "0" if name == "current" else "velocity_umap"
    assert lay.vector_path(0, "velocity_umap", 3) == f"vectors/{stem}_3d.bin"
    assert lay.entry_split([*lay.entry_head(4, "score"), 0.0, 1.0]) == (
        4 if name == "current" else None,
        "score",
        [0.0, 1.0],
    )
    assert lay.head_length == len(lay.entry_head(4, "score"))


def test_fill_refuses_a_pattern_that_is_not_a_string() -> None:
    with pytest.raises(ValueError, match="Invalid path pattern None"):
        layout("current").fill(None, 0, "a")


@pytest.mark.parametrize("name", ["current", "legacy"])
@pytest.mark.parametrize("compression", [None, 6])
def test_the_writers_files_are_the_templates_the_validator_expects(
    tmp_path: Path, name: str, compression: int | None
) -> None:
    adata = make_adata(n_cells=120, n_genes=8, seed=1)
    if name == "legacy":  # names only the current layout keeps apart
        adata = adata[:, [n for n in adata.var_names if n not in ("HLA-A/B", "MT CO1")]].copy()
    out = _export(adata, tmp_path / "ds", layout=name, compression=compression, var_quantization=8)
    report = cl.ex.validate(out)
    assert report.ok, str(report)
    assert report.layout == name
    lay = layout(name)
    identity, obs, var, _ = _documents(out)
    expected = {gz(TEMPLATES["points"].replace("{dim}", str(d)), compression) for d in (2, 3)}
    for position, (field_id, field) in enumerate(identity["vector_fields"]["fields"].items()):
        for d in field["available_dimensions"]:
            expected.add(gz(lay.vector_path(position, field_id, d), compression))
    ext = "f32"
    schemas = obs["_obsSchemas"]
    assert schemas["continuous"]["pathPattern"] == lay.pattern("obs_values", ext, compression)
    assert schemas["categorical"]["codesPathPattern"] == lay.pattern("obs_codes", None, compression)
    assert schemas["categorical"]["outlierPathPattern"] == lay.pattern(
        "obs_outliers", ext, compression
    )
    assert var["_varSchema"]["pathPattern"] == lay.pattern("var_values", "u8", compression)
    for entry in obs["_continuousFields"]:
        index, key, _ = lay.entry_split(entry)
        expected.add(gz(lay.field_path("obs_values", index, key, ext), compression))
    for entry in obs["_categoricalFields"]:
        index, key, rest = lay.entry_split(entry)
        expected.add(gz(lay.field_path("obs_codes", index, key, EXT[rest[1]]), compression))
        expected.add(gz(lay.field_path("obs_outliers", index, key, ext), compression))
    for entry in var["fields"]:
        index, key, _ = lay.entry_split(entry)
        expected.add(gz(lay.field_path("var_values", index, key, "u8"), compression))
    for part in ("src", "dst", *(("weights",) if lay.weighted_edges else ())):
        expected.add(gz(TEMPLATES[f"edges_{part}"], compression))
    on_disk = {
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.suffix != ".json"
    }
    assert on_disk == expected
    # what overwrite may replace: every file the export wrote, and nothing else
    for path in on_disk | {p.name for p in out.glob("*.json")}:
        folder, _, name_in = path.rpartition("/")
        names = EXPORT_FOLDER_FILES[folder] if folder else EXPORT_TOP_FILES
        assert names.fullmatch(name_in), path
    assert not EXPORT_FOLDER_FILES["obs"].fullmatch("notes.txt")
    assert not EXPORT_TOP_FILES.fullmatch("points_4d.bin")


# --- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["current", "legacy"])
def test_detect_layout_of_each_layout(tmp_path: Path, name: str) -> None:
    adata = make_adata(n_cells=100, n_genes=6, seed=2)
    adata = adata[:, [n for n in adata.var_names if n not in ("HLA-A/B", "MT CO1")]].copy()
    out = _export(adata, tmp_path / "ds", layout=name)
    identity, obs, var, conn = _documents(out)
    assert detect_layout(identity, obs, var, conn) == name
    # each source alone decides when those before it are absent
    assert detect_layout(identity, None, None, conn) == name  # the graph's weights
    assert detect_layout(identity, None, None, None) == name  # the vector files
    assert detect_layout(None, None, None, None) == "current"  # nothing names a layout
    # what can't be read names nothing
    assert detect_layout("broken", ["not", "an", "object"], 3, None) == "current"


def test_detect_layout_order_first_source_decides(tmp_path: Path) -> None:
    out = _export(make_adata(n_cells=80, n_genes=4, seed=3), tmp_path / "ds")
    identity, obs, var, conn = _documents(out)
    del conn["weightsPath"]  # a legacy sign, after the patterns' current ones
    assert detect_layout(identity, obs, var, conn) == "current"
    assert detect_layout(identity, None, None, conn) == "legacy"


def test_detect_layout_refuses_a_mix_naming_the_files(tmp_path: Path) -> None:
    out = _export(make_adata(n_cells=80, n_genes=4, seed=3), tmp_path / "ds")
    identity, obs, var, conn = _documents(out)
    var["_varSchema"]["pathPattern"] = var["_varSchema"]["pathPattern"].replace("{index}", "{key}")
    with pytest.raises(MixedLayoutError) as info:
        detect_layout(identity, obs, var, conn)
    assert info.value.first == "current"
    assert info.value.file == VAR_MANIFEST
    message = str(info.value)
    assert (
        "var_manifest.json _varSchema.pathPattern 'var/{key}.values.f32' (the legacy layout)"
        in (message)
    )
    assert "obs_manifest.json _obsSchemas.continuous.pathPattern" in message
    # a pattern holding both placeholders names neither layout (its schema check reports it)
    var["_varSchema"]["pathPattern"] = "var/{index}{key}.values.f32"
    assert detect_layout(identity, obs, var, conn) == "current"


def test_mixed_export_is_refused_by_validate_read_info_and_serve(tmp_path: Path) -> None:
    out = _export(make_adata(n_cells=80, n_genes=4, seed=3), tmp_path / "ds")
    manifest = out / VAR_MANIFEST
    var = json.loads(manifest.read_text())
    var["_varSchema"]["pathPattern"] = var["_varSchema"]["pathPattern"].replace("{index}", "{key}")
    manifest.write_text(json.dumps(var))
    report = cl.ex.validate(out)
    assert report.rules == {"layout.mixed", "schema.pattern"}
    mixed = next(p for p in report.problems if p.rule == "layout.mixed")
    assert mixed.file == VAR_MANIFEST and OBS_MANIFEST in str(mixed)
    with pytest.raises(ValueError, match=r"var_manifest\.json: \[layout\.mixed\]"):
        cl.ex.read(out)
    with pytest.raises(ValueError, match=r"layout\.mixed"):
        summarize(out)
    with pytest.raises(
        ExportError, match=r"mixes layouts: var_manifest\.json .*obs_manifest\.json"
    ):
        load_datasets(out)


# --- the minimal legacy export: no obs field, no gene, no graph --------------------------------


def _minimal(vectors: bool) -> ad.AnnData:
    rng = np.random.default_rng(5)
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(40)]))
    adata.obsm["X_umap_2d"] = rng.normal(size=(40, 2))
    adata.obsm["X_umap_3d"] = rng.normal(size=(40, 3))
    if vectors:
        adata.obsm["velocity_umap_2d"] = rng.normal(size=(40, 2))
    return adata


def test_minimal_legacy_export_validates_reads_and_serves(tmp_path: Path) -> None:
    out = _export(_minimal(vectors=True), tmp_path / "ds", layout="legacy")
    assert not any((out / n).exists() for n in (VAR_MANIFEST, "connectivity_manifest.json"))
    assert json.loads((out / OBS_MANIFEST).read_text())["_obsSchemas"] == {}
    assert (out / "vectors" / "velocity_umap_2d.bin").is_file()
    report = cl.ex.validate(out)
    assert report.ok, str(report)
    assert report.layout == "legacy"
    back = cl.ex.read(out)
    assert back.uns["cellucid"]["layout"] == "legacy"
    assert back.obsm["velocity_umap_2d"].shape == (40, 2)
    assert "layout legacy" in summarize(out)
    (dataset,) = load_datasets(out)
    assert dataset.files == {
        "dataset_identity.json",
        OBS_MANIFEST,
        "points_2d.bin",
        "points_3d.bin",
        "vectors/velocity_umap_2d.bin",
    }


def test_minimal_export_without_vectors_is_the_same_in_both_layouts(tmp_path: Path) -> None:
    """Nothing in it names a layout: its files are the same, and it reads as current."""
    files = {}
    for name in ("current", "legacy"):
        out = _export(_minimal(vectors=False), tmp_path / name, layout=name, dataset_id="same")
        report = cl.ex.validate(out)
        assert report.ok, str(report)
        assert report.layout == "current"
        files[name] = {
            p.relative_to(out).as_posix(): p.read_bytes()
            for p in out.rglob("*")
            if p.is_file() and p.name != "dataset_identity.json"  # created_at may differ
        }
    assert files["current"].keys() == files["legacy"].keys()
    assert files["current"]["obs_manifest.json"] == files["legacy"]["obs_manifest.json"]
