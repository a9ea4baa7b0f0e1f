"""The options of an export as checked value objects: each refuses a bad value in one line."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import cellucid as cl
from cellucid.ex._arithmetic import CURRENT, LEGACY
from cellucid.ex._collect import collect
from cellucid.ex._identity import Description, Written, identity_document
from cellucid.ex._payload import default_n_jobs
from cellucid.ex._settings import (
    DEFAULT_CENTROID_MIN_POINTS,
    DEFAULT_CENTROID_OUTLIER_QUANTILE,
    DEFAULT_MEMORY_BUDGET,
    ExportSettings,
    Resources,
    Selection,
    keywords_of,
)


@pytest.mark.parametrize("n_jobs", [0, -5, 1.5, "x", True, -2])
def test_bad_n_jobs_is_refused_before_any_work(adata: ad.AnnData, tmp_path: Path, n_jobs) -> None:
    with pytest.raises(ValueError, match=r"^n_jobs must be a positive number of threads") as e:
        cl.ex.export(adata, tmp_path / "ds", n_jobs=n_jobs)
    assert "\n" not in str(e.value) and repr(n_jobs) in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("n_jobs", "threads"),
    [(None, default_n_jobs()), (-1, default_n_jobs()), (3, 3), (np.int64(2), 2)],
)
def test_n_jobs_none_or_minus_one_is_every_core(n_jobs, threads: int) -> None:
    assert Resources(n_jobs=n_jobs).threads == threads


def test_n_jobs_minus_one_exports_like_one_thread(adata: ad.AnnData, tmp_path: Path) -> None:
    a = cl.ex.export(
        adata, tmp_path / "a", dataset_name="x", n_jobs=-1, compression=1, var_names=[]
    )
    b = cl.ex.export(adata, tmp_path / "b", dataset_name="x", n_jobs=1, compression=1, var_names=[])
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != "dataset_identity.json":  # created_at may differ by a second
            assert (a / rel).read_bytes() == (b / rel).read_bytes()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"memory_budget": 0}, "memory_budget must be a positive number of bytes, got 0"),
        ({"memory_budget": -1}, "memory_budget must be a positive"),
        ({"memory_budget": True}, "memory_budget must be a positive"),
        ({"memory_budget": 1.5e6}, "memory_budget must be a positive"),
        ({"gzip_encoder": "brotli"}, r"gzip_encoder must be one of .*'brotli'"),
        ({"progress": "yes"}, r"progress must be True, False or None .*got 'yes'"),
        ({"progress": 2}, "progress must be True, False or None"),
    ],
)
def test_resources_refuse_bad_values(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Resources(**options)


def test_resources_defaults_and_progress() -> None:
    resources = Resources()
    assert resources.memory_budget == DEFAULT_MEMORY_BUDGET and resources.n_jobs is None
    assert Resources(progress=False).show_progress is False
    assert Resources(progress=True).show_progress is True
    assert Resources(gzip_encoder="zlib").deflate.__name__ == "zlib"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"compression": 10}, "compression must be None or a gzip level 0-9"),
        ({"compression": True}, "compression must be None or a gzip level"),
        ({"var_quantization": 12}, "var_quantization must be None"),
        ({"obs_continuous_quantization": True}, "obs_continuous_quantization must be None"),
        ({"obs_categorical_dtype": "uint32"}, "obs_categorical_dtype must be 'auto'"),
        ({"centroid_outlier_quantile": 1.0}, "centroid_outlier_quantile must be None or strictly"),
        ({"centroid_outlier_quantile": 0}, "centroid_outlier_quantile"),
        ({"centroid_min_points": 0}, "centroid_min_points must be a positive integer, got 0"),
        ({"centroid_min_points": 2.5}, "centroid_min_points must be a positive integer"),
        ({"layout": "old"}, "layout must be one of"),
    ],
)
def test_settings_refuse_bad_values(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExportSettings.checked(**{"layout": "current", **options})


def test_settings_defaults_and_derived_arithmetic() -> None:
    current = ExportSettings.checked(layout="current", compression=0)
    assert current.compression is None  # 0 is uncompressed
    assert current.centroid_outlier_quantile == DEFAULT_CENTROID_OUTLIER_QUANTILE
    assert current.centroid_min_points == DEFAULT_CENTROID_MIN_POINTS
    assert current.arithmetic is CURRENT
    assert ExportSettings.checked(layout="legacy").arithmetic is LEGACY
    with pytest.raises(dataclasses.FrozenInstanceError):
        current.compression = 6  # type: ignore[misc]


def test_selection_checks_and_gene_symbols() -> None:
    assert Selection.checked(gene_symbols="symbol").gene_id_column == "symbol"
    assert Selection.checked(gene_symbols="s", gene_id_column="s").gene_id_column == "s"
    with pytest.raises(ValueError, match="gene_symbols='a' and gene_id_column='b' name the same"):
        Selection.checked(gene_symbols="a", gene_id_column="b")
    with pytest.raises(ValueError, match="Pass either layer= or use_raw=True, not both"):
        Selection(layer="counts", use_raw=True)


def test_every_export_keyword_goes_to_exactly_one_group() -> None:
    keywords = dict.fromkeys(inspect.signature(cl.ex.export).parameters, "given")
    # what export() uses itself: the input, the target and the dataset's description
    own = {"adata", "out_dir", "overwrite", "storage_options", "dataset_name", "dataset_id"}
    own |= {"dataset_description"}
    groups = [
        keywords_of(ExportSettings, keywords),
        keywords_of(Selection, keywords, "gene_symbols"),
        keywords_of(Resources, keywords),
        keywords_of(Description, keywords),
    ]
    taken = [name for group in groups for name in group]
    assert len(taken) == len(set(taken))
    assert set(taken) | own == set(keywords)
    assert not own & set(taken)
    # and no field of a group is left to its default by export()
    for group in (ExportSettings, Selection, Resources):
        assert {field.name for field in dataclasses.fields(group)} <= set(keywords)
    renamed = {"name", "id", "description"}  # from dataset_name, dataset_id, dataset_description
    assert {field.name for field in dataclasses.fields(Description)} - renamed <= set(keywords)


def test_export_options_reach_their_groups(adata: ad.AnnData, tmp_path: Path) -> None:
    out = cl.ex.export(
        adata,
        tmp_path / "x",
        compression=1,
        var_quantization=16,
        centroid_min_points=3,
        gene_symbols=None,
        var_names=list(adata.var_names[:2]),
        n_jobs=1,
        progress=False,
    )
    identity = json.loads((out / "dataset_identity.json").read_text())
    assert identity["export_settings"]["compression"] == 1
    assert identity["export_settings"]["var_quantization"] == 16
    assert identity["stats"]["n_genes"] == 2


def test_description_checks_and_derives_the_id() -> None:
    assert Description(name="PBMC 3k (v2)").id == "PBMC-3k-v2"
    assert Description(name="x", id="given").id == "given"
    source = Description(name="x", source_name="GEO", source_url="https://x.org").source
    assert source == {"name": "GEO", "url": "https://x.org"}
    assert Description(name="x").source is None
    for options, match in [
        ({"name": " "}, "dataset_name must not be empty or whitespace"),
        ({"name": "x", "id": "bad id/"}, "not a valid id"),
        ({"name": "x", "source_url": "https://x.org"}, "source_name is required"),
        ({"name": "x", "source_name": "GEO", "source_citation": " "}, "source_citation must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            Description(**options)


def _current():
    return ExportSettings.checked(layout="current").layout


def test_collect_returns_everything_at_once(adata: ad.AnnData) -> None:
    found = collect(adata, Selection(), layout=_current())
    assert found.graph_key == "connectivities" and found.graph.shape == (adata.n_obs,) * 2
    assert found.latent_key == "X_pca" and sorted(found.embeddings) == [2, 3]
    assert [f.key for f in found.obs_fields] == list(adata.obs.columns)
    assert found.genes is not None and len(found.genes.names) == adata.n_vars
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.graph = None  # type: ignore[misc]
    no_graph = collect(adata, Selection(connectivities_key=False, var_names=[]), layout=_current())
    assert no_graph.graph is None and no_graph.graph_key is None and no_graph.genes is None


def test_collect_refuses_an_empty_adata(adata: ad.AnnData) -> None:
    with pytest.raises(ValueError, match="adata has no cells"):
        collect(adata[:0].copy(), Selection(), layout=_current())


def test_identity_document_declares_one_codes_dtype() -> None:
    settings = ExportSettings.checked(layout="current", compression=6, var_quantization=8)
    written = Written(
        n_cells=5,
        embeddings={"available_dimensions": [2], "default_dimension": 2, "files": {}},
        vector_fields=None,
        obs_fields=[{"key": "score", "kind": "continuous"}],
        codes_dtype=None,
        n_genes=3,
        n_edges=None,
        payload_files=4,
        payload_bytes=100,
    )
    identity = identity_document(Description(name="x", source_name="GEO"), settings, written)
    assert identity["export_settings"] == {
        "compression": 6,
        "var_quantization": 8,
        "obs_continuous_quantization": None,
        "obs_categorical_dtype": "uint8",  # "auto" without a categorical field
    }
    assert identity["stats"]["n_continuous_fields"] == 1 and identity["source"] == {"name": "GEO"}
    assert "vector_fields" not in identity and identity["stats"]["has_connectivity"] is False
    with_codes = dataclasses.replace(written, codes_dtype="uint16")
    assert (
        identity_document(Description(name="x"), settings, with_codes)["export_settings"][
            "obs_categorical_dtype"
        ]
        == "uint16"
    )
