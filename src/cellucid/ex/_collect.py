"""Collect what an export needs from an AnnData, checking it before anything is written."""

from __future__ import annotations

import difflib
import logging
import re
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .._format import (
    DIMENSIONS,
    JS_WHITESPACE,
    LEGACY_MAX_STEM,
    MAX_FILE_NAME_BYTES,
    is_blank,
    safe_filename_component,
)
from .._layout import Layout
from .._warn import user_stacklevel
from ..pp._anndata import basis_key
from ._columns import checked_column, refuse_complex
from ._genes import is_dask
from ._limits import check_payload_sizes

if TYPE_CHECKING:
    from anndata import AnnData

    from ._settings import Selection

logger = logging.getLogger("cellucid")

#: latent spaces tried, in order, when ``latent_key`` is not given
LATENT_KEYS = ("X_scVI", "X_pca")

FieldKind = Literal["continuous", "category"]


@dataclass(frozen=True)
class ObsField:
    """One ``obs`` column to export: its index, key, kind and values."""

    index: int
    key: str
    kind: FieldKind
    values: pd.Series


@dataclass(frozen=True)
class GeneSource:
    """Where gene values come from: a cells × genes matrix, the columns to export and their names."""

    matrix: object
    columns: np.ndarray
    names: list[str]
    id_column: str | None


@dataclass(frozen=True)
class Collected:
    """Everything an export writes, as found in the AnnData (see :func:`collect`)."""

    n_cells: int
    embeddings: dict[int, np.ndarray]
    embedding_keys: dict[int, str]
    latent: np.ndarray | None = None
    latent_key: str | None = None
    vector_fields: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    graph: sparse.csr_matrix | None = None
    graph_key: str | None = None
    obs_fields: tuple[ObsField, ...] = ()
    genes: GeneSource | None = None


def collect(adata: AnnData, selection: Selection, *, layout: Layout) -> Collected:
    """Return everything an export of ``adata`` writes, checked before anything is written.

    Lazy (dask) arrays the export needs are computed together (:func:`materialize`); the
    lengths, the file names of the legacy layout and the viewer's size limits are checked.
    """
    if adata.n_obs == 0:
        msg = "adata has no cells; the viewer needs at least one."
        raise ValueError(msg)
    s = selection
    loaded = materialize(adata, s)
    embeddings, embedding_keys = collect_embeddings(loaded, s.basis)
    report_lookalikes(loaded, s.basis, embeddings, vector_fields=s.vector_fields is not False)
    latent, latent_key = collect_latent(loaded, s.latent_key)
    vector_fields = collect_vector_fields(loaded, s.basis, embeddings, s.vector_fields)
    obs_fields = collect_obs(adata, s.obs_keys, layout)
    genes = collect_genes(adata, s, layout=layout)
    graph, graph_key = collect_graph(loaded, s.connectivities_key)
    found = Collected(
        n_cells=adata.n_obs,
        embeddings=embeddings,
        embedding_keys=embedding_keys,
        latent=latent,
        latent_key=latent_key,
        obs_fields=tuple(obs_fields),
        vector_fields=vector_fields,
        graph=graph,
        graph_key=graph_key,
        genes=genes,
    )
    check_lengths(found)
    if layout.name == "legacy":
        refuse_name_collisions(list(found.vector_fields), "vector fields")
    check_payload_sizes(found)
    return found


def frame(df: object) -> pd.DataFrame:
    """Return ``obs``/``var`` as a pandas DataFrame (a lazily read one is loaded: it is small)."""
    return df if isinstance(df, pd.DataFrame) else df.to_memory()


def _width(value: object) -> int:
    """Columns of an obsm value, read from its shape (a lazy array is not computed for it)."""
    shape = value.shape
    return int(shape[1]) if len(shape) == 2 else 1


def vector_field_pattern(basis: str) -> re.Pattern:
    """``<field>_<basis>`` or ``<field>_<basis>_<d>d``."""
    return re.compile(rf"^(?P<field>.+_{re.escape(basis)})(?:_(?P<dim>[123])d)?$")


