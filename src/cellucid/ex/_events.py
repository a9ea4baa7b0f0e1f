"""Events the viewer posts to ``POST /_cellucid/events``, delivered to the viewer that sent them.

A viewer shown by :func:`~cellucid.ex.show` opens with a ``viewerId`` and a secret
``viewerToken`` in its address; every event it posts names both. The server parses the
body within bounds (:func:`parse_event`), and the :class:`EventRouter` hands the event to
that viewer's :class:`Inbox` when the token matches (compared in constant time). The
token is dropped before delivery: callbacks never see it.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("cellucid")

#: the path the viewer posts its events to
EVENTS_PATH = "/_cellucid/events"
#: the largest event body accepted
MAX_EVENT_BYTES = 1 << 20
#: the reply to a delivered event, exactly
DELIVERED = {"status": "ok", "delivered": True}
#: how many of its latest events a viewer keeps
KEPT_EVENTS = 1000


class EventError(Exception):
    """An event refused: the HTTP status and the reason sent back."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _name(event: dict, key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise EventError(HTTPStatus.BAD_REQUEST, f"{key} must be a non-empty string without spaces")
    return value


def parse_event(content_type: str | None, body: bytes) -> tuple[str, str, dict[str, Any]]:
    """Return ``(viewer id, token, event without its token)`` of a posted body, or raise.

    The body must be a JSON object (UTF-8) naming ``viewerId`` and ``type``; a missing or
    non-string ``viewerToken`` is an empty token, which no viewer has.
    """
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise EventError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "events are application/json")
    try:
        event = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EventError(HTTPStatus.BAD_REQUEST, "the event is not UTF-8 JSON") from None
    if not isinstance(event, dict):
        raise EventError(HTTPStatus.BAD_REQUEST, "the event must be a JSON object")
    viewer_id = _name(event, "viewerId")
    _name(event, "type")
    token = event.pop("viewerToken", "")
    return viewer_id, token if isinstance(token, str) else "", event


class Inbox:
    """The events one viewer posted: the latest :data:`KEPT_EVENTS` kept, callbacks run."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._events: deque[dict[str, Any]] = deque(maxlen=KEPT_EVENTS)
        self._callbacks: dict[str, list[Callable[[dict[str, Any]], object]]] = {}
        self._lock = threading.Lock()

    def opens_with(self, token: str) -> bool:
        """Whether ``token`` is this viewer's (a constant-time comparison)."""
        return hmac.compare_digest(token.encode(), self._token.encode())

    def on(self, type: str, callback: Callable[[dict[str, Any]], object]) -> None:
        """Call ``callback(event)`` for each event of ``type`` (``"*"``: every event)."""
        with self._lock:
            self._callbacks.setdefault(type, []).append(callback)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The latest events, oldest first."""
        with self._lock:
            return list(self._events)

    def deliver(self, event: dict[str, Any]) -> None:
        """Keep ``event`` and run its callbacks in this (the request's) thread."""
        with self._lock:
            self._events.append(event)
            callbacks = [*self._callbacks.get(event["type"], ()), *self._callbacks.get("*", ())]
        for callback in callbacks:
            callback(event)


class EventRouter:
    """The viewers a server delivers events to, by ``viewerId``."""

    def __init__(self) -> None:
        self._inboxes: dict[str, Inbox] = {}
        self._lock = threading.Lock()

    def register(self, viewer_id: str, token: str) -> Inbox:
        """Open the inbox of a viewer whose address carries ``viewer_id`` and ``token``."""
        inbox = Inbox(token)
        with self._lock:
            self._inboxes[viewer_id] = inbox
        return inbox

    def inbox(self, viewer_id: str) -> Inbox:
        """Return the inbox of a registered viewer (:class:`KeyError` for another id)."""
        with self._lock:
            return self._inboxes[viewer_id]

    def unregister(self, viewer_id: str) -> None:
        """Stop delivering to ``viewer_id``: its later events get 404."""
        with self._lock:
            self._inboxes.pop(viewer_id, None)

    def deliver(self, content_type: str | None, body: bytes) -> None:
        """Deliver a posted event to its viewer, or raise :class:`EventError`."""
        viewer_id, token, event = parse_event(content_type, body)
        with self._lock:
            inbox = self._inboxes.get(viewer_id)
        if inbox is None:
            raise EventError(HTTPStatus.NOT_FOUND, "no viewer with this viewerId is shown here")
        if not inbox.opens_with(token):
            raise EventError(HTTPStatus.FORBIDDEN, "wrong viewerToken")
        try:
            inbox.deliver(event)
        except Exception:
            logger.exception(
                "a callback of viewer %s failed on a %r event", viewer_id, event["type"]
            )
            raise EventError(HTTPStatus.INTERNAL_SERVER_ERROR, "a callback failed") from None
