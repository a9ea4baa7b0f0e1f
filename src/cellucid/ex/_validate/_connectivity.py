"""The connectivity manifest (``connectivity_manifest.json``) and its edge payloads."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..._format import (
    CELL_WORKING_BYTES,
    CONNECTIVITY_MANIFEST,
    CONNECTIVITY_MANIFEST_KEYS,
    EDGE_FORMAT,
    FLOAT_DTYPE,
    MAX_CONNECTIVITY_WORKING_BYTES,
    WEIGHT_DTYPE,
    edge_working_bytes,
    index_dtype,
)
from ._context import Part
from ._payloads import _payload_problem
from ._values import (
    _is_int,
    _raw,
)

#: edges checked at a time (src, dst and weights in lockstep)
_EDGE_CHUNK = 2**20
#: the largest cell count the viewer's uint32 cell axis addresses
_MAX_CONNECTIVITY_CELLS = 2**32


class ConnectivityChecker(Part):
    """The connectivity manifest and its edges, streamed in lockstep."""

    def check_connectivity(self, man: object) -> None:
        rel = CONNECTIVITY_MANIFEST
        weighted = self.facts.lay.weighted_edges
        if not self.ctx.check_keys(
            rel, man, "connectivity.keys", CONNECTIVITY_MANIFEST_KEYS[self.facts.layout]
        ):
            return
        if "format" in man and man["format"] != EDGE_FORMAT:
            self.ctx.add(rel, "connectivity.format", _raw(man["format"]), EDGE_FORMAT)
        vals: dict[str, int] = {}
        highest = {"n_cells": _MAX_CONNECTIVITY_CELLS}
        for key, lowest in (("n_cells", 1), ("n_edges", 0), ("max_neighbors", 0)):
            value = man.get(key)
            if key in man:
                if _is_int(value) and lowest <= value <= highest.get(key, value):  # type: ignore[operator]
                    vals[key] = int(value)  # type: ignore[call-overload]
                else:
                    self.ctx.add(
                        rel,
                        "connectivity.value",
                        f"{key} = {_raw(value)}",
                        f"an integer >= {lowest}"
                        + (f" and <= {highest[key]}" if key in highest else ""),
                    )
        if weighted:
            if "weight_dtype" in man and man["weight_dtype"] != "float64":
                self.ctx.add(
                    rel,
                    "connectivity.value",
                    f"weight_dtype = {_raw(man['weight_dtype'])}",
                    '"float64"',
                )
            if "weight_bytes" in man and not (
                _is_int(man["weight_bytes"]) and man["weight_bytes"] == WEIGHT_DTYPE.itemsize
            ):
                self.ctx.add(
                    rel, "connectivity.value", f"weight_bytes = {_raw(man['weight_bytes'])}", "8"
                )
        compression = self.ctx.check_compression_value(rel, man)
        n_cells, n_edges, max_nb = (
            vals.get("n_cells"),
            vals.get("n_edges"),
            vals.get("max_neighbors"),
        )
        if n_cells is not None and self.facts.n_cells is not None and n_cells != self.facts.n_cells:
            self.ctx.add(
                rel,
                "connectivity.stats",
                f"n_cells {n_cells}",
                f"stats.n_cells = {self.facts.n_cells}",
            )
        if n_edges is not None and self.facts.n_edges is not None and n_edges != self.facts.n_edges:
            self.ctx.add(
                rel,
                "connectivity.stats",
                f"n_edges {n_edges}",
                f"stats.n_edges = {self.facts.n_edges}",
            )
        idt_name, idt_bytes = man.get("index_dtype"), man.get("index_bytes")
        if n_cells is not None:
            want = index_dtype(n_cells)
            want_name = "uint16" if want.itemsize == 2 else "uint32"
            if idt_name != want_name or not (_is_int(idt_bytes) and idt_bytes == want.itemsize):
                self.ctx.add(
                    rel,
                    "connectivity.index_dtype",
                    f"index_dtype {_raw(idt_name)}, index_bytes {_raw(idt_bytes)}",
                    f"{want_name!r}/{want.itemsize} for {n_cells} cells",
                )
        if n_cells is not None and n_edges is not None and n_edges > n_cells * (n_cells - 1) // 2:
            self.ctx.add(
                rel,
                "connectivity.n_edges",
                f"n_edges {n_edges}",
                f"at most n_cells (n_cells - 1) / 2 = {n_cells * (n_cells - 1) // 2}",
            )
        if max_nb is not None and n_edges is not None and n_cells is not None:
            limit = min(n_cells - 1, n_edges)
            if max_nb > limit or (max_nb == 0) != (n_edges == 0):
                self.ctx.add(
                    rel,
                    "connectivity.max_neighbors",
                    f"max_neighbors {max_nb} with n_edges {n_edges}",
                    f"<= min(n_cells - 1, n_edges) = {limit}, and 0 exactly when n_edges is 0",
                )
        if n_cells is not None and n_edges is not None and weighted:
            per_edge = edge_working_bytes(n_cells)
            working = per_edge * n_edges + CELL_WORKING_BYTES * n_cells
            if working > MAX_CONNECTIVITY_WORKING_BYTES:
                self.ctx.add(
                    rel,
                    "connectivity.working_set",
                    f"{n_edges} edges and {n_cells} cells need {working} bytes in the viewer",
                    f"at most {MAX_CONNECTIVITY_WORKING_BYTES} bytes "
                    f"({per_edge} per edge + {CELL_WORKING_BYTES} per cell)",
                )
        keys = ["sourcesPath", "destinationsPath"] + (["weightsPath"] if weighted else [])
        paths: dict[str, str | None] = {}
        for key in keys:
            if key not in man:
                paths[key] = None
                continue
            path = self.ctx.declare(rel, man[key], key)
            if path is not None:
                self.ctx.check_suffix(rel, key, path, compression)
            paths[key] = path
        if n_cells is None or n_edges is None:
            return
        self.check_edges(paths, n_cells, n_edges, max_nb, weighted)

    def cells_checked(self, n_cells: int) -> bool:
        """Whether ``n_cells`` is the identity's count and a points file on disk fits it."""
        if self.facts.n_cells is not None and n_cells != self.facts.n_cells:
            return False
        points = self.facts.points_paths
        return any(
            _payload_problem(self.ctx.dir, self.ctx.base, path, n_cells * d * FLOAT_DTYPE.itemsize)
            is None
            for d, path in points.items()
        )

    def check_edges(
        self,
        paths: dict[str, str | None],
        n_cells: int,
        n_edges: int,
        max_nb: int | None,
        weighted: bool,
    ) -> None:
        idt = index_dtype(n_cells)
        its: list[Iterator[np.ndarray]] = []
        for key in ("sourcesPath", "destinationsPath", "weightsPath"):
            path = paths.get(key)
            if path is not None:
                dtype = WEIGHT_DTYPE if key == "weightsPath" else idt
                its.append(self.ctx.payload_chunks(path, dtype, n_edges, _EDGE_CHUNK))
        complete = len(its) == (3 if weighted else 2)
        src_path = paths.get("sourcesPath") or CONNECTIVITY_MANIFEST
        w_path = paths.get("weightsPath") or CONNECTIVITY_MANIFEST
        n_upper = n_order = n_range = n_weight = seen = 0
        prev: tuple[int, int] | None = None
        # degrees are counted in an array sized by cells, so only for a cell count that the
        # identity and a points file on disk back (never for one a payload or manifest claims)
        count_degrees = complete and self.cells_checked(n_cells)
        degree = np.zeros(0, dtype=np.int32)  # grows to the largest index seen (< n_cells)
        if complete:
            for chunks in zip(*its, strict=False):
                m = min(len(c) for c in chunks)
                src = chunks[0][:m].astype(np.int64)
                dst = chunks[1][:m].astype(np.int64)
                if m == 0:
                    continue
                seen += m
                n_upper += int(np.count_nonzero(src >= dst))
                inside = (src < n_cells) & (dst < n_cells)
                n_range += m - int(np.count_nonzero(inside))
                s_all = src if prev is None else np.concatenate(([prev[0]], src))
                d_all = dst if prev is None else np.concatenate(([prev[1]], dst))
                increasing = (s_all[1:] > s_all[:-1]) | (
                    (s_all[1:] == s_all[:-1]) & (d_all[1:] > d_all[:-1])
                )
                n_order += int(np.count_nonzero(~increasing))
                prev = (int(src[-1]), int(dst[-1]))
                ends = np.concatenate((src[inside], dst[inside]))
                if count_degrees and ends.size:
                    top = int(ends.max()) + 1
                    if top > degree.size:
                        grown = min(max(top, 2 * degree.size), n_cells)
                        degree = np.concatenate((degree, np.zeros(grown - degree.size, np.int32)))
                    if top <= 4 * ends.size:
                        degree[:top] += np.bincount(ends, minlength=top)
                    else:
                        np.add.at(degree, ends, 1)
                if weighted:
                    w = chunks[2][:m]
                    n_weight += int(np.count_nonzero(~(np.isfinite(w) & (w > 0))))
        for it in its:  # finish every file so its envelope is checked
            for _ in it:
                pass
        if n_upper:
            self.ctx.add(
                src_path,
                "edges.upper",
                f"{n_upper} edge(s) with src >= dst",
                "src < dst (upper triangle only)",
            )
        if n_order:
            self.ctx.add(
                src_path,
                "edges.order",
                f"{n_order} edge(s) out of order",
                "edges strictly increasing by (src, dst)",
            )
        if n_range:
            self.ctx.add(
                src_path,
                "edges.range",
                f"{n_range} edge(s) with an index >= {n_cells}",
                f"indices < n_cells = {n_cells}",
            )
        if n_weight:
            self.ctx.add(
                w_path,
                "edges.weights",
                f"{n_weight} weight(s) not finite or <= 0",
                "finite weights > 0",
            )
        if count_degrees and seen == n_edges and not n_range and max_nb is not None:
            true_max = int(degree.max()) if degree.size else 0
            if true_max != max_nb:
                self.ctx.add(
                    CONNECTIVITY_MANIFEST,
                    "edges.max_neighbors",
                    f"max_neighbors {max_nb}",
                    f"{true_max} (the true maximum degree)",
                )
