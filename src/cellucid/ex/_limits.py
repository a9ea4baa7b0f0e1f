"""The viewer's size limits, checked from the inputs before files are written.

The viewer refuses a payload past ``MAX_PAYLOAD_BYTES`` decoded, a JSON document past
``MAX_JSON_BYTES`` and a graph past its working set before reading them: an export that would write one fails here
instead, with what to do. The limits are read from :mod:`cellucid._format` at each call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _format

if TYPE_CHECKING:
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


def check_edges(n_edges: int, *, n_cells: int, settings: ExportSettings, key: str) -> None:
    """Refuse a graph of ``n_edges`` edges the viewer would not load, saying how to fit it.

    Its largest edge file must fit one payload and, in the current layout, the viewer's
    working set must hold its edges (at ~12M edges for 1M cells, the tighter of the two).
    """
    limit = _format.max_edges(settings.layout.name, n_cells=n_cells)
    if n_edges <= limit:
        return
    msg = (
        f"adata.obsp[{key!r}] has {n_edges:,} edges; the viewer loads at most {limit:,} "
        f"for {n_cells:,} cells (one file of {_mb(_format.MAX_PAYLOAD_BYTES)}, and "
        f"{_mb(_format.MAX_CONNECTIVITY_WORKING_BYTES)} of memory for the graph). Keep each "
        f"cell's strongest neighbours first: adata.obsp[{key!r}] = "
        f"cl.pp.prune_graph(adata.obsp[{key!r}]), or leave the graph out "
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
