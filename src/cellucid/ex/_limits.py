"""The viewer's size limits, checked from the inputs before files are written.

The viewer refuses a payload past ``MAX_PAYLOAD_BYTES`` decoded and a JSON document past
``MAX_JSON_BYTES`` before reading them: an export that would write one fails here
instead, with what to do. The limits are read from :mod:`cellucid._format` at each call.
"""

from __future__ import annotations

from .. import _format
from ..pp import Edges
from ._collect import Collected
from ._settings import ExportSettings


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def _refuse(what: str, nbytes: int, todo: str) -> None:
    limit = _format.MAX_PAYLOAD_BYTES
    if nbytes > limit:
        msg = (
            f"{what} would take {_mb(nbytes)} in one file, past the {_mb(limit)} the viewer reads "
            f"per file; {todo}"
        )
        raise ValueError(msg)


def check_payload_sizes(found: Collected) -> None:
    """Refuse an export whose per-cell payloads would pass the viewer's limit.

    The points of the largest dimension are the largest: vector fields are as large as
    the points of their dimension, obs and gene payloads take at most 4 bytes per cell.
    """
    n, dim = found.n_cells, max(found.embeddings)
    _refuse(
        f"The {dim}-D points of {n:,} cells",
        n * dim * _format.FLOAT_DTYPE.itemsize,
        "export a subsample of the cells (e.g. sc.pp.sample).",
    )


def check_edges(edges: Edges, *, n_cells: int, settings: ExportSettings, key: str) -> None:
    """Refuse a graph whose edge files would pass the viewer's limit, saying how to fit it."""
    n_edges = int(edges.src.shape[0])
    limit = _format.max_edges(settings.layout.name)
    if n_edges <= limit:
        return
    index_bytes = _format.index_dtype(n_cells).itemsize
    per_edge = max(
        index_bytes, _format.WEIGHT_DTYPE.itemsize if settings.layout.weighted_edges else 0
    )
    msg = (
        f"adata.obsp[{key!r}] has {n_edges:,} edges: its edge files would take "
        f"{_mb(n_edges * per_edge)}, past the {_mb(_format.MAX_PAYLOAD_BYTES)} the viewer reads per "
        f"file ({limit:,} edges). Keep each cell's strongest neighbours first: "
        f"adata.obsp[{key!r}] = cl.pp.prune_graph(adata.obsp[{key!r}]), or leave the graph out "
        "(connectivities_key=False)."
    )
    raise ValueError(msg)


def check_json_size(name: str, nbytes: int) -> None:
    """Refuse a JSON document the viewer would not read."""
    limit = _format.MAX_JSON_BYTES
    if nbytes > limit:
        todo = {
            _format.OBS_MANIFEST: "export fewer obs fields or categories (obs_keys=), or no "
            "label centroids (centroid_outlier_quantile=None).",
            _format.VAR_MANIFEST: "export fewer genes (var_names=) or float32 values "
            "(var_quantization=None: no bounds per gene).",
        }.get(name, "export fewer fields.")
        msg = f"{name} would be {_mb(nbytes)}, past the {_mb(limit)} the viewer reads per JSON file; {todo}"
        raise ValueError(msg)
