"""JSON values as the viewer sees them: type tests, path syntax and short problem messages."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import unicodedata
import urllib.parse
from typing import Any, TypeGuard

from ..._format import ID_MAX_LENGTH, ID_PATTERN, MAX_SAFE_INTEGER, is_blank
from ._report import Problem

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: what ``encodeURIComponent`` leaves as it is besides letters and digits
_URI_UNRESERVED = "-_.!~*'()"
_FLOAT_MAX = int(sys.float_info.max)
_JSON_TYPES = (
    (type(None), "null"),
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _problem(file: str, rule: str, found: object, expected: object) -> Problem:
    """Return a problem whose ``found`` and ``expected`` are text (JSON values shown as JSON)."""
    return Problem(
        file,
        rule,
        found if isinstance(found, str) else _raw(found),
        expected if isinstance(expected, str) else _raw(expected),
    )


def _type_name(value: object) -> str:
    """Return the JSON type name of a parsed JSON value."""
    for kind, name in _JSON_TYPES:  # bool before int: True is an int in Python
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _show(value: object, limit: int = 160) -> str:
    """Return a short readable form of a value for a problem message."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = f"<a {_type_name(value)} nested too deeply to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raw(value: object) -> str:
    """Return a parsed JSON value as JSON text (strings quoted), shortened for a message."""
    try:
        return _show(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return _show(value)


def _is_int(value: object) -> bool:
    """Whether a JSON value is a safe integer as the viewer sees it (``2.0`` is; ``true`` is not)."""
    if type(value) is int:
        return abs(value) <= MAX_SAFE_INTEGER
    return (
        type(value) is float
        and math.isfinite(value)
        and value.is_integer()
        and abs(value) <= MAX_SAFE_INTEGER
    )


def _is_nonneg_int(value: object) -> bool:
    return _is_int(value) and value >= 0  # type: ignore[operator]


def _is_number(value: object) -> bool:
    """Whether a JSON value is a finite number (booleans are not numbers)."""
    if type(value) is int:  # an integer past float64's range parses to Infinity in JavaScript
        return abs(value) <= _FLOAT_MAX
    return type(value) is float and math.isfinite(value)


def _is_nonempty_str(value: object) -> bool:
    """Whether a JSON value is a string the viewer calls non-empty (after JavaScript's trim)."""
    return isinstance(value, str) and not is_blank(value)


def _url_error(path: str) -> str | None:
    """Return the first part of ``path`` that is not URL-canonical, as the viewer checks it."""
    for part in path.split("/"):
        try:
            decoded = urllib.parse.unquote(part, errors="strict")
        except UnicodeDecodeError:
            return part
        if urllib.parse.quote(decoded, safe=_URI_UNRESERVED) != part:
            return part
    return None


def _path_error(path: object) -> str | None:
    """Return why ``path`` is not a valid relative POSIX path for a manifest, or ``None``."""
    if not isinstance(path, str) or not path:
        return "not a non-empty string"
    if path.startswith("/"):
        return "a leading '/'"
    for char in "\\%?#":
        if char in path:
            return f"the character {char!r}"
    if any(unicodedata.category(c) == "Cc" for c in path):
        return "a control character"
    if _SCHEME.match(path):
        return "a URL scheme"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"an empty, '.' or '..' component ({part!r})"
    return None


def _category_key(value: object) -> tuple[str, object] | None:
    """Return a hashable identity of a category label as JavaScript compares them."""
    if isinstance(value, bool):
        return ("b", value)
    if type(value) in (int, float):
        try:
            number = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an integer past float64: JavaScript parses it as Infinity
            return None
        return ("n", number) if math.isfinite(number) else None
    if isinstance(value, str):
        return ("s", value)
    return None


def _check_keys(
    add: Any,
    rel: str,
    obj: object,
    rule: str,
    required: frozenset[str],
    optional: frozenset[str] = frozenset(),
    what: str = "",
) -> TypeGuard[dict]:
    """Report ``obj`` unless it is an object with the keys given; whether it is an object.

    Missing or unexpected keys are reported but the object is still checked further.
    """
    prefix = f"{what}: " if what else ""
    expect = f"an object with keys {sorted(required)}" + (
        f" (optional {sorted(optional)})" if optional else ""
    )
    if not isinstance(obj, dict):
        add(rel, rule, f"{prefix}{_type_name(obj)}", expect)
        return False
    missing = sorted(required - obj.keys())
    extra = sorted(obj.keys() - required - optional)
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"unexpected {extra}"] if extra else []
        )
        add(rel, rule, prefix + ", ".join(parts), expect)
    return True


def _check_id(add: Any, rel: str, value: object, rule: str) -> bool:
    good = (
        isinstance(value, str)
        and 1 <= len(value) <= ID_MAX_LENGTH
        and ID_PATTERN.match(value) is not None
        and not value.endswith(".")
    )
    if not good:
        add(
            rel,
            rule,
            _raw(value),
            f"{ID_PATTERN.pattern}, not ending in '.', 1-{ID_MAX_LENGTH} characters",
        )
    return good


def _check_dimensions(dims: object, allowed: Any) -> bool:
    if not isinstance(dims, list) or not dims:
        return False
    if not all(_is_int(d) and d in allowed for d in dims):
        return False
    return all(a < b for a, b in itertools.pairwise(dims))


def _valid_compression(value: object) -> bool:
    return value is None or (_is_int(value) and 1 <= value <= 9)  # type: ignore[operator]


def _level(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
