"""Progress of an export: one bar over all of its work, shown to people, never in CI logs."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from contextlib import AbstractContextManager


def progress_enabled(progress: bool | None) -> bool:
    """Resolve ``progress=None`` to whether this process talks to a person."""
    if progress is not None:
        return progress
    if os.environ.get("CI") or os.environ.get("TQDM_DISABLE"):
        return False
    return "ipykernel" in sys.modules or sys.stderr.isatty()


def progress_bar(
    *, total: int, desc: str, unit: str, enabled: bool, **options: object
) -> AbstractContextManager:
    """Return a tqdm bar (a notebook widget where ipywidgets exists), or a silent one when disabled."""
    # imported here: tqdm.auto warns at import in a notebook without ipywidgets
    if (
        enabled
        and "ipykernel" in sys.modules
        and importlib.util.find_spec("ipywidgets") is not None
    ):
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

        if enabled and 0 in _terminal_size():
            # a terminal that reports no size (a fresh pseudo-terminal, some CI runners'
            # tty): tqdm would draw nothing in 0 columns or 0 lines
            options.setdefault("ncols", 80)
            options.setdefault("nrows", 24)
    # without tqdm's monitor thread (started even for a disabled bar): an export's threads
    # are its pool's and its reader's
    bar = type(tqdm.__name__, (tqdm,), {"monitor_interval": 0})
    return bar(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, **options)


def _terminal_size() -> tuple[int, int]:
    """Return the columns and lines stderr's terminal reports (0 when unknown)."""
    try:
        return tuple(os.get_terminal_size(sys.stderr.fileno()))
    except (AttributeError, OSError, ValueError):  # no file descriptor, or not a terminal
        return (0, 0)


class ExportProgress:
    """One bar for a whole export, advancing with the work done.

    The work is counted in bytes of payload: once when they are encoded (the graph's
    edges, the normalized embeddings, each part of a block of genes) and ``write_weight``
    times when their file is written (compressing costs more than encoding, so the export
    weighs it more when it gzips); an ``obs`` field counts, when
    encoded, the bytes its outlier quantiles and centroids go through. The total starts
    as an estimate and is made exact once everything but the genes is encoded (gene
    payload sizes are known from the start), so the bar's rate and remaining time reflect
    the export as a whole. The bar shows a percentage and the stage, not byte counts.

    It also times the stages (:meth:`lap`), from ``started`` on, for the debug log.
    """

    def __init__(
        self, *, total: int, enabled: bool, write_weight: int = 1, started: float | None = None
    ) -> None:
        #: seconds spent in each stage
        self.times: dict[str, float] = {}
        self._clock = time.perf_counter() if started is None else started
        self._lock = threading.Lock()
        #: how many times a payload byte written counts, against once encoded
        self.write_weight = write_weight
        self._bar = progress_bar(
            total=max(1, total),
            desc="export",
            unit="B",
            enabled=enabled,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        )

    def stage(self, name: str) -> None:
        """Show that the export is in stage ``name`` (graph, obs, genes, publish, ...)."""
        with self._lock:
            self._bar.set_description_str(f"export {name}", refresh=True)

    def lap(self, stage: str) -> None:
        """Add the time since the last lap (or the start) to ``stage``'s seconds."""
        now = time.perf_counter()
        self.times[stage] = self.times.get(stage, 0.0) + now - self._clock
        self._clock = now

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` more of work as done (called from any thread)."""
        with self._lock:
            self._bar.update(nbytes)

    def written(self, nbytes: int) -> None:
        """Count a payload of ``nbytes`` (uncompressed) as written (called from any thread)."""
        self.advance(nbytes * self.write_weight)

    def set_total(self, total: int) -> None:
        """Replace the estimated total by ``total`` (never below the work done)."""
        with self._lock:
            self._bar.total = max(total, self._bar.n, 1)
            self._bar.refresh()

    def finish(self) -> None:
        """Fill the bar (the last steps write no payload) and close it."""
        with self._lock:
            self._bar.update(max(0, self._bar.total - self._bar.n))
            self._bar.close()

    def close(self) -> None:
        """Close the bar as it is (on failure)."""
        with self._lock:
            self._bar.close()
