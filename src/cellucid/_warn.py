"""Warnings that point at the user's code, however deep in cellucid they are raised."""

from __future__ import annotations

import os
import sys

_PACKAGE = os.path.dirname(__file__) + os.sep


def user_stacklevel() -> int:
    """Return the ``stacklevel`` of ``warnings.warn`` that names the first caller outside cellucid.

    Call it in the function that warns (level 1, as for ``warnings.warn``): the warning
    then points at the user's line (an ``export`` call, a ``cl.pp`` call) whatever
    helpers stand between, so moving code between cellucid's functions does not move it.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
