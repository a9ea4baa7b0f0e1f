"""``layout="legacy"`` payloads equal those of the original exporter (cellucid 0.0.9's ``prepare``).

The reference outputs in ``data/legacy`` were written by ``data/legacy/make_reference.py``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import anndata as ad
import pytest

import cellucid as cl

LEGACY = Path(__file__).parent / "data" / "legacy"
VARIANTS = json.loads((LEGACY / "variants.json").read_text())["variants"]
PAYLOAD_SUFFIXES = (".bin", ".f32", ".u8", ".u16")


def payload_files(root: Path) -> dict[str, bytes]:
    """Relative path (without .gz) -> decoded bytes of every payload file."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel.removesuffix(".gz").endswith(PAYLOAD_SUFFIXES):
            data = path.read_bytes()
            out[rel.removesuffix(".gz")] = gzip.decompress(data) if rel.endswith(".gz") else data
    return out


@pytest.fixture(scope="module")
def reference_input() -> ad.AnnData:
    return ad.read_h5ad(LEGACY / "input.h5ad")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_legacy_payloads_equal_reference(
    variant: str, reference_input: ad.AnnData, tmp_path: Path
) -> None:
    options = VARIANTS[variant]
    out = cl.ex.export(
        reference_input,
        tmp_path / variant,
        layout="legacy",
        latent_key="X_pca",
        var_quantization=options["var_quantization"],
        obs_continuous_quantization=options["obs_continuous_quantization"],
        obs_categorical_dtype=options["obs_categorical_dtype"],
        compression=options["compression"],
        dataset_name=options["dataset_name"],
    )
    ours = payload_files(out)
    reference = payload_files(LEGACY / options["out_dir"])
    assert sorted(ours) == sorted(reference)
    different = [name for name in reference if ours[name] != reference[name]]
    assert different == []
    # compressed exactly where the reference compressed
    gz_ours = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.gz"))
    gz_ref = sorted(
        p.relative_to(LEGACY / variant).as_posix() for p in (LEGACY / variant).rglob("*.gz")
    )
    assert gz_ours == gz_ref


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_legacy_manifests_match_reference_structure(
    variant: str, reference_input: ad.AnnData, tmp_path: Path
) -> None:
    options = VARIANTS[variant]
    out = cl.ex.export(
        reference_input,
        tmp_path / variant,
        layout="legacy",
        var_quantization=options["var_quantization"],
        obs_continuous_quantization=options["obs_continuous_quantization"],
        obs_categorical_dtype=options["obs_categorical_dtype"],
        compression=options["compression"],
    )
    ref_root = LEGACY / options["out_dir"]
    for name in ("obs_manifest.json", "var_manifest.json", "connectivity_manifest.json"):
        ours = json.loads((out / name).read_text())
        ref = json.loads((ref_root / name).read_text())
        assert ours.keys() == ref.keys(), name
    obs, ref_obs = (
        json.loads((root / "obs_manifest.json").read_text()) for root in (out, ref_root)
    )
    assert obs["_obsSchemas"] == ref_obs["_obsSchemas"]
    assert [f[0] for f in obs["_continuousFields"]] == [f[0] for f in ref_obs["_continuousFields"]]
    for ours_f, ref_f in zip(obs["_continuousFields"], ref_obs["_continuousFields"], strict=True):
        assert ours_f == ref_f  # key, and the quantization bounds when quantized
    for ours_f, ref_f in zip(obs["_categoricalFields"], ref_obs["_categoricalFields"], strict=True):
        assert ours_f[:4] == ref_f[:4]  # key, categories, dtype, missing code
        assert ours_f[5:] == ref_f[5:]  # outlier bounds
        for dim, cents in ref_f[4].items():
            assert [c["category"] for c in ours_f[4][dim]] == [c["category"] for c in cents]
            assert [c["n_points"] for c in ours_f[4][dim]] == [c["n_points"] for c in cents]
            for a, b in zip(ours_f[4][dim], cents, strict=True):
                assert a["position"] == pytest.approx(b["position"], abs=1e-6)
    var, ref_var = (
        json.loads((root / "var_manifest.json").read_text()) for root in (out, ref_root)
    )
    assert var["_varSchema"] == ref_var["_varSchema"]
    assert var["fields"] == ref_var["fields"]
    conn, ref_conn = (
        json.loads((root / "connectivity_manifest.json").read_text()) for root in (out, ref_root)
    )
    assert conn == ref_conn
