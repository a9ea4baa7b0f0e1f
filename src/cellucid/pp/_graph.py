"""kNN graph to the viewer's edge list."""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import sparse

from .._warn import user_stacklevel
from ._groups import compiled

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


class Edges(NamedTuple):
    """Upper-triangle edges of a symmetric graph, sorted by (src, dst).

    Attributes
    ----------
    src, dst
        Edge ends, ``src < dst``.
    weights
        float64 edge weights, all > 0.
    max_neighbors
        The largest number of edges at one cell.
    """

    src: np.ndarray
    dst: np.ndarray
    weights: np.ndarray
    max_neighbors: int

    @property
    def n_edges(self) -> int:
        """The number of edges."""
        return int(self.src.shape[0])


def graph_edges(
    connectivities: ArrayLike | sparse.spmatrix | sparse.sparray, *, name: str = "graph"
) -> Edges:
    """Turn a kNN graph into the sorted upper-triangle edge list the viewer draws.

    A symmetric graph (such as scanpy's ``connectivities``) is taken as is; an asymmetric
    one is symmetrized by the element-wise maximum, with a warning. The diagonal and stored
    zeros are dropped.

    Parameters
    ----------
    connectivities
        Square matrix of non-negative, finite weights (sparse or dense).
    name
        What to call the graph in messages.

    Returns
    -------
    Edge sources and destinations (``src < dst``, increasing by ``(src, dst)``; int32 below 2**31 cells),
    float64 weights and the largest number of neighbours of a cell.

    Examples
    --------
    >>> import numpy as np
    >>> import cellucid as cl
    >>> g = np.array([[0, 0.5, 0], [0.5, 0, 1], [0, 1, 0]])
    >>> e = cl.pp.graph_edges(g)
    >>> e.src, e.dst, e.weights, e.max_neighbors
    (array([0, 1], dtype=int32), array([1, 2], dtype=int32), array([0.5, 1. ]), 2)

    """
    edges, symmetric = symmetric_edges(connectivities, name=name)
    if not symmetric:
        warnings.warn(asymmetric_warning(name), UserWarning, stacklevel=user_stacklevel())
    return edges


