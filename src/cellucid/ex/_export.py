"""``cl.ex.export``: one call from an AnnData to a dataset folder the viewer opens."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._format import QUANT_DTYPE, WEIGHT_DTYPE, LayoutName, index_dtype
from .._warn import user_stacklevel
from ..pp._graph import asymmetric_warning, edge_parts, symmetric_edges
from ._cloud import remote_export
from ._collect import Collected, ObsField, collect
from ._connectivity import write_connectivity
from ._distributed import WorkersWrite, cluster_client
from ._genes import compiled_blocks
from ._identity import Description, Written, dataset_id_for, identity_document, write_identity
from ._limits import check_edges
from ._memory import collections_paused, release_free_memory
from ._obs import encode_obs, write_obs
from ._payload import PayloadWriter
from ._points import NormalizedEmbedding, normalize_embeddings, write_points, write_vectors
from ._progress import ExportProgress
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
    Resources,
    Selection,
    keywords_of,
)
from ._store import Destination, local_path, refuse_local_options
from ._var import IN_FLIGHT, GeneWriter

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
    storage_options: Mapping[str, Any] | None = None,
) -> Path | str:
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
        lists; the path is logged (info) and returned. A URL (``s3://bucket/exports/pbmc``,
        ``gs://``, ``az://``, ``memory://``; needs ``cellucid[cloud]`` and the store's
        fsspec package) is staged locally and published there as a one-dataset exports
        root whose ``datasets.json`` is switched only once the new export is complete (see
        the large-data guide); on a dask cluster the workers write the gene payloads there
        directly. ``file://`` is a local path.
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
        pin it where exports are compared byte by byte across machines. Large in-memory
        CSR matrices (16 M stored values or more), 8/16-bit and gzip levels 1–8, have most
        gene files written by cellucid's own encoder from the stored values (the same bytes
        on every machine); the others by this one.
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
        Threads encoding genes and compressing and writing files; all cores by default (or
        ``-1``). The output does not depend on it.
    memory_budget
        Bytes the blocks of genes in flight may take (two blocks of payloads: one being
        encoded, one being written). Genes are exported in blocks of columns, so the
        expression matrix is never densified nor re-laid-out. A backed CSR or
        sparse dask matrix is read once, by row chunks, its values spilled to one
        temporary file per block inside the staging folder. A kNN graph whose edges take
        more than a block is read after ``obs`` rather than meanwhile. The output does not
        depend on it.
    progress
        Show one progress bar for the whole export (the graph, ``obs``, genes encoded
        and written, publishing), with the time remaining. By default on a terminal or in
        a notebook, and never when the ``CI`` or ``TQDM_DISABLE`` environment variable is
        set.
    storage_options
        Options of the fsspec filesystem when ``out_dir`` is a URL (credentials, an
        ``endpoint_url`` for s3fs, ...).

    Returns
    -------
    The path of the written dataset folder (its URL, a string, in an object store).

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
    keywords = locals()  # each group of options below takes the keywords it names
    start = time.perf_counter()
    # 1. the options (each group checked as it is made) and the target, before any work
    settings = ExportSettings.checked(**keywords_of(ExportSettings, keywords))
    selection = Selection.checked(**keywords_of(Selection, keywords, "gene_symbols"))
    resources = Resources(**keywords_of(Resources, keywords))
    # an object store's export is staged in a local folder named like it, then published
    cloud = remote_export(out_dir, storage_options, overwrite=overwrite)
    out_dir, name = _destination(
        adata,
        cloud.local_dir if cloud is not None else out_dir,
        dataset_name=dataset_name,
        dataset_id=dataset_id,
    )
    if cloud is None:
        refuse_local_options(out_dir, storage_options)
    check_target(out_dir, overwrite=overwrite, input_path=adata.filename)
    description = Description(
        name=name,
        id=dataset_id,
        description=dataset_description,
        **keywords_of(Description, keywords),  # the source_* keywords
    )

    # 2. collect from adata and check it; 3. preprocess: embeddings fitted into [-1, 1]
    found = collect(adata, selection, layout=settings.layout)
    normalized = normalize_embeddings(
        found.embeddings, settings.arithmetic, keys=found.embedding_keys
    )
    bar = _progress_bar(found, settings, enabled=resources.show_progress, started=start)
    bar.lap("collect")
    try:
        with staged(out_dir, overwrite=overwrite) as stage:
            # 4. every file kind, into a staging folder (a cluster's workers write the
            # genes of an object store's export straight to it); 5. the identity
            written = _write_files(
                stage,
                found,
                normalized,
                settings,
                resources,
                bar,
                payloads=cloud.version_dest if cloud is not None else None,
            )
            write_identity(stage, identity_document(description, settings, written))
            bar.stage("publish")
            bar.lap("identity")
        # 6. published: the staging folder is in place (and uploaded, to an object store)
        if cloud is not None:
            cloud.publish(out_dir)
        bar.lap("publish")
        bar.finish()
    except BaseException:
        if cloud is not None:  # what the workers or the upload stored of the new version
            cloud.discard()
        raise
    finally:
        bar.close()
    shown = cloud.url if cloud is not None else out_dir
    _log_summary(shown, written, bar.times, seconds=time.perf_counter() - start)
    return shown


def _write_files(
    stage: Path,
    found: Collected,
    normalized: dict[int, NormalizedEmbedding],
    settings: ExportSettings,
    resources: Resources,
    bar: ExportProgress,
    *,
    payloads: Destination | None = None,
) -> Written:
    """Write the payloads and manifests of ``found`` into ``stage``: graph, embeddings, obs, genes.

    ``payloads``: where a cluster's workers write the gene payloads (an object store's
    version prefix) instead of ``stage``.

    The genes' first pass over the matrix starts at once, in a thread; the graph's edges
    are found on the pool while the embeddings and obs are encoded, then queued while the
    obs payloads' files are written. Edges that take more memory than a block of genes are
    found once the obs stage's memory is freed, and written before the gene stage starts:
    the export's peak is then a stage's, not two stages' added up (~0.9 s more at 1M
    cells). The progress bar counts payload bytes once encoded and once written (see
    :class:`~cellucid.ex._progress.ExportProgress`).
    """
    n_cells = found.n_cells
    # a dask matrix on a distributed cluster: its workers write the genes where the data is
    client = cluster_client(found.genes.matrix) if found.genes is not None else None
    # genes through the compiled kernels load numba's compiler: other kernels then load fast
    compiled_genes = (
        client is None and found.genes is not None and compiled_blocks(found.genes.matrix)
    )
    with (
        collections_paused(),  # a few objects per gene would start full collections
        PayloadWriter(
            stage,
            compression=settings.compression,
            n_jobs=resources.threads,
            lib=resources.deflate,
            on_written=bar.written,
        ) as writer,
        (
            GeneWriter(
                writer,
                found.genes,
                n_cells=n_cells,
                settings=settings,
                memory_budget=resources.memory_budget,
            )
            if client is None
            else WorkersWrite(
                client,
                found.genes,
                root=stage,
                dest=payloads,
                n_cells=n_cells,
                settings=settings,
                lib=resources.deflate,
                memory_budget=resources.memory_budget,
            )
        )
        if found.genes is not None
        else nullcontext() as gene_writer,
    ):
        graph_name = f"obsp[{found.graph_key!r}]"
        # the graph's edges are found on the pool while the embeddings and obs are encoded
        # (a kNN graph of 1M cells takes ~1 s of one core), then checked and queued; edges
        # larger than a block of genes wait for the obs stage's memory to be freed instead
        found_after_obs = _edge_bytes(found) > resources.memory_budget // IN_FLIGHT
        finding = (
            writer.executor.submit(symmetric_edges, found.graph, name=graph_name)
            if found.graph is not None and not found_after_obs
            else None
        )
        bar.stage("embeddings")
        embeddings = write_points(writer, normalized)
        vector_fields = write_vectors(writer, found.vector_fields, normalized, settings=settings)
        # their float64 copies were normalized and scaled: only the results are read again
        found.embeddings.clear()
        found.vector_fields.clear()
        bar.advance(writer.bytes_queued)
        bar.lap("embeddings")
        bar.stage("obs")
        encoded_obs = encode_obs(
            found.obs_fields,
            embeddings=normalized,
            latent=found.latent,
            settings=settings,
            executor=writer.executor,
            on_encoded=lambda field: bar.advance(_obs_work(field, found, settings)),
        )
        bar.lap("obs")
        # the obs payloads are written while the edges are found (or queued)
        before = writer.bytes_queued
        obs_fields = write_obs(
            writer, encoded_obs, n_cells=n_cells, latent_key=found.latent_key, settings=settings
        )
        codes_dtype = next((e.codes_dtype for e in encoded_obs if e.codes_dtype), None)
        del encoded_obs  # the writer holds the payloads until they are written
        obs_queued = writer.bytes_queued - before  # counted as encoded by their work (_obs_work)
        n_edges = None
        if found_after_obs:  # the embeddings' coordinates served the obs stage (centroids)
            normalized.clear()
            release_free_memory()
        if found.graph is not None:
            bar.stage("graph")
            before = writer.bytes_queued
            if finding is None:  # made a part at a time where the kernels find them
                edges, symmetric = edge_parts(found.graph, name=graph_name)
            else:
                edges, symmetric = finding.result()
            del finding  # a done future holds its result: the edges' memory goes with it
            if not symmetric:
                warnings.warn(
                    asymmetric_warning(graph_name), UserWarning, stacklevel=user_stacklevel()
                )
            check_edges(edges.n_edges, n_cells=n_cells, settings=settings, key=found.graph_key)
            n_edges = write_connectivity(
                writer,
                edges,
                n_cells=n_cells,
                settings=settings,
                compiler_loaded=compiled_genes,
            )
            del edges  # the writer holds the arrays until they are written, then they are freed
            bar.advance(writer.bytes_queued - before)  # the edges, as encoded
        bar.lap("graph")
        encoded = writer.bytes_queued - obs_queued  # counted as encoded: embeddings and graph
        # everything but the genes is queued: the total is exact from here on
        weight = bar.write_weight
        bar.set_total(
            (1 + weight) * (encoded + _gene_payload_bytes(found, settings))
            + weight * obs_queued
            + sum(_obs_work(f, found, settings) for f in found.obs_fields)
        )
        # the embeddings' coordinates served the obs stage (centroids): the gene stage's
        # blocks can have their memory (their payloads are queued, held by the writer)
        normalized.clear()
        if found_after_obs:  # large edges are written before a block of genes is held too
            writer.wait_for(writer.mark())
        release_free_memory()  # what the obs stage freed, before the genes' blocks
        if gene_writer is not None:
            bar.stage("genes")
            gene_writer.write(progress=bar, times=bar.times)
        bar.lap("genes")
        bar.stage("writing")
        writer.close()
        bar.lap("drain")
    return Written(
        n_cells=n_cells,
        embeddings=embeddings,
        vector_fields=vector_fields,
        obs_fields=obs_fields,
        codes_dtype=codes_dtype,
        n_genes=len(found.genes.names) if found.genes is not None else 0,
        n_edges=n_edges,
        payload_files=writer.files_written + (gene_writer.files_written if client else 0),
        payload_bytes=writer.bytes_written + (gene_writer.bytes_written if client else 0),
    )


def default_out_dir(
    dataset_name: str | None, dataset_id: str | None, *, fallback_name: str
) -> tuple[Path, str]:
    """Return the folder of an export without ``out_dir`` (``exports/<dataset id>``) and its name.

    The name is ``dataset_name``, else ``dataset_id``, else ``fallback_name`` (the input
    file's name); the id is ``dataset_id``, else derived from the name.
    """
    name = dataset_name or dataset_id or fallback_name
    return Path(DEFAULT_EXPORTS_ROOT) / dataset_id_for(dataset_id, name), name


def _destination(
    adata: AnnData, out_dir: str | Path | None, *, dataset_name: str | None, dataset_id: str | None
) -> tuple[Path, str]:
    """Return the folder an export writes and the dataset's name (see ``export``'s ``out_dir``)."""
    if out_dir is not None:
        out_dir = local_path(out_dir)
        return out_dir, dataset_name if dataset_name is not None else out_dir.resolve().name
    out_dir, name = default_out_dir(
        dataset_name, dataset_id, fallback_name=_backed_file_name(adata) or "dataset"
    )
    logger.info("writing to %s (out_dir not given: exports/<dataset id>)", out_dir)
    return out_dir, name


def _backed_file_name(adata: AnnData) -> str | None:
    """Return the stem of a backed ``adata``'s file, a name for its dataset."""
    filename = getattr(adata, "filename", None) if getattr(adata, "isbacked", False) else None
    return Path(filename).stem if filename else None


