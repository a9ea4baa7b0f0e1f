"""Fingerprint the exported bytes of many export variants, to prove a refactor changed none.

Every variant is exported with ``gzip_encoder="zlib"`` and ``SOURCE_DATE_EPOCH=0`` (so the
bytes depend only on the code), then every file is hashed. Run it before and after a change
and compare::

    python benchmarks/fingerprint.py --json /tmp/before.json
    git switch my-branch
    python benchmarks/fingerprint.py --json /tmp/after.json --compare /tmp/before.json

With ``--decoded``, every variant is also hashed as decoded (``decoded/<variant>``: each
``.gz`` file's content): a change of gzip encoder must keep those while the raw ``.gz`` bytes
may change (``--stored-gzip`` takes the compiled CSR path at every size, not only in large
exports: quantized gzipped genes of in-memory CSR matrices are then gzipped from their
stored values).

The variants: both layouts; float32, 8- and 16-bit values; gzip off and on; all fields or
shuffled subsets of obs columns and genes; genes from dense, CSR and CSC matrices, a layer,
``raw``, a backed ``.h5ad`` and a dask array with sparse chunks; small memory budgets (many
gene blocks). The data are scanpy's ``pbmc68k_reduced`` (real) and a generated dataset from
``make_data.py`` (sparse log-counts, kNN graph, awkward ``obs``, vector fields).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import anndata as ad
import numpy as np
from scipy import sparse

os.environ["SOURCE_DATE_EPOCH"] = "0"

import cellucid as cl


def _pbmc() -> ad.AnnData:
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    adata.obsm["velocity_umap"] = np.random.default_rng(0).normal(0, 0.2, (adata.n_obs, 2))
    return adata


def _generated(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    import make_data

    path = folder / "generated.h5ad"
    make_data.main(["--cells", "6000", "--genes", "700", "--density", "0.05", "--out", str(path)])
    return path


def _variants(folder: Path) -> Iterator[tuple[str, Callable[[], ad.AnnData], dict]]:
    pbmc = _pbmc()
    path = _generated(folder)
    generated = ad.read_h5ad(path)
    rng = np.random.default_rng(1)
    obs_subset = list(rng.permutation(generated.obs.columns)[:5])
    genes_subset = list(rng.permutation(generated.var_names)[:97])
    # the generated genes 'A/B' and 'A_B' share a legacy file name, which that layout refuses
    legacy_genes = [g for g in generated.var_names if g != "A_B"]

    def with_x(adata: ad.AnnData, x: object) -> Callable[[], ad.AnnData]:
        def make() -> ad.AnnData:
            out = adata.copy()
            out.X = x
            return out

        return make

    settings = {
        "float32": {},
        "8bit+gzip6": {"var_quantization": 8, "obs_continuous_quantization": 8, "compression": 6},
        "16bit": {"var_quantization": 16, "obs_continuous_quantization": 16},
        "float32+gzip1": {"compression": 1},
    }
    for layout in ("current", "legacy"):
        genes = {"var_names": legacy_genes} if layout == "legacy" else {}
        for name, options in settings.items():
            yield f"pbmc/{layout}/{name}", pbmc.copy, {"layout": layout, **options}
            yield (
                f"generated/{layout}/{name}",
                generated.copy,
                {"layout": layout, **genes, **options},
            )
        yield (
            f"generated/{layout}/subsets",
            generated.copy,
            {"layout": layout, "obs_keys": obs_subset, "var_names": genes_subset, "compression": 6},
        )
    q8 = settings["8bit+gzip6"]
    yield "pbmc/raw", pbmc.copy, {"use_raw": True, **q8}
    yield "generated/dense", with_x(generated, generated.X.toarray()), q8
    yield "generated/csc", with_x(generated, sparse.csc_matrix(generated.X)), q8
    yield "generated/small-budget", generated.copy, {"memory_budget": 64 * 1024, **q8}
    yield "generated/backed", lambda: ad.read_h5ad(path, backed="r"), q8
    try:
        import dask.array as da
    except ImportError:
        return
    dask_x = da.from_array(sparse.csr_matrix(generated.X), chunks=(1000, 700), asarray=False)
    yield "generated/dask", with_x(generated, dask_x), q8


def fingerprint(out: Path, *, decoded: bool = False) -> dict[str, str]:
    """The sha256 of every file below ``out``, by relative path (``decoded``: of ``.gz`` files' content)."""
    return {
        str(p.relative_to(out)): hashlib.sha256(
            gzip.decompress(p.read_bytes()) if decoded and p.suffix == ".gz" else p.read_bytes()
        ).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def run(folder: Path, *, decoded: bool = False) -> dict[str, dict[str, str]]:
    """Export every variant into ``folder`` and fingerprint it (``decoded``: payloads as decoded, under ``decoded/``)."""
    results = {}
    warnings.simplefilter("ignore", UserWarning)  # the generated obs has NaN/Inf on purpose
    for name, make, options in _variants(folder):
        out = folder / "out" / name
        cl.ex.export(
            make(), out, dataset_name="fingerprint", gzip_encoder="zlib", progress=False, **options
        )
        results[name] = fingerprint(out)
        if decoded:
            results[f"decoded/{name}"] = fingerprint(out, decoded=True)
        print(f"{name}: {len(results[name])} files", flush=True)
    return results


def compare(before: dict, after: dict) -> list[str]:
    """Lines naming every variant and file whose bytes differ."""
    lines = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name, {}), after.get(name, {})
        changed = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
        if changed:
            lines.append(f"{name}: {len(changed)} files differ: {', '.join(changed[:8])}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the fingerprints here")
    parser.add_argument("--compare", type=Path, help="fingerprints to compare with")
    parser.add_argument(
        "--decoded",
        action="store_true",
        help="also hash each payload as decoded (gunzipped), as variants named decoded/...",
    )
    parser.add_argument(
        "--stored-gzip",
        action="store_true",
        help="compiled CSR path (stored-values gzip, ex/_sparse_gzip.py) at every size",
    )
    args = parser.parse_args(argv)
    if args.stored_gzip:
        from cellucid.ex import _genes

        _genes.COMPILED_MIN_STORED = 0
    with tempfile.TemporaryDirectory() as tmp:
        results = run(Path(tmp), decoded=args.decoded)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True))
    if args.compare:
        differences = compare(json.loads(args.compare.read_text()), results)
        print("\n".join(differences) or f"byte-identical: {len(results)} variants")
        return 1 if differences else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