def basis_names(keys: Collection[str], basis: str) -> tuple[str, str]:
    """Return the embedding's ``obsm`` key and the name its vector fields end with.

    As scanpy's plotting reads ``basis``: ``"X_umap"`` and ``"umap"`` both give
    ``("X_umap", "umap")``; ``"spatial"`` gives ``("spatial", "spatial")`` when
    ``obsm["spatial"]`` (or ``spatial_2d``, ...) exists. The embedding's keys are the key
    and the key followed by ``_1d``, ``_2d`` or ``_3d``.
    """
    key = basis_key(keys, basis, suffixes=("", *(f"_{d}d" for d in DIMENSIONS)))
    return key, key.removeprefix("X_")


def _embedding_keys(key: str) -> list[str]:
    return [key, *(f"{key}_{d}d" for d in DIMENSIONS)]


def graph_key(adata: AnnData | Source, connectivities_key: str | None) -> str:
    """Return the obsp key of the kNN graph: given, or named by ``uns["neighbors"]``, else ``connectivities``."""
    if connectivities_key is not None:
        return connectivities_key
    neighbors = adata.uns.get("neighbors", {})
    return (
        neighbors.get("connectivities_key", "connectivities")
        if isinstance(neighbors, dict)
        else "connectivities"
    )


@dataclass(frozen=True)
class Source:
    """The parts of an AnnData export reads whole, with lazy (dask) ones computed together."""

    obsm: dict
    obsp: dict
    uns: object


def materialize(adata: AnnData, selection: Selection) -> Source:
    """Return ``obsm``/``obsp`` with every lazy array the export needs computed in one go.

    One ``dask.compute`` call lets the user's scheduler load them in parallel; lazy arrays
    the export does not use stay lazy.
    """
    latent_key, vector_fields = selection.latent_key, selection.vector_fields
    connectivities_key = selection.connectivities_key
    obsm = {k: adata.obsm[k] for k in adata.obsm}
    obsp = {k: adata.obsp[k] for k in adata.obsp}
    latent = (
        latent_key if latent_key is not None else next((k for k in LATENT_KEYS if k in obsm), None)
    )
    key, name = basis_names(obsm, selection.basis)
    pattern = vector_field_pattern(name)
    embedding_names = set(_embedding_keys(key))

    def needed(key: str) -> bool:
        if key in embedding_names or key == latent:
            return True
        return (
            key in vector_fields
            if not isinstance(vector_fields, bool)
            else vector_fields and bool(pattern.match(key))
        )

    wanted = [("obsm", k) for k, v in obsm.items() if is_dask(v) and needed(k)]
    if connectivities_key is not False:
        key = graph_key(adata, connectivities_key)
        if is_dask(obsp.get(key)):
            wanted.append(("obsp", key))
    if wanted:
        import dask

        values = dask.compute(*[(obsm if where == "obsm" else obsp)[k] for where, k in wanted])
        for (where, key), value in zip(wanted, values, strict=True):
            (obsm if where == "obsm" else obsp)[key] = value
    return Source(obsm, obsp, adata.uns)


def _dense(value: object, what: str) -> np.ndarray:
    refuse_complex(value, what)
    value = value.toarray() if sparse.issparse(value) else np.asarray(value)
    return value.reshape(value.shape[0], -1) if value.ndim != 2 else value


def _all_finite(array: np.ndarray) -> bool:
    """Whether every value is finite: a numeric array's minimum and maximum are (NaN propagates).

    Two reductions instead of a boolean array as large as the input (a latent space).
    """
    if array.dtype.kind not in "fiub":
        return bool(np.isfinite(array).all())
    return array.size == 0 or bool(np.isfinite(array.min()) and np.isfinite(array.max()))


def _require_finite(array: np.ndarray, what: str) -> None:
    if _all_finite(array):
        return
    bad_rows = ~np.isfinite(array).all(axis=1)
    if bad_rows.any():
        msg = (
            f"{what} has NaN or Inf in {int(bad_rows.sum()):,} of {array.shape[0]:,} rows "
            f"(first at row {int(np.argmax(bad_rows))}); the viewer needs finite coordinates. "
            "Remove those cells or fill them before exporting."
        )
        raise ValueError(msg)


