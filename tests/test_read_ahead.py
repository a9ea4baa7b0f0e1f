"""ReadAhead: the next block of genes is produced in a thread, starting at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cellucid.ex._genes import ReadAhead


def test_first_item_is_produced_before_it_is_asked_for() -> None:
    produced = [threading.Event() for _ in range(3)]

    def items() -> Iterator[int]:
        for i, event in enumerate(produced):
            event.set()
            yield i

    with ReadAhead(items()) as ahead:
        assert produced[0].wait(timeout=10)
        assert next(ahead) == 0
        assert produced[1].wait(timeout=10)  # the next one, while the caller works
        assert list(ahead) == [1, 2]
        assert next(ahead, None) is None


def test_error_reaches_the_caller_and_close_closes_the_items() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield 1
            msg = "bad chunk"
            raise ValueError(msg)
        finally:
            closed.set()

    ahead = ReadAhead(items())
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="bad chunk"):
        next(ahead)
    ahead.close()
    assert closed.is_set()

    unfinished = ReadAhead(iter(range(10**6)))
    unfinished.close()
    assert next(unfinished, None) is None


def test_close_stops_a_long_item_that_checks_for_it() -> None:
    from cellucid.ex._genes import _stop_requested

    started, steps = threading.Event(), []

    def spill_everything() -> Iterator[int]:  # one item made of many steps, like a spill
        started.set()
        for step in range(10_000):
            if _stop_requested():
                return
            steps.append(step)
            threading.Event().wait(0.001)
        yield len(steps)

    ahead = ReadAhead(spill_everything())
    assert started.wait(timeout=10)
    closer = threading.Thread(target=ahead.close)
    closer.start()
    closer.join(timeout=5)  # the whole item would take over 10 s
    assert not closer.is_alive()
    assert len(steps) < 10_000
    assert not _stop_requested()  # only the producing thread sees its stop