class UpperEdges:
    """A symmetric graph's :class:`Edges`, made a part at a time (see :func:`edge_parts`).

    ``n_edges`` and ``max_neighbors`` are counted; :meth:`weights` and :meth:`ends` fill new
    arrays at each call, so that a writer holds only the part it writes (at 1M cells, 92 MB
    of weights or 92 MB of ends instead of both).
    """

    def __init__(
        self,
        g: sparse.csr_matrix,
        kernels: ModuleType,
        n_edges: int,
        max_neighbors: int,
        index: type[np.integer],
    ) -> None:
        self._g, self._kernels, self._index = g, kernels, index
        self.n_edges, self.max_neighbors = n_edges, max_neighbors

    def weights(self) -> np.ndarray:
        """Return the float64 weights."""
        weights = np.empty(self.n_edges, dtype=np.float64)
        none = np.empty(0, dtype=self._index)
        self._kernels.fill_upper_edges(
            self._g.indptr, self._g.indices, self._g.data, none, none, weights
        )
        return weights

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the sources and destinations."""
        src, dst = (np.empty(self.n_edges, dtype=self._index) for _ in range(2))
        none = np.empty(0, dtype=np.float64)
        self._kernels.fill_upper_edges(
            self._g.indptr, self._g.indices, self._g.data, src, dst, none
        )
        return src, dst

    def whole(self) -> Edges:
        """Return every part at once."""
        src, dst = self.ends()
        return Edges(src, dst, self.weights(), self.max_neighbors)


def asymmetric_warning(name: str) -> str:
    """Return the warning about an asymmetric graph called ``name``."""
    return f"{name} is not symmetric; symmetrizing it by the element-wise maximum."


def symmetric_edges(
    connectivities: ArrayLike | sparse.spmatrix | sparse.sparray, *, name: str = "graph"
) -> tuple[Edges, bool]:
    """:func:`graph_edges` without its warning: the edges, and whether the graph was symmetric.

    For a caller that warns in another thread than this one runs in (the export finds the
    edges on its pool).
    """
    edges, symmetric = edge_parts(connectivities, name=name)
    return (edges.whole() if isinstance(edges, UpperEdges) else edges), symmetric


def edge_parts(
    connectivities: ArrayLike | sparse.spmatrix | sparse.sparray, *, name: str = "graph"
) -> tuple[Edges | UpperEdges, bool]:
    """:func:`symmetric_edges`, as parts made on demand where the compiled kernels find them.

    A large symmetric graph's edges are then counted, not made (:class:`UpperEdges`).
    """
    g = sparse.csr_matrix(connectivities)  # shares the caller's arrays: never modified in place
    if g.shape[0] != g.shape[1]:
        msg = f"{name} must be square, got shape {g.shape}."
        raise ValueError(msg)
    good = g.data >= 0  # False for NaN
    good &= g.data < np.inf
    if not good.all():
        msg = f"{name} has {good.size - np.count_nonzero(good):,} negative or non-finite weights; edge weights must be finite and >= 0."
        raise ValueError(msg)
    del good
    n = g.shape[0]
    if not g.has_canonical_format:  # unsorted or duplicated indices: sort a copy
        g = g.copy()
        g.sum_duplicates()
    index = np.int32 if n < 2**31 else np.int64
    kernels = compiled(n) if g.data.dtype in (np.float32, np.float64) else None
    if kernels is not None:  # one pass finds a symmetric graph's edges (else: numpy, below)
        symmetric, n_edges, max_neighbors = kernels.symmetric_upper_edges(
            g.indptr, g.indices, g.data, _MIRROR_BAND_ENTRIES
        )
        if symmetric:
            return UpperEdges(g, kernels, int(n_edges), int(max_neighbors), index), True
    # the transpose, re-laid-out as CSR in one linear pass, has sorted indices too
    gt = g.T.tocsr()
    symmetric = (
        np.array_equal(g.indptr, gt.indptr)
        and np.array_equal(g.indices, gt.indices)
        and np.array_equal(g.data, gt.data)
    )
    if not symmetric:
        g = g.maximum(gt).tocsr()
        g.sort_indices()
    del gt
    # rows ascend and each row's indices ascend, so the kept entries are sorted by (src, dst);
    # they are found a chunk of rows at a time, so no temporary is as large as the graph
    step = max(1, _CHUNK_ENTRIES * n // max(1, g.nnz))
    chunks = [(r0, min(r0 + step, n)) for r0 in range(0, n, step)]
    keeps = []
    for r0, r1 in chunks:
        rows, entries = _chunk_rows(g, r0, r1, index)
        keep = g.indices[entries] > rows
        keep &= g.data[entries] != 0
        keeps.append(keep)
    n_edges = sum(int(np.count_nonzero(keep)) for keep in keeps)
    src, dst = np.empty(n_edges, dtype=index), np.empty(n_edges, dtype=index)
    weights = np.empty(n_edges, dtype=np.float64)
    at = 0
    for (r0, r1), keep in zip(chunks, keeps, strict=True):
        rows, entries = _chunk_rows(g, r0, r1, index)
        k = slice(at, at + np.count_nonzero(keep))
        src[k], dst[k], weights[k] = rows[keep], g.indices[entries][keep], g.data[entries][keep]
        at = k.stop
    degree = np.bincount(src, minlength=n) + np.bincount(dst, minlength=n)
    max_neighbors = int(degree.max()) if n_edges else 0
    return Edges(src, dst, weights, max_neighbors), symmetric


# stored entries per chunk of rows when extracting edges
_CHUNK_ENTRIES = 2**22
# entries below the diagonal the compiled symmetry check transposes at once (a band of
# columns): 16 MiB of rows and float32 values, where all of them took 276 MB at 1M cells
_MIRROR_BAND_ENTRIES = 2**21


def _chunk_rows(g: sparse.csr_matrix, r0: int, r1: int, dtype: type) -> tuple[np.ndarray, slice]:
    """Return the row of each stored entry of rows ``r0 .. r1 - 1`` and those entries' slice."""
    rows = np.repeat(np.arange(r0, r1, dtype=dtype), np.diff(g.indptr[r0 : r1 + 1]))
    return rows, slice(int(g.indptr[r0]), int(g.indptr[r1]))


