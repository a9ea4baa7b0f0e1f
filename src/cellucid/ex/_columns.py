"""Checks of input values that the export would otherwise change silently: complex numbers, mixed types."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._warn import user_stacklevel

# what pandas calls the values of an object column whose non-missing values are not of one kind
_MIXED = frozenset({"mixed", "mixed-integer"})


def refuse_complex(values: object, what: str) -> None:
    """Refuse complex values: casting them to real numbers would drop the imaginary part."""
    dtype = getattr(values, "dtype", None)
    if dtype is not None and pd.api.types.is_complex_dtype(dtype):
        msg = (
            f"{what} holds complex numbers ({dtype}); the viewer shows real values. Export "
            "their real part, absolute value or angle explicitly (e.g. np.abs)."
        )
        raise ValueError(msg)


def checked_column(series: pd.Series, what: str) -> pd.Series:
    """Return an ``obs`` column as the export can show it, or refuse it with a clear error.

    Complex numbers and values that are not scalars (lists, arrays: one value per cell
    is shown) are refused. An object column mixing kinds of values (``[1, "a", True]``)
    would be merged by pandas (``True == 1``) or left without categories: it becomes the
    values' string forms (missing values stay missing), with a warning that says so.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        refuse_complex(series.cat.categories, what)
        return series
    refuse_complex(series, what)
    if series.dtype != object:
        return series
    if pd.api.types.infer_dtype(series, skipna=True) not in _MIXED | {"complex"}:
        return series
    present = series.dropna()
    hashable = present.map(lambda v: getattr(type(v), "__hash__", None) is not None).to_numpy()
    if not hashable.all():
        first = int(np.argmin(hashable))
        row = int(np.flatnonzero(series.notna().to_numpy())[first])
        value = present.iloc[first]
        msg = (
            f"{what} holds {type(value).__name__} values (first at row {row}: {value!r:.60}); the "
            "viewer shows one value per cell. Join them into strings or leave the column out with obs_keys=."
        )
        raise ValueError(msg)
    if present.map(lambda v: isinstance(v, complex | np.complexfloating)).any():
        refuse_complex(np.asarray(present.to_list()), what)
    kinds = sorted(present.map(lambda v: type(v).__name__).unique())
    if len(kinds) < 2:
        return series
    warnings.warn(
        f"{what} mixes values of types {', '.join(kinds)}; it is exported as their string forms "
        "(so that e.g. True and 1 stay different categories). Convert it yourself to choose.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
    return series.map(str, na_action="ignore").astype(object)