def _as_float32(array: np.ndarray, what: str) -> np.ndarray:
    """Return finite values as float32, refusing NaN, Inf and finite values float32 cannot hold."""
    _require_finite(array, what)
    with np.errstate(over="ignore"):
        out = array.astype(np.float32, copy=False)
    if out is array or _all_finite(out):
        return out
    bad_rows = ~np.isfinite(out).all(axis=1)
    if bad_rows.any():
        biggest = float(np.abs(array[bad_rows]).max())
        msg = (
            f"{what} has finite values beyond float32's range (|v| up to {biggest:.3g}, float32 "
            f"holds up to {float(np.finfo(np.float32).max):.3g}) in {int(bad_rows.sum()):,} of "
            f"{array.shape[0]:,} rows (first at row {int(np.argmax(bad_rows))}); the viewer stores "
            "float32. Rescale them before exporting."
        )
        raise ValueError(msg)
    return out


def collect_embeddings(
    adata: AnnData | Source, basis: str
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Find ``X_<basis>_1d/_2d/_3d`` and ``X_<basis>`` (by its width) in ``adata.obsm``.

    ``basis`` is read as :func:`basis_names` says (``"umap"``, ``"X_umap"``, ``"spatial"``).
    """
    base, _ = basis_names(adata.obsm, basis)
    found: dict[int, str] = {}
    for dim in DIMENSIONS:
        key = f"{base}_{dim}d"
        if key in adata.obsm:
            width = _width(adata.obsm[key])
            if width != dim:
                msg = f"adata.obsm[{key!r}] has {width} columns; a {dim}-D embedding needs {dim}."
                raise ValueError(msg)
            found[dim] = key
    if base in adata.obsm:
        width = _width(adata.obsm[base])
        if width not in DIMENSIONS:
            msg = (
                f"adata.obsm[{base!r}] has {width} columns; the viewer shows 1, 2 or 3 "
                f"dimensions. Store the dimensions you want as {base}_2d or {base}_3d."
            )
            raise ValueError(msg)
        found.setdefault(width, base)  # an explicit key of that width wins
    if not found:
        looked = _embedding_keys(basis) + (
            _embedding_keys(f"X_{basis}") if not basis.startswith("X_") else []
        )
        msg = (
            f"No embedding for basis {basis!r} in adata.obsm (looked for {', '.join(looked)}); "
            f"keys are {list(adata.obsm.keys())}. Compute one (e.g. sc.tl.umap) or pass basis=."
        )
        raise KeyError(msg)
    embeddings = {}
    for dim, key in sorted(found.items()):
        coords = _dense(adata.obsm[key], f"adata.obsm[{key!r}]").astype(np.float64, copy=False)
        _require_finite(coords, f"adata.obsm[{key!r}]")
        embeddings[dim] = coords
    return embeddings, dict(sorted(found.items()))


def collect_latent(
    adata: AnnData | Source, latent_key: str | Literal[False] | None
) -> tuple[np.ndarray | None, str | None]:
    """Return the latent space for outlier quantiles, or ``(None, None)`` without one."""
    if latent_key is False:
        return None, None
    if latent_key is None:
        latent_key = next((k for k in LATENT_KEYS if k in adata.obsm), None)
        if latent_key is None:
            return None, None
    elif latent_key not in adata.obsm:
        msg = f"latent_key {latent_key!r} is not in adata.obsm; keys are {list(adata.obsm.keys())}."
        raise KeyError(msg)
    if is_blank(latent_key):
        msg = f"latent_key {latent_key!r} is blank; the viewer needs a name. Rename the obsm key."
        raise ValueError(msg)
    what = f"adata.obsm[{latent_key!r}]"
    return _as_float32(_dense(adata.obsm[latent_key], what), what), latent_key


def collect_vector_fields(
    adata: AnnData | Source,
    basis: str,
    embeddings: dict[int, np.ndarray],
    vector_fields: bool | Sequence[str],
) -> dict[str, dict[int, np.ndarray]]:
    """Find ``<field>_<basis>`` and ``<field>_<basis>_<d>d`` vectors in ``adata.obsm``.

    The field id is ``<field>_<basis>`` (e.g. ``velocity_umap``); an explicit
    ``_<d>d`` key wins over the implicit key of the same width. Returns fields sorted by id.
    """
    if vector_fields is False:
        return {}
    base, name = basis_names(adata.obsm, basis)
    pattern = vector_field_pattern(name)
    keys = list(adata.obsm.keys()) if vector_fields is True else list(vector_fields)
    if vector_fields is not True:
        unknown = [k for k in keys if k not in adata.obsm]
        if unknown:
            msg = f"vector_fields {unknown} are not in adata.obsm; keys are {list(adata.obsm.keys())}."
            raise KeyError(msg)
    explicit: dict[str, dict[int, str]] = {}
    implicit: dict[str, dict[int, str]] = {}
    for key in keys:
        match = pattern.match(key)
        if match is None or match["field"] in (base, f"X_{name}"):
            if vector_fields is not True:
                msg = (
                    f"vector field key {key!r} is not named <field>_{name} or <field>_{name}_<d>d."
                )
                raise ValueError(msg)
            continue
        width = _width(adata.obsm[key])
        dim = int(match["dim"]) if match["dim"] else width
        if width != dim or dim not in DIMENSIONS:
            msg = f"adata.obsm[{key!r}] has {width} columns, which is no 1-, 2- or 3-D vector field {key!r}."
            raise ValueError(msg)
        (explicit if match["dim"] else implicit).setdefault(match["field"], {})[dim] = key
    fields: dict[str, dict[int, np.ndarray]] = {}
    for field_id in sorted(set(explicit) | set(implicit)):
        by_dim = {**implicit.get(field_id, {}), **explicit.get(field_id, {})}
        if safe_filename_component(field_id) != field_id:
            msg = f"Vector field id {field_id!r} has characters a file name cannot hold; rename the obsm key."
            raise ValueError(msg)
        vectors = {}
        for dim, key in sorted(by_dim.items()):
            if dim not in embeddings:
                continue  # no points of that dimension to attach the vectors to
            values = _dense(adata.obsm[key], f"adata.obsm[{key!r}]").astype(np.float64, copy=False)
            _require_finite(values, f"adata.obsm[{key!r}]")
            vectors[dim] = values
        if vectors:
            fields[field_id] = vectors
    return fields


def report_lookalikes(
    adata: AnnData | Source,
    basis: str,
    embedding_dims: Collection[int],
    *,
    vector_fields: bool,
) -> None:
    """Say which ``obsm`` keys look like an embedding (or vector field) of ``basis`` but are not read.

    The export reads exact names only, so ``X_umap3d``, ``X_umap_3D`` or ``X_UMAP`` are
    skipped; each one is logged (info) with the name to give it, and warned about when it
    would add a dimension no embedding has (``embedding_dims``). Vector field look-alikes
    are logged when ``vector_fields`` are discovered.
    """
    base, name = basis_names(adata.obsm, basis)
    exact_field = vector_field_pattern(name)
    n = re.escape(name)
    embedding_like = re.compile(rf"^(?:X_)?{n}(?:[_-]?(?P<dim>[123])d)?$", re.IGNORECASE)
    field_like = re.compile(rf"^(?P<field>.+?)_{n}(?:[_-]?(?P<dim>[123])d)?$", re.IGNORECASE)
    for key in map(str, adata.obsm):
        if key in _embedding_keys(base) or exact_field.match(key):
            continue
        if match := embedding_like.match(key):
            dim = int(match["dim"]) if match["dim"] else _width(adata.obsm[key])
            target, what = f"{base}_{dim}d", f"a {dim}-D embedding of basis {basis!r}"
            missing_dim = dim not in embedding_dims
        elif vector_fields and (match := field_like.match(key)):
            dim = int(match["dim"]) if match["dim"] else _width(adata.obsm[key])
            target, what = f"{match['field']}_{name}_{dim}d", f"a {dim}-D vector field"
            missing_dim = False
        else:
            continue
        if dim not in DIMENSIONS:
            continue
        msg = (
            f"adata.obsm[{key!r}] looks like {what} but is not exported: the export reads "
            f"{base}, {base}_<d>d and <field>_{name}[_<d>d] only. To export it, rename it: "
            f"adata.obsm[{target!r}] = adata.obsm.pop({key!r})."
        )
        if missing_dim:  # e.g. no 3-D embedding was found, and this key could be it
            warnings.warn(msg, UserWarning, stacklevel=user_stacklevel())
        else:
            logger.info(msg)


def collect_graph(
    adata: AnnData | Source, connectivities_key: str | Literal[False] | None
) -> tuple[object | None, str | None]:
    """Return the kNN graph from ``adata.obsp`` (found through ``uns["neighbors"]``), if any."""
    if connectivities_key is False:
        return None, None
    explicit = connectivities_key is not None
    connectivities_key = graph_key(adata, connectivities_key)
    if connectivities_key not in adata.obsp:
        if explicit:
            msg = f"connectivities_key {connectivities_key!r} is not in adata.obsp; keys are {list(adata.obsp.keys())}."
            raise KeyError(msg)
        return None, None
    return adata.obsp[connectivities_key], connectivities_key


def obs_kind(series: pd.Series) -> FieldKind:
    """Return how a column is shown: numbers are continuous, everything else categorical."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
        return "category"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "continuous"
    return "category"


def collect_obs(adata: AnnData, obs_keys: Sequence[str] | None, layout: Layout) -> list[ObsField]:
    """Return the ``obs`` columns to export, in order, with their kinds."""
    obs = frame(adata.obs)
    columns = [str(c) for c in obs.columns]
    keys = columns if obs_keys is None else [str(k) for k in obs_keys]
    unknown = [k for k in keys if k not in columns]
    if unknown:
        msg = f"obs_keys {unknown} are not columns of adata.obs; columns are {columns}."
        raise KeyError(msg)
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    blank = [k for k in keys if is_blank(k)]
    if duplicated or blank:
        msg = (
            f"obs keys must be unique and not blank (the viewer trims whitespace); got "
            f"duplicates {duplicated}, blank {blank}. Rename those columns or leave them out with obs_keys=."
        )
        raise ValueError(msg)
    if layout.name == "legacy":
        refuse_name_collisions(keys, "obs columns")
    fields = []
    for i, k in enumerate(keys):  # a loop, not a comprehension: warnings point at the caller
        column = checked_column(obs[k], f"obs[{k!r}]")
        fields.append(ObsField(i, k, obs_kind(column), column))
    return fields


def refuse_name_collisions(names: Sequence[str], what: str) -> None:
    """Refuse names that sanitize alike: the legacy layout names files by key, so they would overwrite each other."""
    seen: dict[str, str] = {}
    for name in names:
        stem = safe_filename_component(name)
        if len(stem) > LEGACY_MAX_STEM:
            msg = (
                f"{what} {name[:40]!r}... is {len(stem):,} characters long as a file name; the legacy "
                f"layout names files by key and file systems allow {MAX_FILE_NAME_BYTES} bytes. "
                f"Rename it (at most {LEGACY_MAX_STEM} characters) or use layout='current'."
            )
            raise ValueError(msg)
        # macOS and Windows file systems ignore case: Gene and gene would be one file
        folded = stem.casefold()
        if folded in seen:
            other = safe_filename_component(seen[folded])
            clash = (
                f"both become the file name {stem!r}"
                if other == stem
                else f"become the file names {other!r} and {stem!r}, one file on file systems "
                "that ignore case (macOS, Windows),"
            )
            msg = (
                f"{what} {seen[folded]!r} and {name!r} {clash} in the legacy layout; rename one "
                "or use layout='current'."
            )
            raise ValueError(msg)
        seen[folded] = name


def collect_genes(adata: AnnData, selection: Selection, *, layout: Layout) -> GeneSource | None:
    """Return the expression matrix and the genes to export, or None without genes.

    ``layer`` and ``use_raw`` are not both given (see :class:`~cellucid.ex._settings.Selection`).
    """
    var_names, layer, use_raw = selection.var_names, selection.layer, selection.use_raw
    gene_id_column = selection.gene_id_column
    if use_raw:
        if adata.raw is None:
            msg = "use_raw=True but adata.raw is None."
            raise ValueError(msg)
        matrix, var = adata.raw.X, frame(adata.raw.var)
    elif layer is not None:
        if layer not in adata.layers:
            msg = f"layer {layer!r} is not in adata.layers; layers are {list(adata.layers.keys())}."
            raise KeyError(msg)
        matrix, var = adata.layers[layer], frame(adata.var)
    else:
        matrix, var = adata.X, frame(adata.var)
    if matrix is None or var.shape[0] == 0:
        if var_names:
            msg = "var_names were given but the data has no genes."
            raise ValueError(msg)
        return None
    if gene_id_column is None:
        names = pd.Index(var.index).astype(str)
    elif gene_id_column in var.columns:
        names = pd.Index(var[gene_id_column].astype(str))
    else:
        msg = f"gene_id_column {gene_id_column!r} is not a column of var; columns are {list(var.columns)}."
        raise KeyError(msg)
    if gene_id_column is not None and is_blank(gene_id_column):
        msg = f"gene_id_column {gene_id_column!r} is blank; the viewer needs a name. Rename that var column."
        raise ValueError(msg)
    refuse_complex(matrix, "The expression matrix")
    empty = np.flatnonzero(names.str.strip(JS_WHITESPACE).str.len() == 0)
    if empty.size:
        msg = (
            f"{empty.size} gene names are empty or whitespace (first at position {empty[0]}: "
            f"{names[empty[0]]!r}); pick a gene_id_column with names."
        )
        raise ValueError(msg)
    lookup = pd.Index(var.index).astype(str) if gene_id_column is None else names
    if var_names is None:
        columns = np.arange(len(names))
    else:
        if isinstance(var_names, str):  # one gene, not its letters
            var_names = [var_names]
        wanted = pd.Index([str(v) for v in var_names])
        columns = lookup.get_indexer(wanted) if lookup.is_unique else None
        if columns is None:
            msg = "Gene names are not unique; cannot select var_names by name (see adata.var_names_make_unique())."
            raise ValueError(msg)
        missing = list(wanted[columns < 0])
        if missing:
            searched = (
                f"var[{gene_id_column!r}]"
                if gene_id_column is not None
                else ("raw.var_names" if use_raw else "var_names")
            )
            msg = (
                f"var_names {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}) "
                f"are not genes of the data (searched {searched}).{_suggestions(missing, lookup)}"
            )
            raise KeyError(msg)
        if len(columns) == 0:
            return None
    chosen = names[columns]
    if not chosen.is_unique:
        dup = list(chosen[chosen.duplicated()].unique()[:10])
        msg = (
            f"Gene names must be unique (they are what users search for); duplicated: {dup}. "
            "Call adata.var_names_make_unique() or pick another gene_id_column."
        )
        raise ValueError(msg)
    chosen = list(chosen)
    if layout.name == "legacy":
        refuse_name_collisions(chosen, "genes")
    return GeneSource(matrix, np.asarray(columns, dtype=np.int64), chosen, gene_id_column)


def _suggestions(missing: list[str], names: pd.Index, most: int = 5) -> str:
    """Close matches of a few missing gene names: same name in another case, else difflib's."""
    lower = names.str.lower()
    by_lower = pd.Series(names, index=lower)
    by_lower = by_lower[~by_lower.index.duplicated()]
    lengths, initials = names.str.len().to_numpy(), lower.str[:1].to_numpy()
    hints = []
    for name in missing[:most]:
        same = by_lower.get(name.lower())
        # difflib compares with every candidate: only names of about the same length and
        # initial are (a gene list has tens of thousands)
        near = (np.abs(lengths - len(name)) <= 2) & (initials == name[:1].lower())
        candidates = list(names[near])
        close = [same] if same is not None else difflib.get_close_matches(name, candidates, n=3)
        if close:
            hints.append(f"{name!r}: {', '.join(map(repr, close))}")
    return f" Did you mean {'; '.join(hints)}?" if hints else ""


def check_lengths(collected: Collected) -> None:
    """Refuse arrays whose number of rows differs from the number of cells."""
    n = collected.n_cells
    arrays = {f"obsm[{collected.embedding_keys[d]!r}]": a for d, a in collected.embeddings.items()}
    if collected.latent is not None:
        arrays[f"obsm[{collected.latent_key!r}]"] = collected.latent
    for field_id, by_dim in collected.vector_fields.items():
        arrays.update({f"vector field {field_id!r} ({d}D)": a for d, a in by_dim.items()})
    for what, array in arrays.items():
        if array.shape[0] != n:
            msg = f"{what} has {array.shape[0]:,} rows but adata has {n:,} cells."
            raise ValueError(msg)
    if collected.graph is not None and tuple(collected.graph.shape) != (n, n):
        msg = (
            f"obsp[{collected.graph_key!r}] has shape {collected.graph.shape}; expected ({n}, {n})."
        )
        raise ValueError(msg)
    if collected.genes is not None and collected.genes.matrix.shape[0] != n:
        msg = f"The expression matrix has {collected.genes.matrix.shape[0]:,} rows but adata has {n:,} cells."
        raise ValueError(msg)