def strongest_edges(edges: Edges, max_edges: int, *, n_cells: int) -> Edges:
    """Keep each cell's strongest edges, as many per cell as ``max_edges`` edges in all allow.

    An edge's rank at a cell is its place among that cell's edges by decreasing weight
    (ties: by ``(src, dst)``). With ``k`` the largest number that fits, every edge that is
    among the ``k`` strongest of either of its cells is kept, so every cell with an edge
    keeps at least one. The kept edges stay sorted by ``(src, dst)``.
    """
    m = edges.src.shape[0]
    if m <= max_edges:
        return edges
    ends = np.concatenate([edges.src, edges.dst])
    order = np.lexsort((-np.concatenate([edges.weights, edges.weights]), ends))
    degree = np.bincount(ends, minlength=n_cells)
    rank = np.empty(2 * m, dtype=np.int64)
    rank[order] = np.arange(2 * m) - np.repeat(np.cumsum(degree) - degree, degree)
    del order, ends
    best = np.minimum(rank[:m], rank[m:])  # the edge's best place at either end
    del rank
    kept_up_to = np.cumsum(np.bincount(best))  # edges kept when each cell keeps its r + 1 strongest
    k = int(np.searchsorted(kept_up_to, max_edges, side="right"))
    if k == 0:
        msg = (
            f"Even one neighbour per cell makes {int(kept_up_to[0]):,} edges, more than "
            f"max_edges={max_edges:,}."
        )
        raise ValueError(msg)
    keep = best < k
    src, dst = edges.src[keep], edges.dst[keep]
    degree = np.bincount(src, minlength=n_cells) + np.bincount(dst, minlength=n_cells)
    return Edges(src, dst, edges.weights[keep], int(degree.max()) if src.size else 0)


def prune_graph(
    connectivities: ArrayLike | sparse.spmatrix | sparse.sparray,
    *,
    max_edges: int | None = None,
    name: str = "graph",
) -> sparse.csr_matrix:
    """Keep each cell's strongest neighbours so that a kNN graph fits the viewer's limit.

    The viewer holds a graph's edges in at most 512 MiB of memory (44 bytes per edge and 4
    per cell: ~12 million edges for a million cells, about a 15-NN graph) and reads at
    most 512 MiB per file (67,108,864 float64 weights); the export refuses a larger graph. This keeps, for the largest ``k`` that fits, every edge that is among
    the ``k`` strongest of either of its cells (so every connected cell stays connected),
    and warns how many edges were dropped.

    Parameters
    ----------
    connectivities
        Square matrix of non-negative, finite weights (sparse or dense), as
        :func:`graph_edges` takes it.
    max_edges
        Most undirected edges to keep; by default as many as the export writes for this
        many cells (current layout).
    name
        What to call the graph in messages.

    Returns
    -------
    A symmetric CSR matrix with the kept edges (the input's weights and dtype), or the
    symmetrized graph when it fits already.

    Examples
    --------
    >>> import numpy as np
    >>> import cellucid as cl
    >>> g = np.array([[0, 0.9, 0.1], [0.9, 0, 0.5], [0.1, 0.5, 0]])
    >>> cl.pp.prune_graph(g, max_edges=2).toarray()
    array([[0. , 0.9, 0. ],
           [0.9, 0. , 0.5],
           [0. , 0.5, 0. ]])

    """
    from .._format import max_edges as format_max_edges

    n = int(np.shape(connectivities)[0])
    limit = format_max_edges(n_cells=n) if max_edges is None else int(max_edges)
    dtype = getattr(connectivities, "dtype", np.float64)
    edges = graph_edges(connectivities, name=name)
    kept = strongest_edges(edges, limit, n_cells=n)
    dropped = edges.src.shape[0] - kept.src.shape[0]
    if dropped:
        warnings.warn(
            f"{name}: dropped {dropped:,} of {edges.src.shape[0]:,} edges to fit {limit:,}; "
            "each cell keeps its strongest neighbours.",
            UserWarning,
            stacklevel=2,
        )
    weights = kept.weights.astype(dtype, copy=False)
    return sparse.csr_matrix(
        (
            np.concatenate([weights, weights]),
            (np.concatenate([kept.src, kept.dst]), np.concatenate([kept.dst, kept.src])),
        ),
        shape=(n, n),
    )
