#!/usr/bin/env python3
"""Large-data benchmark: backed .h5ad and dask exports against the in-memory path.

Measures, each export in its own subprocess (peak RSS from ``wait4``):

* in memory: ``read_h5ad`` then ``export``;
* backed: ``read_h5ad(backed="r")`` then ``export`` (genes stream from disk);
* dask on a 2-worker ``distributed.LocalCluster``: ``read_lazy`` of a .zarr copy, then ``export``;
* ``--modes dask-read``: only computing what that export reads (X by 50,000 rows, the
  graph, ``obsm``, ``obs``) on the same cluster, without exporting.

timing the read (``read_h5ad``, opening backed, ``read_lazy``) and the export apart (a lazy
export reads its data while exporting), and checks that all three exports are
byte-identical. Run::

    python benchmarks/large_data.py --data /tmp/cellucid-bench/data_1000000x2000_d0.05_s0.h5ad
    python benchmarks/large_data.py --data A.h5ad --data B.h5ad --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIONS = {
    "var_quantization": 8,
    "obs_continuous_quantization": 8,
    "compression": 6,
    "dataset_name": "bench",
}


def _worker(mode: str, data: str, out: str, result: str, budget: str) -> None:
    import warnings

    import anndata as ad

    import cellucid as cl

    warnings.simplefilter("ignore")
    os.environ["SOURCE_DATE_EPOCH"] = "0"
    if mode in ("dask", "dask-read"):
        import distributed
        from anndata.experimental import read_lazy

        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
    start = time.perf_counter()
    if mode == "memory":
        adata = ad.read_h5ad(data)
    elif mode == "backed":
        adata = ad.read_h5ad(data, backed="r")
    else:
        adata = read_lazy(data)
    read_seconds = time.perf_counter() - start
    if mode == "dask-read":  # only what a lazy export has to read, through the same cluster
        parts = _lazy_read_seconds(adata)
        client.close()
        cluster.close()
        Path(result).write_text(
            json.dumps(
                {
                    "read_seconds": read_seconds,
                    "seconds": sum(parts.values()),
                    "parts": parts,
                    "obs_obsm_bytes": 0,
                }
            )
        )
        return
    start = time.perf_counter()
    cl.ex.export(adata, out, progress=False, memory_budget=int(budget), **OPTIONS)
    seconds = time.perf_counter() - start
    obs_obsm = (
        sum(v.nbytes for v in adata.obsm.values() if hasattr(v, "nbytes")) if mode != "dask" else 0
    )
    if mode != "dask":
        obs_obsm += int(adata.obs.memory_usage(deep=True).sum())
    else:
        client.close()
        cluster.close()
    Path(result).write_text(
        json.dumps({"read_seconds": read_seconds, "seconds": seconds, "obs_obsm_bytes": obs_obsm})
    )


def _lazy_read_seconds(adata: object) -> dict[str, float]:
    """Seconds to compute a lazy AnnData's X (by 50,000 rows), kNN graph, obsm and obs."""
    parts = {}
    start = time.perf_counter()
    for r0 in range(0, adata.n_obs, 50_000):
        adata.X[r0 : r0 + 50_000].compute()
    parts["X"] = time.perf_counter() - start
    start = time.perf_counter()
    adata.obsp["connectivities"].compute()
    parts["graph"] = time.perf_counter() - start
    start = time.perf_counter()
    for value in adata.obsm.values():
        value.compute()
    parts["obsm"] = time.perf_counter() - start
    start = time.perf_counter()
    if hasattr(adata.obs, "to_memory"):  # a lazy obs; an in-memory one has nothing to read
        adata.obs.to_memory()
    parts["obs"] = time.perf_counter() - start
    return parts


def _run(mode: str, data: Path, out: Path, budget: int) -> dict:
    result = out.with_suffix(".json")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", mode, str(data), str(out), str(result), str(budget)]
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        msg = f"{mode} export of {data} failed ({status})"
        raise RuntimeError(msg)
    record = json.loads(result.read_text())
    record.update(mode=mode, wall=time.perf_counter() - start, peak_rss=usage.ru_maxrss * 1024)
    # dask workers are other processes: their memory is not in this peak
    return record


def _same(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if files != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", action="append", required=True, help=".h5ad made by make_data.py (repeatable)"
    )
    ap.add_argument(
        "--scratch", default=tempfile.gettempdir(), help="where exports and .zarr copies go"
    )
    ap.add_argument("--modes", default="memory,backed,dask")
    ap.add_argument(
        "--memory-budget",
        type=int,
        default=256 * 2**20,
        help="export's memory_budget in bytes (default: the export's)",
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    rows = []
    for data in map(Path, args.data):
        scratch = Path(args.scratch) / f"cellucid-large-{data.stem}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        zarr = data.with_suffix(".zarr")
        modes = args.modes.split(",")
        if any(m.startswith("dask") for m in modes) and not zarr.exists():
            import anndata as ad

            ad.read_h5ad(data).write_zarr(zarr)
        records = {}
        for mode in modes:
            source = zarr if mode.startswith("dask") else data
            records[mode] = _run(mode, source, scratch / mode, args.memory_budget)
            print(
                f"{data.name} {mode}: {records[mode]['seconds']:.1f} s, peak RSS {records[mode]['peak_rss'] / 2**30:.2f} GiB",
                flush=True,
            )
        base = scratch / modes[0]
        for mode in modes[1:]:
            if mode != "dask-read":  # writes nothing
                records[mode]["identical_to_" + modes[0]] = _same(base, scratch / mode)
        rows.append({"data": data.name, "size_bytes": data.stat().st_size, **records})
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        "\n| data | mode | read s | export s | read + export s | peak RSS GiB | obs+obsm GiB | identical |"
        "\n|---|---|--:|--:|--:|--:|--:|---|"
    )
    for row in rows:
        for mode in args.modes.split(","):
            r = row[mode]
            same = next((str(v) for k, v in r.items() if k.startswith("identical_to_")), "—")
            print(
                f"| {row['data']} | {mode} | {r['read_seconds']:.1f} | {r['seconds']:.1f} "
                f"| {r['read_seconds'] + r['seconds']:.1f} | {r['peak_rss'] / 2**30:.2f} "
                f"| {r['obs_obsm_bytes'] / 2**30:.2f} | {same} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
