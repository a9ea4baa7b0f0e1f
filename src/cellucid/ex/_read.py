"""Read an export directory back into an AnnData."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse

from .._format import (
    CATALOG_FILE,
    CODES_MISSING,
    CONNECTIVITY_MANIFEST,
    EXT,
    FLOAT_DTYPE,
    IDENTITY_FILE,
    OBS_MANIFEST,
    QUANT_DTYPE,
    VAR_MANIFEST,
    WEIGHT_DTYPE,
)
from .._layout import Layout
from ..pp._quantize import dequantize
from ._cloud import is_remote, mirrored, renamed, single_dataset
from ._publish import recover
from ._read_uns import cellucid_uns
from ._store import local_path, refuse_local_options
from ._validate._dataset import _DatasetChecker

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

#: quantized payload dtype -> its bits
_BITS = {dtype: bits for bits, dtype in QUANT_DTYPE.items()}
#: the basis of the embeddings the export writes
_BASIS = "umap"


class _ObsField(NamedTuple):
    """One obs field of the manifest, in the shape both layouts share."""

    index: int | None
    key: str
    kind: str
    entry: list


def read(
    path: str | os.PathLike[str],
    *,
    genes: bool = True,
    var_names: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> AnnData:
    """Read a Cellucid export directory back into an AnnData.

    Both the current layout (payloads named by field index) and the legacy layout
    (payloads named by field key) are read. Values come back as the viewer sees them:
    quantized values are decoded to float32 and missing codes become NaN.

    Parameters
    ----------
    path
        A dataset directory, the one holding ``dataset_identity.json``; or its URL
        (``s3://bucket/exports/pbmc``, any store fsspec reaches), also the URL
        :func:`~cellucid.ex.export` published a dataset to.
    genes
        Load the gene payloads into ``X``. With ``False``, ``X`` is None and only the gene
        names are read, which is much faster for many genes.
    var_names
        Read only these genes, in this order (names as the var manifest has them). None
        reads every gene.
    storage_options
        Options of the fsspec filesystem when ``path`` is a URL.

    Raises
    ------
    FileNotFoundError
        ``path`` holds no ``dataset_identity.json``.
    ValueError
        The export breaks a rule of the format: the message names the file and the rule
        (``cl.ex.validate`` lists every problem). Exports are read as untrusted input: the
        checks of :func:`~cellucid.ex.validate` run first, sizes come from the checked
        manifests, decoding stops at the expected length, and no symbolic link out of the
        export is followed.
    KeyError
        A name of ``var_names`` is not a gene of the export.

    Returns
    -------
    An AnnData with

    * ``obs``: every obs field in its export order (the field indices of the current
      layout, the identity's ``obs_fields`` order for the legacy one), continuous fields
      as float32 and categorical fields as pandas categoricals whose categories keep
      their JSON types (strings, numbers, booleans; the legacy writer made them all
      strings); ``obs_names`` are ``"0"`` to ``"n-1"`` (exports keep no cell names);
    * ``X``: float32 gene values, CSR when more than half of them are zero, else dense;
      ``var_names`` are the gene names of the var manifest;
    * ``obsm["X_umap_<d>d"]``: the normalized embedding of each dimension (float32);
    * ``obsm["<field>_<d>d"]``: each vector field and dimension, in the units of the
      normalized embedding (float32);
    * ``obsp["connectivities"]``: the symmetric kNN graph (CSR, float64); the legacy
      layout stores no weights, so its edges get weight 1;
    * ``uns["cellucid"]``: ``"identity"`` (the text of ``dataset_identity.json``, for
      :func:`json.loads`), ``"centroids"`` (per categorical field, a dict dimension
      (``"1"``, ``"2"``, ``"3"``) -> DataFrame with columns ``category``, ``n_points`` and
      ``x``/``y``/``z``), ``"outlier_quantiles"`` (per categorical field, float32 per cell,
      NaN where unavailable), ``"export_settings"`` (absent when the export has none; a
      setting that is off, null in the file, is left out) and ``"layout"``
      (``"current"`` or ``"legacy"``). All of it is stored by ``write_h5ad`` as is.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> path = cl.ex.export(adata, "exports/pbmc68k")
    >>> back = cl.ex.read(path)
    >>> back.obsm["X_umap_2d"].shape
    (700, 2)

    """
    import anndata as ad

    if is_remote(path):
        with mirrored(str(path), storage_options) as local:
            try:
                return read(single_dataset(local), genes=genes, var_names=var_names)
            except (FileNotFoundError, ValueError) as e:
                raise renamed(e, local, str(path)) from None
    refuse_local_options(path, storage_options)
    root = local_path(path)
    recover(root)  # what an interrupted export left beside it
    identity_path = root / IDENTITY_FILE
    if not identity_path.is_file():
        msg = f"{str(root)!r} is not a Cellucid export: it has no {IDENTITY_FILE}."
        if (root / CATALOG_FILE).is_file():
            msg += f" It holds a {CATALOG_FILE} catalog; read one of the dataset folders it lists."
        raise FileNotFoundError(msg)
    if isinstance(var_names, str):
        var_names = [var_names]
    wanted = None if genes and var_names is None else [] if not genes else list(var_names or [])
    # every rule of the format first: what passes is what the code below may rely on
    checker = _DatasetChecker(root, "", genes=wanted)
    checker.run()
    _raise_first(checker, root, 0)
    identity, obs_manifest, var_manifest, conn_manifest = checker.documents
    n_cells = int(identity["stats"]["n_cells"])
    layout = checker.facts.lay
    payloads = _Payloads(checker, root)

    obsm = _read_embeddings(payloads, identity, n_cells)
    for key, value in _read_vector_fields(payloads, identity, n_cells).items():
        if key in obsm:
            msg = f"Vector field file {key!r} clashes with an embedding of the same obsm key."
            raise ValueError(msg)
        obsm[key] = value

    obs_names = pd.Index(np.arange(n_cells).astype(str))
    obs = pd.DataFrame(index=obs_names)
    centroids: dict[str, dict[int, pd.DataFrame]] = {}
    outliers: dict[str, np.ndarray] = {}
    if obs_manifest is not None:
        obs, centroids, outliers = _read_obs(
            payloads, obs_manifest, identity, layout, n_cells, obs_names
        )

    x, var = None, pd.DataFrame(index=pd.Index([], dtype=str))
    if var_manifest is not None:
        x, var = _read_var(
            payloads, var_manifest, layout, n_cells, genes=genes, var_names=var_names
        )
    elif var_names is not None and len(var_names):
        msg = f"var_names were given but the export at {str(root)!r} has no genes."
        raise KeyError(msg)

    obsp = {}
    if conn_manifest is not None:
        obsp["connectivities"] = _read_connectivities(payloads, conn_manifest, n_cells)

    uns = {"cellucid": cellucid_uns(identity, centroids, outliers, layout.name)}
    if x is None:
        return ad.AnnData(obs=obs, var=var, obsm=obsm, obsp=obsp, uns=uns)
    return ad.AnnData(X=x, obs=obs, var=var, obsm=obsm, obsp=obsp, uns=uns)


# --- files -----------------------------------------------------------------------------------


def _raise_first(checker: _DatasetChecker, root: Path, since: int) -> None:
    """Raise a ValueError naming the first problem the checker found after ``since``."""
    problems = checker.problems[since:]
    if not problems:
        return
    more = (
        f" (and {len(problems) - 1} more: cellucid validate lists them)"
        if len(problems) > 1
        else ""
    )
    msg = f"Cannot read the export at {str(root)!r}: {problems[0]}{more}."
    raise ValueError(msg)


class _Payloads:
    """Reads the payloads of a checked export through its checker (bounded, no link out)."""

    def __init__(self, checker: _DatasetChecker, root: Path) -> None:
        self.checker = checker
        self.root = root

    def array(self, relpath: str, dtype: np.dtype | str, n_values: int) -> np.ndarray:
        """Read a payload of exactly ``n_values`` values, or raise a ValueError naming it."""
        dtype = np.dtype(dtype).newbyteorder("<")
        out = np.empty(n_values, dtype=dtype)
        since = len(self.checker.problems)
        filled = 0
        for chunk in self.checker.payload_chunks(relpath, dtype, n_values):
            take = chunk[: n_values - filled]
            out[filled : filled + take.size] = take
            filled += take.size
        _raise_first(self.checker, self.root, since)
        if filled != n_values:  # the file changed after it was checked
            msg = f"Payload {relpath!r} of the export at {str(self.root)!r} changed while it was read."
            raise ValueError(msg)
        return out


def _decode(
    values: np.ndarray, *, quantized: bool, vmin: Any = None, vmax: Any = None
) -> np.ndarray:
    """Decode a continuous payload (quantized codes or float32) to float32 with NaN for missing."""
    if not quantized:
        return values.astype(np.float32)  # a writeable copy
    bits = _BITS[values.dtype.name]
    if not (isinstance(vmin, int | float) and isinstance(vmax, int | float)):
        msg = f"Quantized values need numeric min and max, got {vmin!r} and {vmax!r}."
        raise ValueError(msg)
    return dequantize(values, vmin=float(vmin), vmax=float(vmax), bits=bits)


def _read_continuous(
    root: _Payloads,
    relpath: str,
    *,
    dtype: object,
    quantized: bool,
    bounds: list,
    n_cells: int,
    what: str,
) -> np.ndarray:
    """Read and decode a per-cell float payload: quantized codes within ``bounds`` or float32."""
    allowed = ("uint8", "uint16") if quantized else ("float32",)
    values = root.array(relpath, _payload_dtype(dtype, allowed, what), n_cells)
    vmin, vmax = bounds if quantized and len(bounds) == 2 else (None, None)
    return _decode(values, quantized=quantized, vmin=vmin, vmax=vmax)


def _payload_dtype(name: object, allowed: tuple[str, ...], what: str) -> np.dtype:
    if name not in allowed:
        msg = f"{what} has dtype {name!r}; expected one of {allowed}."
        raise ValueError(msg)
    return np.dtype(str(name)).newbyteorder("<")


# --- embeddings and vectors -------------------------------------------------------------------


def _read_per_dimension(
    root: _Payloads, entry: dict, n_cells: int, what: str
) -> dict[int, np.ndarray]:
    """Read an identity entry's ``files`` for each of its ``available_dimensions`` (float32, n × d)."""
    files = entry.get("files") or {}
    out = {}
    for dim in entry.get("available_dimensions") or []:
        relpath = files.get(f"{dim}d")
        if relpath is None:
            msg = f"{what} lists dimension {dim} but no file for it."
            raise ValueError(msg)
        values = root.array(relpath, FLOAT_DTYPE, n_cells * dim)
        out[dim] = values.astype(np.float32).reshape(n_cells, dim)
    return out


def _read_embeddings(root: _Payloads, identity: dict, n_cells: int) -> dict[str, np.ndarray]:
    coords = _read_per_dimension(root, identity.get("embeddings") or {}, n_cells, IDENTITY_FILE)
    return {f"X_{_BASIS}_{dim}d": values for dim, values in coords.items()}


def _read_vector_fields(root: _Payloads, identity: dict, n_cells: int) -> dict[str, np.ndarray]:
    fields = (identity.get("vector_fields") or {}).get("fields") or {}
    obsm = {}
    for field_id, meta in fields.items():
        vectors = _read_per_dimension(root, meta, n_cells, f"Vector field {field_id!r}")
        obsm.update({f"{field_id}_{dim}d": values for dim, values in vectors.items()})
    return obsm


# --- obs ---------------------------------------------------------------------------------------


def _obs_fields(manifest: dict, identity: dict, layout: Layout) -> list[_ObsField]:
    """Return the manifest's obs fields in export order."""
    fields = []
    for kind, name in (("continuous", "_continuousFields"), ("category", "_categoricalFields")):
        for entry in manifest.get(name) or []:
            index, key, rest = layout.entry_split(entry)
            if layout.name == "current" and (isinstance(index, bool) or not isinstance(index, int)):
                msg = f"{OBS_MANIFEST} field {entry[:2]!r} has no integer index."
                raise ValueError(msg)
            fields.append(_ObsField(index, str(key), kind, rest))  # type: ignore[arg-type]
    keys = [f.key for f in fields]
    if len(set(keys)) != len(keys):
        msg = f"{OBS_MANIFEST} has duplicate field keys."
        raise ValueError(msg)
    if layout.name == "current":
        indices = sorted(f.index for f in fields)
        if indices != list(range(len(fields))):
            msg = f"{OBS_MANIFEST} field indices are {indices}, expected 0..{len(fields) - 1}."
            raise ValueError(msg)
        return sorted(fields, key=lambda f: f.index)
    # legacy entries have no index: the identity lists the fields in export order
    order = {
        str(f.get("key")): i
        for i, f in enumerate(identity.get("obs_fields") or [])
        if isinstance(f, dict)
    }
    return sorted(fields, key=lambda f: order.get(f.key, len(order)))


def _categories_index(categories: object, key: str) -> pd.Index:
    """Return the categories as an Index that keeps their JSON types."""
    if not isinstance(categories, list) or any(
        c is None or isinstance(c, dict | list) for c in categories
    ):
        msg = f"obs field {key!r}: categories must be a list of strings, numbers or booleans."
        raise ValueError(msg)
    kinds = {type(c) for c in categories}
    index = pd.Index(categories) if len(kinds) == 1 else pd.Index(categories, dtype=object)
    if not index.is_unique:
        msg = f"obs field {key!r} has duplicate categories: {categories!r}."
        raise ValueError(msg)
    return index


def _read_obs(
    root: _Payloads,
    manifest: dict,
    identity: dict,
    layout: Layout,
    n_cells: int,
    obs_names: pd.Index,
) -> tuple[pd.DataFrame, dict, dict]:
    schemas = manifest.get("_obsSchemas") or {}
    columns: dict[str, Any] = {}
    centroids: dict[str, dict[int, pd.DataFrame]] = {}
    outliers: dict[str, np.ndarray] = {}
    for field in _obs_fields(manifest, identity, layout):
        if field.kind == "continuous":
            schema = schemas.get("continuous") or {}
            columns[field.key] = _read_continuous(
                root,
                layout.fill(schema.get("pathPattern"), field.index, field.key),
                dtype=schema.get("dtype"),
                quantized=bool(schema.get("quantized")),
                bounds=field.entry[:2],
                n_cells=n_cells,
                what=f"obs field {field.key!r}",
            )
            continue
        schema = schemas.get("categorical") or {}
        categories, codes_dtype, missing, by_dim = field.entry[:4]
        cats = _categories_index(categories, field.key)
        dtype = _payload_dtype(codes_dtype, tuple(CODES_MISSING), f"obs field {field.key!r} codes")
        if missing != CODES_MISSING[dtype.name]:
            msg = f"obs field {field.key!r}: missing code {missing!r} does not match {dtype.name} codes."
            raise ValueError(msg)
        relpath = layout.fill(
            schema.get("codesPathPattern"), field.index, field.key, EXT[dtype.name]
        )
        codes = root.array(relpath, dtype, n_cells).astype(np.int64)
        is_missing = codes == missing
        bad = ~is_missing & (codes >= len(cats))
        if bad.any():
            msg = (
                f"obs field {field.key!r}: {int(bad.sum()):,} codes are outside its "
                f"{len(cats)} categories and not the missing code {missing}."
            )
            raise ValueError(msg)
        codes[is_missing] = -1
        columns[field.key] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats))
        centroids[field.key] = _centroid_frames(by_dim, cats, field.key)

        outliers[field.key] = _read_continuous(
            root,
            layout.fill(schema.get("outlierPathPattern"), field.index, field.key),
            dtype=schema.get("outlierDtype"),
            quantized=bool(schema.get("outlierQuantized")),
            bounds=field.entry[4:6],
            n_cells=n_cells,
            what=f"obs field {field.key!r} outlier quantiles",
        )
    obs = pd.DataFrame(columns, index=obs_names) if columns else pd.DataFrame(index=obs_names)
    return obs, centroids, outliers


