"""A new user's journey: ``cl.ex.export(adata)`` and the names and feedback a scanpy user expects."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from _data import make_adata
from _decode import decode

import cellucid as cl

pytestmark = pytest.mark.filterwarnings(
    "ignore:obs\\[:UserWarning", "ignore:.*genes have NaN:UserWarning"
)

TESTS = Path(__file__).parent


def python(code: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (nothing of cellucid imported beforehand)."""
    env = {**os.environ, "CI": "1", "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


# --- 1. the one line ------------------------------------------------------------------------


def test_export_without_out_dir_writes_under_exports(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog_cellucid
) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog_cellucid(logging.INFO) as records:
        out = cl.ex.export(adata)
    assert out == Path("exports/dataset")
    assert any("exports/dataset" in r.getMessage() for r in records)
    named = cl.ex.export(adata, dataset_name="PBMC 3k")
    assert named == Path("exports/PBMC-3k")
    assert decode(named).identity["name"] == "PBMC 3k"
    assert cl.ex.export(adata, dataset_id="pbmc") == Path("exports/pbmc")
    catalog = cl.ex.write_catalog("exports")
    assert sorted(d["id"] for d in __import__("json").loads(catalog.read_text())["datasets"]) == [
        "PBMC-3k",
        "dataset",
        "pbmc",
    ]
    # the same default again is refused, not overwritten
    with pytest.raises(FileExistsError, match="overwrite"):
        cl.ex.export(adata)


def test_backed_adata_is_named_after_its_file(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adata.write_h5ad(tmp_path / "my_atlas.h5ad")
    monkeypatch.chdir(tmp_path)
    backed = ad.read_h5ad(tmp_path / "my_atlas.h5ad", backed="r")
    try:
        out = cl.ex.export(backed)
    finally:
        backed.file.close()
    assert out == Path("exports/my_atlas")
    assert decode(out).identity["name"] == "my_atlas"


# --- 2. the public namespace, from a fresh interpreter -------------------------------------


def test_public_namespace_in_a_fresh_interpreter() -> None:
    result = python(
        """
        import cellucid as cl
        cl.logging.set_verbosity(2)
        cl.logging.set_verbosity(None)
        for module in (cl, cl.ex, cl.pp):
            for name in module.__all__:
                getattr(module, name)
        print("ok", cl.__version__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")


# --- 3. scanpy's verbosity applies ---------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "shown"),
    [
        ("pass", False),  # scanpy's default: warnings only
        ("sc.settings.verbosity = 2", True),
        ("sc.settings.verbosity = 3; cl.logging.set_verbosity(1)", False),  # ours wins
        ("cl.logging.set_verbosity(2); sc.settings.verbosity = 0", True),
    ],
)
def test_scanpy_verbosity_applies(tmp_path: Path, setup: str, shown: bool) -> None:
    result = python(
        f"""
        import warnings
        warnings.simplefilter("ignore")
        import cellucid as cl
        import scanpy as sc
        from _data import make_adata
        {setup}
        cl.ex.export(make_adata(40, 3), "out")
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert ("INFO: exported out: 40 cells" in result.stderr) is shown, result.stderr


def test_debug_level_follows_scanpy_debug(tmp_path: Path) -> None:
    result = python(
        """
        import cellucid as cl, scanpy as sc
        from _data import make_adata
        sc.settings.verbosity = "debug"
        cl.ex.export(make_adata(40, 3), "out", progress=False)
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG: export stage genes: " in result.stderr


# --- 4. basis names as scanpy takes them ---------------------------------------------------


@pytest.mark.parametrize("basis", ["umap", "X_umap"])
def test_basis_with_or_without_x_prefix(adata: ad.AnnData, tmp_path: Path, basis: str) -> None:
    dec = decode(cl.ex.export(adata, tmp_path / "ds", basis=basis))
    assert sorted(dec.points) == [2, 3]
    assert sorted(dec.vectors) == ["T_fwd_umap", "velocity_umap"]


def test_spatial_basis_without_prefix(adata: ad.AnnData, tmp_path: Path) -> None:
    adata.obsm["spatial"] = adata.obsm["X_umap"] * 100
    adata.obsm["velocity_spatial"] = adata.obsm["velocity_umap"]
    dec = decode(cl.ex.export(adata, tmp_path / "ds", basis="spatial"))
    assert sorted(dec.points) == [2]
    assert sorted(dec.vectors) == ["velocity_spatial"]
    with pytest.raises(KeyError, match=r"looked for tsne, .*X_tsne, X_tsne_1d"):
        cl.ex.export(adata, tmp_path / "no", basis="tsne")


@pytest.mark.parametrize("basis", ["umap", "X_umap"])
def test_pp_functions_take_both_basis_forms(adata: ad.AnnData, basis: str) -> None:
    cl.pp.centroids(adata, groupby="cell_type", basis=basis)
    assert "cell_type_X_umap" in adata.uns["cellucid"]["centroids"]
    cl.pp.normalize_embedding(adata, key=basis)
    assert "X_umap_normalized" in adata.obsm
    cl.pp.outlier_quantiles_obs(adata, groupby="cell_type", use_rep=basis.replace("umap", "pca"))
    assert adata.obs["cell_type_outlier_quantile"].notna().any()
    with pytest.raises(KeyError, match=r"'tsne' is not a key of adata.obsm \(nor is 'X_tsne'\)"):
        cl.pp.centroids(adata, groupby="cell_type", basis="tsne")


# --- 5. keys that look like the basis but are not read -------------------------------------


@pytest.mark.parametrize("key", ["X_umap3d", "X_umap_3D", "X_umap3D"])
def test_misnamed_3d_embedding_is_warned_about(adata: ad.AnnData, tmp_path: Path, key: str) -> None:
    adata.obsm[key] = adata.obsm.pop("X_umap_3d")
    with pytest.warns(UserWarning, match=rf"obsm\['{key}'\] looks like a 3-D embedding") as record:
        dec = decode(cl.ex.export(adata, tmp_path / "ds"))
    assert sorted(dec.points) == [2]
    message = next(str(w.message) for w in record if key in str(w.message))
    assert f"adata.obsm['X_umap_3d'] = adata.obsm.pop('{key}')" in message


def test_lookalikes_of_found_dimensions_are_logged(
    adata: ad.AnnData, tmp_path: Path, caplog_cellucid
) -> None:
    adata.obsm["X_UMAP"] = adata.obsm["X_umap"]  # 2-D, which X_umap already gives
    adata.obsm["velocity_umap3d"] = adata.obsm["T_fwd_umap_3d"]
    with caplog_cellucid(logging.INFO) as records:
        cl.ex.export(adata, tmp_path / "ds")
    messages = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert any("obsm['X_UMAP'] looks like a 2-D embedding" in m for m in messages)
    assert any(
        "obsm['velocity_umap3d'] looks like a 3-D vector field" in m
        and "adata.obsm['velocity_umap_3d']" in m
        for m in messages
    )


# --- 6. genes by name ----------------------------------------------------------------------


def test_one_gene_as_a_string(adata: ad.AnnData, tmp_path: Path) -> None:
    dec = decode(cl.ex.export(adata, tmp_path / "ds", var_names="GENE003"))
    assert list(dec.genes) == ["GENE003"]


def test_unknown_genes_suggest_close_names(adata: ad.AnnData, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match=r"searched var_names\)\. Did you mean 'gene003': 'GENE003'"):
        cl.ex.export(adata, tmp_path / "ds", var_names=["gene003"])
    with pytest.raises(KeyError, match=r"'GENE0003': 'GENE003'"):
        cl.ex.export(adata, tmp_path / "ds", var_names=["GENE0003"])
    with pytest.raises(KeyError, match=r"searched var\['symbol'\]\)\. Did you mean 'SYM7': 'sym7'"):
        cl.ex.export(adata, tmp_path / "ds", var_names="SYM7", gene_id_column="symbol")
    assert not (tmp_path / "ds").exists()


def test_gene_symbols_is_an_alias_of_gene_id_column(adata: ad.AnnData, tmp_path: Path) -> None:
    dec = decode(cl.ex.export(adata, tmp_path / "ds", var_names="sym7", gene_symbols="symbol"))
    assert list(dec.genes) == ["sym7"]
    assert dec.var_manifest["var_gene_id_column"] == "symbol"
    with pytest.raises(ValueError, match="name the same option"):
        cl.ex.export(adata, tmp_path / "x", gene_symbols="symbol", gene_id_column="other")


# --- 9. one number format; stage times at debug level ---------------------------------------


def test_summary_numbers_and_stage_times(tmp_path: Path, caplog_cellucid) -> None:
    adata = make_adata(1200, 1100)
    with caplog_cellucid(logging.DEBUG) as records:
        cl.ex.export(adata, tmp_path / "ds")
    summary = next(r.getMessage() for r in records if r.getMessage().startswith("exported"))
    assert (
        "1,200 cells" in summary and "1,100 genes" in summary and "1,118 payload files" in summary
    )
    stages = {r.cellucid_stage: r.cellucid_seconds for r in records if hasattr(r, "cellucid_stage")}
    assert {"collect", "graph", "embeddings", "obs", "genes", "drain", "publish"} <= set(stages)
    assert {"genes.read", "genes.encode", "genes.write"} <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values())


# --- 12. what read returns writes to h5ad as is -------------------------------------------


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_read_back_writes_to_h5ad(adata: ad.AnnData, tmp_path: Path, layout: str) -> None:
    adata.obs["flag"] = adata.obs["is_doublet"]  # a bool category
    back = cl.ex.read(cl.ex.export(adata, tmp_path / "ds", layout=layout, compression=6))
    back.write_h5ad(tmp_path / "back.h5ad")
    again = ad.read_h5ad(tmp_path / "back.h5ad")
    uns, uns_again = back.uns["cellucid"], again.uns["cellucid"]
    assert uns_again["identity"] == uns["identity"]
    assert uns_again["layout"] == layout
    assert uns_again.get("export_settings") == uns.get("export_settings")
    for key, by_dim in uns["centroids"].items():
        assert sorted(uns_again["centroids"][key]) == sorted(by_dim)
        for dim, frame in by_dim.items():
            np.testing.assert_array_equal(
                uns_again["centroids"][key][dim]["n_points"], frame["n_points"]
            )
    for key, values in uns["outlier_quantiles"].items():
        np.testing.assert_array_equal(uns_again["outlier_quantiles"][key], values)
    assert list(again.obs.columns) == list(back.obs.columns)
