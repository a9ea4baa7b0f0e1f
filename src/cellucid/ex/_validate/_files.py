"""Opening the files of an export as untrusted input: no link out of it, strict bounded JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from ..._format import MAX_JSON_BYTES
from ._values import _show

#: called with a file's path once its size is judged plausible, just before it is read: a
#: remote export's local mirror fetches the file then (see ``cellucid.ex._cloud``)
BEFORE_READ: ContextVar[Callable[[Path], None] | None] = ContextVar("BEFORE_READ", default=None)


def _reject_constant(name: str) -> None:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


class _Fail:
    """A JSON file that could not be read (the problem is already reported)."""


_FAILED = _Fail()


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (a name the OS refuses is no file)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _escapes(path: Path, base: Path) -> bool:
    """Whether ``path`` resolves (following every symbolic link) to outside ``base``."""
    try:
        return not path.resolve(strict=True).is_relative_to(base)
    except (OSError, RuntimeError):
        return True


def _load_json(
    path: Path, rel: str, add: Any, *, required: bool = True, base: Path | None = None
) -> Any:
    """Read a JSON file; on failure report the problem and return ``_FAILED`` (``None`` if absent)."""
    if not _is_file(path):
        if required:
            add(rel, "file.missing", "no such file", "a JSON file")
            return _FAILED
        return None
    if base is not None and _escapes(path, base):
        add(rel, "path.symlink", "a symbolic link leading out of the export", "a file inside it")
        return _FAILED
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            add(rel, "json.size", f"{size} bytes", f"at most {MAX_JSON_BYTES} bytes")
            return _FAILED
        fetch = BEFORE_READ.get()
        if fetch is not None:
            fetch(path)
        text = path.read_bytes().decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        add(rel, "json.parse", f"unreadable JSON ({_show(str(exc), 120)})", "valid UTF-8 JSON")
        return _FAILED
