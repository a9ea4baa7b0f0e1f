"""The options of an export, checked once, and their defaults (spelled once, here).

``cl.ex.export``'s signature and the ``cellucid export`` command line both take their
defaults from these constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._format import (
    DEFAULT_CENTROID_MIN_POINTS,
    DEFAULT_CENTROID_OUTLIER_QUANTILE,
    MAX_CATEGORIES,
    Layout,
    LayoutName,
    layout,
)
from ._genes import DEFAULT_MEMORY_BUDGET

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
]


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

    @classmethod
    def checked(
        cls, *, layout_name: str, compression: int | None, **options: object
    ) -> ExportSettings:
        """Build settings, raising a clear error for any option out of range."""
        if compression is not None and (
            isinstance(compression, bool) or compression not in range(10)
        ):
            msg = f"compression must be None or a gzip level 0-9 (0 or None: uncompressed), got {compression!r}."
            raise ValueError(msg)
        settings = cls(layout(layout_name), compression or None, **options)  # type: ignore[arg-type]
        for name in ("var_quantization", "obs_continuous_quantization"):
            bits = getattr(settings, name)
            if bits is not None and (isinstance(bits, bool) or bits not in (8, 16)):
                msg = f"{name} must be None (float32), 8 or 16, got {bits!r}."
                raise ValueError(msg)
        if settings.obs_categorical_dtype not in ("auto", *MAX_CATEGORIES):
            msg = f"obs_categorical_dtype must be 'auto', 'uint8' or 'uint16', got {settings.obs_categorical_dtype!r}."
            raise ValueError(msg)
        q = settings.centroid_outlier_quantile
        if q is not None and not 0 < q < 1:
            msg = f"centroid_outlier_quantile must be None or strictly between 0 and 1, got {q!r}."
            raise ValueError(msg)
        if isinstance(settings.centroid_min_points, bool) or not (
            isinstance(settings.centroid_min_points, int) and settings.centroid_min_points >= 1
        ):
            msg = f"centroid_min_points must be a positive integer, got {settings.centroid_min_points!r}."
            raise ValueError(msg)
        return settings
