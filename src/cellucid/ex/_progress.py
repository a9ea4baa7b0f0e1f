"""When to show a progress bar: on a terminal or in a notebook, never in CI logs."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager

from tqdm.auto import tqdm


def progress_enabled(progress: bool | None) -> bool:
    """Resolve ``progress=None`` to whether this process talks to a person."""
    if progress is not None:
        return progress
    if os.environ.get("CI"):
        return False
    return "ipykernel" in sys.modules or sys.stderr.isatty()


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool) -> AbstractContextManager:
    """Return a tqdm bar, or a silent one when disabled."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)