def _log_summary(
    out_dir: Path | str, written: Written, times: dict[str, float], seconds: float
) -> None:
    """Log what an export wrote (info) and the seconds of each of its stages (debug)."""
    logger.info(
        "exported %s: %s cells, embeddings %s, %s obs fields, %s genes, %s edges, %s vector fields; "
        "%s payload files, %.1f MB in %.1f s",
        out_dir,
        f"{written.n_cells:,}",
        "/".join(f"{d}D" for d in written.embeddings["available_dimensions"]),
        f"{len(written.obs_fields):,}",
        f"{written.n_genes:,}",
        f"{written.n_edges:,}" if written.n_edges is not None else "no",
        f"{len(written.vector_fields['fields']) if written.vector_fields else 0:,}",
        f"{written.payload_files:,}",
        written.payload_bytes / 1e6,
        seconds,
    )
    for stage_name, stage_seconds in times.items():
        logger.debug(
            "export stage %s: %.3f s",
            stage_name,
            stage_seconds,
            extra={"cellucid_stage": stage_name, "cellucid_seconds": stage_seconds},
        )


def _progress_bar(
    found: Collected, settings: ExportSettings, *, enabled: bool, started: float
) -> ExportProgress:
    """Return the export's progress bar, its total estimated from what was found."""
    # a byte written costs more than a byte encoded when it is gzipped (benchmarks/README.md)
    weight = 3 if settings.compression else 1
    return ExportProgress(
        total=_estimated_work(found, settings, weight)
        + (1 + weight) * _gene_payload_bytes(found, settings),
        enabled=enabled,
        write_weight=weight,
        started=started,
    )


