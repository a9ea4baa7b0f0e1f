"""``PayloadWriter``: files queued one by one or many at a time, on one or several threads."""

from __future__ import annotations

from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest

from cellucid.ex._payload import PayloadWriter, read_payload


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("compression", [None, 6])
def test_write_many_writes_every_file(tmp_path: Path, n_jobs: int, compression: int | None) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 3, 1000).astype(np.uint8) for _ in range(70)]  # several tasks
    with PayloadWriter(tmp_path, compression=compression, n_jobs=n_jobs) as writer:
        paths = writer.write_many(
            [(f"var/g{i}.bin", a) for i, a in enumerate(arrays)], run_length=True
        )
        writer.wait_for(writer.mark())
        assert all((tmp_path / p).is_file() for p in paths)  # all written once waited for
        single = writer.write("points.bin", arrays[0])
    suffix = ".gz" if compression else ""
    assert paths == [f"var/g{i}.bin{suffix}" for i in range(70)] and single == f"points.bin{suffix}"
    for path, array in zip(paths, arrays, strict=True):
        np.testing.assert_array_equal(read_payload(tmp_path / path, np.uint8), array)
    files = [tmp_path / p for p in [*paths, single]]
    assert writer.files_written == 71
    assert writer.bytes_written == sum(f.stat().st_size for f in files)


def test_a_failed_file_is_raised(tmp_path: Path) -> None:
    (tmp_path / "var" / "g1.bin").mkdir(parents=True)  # a folder where a file goes
    arrays = [("var/g0.bin", np.zeros(3, np.uint8)), ("var/g1.bin", np.ones(3, np.uint8))]
    with pytest.raises(IsADirectoryError), PayloadWriter(tmp_path, compression=None, n_jobs=2) as w:
        w.write_many(arrays)


def _payloads(seed: int) -> dict[str, tuple[np.ndarray, bool]]:
    """Payloads of each kind the writer gzips differently: (array, run_length)."""
    rng = np.random.default_rng(seed)
    n = 3 * 2**20 + 17
    codes = np.where(rng.random(n) < 0.05, rng.integers(1, 256, n), 0).astype(np.uint8)
    return {
        "codes": (codes, True),  # run-length
        "destinations": (rng.integers(0, 2**20, n // 4).astype(np.int32), False),  # Huffman
        "sources": (np.repeat(np.arange(n // 64, dtype=np.int32), 16), False),  # searched
        "noise": (rng.integers(0, 256, n).astype(np.uint8), False),  # past the ceiling: stored
    }


@pytest.mark.parametrize("level", [1, 6, 9])
def test_files_gzipped_as_made_are_the_members_of_gzip_bytes(tmp_path: Path, level: int) -> None:
    """The writer's default encoding writes a member into its file piece by piece: the same bytes."""
    from cellucid._format import gzip_ceiling
    from cellucid.ex._payload import gzip_bytes

    payloads = _payloads(level)
    with PayloadWriter(tmp_path, compression=level, n_jobs=2) as writer:
        paths = {
            name: writer.write(f"{name}.bin", array, run_length=run_length)
            for name, (array, run_length) in payloads.items()
        }
    for name, (array, run_length) in payloads.items():
        written = (tmp_path / paths[name]).read_bytes()
        assert written == gzip_bytes(array.tobytes(), level, run_length=run_length)
        assert np.array_equal(read_payload(tmp_path / paths[name], array.dtype), array)
        assert len(written) <= gzip_ceiling(array.nbytes)
    # the noise went past the ceiling and was written again as stored blocks
    assert len((tmp_path / paths["noise"]).read_bytes()) > payloads["noise"][0].nbytes


def test_a_large_member_is_not_held_while_written(tmp_path: Path) -> None:
    """Huffman-coded and run-length payloads go to their file a piece at a time."""
    import tracemalloc

    array = np.random.default_rng(0).integers(0, 2**20, 2**23).astype(np.int32)
    with PayloadWriter(tmp_path, compression=6, n_jobs=1) as writer:
        tracemalloc.start()
        path = writer.write("destinations.bin", array)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    member = (tmp_path / path).stat().st_size
    assert member > 2**24
    assert peak < member / 4  # pieces of 1 MiB in, their output out (not the member, twice)


@pytest.mark.parametrize("n_jobs", [1, 3])
def test_made_files_are_written_in_order_one_task_at_a_time(tmp_path: Path, n_jobs: int) -> None:
    """Files whose bytes are made: one pool thread creates them, in order; the pool's other work goes on meanwhile."""
    import threading
    import time

    lock = threading.Lock()
    running, most, order = [0], [0], []

    def hand_over(array: np.ndarray) -> bytes:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            order.append(int(array[0]))
        time.sleep(0.0005)  # long enough for other threads to start their files, if they could
        with lock:
            running[0] -= 1
        return array.tobytes()

    arrays = [np.full(10, i, np.uint8) for i in range(200)]  # several tasks of files
    with PayloadWriter(tmp_path, compression=None, n_jobs=n_jobs) as writer:
        paths = writer.write_many(
            [(f"var/g{i}.bin", a) for i, a in enumerate(arrays)], encode=hand_over, made=True
        )
        other = writer.executor.submit(lambda: threading.current_thread().name)
        if n_jobs > 1:  # not held up by the files queued before it
            assert other.result(timeout=5)
        writer.wait_for(writer.mark())
        assert all((tmp_path / p).is_file() for p in paths)
    assert most[0] == 1 and order == list(range(200))
    assert writer.files_written == 200


def test_a_failed_made_file_is_raised_and_the_rest_dropped(tmp_path: Path) -> None:
    (tmp_path / "var" / "g40.bin").mkdir(parents=True)  # a folder where a file goes
    files = [(f"var/g{i}.bin", np.full(3, i, np.uint8)) for i in range(200)]
    with PayloadWriter(tmp_path, compression=None, n_jobs=2) as w:
        w.write_many(files, encode=lambda a: a.tobytes(), made=True)
        with pytest.raises(IsADirectoryError):
            w.wait_for(w.mark())
    assert (tmp_path / "var" / "g39.bin").is_file()  # its task's files before it were written


def test_made_files_not_started_are_dropped_by_cancel(tmp_path: Path) -> None:
    import threading

    started, release = threading.Event(), threading.Event()

    def slow(array: np.ndarray) -> bytes:
        started.set()
        release.wait(5)
        return array.tobytes()

    files = [(f"var/g{i}.bin", np.full(3, i, np.uint8)) for i in range(100)]  # 4 tasks
    writer = PayloadWriter(tmp_path, compression=None, n_jobs=2)
    writer.write_many(files, encode=slow, made=True)
    assert started.wait(5)
    writer.cancel()
    release.set()
    with pytest.raises(CancelledError):
        writer.close()
    written = sorted((tmp_path / "var").iterdir())
    assert len(written) == 32  # the task under way finished; the 3 after it never started
