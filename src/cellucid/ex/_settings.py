"""The options of an export, checked once, and their defaults (spelled once, here).

``cl.ex.export``'s signature and the ``cellucid export`` command line both take their
defaults from these constants. The options come in small value objects, each checked when
it is made: :class:`Selection` (what is taken from the AnnData), :class:`ExportSettings`
(how it is encoded: every writer reads it) and :class:`Resources` (what the export may
use; the files never depend on it). What the dataset is called lives with its identity
(:class:`~cellucid.ex._identity.Description`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Literal

import numpy as np

from .._format import (
    DEFAULT_CENTROID_MIN_POINTS,
    DEFAULT_CENTROID_OUTLIER_QUANTILE,
    MAX_CATEGORIES,
    LayoutName,
)
from .._layout import Layout
from .._layout import layout as _layout
from ._arithmetic import Arithmetic, arithmetic
from ._genes import DEFAULT_MEMORY_BUDGET
from ._payload import default_n_jobs, gzip_encoder
from ._progress import progress_enabled

#: the embedding ``export`` looks for: ``obsm["X_umap"]``, ``obsm["X_umap_3d"]``, ...
DEFAULT_BASIS = "umap"
#: where ``export`` writes without ``out_dir``: ``exports/<dataset id>``, the folder
#: ``write_catalog("exports")`` lists
DEFAULT_EXPORTS_ROOT = "exports"
DEFAULT_OBS_CATEGORICAL_DTYPE = "auto"
DEFAULT_GZIP_ENCODER = "auto"
DEFAULT_LAYOUT: LayoutName = "current"

__all__ = [
    "DEFAULT_BASIS",
    "DEFAULT_CENTROID_MIN_POINTS",
    "DEFAULT_CENTROID_OUTLIER_QUANTILE",
    "DEFAULT_EXPORTS_ROOT",
    "DEFAULT_GZIP_ENCODER",
    "DEFAULT_LAYOUT",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_OBS_CATEGORICAL_DTYPE",
    "ExportSettings",
    "Resources",
    "Selection",
    "keywords_of",
]


def keywords_of(group: type, keywords: Mapping[str, object], *aliases: str) -> dict[str, object]:
    """Return the keywords of an :func:`~cellucid.ex.export` call that ``group`` takes.

    ``group`` is one of the value objects below; it takes its fields and ``aliases``.
    """
    names = {field.name for field in fields(group)}.union(aliases)
    return {name: value for name, value in keywords.items() if name in names}


def _is_int(value: object) -> bool:
    """Whether ``value`` is an integer (``True`` and ``False`` are not)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class Selection:
    """What an export takes from the AnnData: each option overrides one discovery.

    See :func:`~cellucid.ex.export` for each option; ``None`` (and ``vector_fields=True``)
    mean "found in ``adata``".
    """

    basis: str = DEFAULT_BASIS
    latent_key: str | Literal[False] | None = None
    vector_fields: bool | Sequence[str] = True
    connectivities_key: str | Literal[False] | None = None
    obs_keys: Sequence[str] | None = None
    var_names: Sequence[str] | None = None
    layer: str | None = None
    use_raw: bool = False
    gene_id_column: str | None = None

    def __post_init__(self) -> None:
        if self.use_raw and self.layer is not None:
            msg = "Pass either layer= or use_raw=True, not both."
            raise ValueError(msg)

    @classmethod
    def checked(cls, *, gene_symbols: str | None = None, **options: object) -> Selection:
        """Build a selection; ``gene_symbols`` is ``gene_id_column`` under scanpy's name."""
        gene_id_column = options.pop("gene_id_column", None)
        if gene_symbols is not None:
            if gene_id_column is not None and gene_id_column != gene_symbols:
                msg = f"gene_symbols={gene_symbols!r} and gene_id_column={gene_id_column!r} name the same option; pass one."
                raise ValueError(msg)
            gene_id_column = gene_symbols
        return cls(gene_id_column=gene_id_column, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ExportSettings:
    """Encoding options shared by every writer of one export."""

    layout: Layout
    compression: int | None = None
    var_quantization: int | None = None
    obs_continuous_quantization: int | None = None
    obs_categorical_dtype: str = DEFAULT_OBS_CATEGORICAL_DTYPE
    centroid_outlier_quantile: float | None = DEFAULT_CENTROID_OUTLIER_QUANTILE
    centroid_min_points: int = DEFAULT_CENTROID_MIN_POINTS

    def __post_init__(self) -> None:
        compression = self.compression
        if compression is not None and (
            isinstance(compression, bool) or compression not in range(10)
        ):
            msg = f"compression must be None or a gzip level 0-9 (0 or None: uncompressed), got {compression!r}."
            raise ValueError(msg)
        object.__setattr__(self, "compression", compression or None)  # 0: uncompressed
        for name in ("var_quantization", "obs_continuous_quantization"):
            bits = getattr(self, name)
            if bits is not None and (isinstance(bits, bool) or bits not in (8, 16)):
                msg = f"{name} must be None (float32), 8 or 16, got {bits!r}."
                raise ValueError(msg)
        if self.obs_categorical_dtype not in ("auto", *MAX_CATEGORIES):
            msg = f"obs_categorical_dtype must be 'auto', 'uint8' or 'uint16', got {self.obs_categorical_dtype!r}."
            raise ValueError(msg)
        q = self.centroid_outlier_quantile
        if q is not None and not 0 < q < 1:
            msg = f"centroid_outlier_quantile must be None or strictly between 0 and 1, got {q!r}."
            raise ValueError(msg)
        if isinstance(self.centroid_min_points, bool) or not (
            isinstance(self.centroid_min_points, int) and self.centroid_min_points >= 1
        ):
            msg = (
                f"centroid_min_points must be a positive integer, got {self.centroid_min_points!r}."
            )
            raise ValueError(msg)

    @classmethod
    def checked(cls, *, layout: str, **options: object) -> ExportSettings:
        """Build settings for the layout called ``layout``, raising a clear error for any option out of range."""
        return cls(_layout(layout), **options)  # type: ignore[arg-type]

    @property
    def arithmetic(self) -> Arithmetic:
        """How the layout turns values into payloads (the legacy layout: the original float32)."""
        return arithmetic(self.layout)


@dataclass(frozen=True)
class Resources:
    """What an export may use: threads, memory, a deflate implementation, a progress bar.

    The written files do not depend on them, but for the compressed bytes on the gzip
    encoder (see :func:`~cellucid.ex.export`).
    """

    n_jobs: int | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    gzip_encoder: str = DEFAULT_GZIP_ENCODER
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.n_jobs is not None and not (
            _is_int(self.n_jobs) and (self.n_jobs >= 1 or self.n_jobs == -1)
        ):
            msg = f"n_jobs must be a positive number of threads, or None or -1 for all cores, got {self.n_jobs!r}."
            raise ValueError(msg)
        if not (_is_int(self.memory_budget) and self.memory_budget > 0):
            msg = f"memory_budget must be a positive number of bytes, got {self.memory_budget!r}."
            raise ValueError(msg)
        gzip_encoder(self.gzip_encoder)  # an unknown name, or zlib-ng not installed
        if self.progress is not None and not (
            isinstance(self.progress, bool | np.bool_)
            or (_is_int(self.progress) and self.progress in (0, 1))
        ):
            msg = f"progress must be True, False or None (None: on a terminal or in a notebook), got {self.progress!r}."
            raise ValueError(msg)

    @property
    def threads(self) -> int:
        """The number of threads: ``n_jobs``, or every core this process may use."""
        return default_n_jobs() if self.n_jobs in (None, -1) else int(self.n_jobs)

    @property
    def deflate(self) -> ModuleType:
        """The deflate implementation ``gzip_encoder`` names."""
        return gzip_encoder(self.gzip_encoder)

    @property
    def show_progress(self) -> bool:
        """Whether to show the progress bar (``None``: when a person is watching)."""
        return progress_enabled(None if self.progress is None else bool(self.progress))
