"""When to show a progress bar: on a terminal or in a notebook, never in CI logs."""

from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import AbstractContextManager


def progress_enabled(progress: bool | None) -> bool:
    """Resolve ``progress=None`` to whether this process talks to a person."""
    if progress is not None:
        return progress
    if os.environ.get("CI"):
        return False
    return "ipykernel" in sys.modules or sys.stderr.isatty()


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool) -> AbstractContextManager:
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
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)
