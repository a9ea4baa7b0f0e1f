"""The export's progress bar: one bar over all the work, shown on a terminal only."""

from __future__ import annotations

import gzip
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from _data import make_adata

import cellucid as cl
from cellucid.ex import _progress

pytestmark = pytest.mark.filterwarnings(
    "ignore:obs\\[:UserWarning", "ignore:.*genes have NaN:UserWarning"
)


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "data.h5ad"
    make_adata(6000, 400).write_h5ad(path)
    return path


def run_in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``args`` with a pseudo-terminal as stdin, stdout and stderr; return its exit code and output.

    The terminal reports no size (0 columns, 0 lines), as a fresh pseudo-terminal and
    some CI runners' terminals do.
    """
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the process is gone and the terminal closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def frames(output: str) -> list[tuple[str, int]]:
    """The bar's successive (stage, percent) states in a terminal's output."""
    return [
        (m["stage"], int(m["percent"]))
        for m in re.finditer(r"export(?: (?P<stage>\w+))?: +(?P<percent>\d+)%\|", output)
    ]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TQDM_DISABLE")}
    return {**env, **extra}


def cli(h5ad: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cellucid", "-q", "export", str(h5ad), str(out), "--var-quantization", "8",
            "--compression", "9", "--memory-budget", "256K", "--n-jobs", "2"]  # fmt: skip


def test_one_bar_advances_through_every_stage_in_a_terminal(h5ad: Path, tmp_path: Path) -> None:
    # every update drawn (tqdm draws at most every 0.1 s by default): frames do not depend
    # on how busy the machine is
    code, output = run_in_terminal(cli(h5ad, tmp_path / "ds"), clean_env(TQDM_MININTERVAL="0"))
    assert code == 0, output
    states = frames(output)
    percents = [p for _, p in states]
    assert percents == sorted(percents), percents  # never goes back
    assert percents[-1] == 100
    stages = [s for s, _ in states]
    for stage in ("graph", "obs", "genes", "publish"):
        assert stage in stages, stages
    # the genes (most of the work) fill most of the bar, step by step, and not at once
    genes = [p for s, p in states if s == "genes"]
    assert genes[0] < 60 and genes[-1] > 80, genes
    assert len(set(genes)) >= 6, genes
    assert "[00:" in output  # elapsed and remaining time


def test_silent_under_ci_and_when_not_a_terminal(h5ad: Path, tmp_path: Path) -> None:
    code, output = run_in_terminal(cli(h5ad, tmp_path / "ci"), clean_env(CI="true"))
    assert code == 0, output
    assert frames(output) == [] and "%|" not in output
    piped = subprocess.run(
        cli(h5ad, tmp_path / "piped"), capture_output=True, text=True, env=clean_env(), check=False
    )
    assert piped.returncode == 0, piped.stderr
    assert "%|" not in piped.stderr and "%|" not in piped.stdout


class Recorder:
    """Stands for the tqdm bar: records what the export counts."""

    def __init__(self, total: int, **_: object) -> None:
        self.total, self.n, self.updates, self.stages = total, 0, [], []

    def update(self, n: int) -> None:
        self.n += n
        self.updates.append(n)

    def set_description_str(self, desc: str, refresh: bool = True) -> None:
        self.stages.append(desc)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "options", [{}, {"var_quantization": 8, "compression": 6, "layout": "legacy"}]
)
def test_the_total_is_the_work_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict
) -> None:
    bars: list[Recorder] = []
    monkeypatch.setattr(
        _progress, "progress_bar", lambda **kw: bars.append(Recorder(**kw)) or bars[-1]
    )
    cl.ex.export(make_adata(500, 300), tmp_path / "ds", memory_budget=2**17, **options)
    (bar,) = bars
    # the total is exactly the work counted (each payload byte encoded and written, obs
    # fields' work): reached before the bar is filled at the end (finish() adds nothing)
    assert bar.updates[-1] == 0 and bar.n == bar.total
    payload_bytes = sum(
        len(gzip.decompress(f.read_bytes())) if f.name.endswith(".gz") else f.stat().st_size
        for f in (tmp_path / "ds").rglob("*")
        if f.is_file() and not f.name.endswith(".json")
    )
    assert 2 * payload_bytes < bar.total < 8 * payload_bytes
    # the graph's edges are found while the embeddings and obs are encoded, then queued
    assert bar.stages == ["export embeddings", "export obs", "export graph", "export genes",
                          "export writing", "export publish"]  # fmt: skip
