"""Property test: random AnnData and options → export → ``validate`` passes and every value reads back.

Each case is built by numpy's seeded Generator from its case number, so a failure names
the case that reproduces it (``CASE=<n> pytest tests/test_property.py``). ``N_CASES``
cases run in order (~15 s here); a time budget cuts them on a very slow machine.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _data import knn_graph
from _decode import MAX_Q, decode
from scipy import sparse

import cellucid as cl

N_CASES = 150
# a safety net on a very slow machine: the cases are cut there, at least MIN_CASES run
BUDGET_SECONDS = 90.0
MIN_CASES = 40
F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Case:
    """One random export: its input, options and what each obs column holds."""

    adata: ad.AnnData
    options: dict
    continuous: dict[str, np.ndarray] = field(default_factory=dict)  # float32 as written
    categorical: dict[str, list] = field(
        default_factory=dict
    )  # expected label per cell (None: missing)
    vectors: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)


def _with_gaps(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """Values with NaN, ±Inf or finite values beyond float32 sprinkled in (or none)."""
    values = values.astype(np.float64)
    pattern = rng.choice(["none", "nan", "inf", "all_nan", "overflow"])
    n = values.shape[0]
    at = rng.random(n) < rng.uniform(0.05, 0.5)
    if pattern == "nan":
        values[at] = np.nan
    elif pattern == "inf":
        values[at] = rng.choice([np.inf, -np.inf], int(at.sum()))
    elif pattern == "all_nan":
        values[:] = np.nan
    elif pattern == "overflow":
        values[at] = rng.choice([1e39, -1e300], int(at.sum()))
    return values


def _labels(rng: np.random.Generator, n: int) -> tuple[object, list]:
    """A categorical-like column and the label the viewer should show for each cell."""
    kind = rng.choice(["categorical", "strings", "bool", "ints", "mixed"])
    n_cat = int(rng.choice([1, 2, 5, 254, 255, 256, 300]))
    codes = rng.integers(0, n_cat, n)
    missing = rng.random(n) < rng.choice([0.0, 0.1])
    if kind == "categorical":
        cats = [f"cat {i}" for i in range(n_cat)]
        column = pd.Categorical.from_codes(np.where(missing, -1, codes), categories=cats)
        return column, [None if m else cats[c] for c, m in zip(codes, missing, strict=True)]
    if kind == "strings":
        values = [None if m else f"s{c}" for c, m in zip(codes, missing, strict=True)]
        return np.array(values, dtype=object), values
    if kind == "bool":
        flags = codes % 2 == 0
        if missing.any():
            values = [None if m else bool(f) for f, m in zip(flags, missing, strict=True)]
            return np.array(values, dtype=object), values
        return flags, [bool(f) for f in flags]
    if kind == "ints":
        return pd.Categorical(codes * 3), [int(c) * 3 for c in codes]
    pool = [1, "a", 2.5, True, "b", 7]
    raw = [None if m else pool[c % len(pool)] for c, m in zip(codes, missing, strict=True)]
    kinds = {type(v) for v in raw if v is not None}
    if len(kinds) > 1 and kinds <= {int, float}:  # numbers: pandas makes them floats, equal values
        expected = [None if v is None else float(v) for v in raw]
    else:  # several kinds: their strings, so that True and 1 stay apart
        expected = [None if v is None else (str(v) if len(kinds) > 1 else v) for v in raw]
    return np.array(raw, dtype=object), expected


def make_case(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 3, int(rng.integers(4, 300))]))
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    case = Case(ad.AnnData(obs=obs), {})
    adata = case.adata
    dims = [d for d in (1, 2, 3) if rng.random() < 0.5] or [int(rng.integers(1, 4))]
    for d in dims:
        magnitude = 10.0 ** rng.choice([-300, -3, 0, 5, 30, 300])
        coords = rng.normal(size=(n, d)) * magnitude + rng.normal() * magnitude
        if rng.random() < 0.1:
            coords[:] = coords[0]  # degenerate: every point equal
        dtype = np.float32 if abs(coords).max() < 1e30 and rng.random() < 0.5 else np.float64
        adata.obsm[f"X_umap_{d}d"] = coords.astype(dtype)
        if rng.random() < 0.4:
            vectors = rng.normal(size=(n, d)) * rng.choice([1e-3, 1.0, 1e3])
            adata.obsm[f"velocity_umap_{d}d"] = vectors
    n_genes = int(rng.choice([0, 1, 5, 20]))
    if n_genes:
        x = rng.poisson(0.5, (n, n_genes)) * rng.choice([1.0, 0.1, 1e6])
        if rng.random() < 0.3:
            x = x.astype(np.float64)
            x[rng.random(x.shape) < 0.05] = rng.choice([np.nan, np.inf, -np.inf])
        x = x.astype(rng.choice([np.float32, np.float64]))
        adata = case.adata = ad.AnnData(
            X=sparse.csr_matrix(x) if rng.random() < 0.5 else x, obs=obs, obsm=dict(adata.obsm)
        )
    if n >= 2 and rng.random() < 0.6:
        latent = rng.normal(size=(n, 4)).astype(np.float32)
        adata.obsm["X_pca"] = latent
        graph = knn_graph(latent, k=int(rng.integers(1, 6)))
        if rng.random() < 0.2:
            graph = sparse.triu(graph).tocsr()  # asymmetric: symmetrized with a warning
        adata.obsp["connectivities"] = graph
    n_obs = int(rng.integers(0, 5))
    layout = str(rng.choice(["current", "current", "legacy"]))
    for i in range(n_obs):
        # keys users write: spaces, slashes, non-ASCII, outer whitespace (not blank)
        key = str(rng.choice(["f{}", "naïve {}", "a/b {}", " padded {} ", "Ärzte-{}"])).format(i)
        if rng.random() < 0.5:
            base = rng.normal(size=n) * 10.0 ** rng.choice([-5, 0, 5])
            if rng.random() < 0.3:
                base = rng.integers(-5, 5, n).astype(np.int64)
                adata.obs[key] = base
                case.continuous[key] = base.astype(np.float32)
                continue
            values = _with_gaps(rng, base)
            adata.obs[key] = values
            with np.errstate(over="ignore"):
                case.continuous[key] = values.astype(np.float32)
        else:
            column, expected = _labels(rng, n)
            adata.obs[key] = column
            case.categorical[key] = expected
    case.options = {
        "compression": rng.choice([None, 1, 6, 9]),
        "gzip_encoder": str(rng.choice(["zlib", "zlib-ng"])),
        "var_quantization": rng.choice([None, 8, 16]),
        "obs_continuous_quantization": rng.choice([None, 8, 16]),
        "obs_categorical_dtype": str(rng.choice(["auto", "auto", "uint16"])),
        "centroid_outlier_quantile": rng.choice([None, 0.95, 0.5]),
        "layout": layout,
    }
    case.options = {
        k: (v.item() if isinstance(v, np.generic) else v) for k, v in case.options.items()
    }
    return case


def step(bits: int | None, lo: float, hi: float) -> float:
    """One quantization step, plus float32 rounding: how far a decoded value may be."""
    span = hi - lo
    return (span / MAX_Q[bits] if bits else 0.0) + 1e-6 * max(1.0, abs(lo), abs(hi))


def check_case(case: Case, out: Path) -> None:
    report = cl.ex.validate(out)
    assert report.ok, str(report)
    dec = decode(out, layout=case.options["layout"])
    adata, options = case.adata, case.options
    bits = options["obs_continuous_quantization"]
    for key, written in case.continuous.items():
        got = dec.continuous[key]
        finite = np.isfinite(written)
        assert np.isnan(got[~finite]).all(), key
        if finite.any():
            lo, hi = float(written[finite].min()), float(written[finite].max())
            tol = step(bits, lo, hi)
            err = np.abs(got[finite].astype(np.float64) - written[finite])
            assert (err <= tol).all(), (key, float(err.max()), tol)
    for key, expected in case.categorical.items():
        cats, codes = dec.categories[key], dec.codes[key]
        missing = 255 if codes.dtype == np.uint8 else 65535
        got = [None if c == missing else cats[c] for c in codes.tolist()]
        if options["layout"] == "legacy":  # labels are strings there
            expected = [None if v is None else str(v) for v in expected]
        assert got == expected, key
        assert all(type(g) is type(e) for g, e in zip(got, expected, strict=True)), key
    for key in (k for k in adata.obsm if k.startswith("X_umap_")):
        d = int(key[-2])
        x = np.asarray(adata.obsm[key], dtype=np.float64)
        if (
            options["layout"] == "legacy"
        ):  # the original design: float32, extents under 1e-8 count as 1
            x = x.astype(np.float32)
            lo, hi = x.min(0), x.max(0)
            extent = float((hi - lo).max())
            half = extent / 2 if extent >= 1e-8 else 0.5
            expected = (x - (lo + hi) / 2) * np.float32(1 / half)
        else:
            lo, hi = x.min(0), x.max(0)
            half = float((hi / 2 - lo / 2).max()) or 0.5
            expected = (x - (lo / 2 + hi / 2)) / half
        points = dec.points[d]
        assert np.isfinite(points).all() and np.abs(points).max() <= 1 + 1e-5
        assert np.allclose(points, expected, atol=1e-5 if options["layout"] == "legacy" else 1e-6)
        vectors = adata.obsm.get(f"velocity_umap_{d}d")
        if vectors is not None:
            got = dec.vectors["velocity_umap"][d]
            assert np.allclose(got, vectors / half, rtol=1e-5, atol=1e-30)
    if adata.n_vars:
        vbits = options["var_quantization"]
        x = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
        x = x.astype(np.float32)
        for j, name in enumerate(adata.var_names):
            got, want = dec.genes[name], x[:, j]
            finite = np.isfinite(want)
            assert np.isnan(got[~finite]).all(), name
            if finite.any():
                lo, hi = float(want[finite].min()), float(want[finite].max())
                err = np.abs(got[finite].astype(np.float64) - want[finite])
                assert (err <= step(vbits, lo, hi)).all(), name
    if "connectivities" in adata.obsp:
        g = sparse.csr_matrix(adata.obsp["connectivities"])
        g = g.maximum(g.T).tocsr()
        upper = sparse.triu(g, k=1).tocoo()
        src, dst, weights = dec.edges
        assert src.shape[0] == upper.nnz
        order = np.lexsort((upper.col, upper.row))
        assert np.array_equal(src, upper.row[order]) and np.array_equal(dst, upper.col[order])
        if weights is not None:
            assert np.array_equal(weights, upper.data[order].astype(np.float64))


#: refusals a random case may meet: the input is one the viewer cannot show
EXPECTED_REFUSALS = (
    "span only",
    "legacy layout's float32 arithmetic",
    "overflows float32 once scaled",
)


def test_random_exports_validate_and_read_back(tmp_path: Path) -> None:
    only = os.environ.get("CASE")
    seeds = [int(only)] if only else range(N_CASES)
    start = time.perf_counter()
    done = refusals = 0
    for seed in seeds:
        if done >= MIN_CASES and time.perf_counter() - start > BUDGET_SECONDS:
            break
        case = make_case(seed)
        out = tmp_path / f"case{seed}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # missing values, symmetrizing
                warnings.simplefilter("error", RuntimeWarning)  # no overflow nor invalid value
                cl.ex.export(case.adata, out, **case.options)
        except ValueError as error:
            if not any(s in str(error) for s in EXPECTED_REFUSALS):
                pytest.fail(f"case {seed} ({case.options}): {error}")
            refusals += 1
        else:
            try:
                check_case(case, out)
            except AssertionError as error:
                pytest.fail(f"case {seed} ({case.options}): {error!r}")
        done += 1
    print(f"{done} random exports, {refusals} refused")  # shown with -s
    assert done >= (1 if only else MIN_CASES)
    assert refusals < done / 2