def _centroid_frames(by_dim: object, categories: pd.Index, key: str) -> dict[int, pd.DataFrame]:
    """Return one DataFrame (``category``, ``n_points``, ``x``/``y``/``z``) per dimension."""
    if not isinstance(by_dim, dict):
        msg = f"obs field {key!r}: centroidsByDim must be an object, got {type(by_dim).__name__}."
        raise ValueError(msg)
    frames = {}
    for dim_key, items in by_dim.items():
        dim = int(dim_key)
        items = items or []
        positions = np.array([item["position"] for item in items], dtype=np.float64).reshape(
            len(items), dim
        )
        labels = [item["category"] for item in items]
        if all(label in categories for label in labels):
            category = pd.Categorical(labels, dtype=pd.CategoricalDtype(categories))
        else:  # a writer that stringified non-string labels (the legacy one does)
            category = pd.Categorical(labels)
        frame = pd.DataFrame(
            {
                "category": category,
                "n_points": np.array([item["n_points"] for item in items], dtype=np.int64),
            }
        )
        for axis, name in enumerate("xyz"[:dim]):
            frame[name] = positions[:, axis]
        frames[dim] = frame
    return frames


# --- var -----------------------------------------------------------------------------------------


def _read_var(
    root: _Payloads,
    manifest: dict,
    layout: Layout,
    n_cells: int,
    *,
    genes: bool,
    var_names: Sequence[str] | None,
) -> tuple[sparse.csr_matrix | np.ndarray | None, pd.DataFrame]:
    entries = []
    for entry in manifest.get("fields") or []:
        index, name, rest = layout.entry_split(entry)
        entries.append((index, str(name), rest))
    if layout.name == "current":
        if any(isinstance(e[0], bool) or not isinstance(e[0], int) for e in entries):
            msg = f"{VAR_MANIFEST} has a field without an integer index."
            raise ValueError(msg)
        indices = sorted(e[0] for e in entries)
        if indices != list(range(len(entries))):
            msg = f"{VAR_MANIFEST} field indices are not 0..{len(entries) - 1}."
            raise ValueError(msg)
        entries.sort(key=lambda e: e[0])
    by_name = {e[1]: e for e in entries}
    if len(by_name) != len(entries):
        msg = f"{VAR_MANIFEST} has duplicate gene names."
        raise ValueError(msg)
    if var_names is not None:
        if isinstance(var_names, str):
            var_names = [var_names]
        names = [str(name) for name in var_names]
        missing = [name for name in names if name not in by_name]
        if missing:
            msg = f"{len(missing)} of the var_names are not genes of the export: {missing[:10]}."
            raise KeyError(msg)
        if len(set(names)) != len(names):
            msg = "var_names has duplicates."
            raise ValueError(msg)
        entries = [by_name[name] for name in names]
    var = pd.DataFrame(index=pd.Index([e[1] for e in entries], dtype=str))
    if not genes:
        return None, var

    schema = manifest.get("_varSchema") or {}
    pattern = schema.get("pathPattern")
    # each gene's non-zero values; NaN (missing) counts as non-zero
    rows, values = [], []
    for index, name, rest in entries:
        column = _read_continuous(
            root,
            layout.fill(pattern, index, name),
            dtype=schema.get("dtype"),
            quantized=bool(schema.get("quantized")),
            bounds=rest[:2],
            n_cells=n_cells,
            what="gene values",
        )
        nonzero = np.flatnonzero(column != 0)
        rows.append(nonzero.astype(np.int64))
        values.append(column[nonzero])
    return _assemble_x(rows, values, n_cells), var


