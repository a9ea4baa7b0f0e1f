"""``PayloadWriter``: files queued one by one or many at a time, on one or several threads."""

from __future__ import annotations

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
