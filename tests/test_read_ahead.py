"""ReadAhead: the next block of genes is produced in a reader thread, starting at once, until stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cellucid.ex._genes import ReadAhead


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def test_first_item_is_produced_before_it_is_asked_for() -> None:
    produced = [threading.Event() for _ in range(3)]

    def items(stop: threading.Event) -> Iterator[int]:
        for i, event in enumerate(produced):
            event.set()
            yield i

    with ReadAhead(items) as ahead:
        assert produced[0].wait(timeout=10)
        assert next(ahead) == 0
        assert produced[1].wait(timeout=10)  # the next one, while the caller works
        assert list(ahead) == [1, 2]
        assert next(ahead, None) is None


def test_error_reaches_the_caller_and_close_closes_the_items() -> None:
    closed = threading.Event()

    def items(stop: threading.Event) -> Iterator[int]:
        try:
            yield 1
            msg = "bad chunk"
            raise ValueError(msg)
        finally:
            closed.set()

    ahead = ReadAhead(items)
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="bad chunk"):
        next(ahead)
    ahead.close()
    assert closed.is_set()

    unfinished = ReadAhead(lambda stop: iter(range(10**6)))
    unfinished.close()
    assert next(unfinished, None) is None


def _long_item(started: threading.Event, steps: list[int]):
    """A producer whose one item is made of many steps, like a spill, checking its stop event."""

    def produce(stop: threading.Event) -> Iterator[int]:
        started.set()
        for step in range(10_000):
            if stop.is_set():
                return
            steps.append(step)
            threading.Event().wait(0.001)
        yield len(steps)

    return produce


def test_close_stops_a_long_item_through_its_stop_event() -> None:
    started, steps = threading.Event(), []
    ahead = ReadAhead(_long_item(started, steps))
    assert started.wait(timeout=10)
    closer = threading.Thread(target=ahead.close)
    closer.start()
    closer.join(timeout=5)  # the whole item would take over 10 s
    assert not closer.is_alive()
    assert ahead.stop.is_set() and len(steps) < 10_000


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_an_error_in_the_consumer_stops_the_producer_and_leaves_no_thread(
    error: type[BaseException],
) -> None:
    before = set(threading.enumerate())
    started, steps = threading.Event(), []
    seen = []

    def consume() -> None:
        with ReadAhead(_long_item(started, steps)):
            assert started.wait(timeout=10)
            seen.extend(_new_threads(before))  # the reader thread
            raise error

    with pytest.raises(error):
        consume()
    assert seen
    assert len(steps) < 10_000  # stopped, not run to its end (over 10 s)
    assert _new_threads(before) == []
