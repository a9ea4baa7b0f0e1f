"""``cl.ex.export``: one call from an AnnData to a dataset folder the viewer opens."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from .._format import QUANT_DTYPE, LayoutName, index_dtype, is_blank
from ..pp import graph_edges
from . import _collect as collect
from ._arithmetic import arithmetic
from ._connectivity import write_connectivity
from ._identity import created_at, dataset_id_for, source_entry, write_identity
from ._limits import check_edges, check_payload_sizes
from ._obs import encode_obs, write_obs
from ._payload import PayloadWriter, default_n_jobs
from ._payload import gzip_encoder as payload_gzip_encoder
from ._points import normalize_embeddings, write_points, write_vectors
from ._progress import ExportProgress, progress_enabled
from ._publish import check_target, staged
from ._settings import (
    DEFAULT_BASIS,
    DEFAULT_CENTROID_MIN_POINTS,
    DEFAULT_CENTROID_OUTLIER_QUANTILE,
    DEFAULT_EXPORTS_ROOT,
    DEFAULT_GZIP_ENCODER,
    DEFAULT_LAYOUT,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_OBS_CATEGORICAL_DTYPE,
    ExportSettings,
)
from ._var import gene_stream, write_var

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger("cellucid")


def export(
    adata: AnnData,
    out_dir: str | Path | None = None,
    *,
    basis: str = DEFAULT_BASIS,
    latent_key: str | Literal[False] | None = None,
    vector_fields: bool | Sequence[str] = True,
    connectivities_key: str | Literal[False] | None = None,
    obs_keys: Sequence[str] | None = None,
    var_names: Sequence[str] | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    gene_id_column: str | None = None,
    gene_symbols: str | None = None,
    var_quantization: Literal[8, 16] | None = None,
    obs_continuous_quantization: Literal[8, 16] | None = None,
    obs_categorical_dtype: Literal["auto", "uint8", "uint16"] = DEFAULT_OBS_CATEGORICAL_DTYPE,
    compression: int | None = None,
    gzip_encoder: Literal["auto", "zlib", "zlib-ng"] = DEFAULT_GZIP_ENCODER,
    centroid_outlier_quantile: float | None = DEFAULT_CENTROID_OUTLIER_QUANTILE,
    centroid_min_points: int = DEFAULT_CENTROID_MIN_POINTS,
    dataset_name: str | None = None,
    dataset_description: str = "",
    dataset_id: str | None = None,
    source_name: str | None = None,
    source_url: str | None = None,
    source_citation: str | None = None,
    layout: LayoutName = DEFAULT_LAYOUT,
    overwrite: bool = False,
    n_jobs: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool | None = None,
) -> Path:
    """Export an AnnData as a dataset folder the Cellucid viewer opens.

    Everything is found in ``adata`` itself; each keyword overrides one discovery:

    - embeddings: ``obsm["X_<basis>_1d"]``, ``["X_<basis>_2d"]``, ``["X_<basis>_3d"]`` and
      ``obsm["X_<basis>"]`` by its width (an explicit ``_<d>d`` key wins); keys that look
      like one but are named otherwise (``X_umap3d``) are reported with the name to give
      them (logged; a warning when they would add a missing dimension);
    - the latent space for outlier quantiles: ``obsm["X_scVI"]``, else ``obsm["X_pca"]``;
    - vector fields: ``obsm["<field>_<basis>"]`` and ``obsm["<field>_<basis>_<d>d"]``
      (e.g. ``velocity_umap``, ``T_fwd_umap_3d``), scaled like their embedding;
    - the kNN graph: ``obsp[uns["neighbors"]["connectivities_key"]]``, else
      ``obsp["connectivities"]``;
    - every ``obs`` column: categorical, bool and string columns as categories, numbers
      as continuous values (NaN and ±Inf become missing, with a warning);
    - genes: every gene of ``X`` (or a layer, or ``raw``).

    The export is written to a hidden staging folder next to ``out_dir`` and moved into
    place at the end, so a failed export leaves nothing half-written. ``adata`` is not
    modified. The same input and options give byte-identical files (set
    ``SOURCE_DATE_EPOCH`` to fix ``created_at`` as well).

    Parameters
    ----------
    adata
        Annotated data matrix.
    out_dir
        The dataset folder to create. By default ``exports/<dataset id>`` under the working
        directory (see ``dataset_id``), the exports root :func:`~cellucid.ex.write_catalog`
        lists; the path is logged (info) and returned.
    basis
        Embedding name, as scanpy's plotting takes it: ``"umap"`` or ``"X_umap"`` reads
        ``obsm["X_umap"]``, ``obsm["X_umap_3d"]``, ...; a name that is itself a key (with
        or without ``_<d>d``) is read as is, so ``"spatial"`` reads squidpy's
        ``obsm["spatial"]``. Vector fields are then ``<field>_umap``, ``<field>_spatial``.
    latent_key
        ``obsm`` key of the latent space for outlier quantiles; ``False`` for none (the
        quantiles are then written as unavailable).
    vector_fields
        ``True`` to discover vector fields, ``False`` to skip them, or the ``obsm`` keys.
    connectivities_key
        ``obsp`` key of the kNN graph; ``False`` to skip the graph.
    obs_keys
        ``obs`` columns to export, in order; all of them by default.
    var_names
        Genes to export (names as in ``var_names``, or in ``gene_id_column``); a single
        name is one gene; all by default, ``[]`` for none. An unknown name is refused
        with the closest names there are.
    layer
        Take gene values from ``adata.layers[layer]`` instead of ``X``.
    use_raw
        Take gene values and names from ``adata.raw``.
    gene_id_column
        ``var`` column with the gene names users search for; the index by default.
    gene_symbols
        The same as ``gene_id_column``, under the name scanpy's plotting functions use.
    var_quantization
        Store gene values as 8- or 16-bit codes instead of float32.
    obs_continuous_quantization
        Store continuous ``obs`` values and outlier quantiles as 8- or 16-bit codes.
    obs_categorical_dtype
        Category codes dtype of every categorical field: ``"uint8"`` (≤ 255 categories),
        ``"uint16"`` (≤ 65535) or ``"auto"``: uint16 for all fields when one field has more
        than 255 categories, else uint8.
    compression
        gzip level 1–9 for every payload; ``None`` writes them uncompressed.
    gzip_encoder
        The deflate implementation: ``"zlib"`` (Python's own), ``"zlib-ng"`` (1.6–3× faster,
        ``pip install cellucid[fast]``) or ``"auto"``: zlib-ng when installed. Both write
        valid gzip of the same payloads; the compressed bytes depend on the encoder, so
        pin it where exports are compared byte by byte across machines.
    centroid_outlier_quantile
        Fraction of each category's cells (nearest first) its label centroid averages;
        ``None`` writes no centroids.
    centroid_min_points
        Fewest cells a category needs for a centroid and outlier quantiles.
    dataset_name
        Name shown in the viewer. By default the name of ``out_dir``; without ``out_dir``,
        ``dataset_id``, else the name of the file of a backed ``adata``, else
        ``"dataset"``.
    dataset_description
        Description shown in the viewer.
    dataset_id
        Id of the dataset in a catalog (and its folder name without ``out_dir``); derived
        from the name by default.
    source_name, source_url, source_citation
        Where the data comes from.
    layout
        ``"current"`` (what today's viewer loads) or ``"legacy"`` (the original layout with
        files named by key, for older self-hosted viewers).
    overwrite
        Replace an existing ``out_dir`` that is an earlier export (or empty); anything
        else (other files, an exports root, the working directory, a link) is refused
        before any work starts. See the user guide's safety page.
    n_jobs
        Threads encoding genes and compressing and writing files; all cores by default. The
        output does not depend on it.
    memory_budget
        Bytes the blocks of genes in flight may take (two blocks of payloads: one being
        encoded, one being written). Genes are exported in blocks of columns, so the
        expression matrix is never densified nor re-laid-out. A backed CSR or
        sparse dask matrix is read once, by row chunks, its values spilled to one
        temporary file per block inside the staging folder. The output does not depend on it.
    progress
        Show one progress bar for the whole export (the graph, ``obs``, genes encoded
        and written, publishing), with the time remaining. By default on a terminal or in
        a notebook, and never when the ``CI`` or ``TQDM_DISABLE`` environment variable is
        set.

    Returns
    -------
    The path of the written dataset folder.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellucid as cl
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> cl.ex.export(adata, dataset_id="pbmc")
    PosixPath('exports/pbmc')
    >>> cl.ex.export(adata, "exports/pbmc", compression=6, var_quantization=8, overwrite=True)
    PosixPath('exports/pbmc')

    """
    from .. import __version__

    start = time.perf_counter()
    if gene_symbols is not None:
        if gene_id_column is not None and gene_id_column != gene_symbols:
            msg = f"gene_symbols={gene_symbols!r} and gene_id_column={gene_id_column!r} name the same option; pass one."
            raise ValueError(msg)
        gene_id_column = gene_symbols
    settings = ExportSettings.checked(
        layout_name=layout,
        compression=compression,
        var_quantization=var_quantization,
        obs_continuous_quantization=obs_continuous_quantization,
        obs_categorical_dtype=obs_categorical_dtype,
        centroid_outlier_quantile=centroid_outlier_quantile,
        centroid_min_points=centroid_min_points,
    )
    deflate = payload_gzip_encoder(gzip_encoder)
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
        msg = f"memory_budget must be a positive number of bytes, got {memory_budget!r}."
        raise ValueError(msg)
    arith = arithmetic(settings.layout)
    if out_dir is None:
        out_dir, name = default_out_dir(
            dataset_name, dataset_id, fallback_name=_backed_file_name(adata) or "dataset"
        )
        identity_id = out_dir.name
        logger.info("writing to %s (out_dir not given: exports/<dataset id>)", out_dir)
    else:
        out_dir = Path(out_dir)
        name = dataset_name if dataset_name is not None else out_dir.resolve().name
        identity_id = None
    check_target(out_dir, overwrite=overwrite, input_path=adata.filename)
    if is_blank(name):
        msg = f"dataset_name must not be empty or whitespace (the viewer trims it), got {name!r}."
        raise ValueError(msg)
    identity_id = identity_id or dataset_id_for(dataset_id, name)
    source = source_entry(source_name, source_url, source_citation)

    # 1. collect from adata and check it, before anything is written
    n_cells = adata.n_obs
    if n_cells == 0:
        msg = "adata has no cells; the viewer needs at least one."
        raise ValueError(msg)
    loaded = collect.materialize(
        adata,
        basis=basis,
        latent_key=latent_key,
        vector_fields=vector_fields,
        connectivities_key=connectivities_key,
    )
    embeddings, embedding_keys = collect.collect_embeddings(loaded, basis)
    collect.report_lookalikes(loaded, basis, embeddings, vector_fields=vector_fields is not False)
    latent, used_latent_key = collect.collect_latent(loaded, latent_key)
    found = collect.Collected(
        n_cells=n_cells,
        embeddings=embeddings,
        embedding_keys=embedding_keys,
        latent=latent,
        latent_key=used_latent_key,
        vector_fields=collect.collect_vector_fields(loaded, basis, embeddings, vector_fields),
        obs_fields=collect.collect_obs(adata, obs_keys, settings.layout),
        genes=collect.collect_genes(
            adata,
            var_names=var_names,
            layer=layer,
            use_raw=use_raw,
            gene_id_column=gene_id_column,
            layout=settings.layout,
        ),
    )
    found.graph, found.graph_key = collect.collect_graph(loaded, connectivities_key)
    collect.check_lengths(found)
    if settings.layout.name == "legacy":
        collect.refuse_name_collisions(list(found.vector_fields), "vector fields")
    check_payload_sizes(found)
    normalized = normalize_embeddings(found.embeddings, arith, keys=found.embedding_keys)
    times = {"collect": time.perf_counter() - start}

    # 2. transform and write. The genes' first pass over the matrix starts at once, in a
    # thread; the graph's edges (the largest file but the genes) are queued to compress
    # as soon as they exist, while the rest is encoded. The progress bar counts payload
    # bytes once encoded and once written (see ExportProgress).
    gene_bytes = _gene_payload_bytes(found, settings)
    # a byte written costs more than a byte encoded when it is gzipped (measured at 100k x
    # 2k, 8-bit, gzip 6: 2.6 s encoding the genes, 6 s compressing and writing them)
    weight = 3 if settings.compression else 1
    bar = ExportProgress(
        total=_estimated_work(found, settings, weight) + (1 + weight) * gene_bytes,
        enabled=progress_enabled(progress),
        write_weight=weight,
    )
    try:
        with (
            staged(out_dir, overwrite=overwrite) as stage,
            PayloadWriter(
                stage,
                compression=settings.compression,
                n_jobs=n_jobs,
                lib=deflate,
                on_written=bar.written,
            ) as writer,
            gene_stream(
                found.genes,
                root=stage,
                n_cells=n_cells,
                settings=settings,
                memory_budget=memory_budget,
            )
            if found.genes is not None
            else nullcontext() as gene_blocks,
        ):
            clock = time.perf_counter()
            n_edges = None
            if found.graph is not None:
                bar.stage("graph")
                edges = graph_edges(found.graph, name=f"obsp[{found.graph_key!r}]")
                check_edges(edges, n_cells=n_cells, settings=settings, key=found.graph_key)
                n_edges = write_connectivity(writer, edges, n_cells=n_cells, settings=settings)
                del edges  # the writer holds the arrays until they are written, then they are freed
            queued = _advance_by_queued(bar, writer, 0)
            clock = _lap(times, "graph", clock)
            bar.stage("embeddings")
            embeddings_entry = write_points(writer, normalized)
            vector_entry = write_vectors(
                writer, found.vector_fields, normalized, layout=settings.layout, arith=arith
            )
            queued = _advance_by_queued(bar, writer, queued)
            clock = _lap(times, "embeddings", clock)
            bar.stage("obs")
            encoded_obs = encode_obs(
                found.obs_fields,
                embeddings=normalized,
                latent=found.latent,
                settings=settings,
                arith=arith,
                n_jobs=n_jobs or default_n_jobs(),
                on_encoded=lambda field: bar.advance(_obs_work(field, found, settings)),
            )
            obs_fields = write_obs(
                writer, encoded_obs, n_cells=n_cells, latent_key=found.latent_key, settings=settings
            )
            clock = _lap(times, "obs", clock)
            # everything but the genes is queued: the total is exact from here on (obs
            # fields were counted as encoded by their work, see _obs_work)
            bar.set_total(
                (1 + weight) * (queued + gene_bytes)
                + weight * (writer.bytes_queued - queued)
                + sum(_obs_work(f, found, settings) for f in found.obs_fields)
            )
            n_genes = 0
            if gene_blocks is not None:
                bar.stage("genes")
                write_var(
                    writer,
                    found.genes,
                    gene_blocks,
                    n_cells=n_cells,
                    settings=settings,
                    arith=arith,
                    progress=bar,
                    times=times,
                )
                n_genes = len(found.genes.names)
            clock = _lap(times, "genes", clock)
            bar.stage("writing")
            writer.close()
            clock = _lap(times, "drain", clock)
            n_continuous = sum(f["kind"] == "continuous" for f in obs_fields)
            # every field's codes have one dtype, declared here (the folder picker checks it)
            codes_dtype = next(
                (e.codes_dtype for e in encoded_obs if e.codes_dtype),
                settings.obs_categorical_dtype,
            )
            if codes_dtype == "auto":  # no categorical field
                codes_dtype = "uint8"
            identity = {
                "id": identity_id,
                "name": name,
                "description": dataset_description,
                "created_at": created_at(),
                "cellucid_data_version": __version__,
                "stats": {
                    "n_cells": n_cells,
                    "n_genes": n_genes,
                    "n_obs_fields": len(obs_fields),
                    "n_categorical_fields": len(obs_fields) - n_continuous,
                    "n_continuous_fields": n_continuous,
                    "has_connectivity": n_edges is not None,
                    "n_edges": n_edges,
                },
                "embeddings": embeddings_entry,
                "obs_fields": obs_fields,
                "export_settings": {
                    "compression": settings.compression,
                    "var_quantization": settings.var_quantization,
                    "obs_continuous_quantization": settings.obs_continuous_quantization,
                    "obs_categorical_dtype": codes_dtype,
                },
            }
            if source is not None:
                identity["source"] = source
            if vector_entry is not None:
                identity["vector_fields"] = vector_entry
            write_identity(stage, identity)
            written_bytes, written_files = writer.bytes_written, writer.files_written
            bar.stage("publish")
            clock = _lap(times, "identity", clock)
        _lap(times, "publish", clock)
        bar.finish()
    finally:
        bar.close()
    total = time.perf_counter() - start
    logger.info(
        "exported %s: %s cells, embeddings %s, %s obs fields, %s genes, %s edges, %s vector fields; "
        "%s payload files, %.1f MB in %.1f s",
        out_dir,
        f"{n_cells:,}",
        "/".join(f"{d}D" for d in normalized),
        f"{len(obs_fields):,}",
        f"{n_genes:,}",
        f"{n_edges:,}" if n_edges is not None else "no",
        f"{len(found.vector_fields):,}",
        f"{written_files:,}",
        written_bytes / 1e6,
        total,
    )
    for stage_name, seconds in times.items():
        logger.debug(
            "export stage %s: %.3f s",
            stage_name,
            seconds,
            extra={"cellucid_stage": stage_name, "cellucid_seconds": seconds},
        )
    return out_dir


def default_out_dir(
    dataset_name: str | None, dataset_id: str | None, *, fallback_name: str
) -> tuple[Path, str]:
    """Return the folder of an export without ``out_dir`` (``exports/<dataset id>``) and its name.

    The name is ``dataset_name``, else ``dataset_id``, else ``fallback_name`` (the input
    file's name); the id is ``dataset_id``, else derived from the name.
    """
    name = dataset_name or dataset_id or fallback_name
    return Path(DEFAULT_EXPORTS_ROOT) / dataset_id_for(dataset_id, name), name


def _backed_file_name(adata: AnnData) -> str | None:
    """Return the stem of a backed ``adata``'s file, a name for its dataset."""
    filename = getattr(adata, "filename", None) if getattr(adata, "isbacked", False) else None
    return Path(filename).stem if filename else None


def _lap(times: dict[str, float], stage: str, since: float) -> float:
    """Add the time since ``since`` to ``times[stage]``; return now."""
    now = time.perf_counter()
    times[stage] = times.get(stage, 0.0) + now - since
    return now


def _advance_by_queued(bar: ExportProgress, writer: PayloadWriter, before: int) -> int:
    """Count the payloads queued since ``before`` bytes as encoded; return the bytes queued now."""
    bar.advance(writer.bytes_queued - before)
    return writer.bytes_queued


def _gene_payload_bytes(found: collect.Collected, settings: ExportSettings) -> int:
    """Bytes of the gene payloads, before compression (exact)."""
    if found.genes is None:
        return 0
    bits = settings.var_quantization
    itemsize = np.dtype(QUANT_DTYPE[bits]).itemsize if bits else 4
    return len(found.genes.names) * found.n_cells * itemsize


def _obs_work(field: collect.ObsField, found: collect.Collected, settings: ExportSettings) -> int:
    """Return the work of encoding an ``obs`` field, in bytes.

    Its payloads, and for categories the latent space and embeddings that their outlier
    quantiles and centroids go through.
    """
    bits = settings.obs_continuous_quantization
    value_bytes = bits // 8 if bits else 4
    if field.kind == "continuous":
        return found.n_cells * value_bytes
    latent = found.latent.nbytes if found.latent is not None else 0
    coords = sum(a.nbytes for a in found.embeddings.values())
    return found.n_cells * (1 + value_bytes) + latent + coords


def _estimated_work(found: collect.Collected, settings: ExportSettings, weight: int) -> int:
    """Return the work of everything but the genes, in bytes, as far as known before encoding.

    Payloads count once encoded and ``weight`` times written; the graph's edges are about half of its
    stored values (one triangle); an ``obs`` field counts as its :func:`_obs_work`, then a
    code or value and an outlier quantile per cell written.
    """
    n = found.n_cells
    payloads = sum(a.size * 4 for a in found.embeddings.values())
    payloads += sum(a.size * 4 for by_dim in found.vector_fields.values() for a in by_dim.values())
    if found.graph is not None:
        edges = getattr(found.graph, "nnz", 0) // 2
        payloads += edges * (
            2 * index_dtype(n).itemsize + (8 if settings.layout.weighted_edges else 0)
        )
    bits = settings.obs_continuous_quantization
    value_bytes = bits // 8 if bits else 4
    obs = sum(_obs_work(f, found, settings) for f in found.obs_fields)
    return (1 + weight) * payloads + obs + weight * len(found.obs_fields) * n * (value_bytes + 1)