def _assemble_x(
    rows: list[np.ndarray], values: list[np.ndarray], n_cells: int
) -> sparse.csr_matrix | np.ndarray:
    """Build ``X`` from per-gene non-zeros: CSR when more than half the values are zero."""
    n_genes = len(rows)
    counts = np.array([r.size for r in rows], dtype=np.int64)
    nnz = int(counts.sum())
    all_rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    all_values = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    cols = np.repeat(np.arange(n_genes, dtype=np.int64), counts)
    if n_genes and (n_cells * n_genes - nnz) * 2 > n_cells * n_genes:
        x = sparse.csr_matrix(
            (all_values, (all_rows, cols)), shape=(n_cells, n_genes), dtype=np.float32
        )
        x.sort_indices()
        return x
    x = np.zeros((n_cells, n_genes), dtype=np.float32)
    x[all_rows, cols] = all_values
    return x


# --- connectivity --------------------------------------------------------------------------------


def _read_connectivities(root: _Payloads, manifest: dict, n_cells: int) -> sparse.csr_matrix:
    if manifest.get("n_cells") != n_cells:
        msg = (
            f"{CONNECTIVITY_MANIFEST} has n_cells={manifest.get('n_cells')!r} "
            f"but the identity has {n_cells:,} cells."
        )
        raise ValueError(msg)
    n_edges = manifest.get("n_edges")
    if isinstance(n_edges, bool) or not isinstance(n_edges, int) or n_edges < 0:
        msg = f"{CONNECTIVITY_MANIFEST} has an invalid n_edges {n_edges!r}."
        raise ValueError(msg)
    dtype = _payload_dtype(manifest.get("index_dtype"), ("uint16", "uint32"), "edge indices")
    src = root.array(manifest.get("sourcesPath"), dtype, n_edges).astype(np.int64)
    dst = root.array(manifest.get("destinationsPath"), dtype, n_edges).astype(np.int64)
    if "weightsPath" in manifest:
        weights = root.array(manifest["weightsPath"], WEIGHT_DTYPE, n_edges).astype(np.float64)
    else:  # the legacy layout keeps no weights
        weights = np.ones(n_edges, dtype=np.float64)
    if n_edges and (max(int(src.max()), int(dst.max())) >= n_cells):
        msg = f"Edge indices of {CONNECTIVITY_MANIFEST} reach past its {n_cells:,} cells."
        raise ValueError(msg)
    if (src == dst).any():
        msg = f"{CONNECTIVITY_MANIFEST} lists self-edges; edges must have src < dst."
        raise ValueError(msg)
    rows = np.concatenate([src, dst])
    cols = np.concatenate([dst, src])
    graph = sparse.csr_matrix(
        (np.concatenate([weights, weights]), (rows, cols)),
        shape=(n_cells, n_cells),
        dtype=np.float64,
    )
    if graph.nnz != 2 * n_edges:
        msg = f"{CONNECTIVITY_MANIFEST} lists some edges more than once."
        raise ValueError(msg)
    graph.sort_indices()
    return graph