def _gene_payload_bytes(found: Collected, settings: ExportSettings) -> int:
    """Bytes of the gene payloads, before compression (exact)."""
    if found.genes is None:
        return 0
    bits = settings.var_quantization
    itemsize = np.dtype(QUANT_DTYPE[bits]).itemsize if bits else 4
    return len(found.genes.names) * found.n_cells * itemsize


def _obs_work(field: ObsField, found: Collected, settings: ExportSettings) -> int:
    """Return the work of encoding an ``obs`` field, in bytes.

    Its payloads, and for categories the latent space and embeddings that their outlier
    quantiles and centroids go through.
    """
    bits = settings.obs_continuous_quantization
    value_bytes = bits // 8 if bits else 4
    if field.kind == "continuous":
        return found.n_cells * value_bytes
    latent = found.latent.nbytes if found.latent is not None else 0
    coords = found.n_cells * sum(found.embedding_keys) * 8  # float64, every dimension's
    return found.n_cells * (1 + value_bytes) + latent + coords


def _edge_count(found: Collected) -> int:
    """Return about how many edges the graph has: half of its stored values (one triangle)."""
    return getattr(found.graph, "nnz", 0) // 2 if found.graph is not None else 0


def _edge_bytes(found: Collected) -> int:
    """Bytes of the graph's edges in memory (sources, destinations and float64 weights)."""
    return _edge_count(found) * (2 * index_dtype(found.n_cells).itemsize + WEIGHT_DTYPE.itemsize)


def _estimated_work(found: Collected, settings: ExportSettings, weight: int) -> int:
    """Return the work of everything but the genes, in bytes, as far as known before encoding.

    Payloads count once encoded and ``weight`` times written; the graph's edges are about half of its
    stored values (one triangle); an ``obs`` field counts as its :func:`_obs_work`, then a
    code or value and an outlier quantile per cell written.
    """
    n = found.n_cells
    payloads = sum(a.size * 4 for a in found.embeddings.values())
    payloads += sum(a.size * 4 for by_dim in found.vector_fields.values() for a in by_dim.values())
    payloads += _edge_count(found) * (
        2 * index_dtype(n).itemsize + (8 if settings.layout.weighted_edges else 0)
    )
    bits = settings.obs_continuous_quantization
    value_bytes = bits // 8 if bits else 4
    obs = sum(_obs_work(f, found, settings) for f in found.obs_fields)
    return (1 + weight) * payloads + obs + weight * len(found.obs_fields) * n * (value_bytes + 1)
