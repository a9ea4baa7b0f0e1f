#!/usr/bin/env python3
"""Large-data benchmark: backed .h5ad and dask exports against the in-memory path.

Measures, each export in its own subprocess (its own peak RSS, ``getrusage`` in it: the
``wait4`` of its parent would include the cluster workers it started and reaped):

* in memory: ``read_h5ad`` then ``export``;
* backed: ``read_h5ad(backed="r")`` then ``export`` (genes stream from disk);
* dask on a 2-worker ``distributed.LocalCluster``: ``read_lazy`` of a .zarr copy, then ``export``;
* ``--modes dask-read``: only computing what that export reads (X by 50,000 rows, the
  graph, ``obsm``, ``obs``) on the same cluster, without exporting;
* ``--modes zarr,cluster`` (the cluster issue): the .zarr copy read in memory
  (``read_zarr``), against the same store with only ``X`` lazy
  (``read_elem_lazy(X, chunks=(--rows-per-chunk, all genes))``, everything else read)
  exported on a 2-worker ``LocalCluster``, whose workers write the genes. For the dask
  modes the bytes of every result that reached the client (``Client._gather``,
  ``dask.sizeof``) and the workers' peak RSS are recorded too.
* ``--modes cluster-s3``: the same as ``cluster``, exported to ``s3://`` on a local S3
  server (moto's ``ThreadedMotoServer`` on 127.0.0.1, started by this script; needs
  ``moto[server]`` and ``s3fs``): the workers write the gene payloads straight to the
  bucket, the client uploads the rest (its uploaded bytes are recorded). The published
  version is downloaded after the run for the byte-identical check.

Every run records the load averages before and after it (the machine may be shared).

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
import resource
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


def _count_gathered(distributed: object) -> list[int]:
    """Add up the bytes of every result the client receives from the cluster (``Client._gather``)."""
    from dask.sizeof import sizeof

    received = [0]
    gather = distributed.Client._gather

    async def counted(self, futures, *args, **kwargs):
        out = await gather(self, futures, *args, **kwargs)
        received[0] += sizeof(out)
        return out

    distributed.Client._gather = counted
    return received


def _workers_peak_rss(client: object) -> list[int]:
    def peak() -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    return sorted(client.run(peak).values())


def _task_seconds(stream: list[dict]) -> dict[str, dict[str, float]]:
    """Count and compute seconds of the cluster's tasks by kind (the key's prefix)."""
    kinds: dict[str, dict[str, float]] = {}
    for task in stream:
        key = task["key"][0] if isinstance(task["key"], tuple) else task["key"]
        kind = (
            str(key).split("-")[0]
            if not str(key).startswith("cellucid-")
            else "-".join(str(key).split("-")[:2])
        )
        seconds = sum(
            s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute"
        )
        entry = kinds.setdefault(kind, {"count": 0, "seconds": 0.0})
        entry["count"] += 1
        entry["seconds"] += seconds
    return kinds


def _read_lazy_x(path: str, rows: int) -> object:
    """The AnnData of a .zarr store read in memory but for ``X``, a dask array of ``rows``-row chunks."""
    import anndata as ad
    import zarr
    from anndata.experimental import read_elem_lazy

    group = zarr.open_group(path, mode="r")
    adata = ad.AnnData(
        **{
            key: ad.io.read_elem(group[key])
            for key in ("obs", "var", "obsm", "obsp", "uns")
            if key in group
        }
    )
    adata.X = read_elem_lazy(group["X"], chunks=(rows, adata.n_vars))
    return adata


#: the local S3 server's keys and bucket (``--modes cluster-s3``)
S3_KEYS = {"key": "bench", "secret": "bench"}
S3_BUCKET = "cellucid-bench"
#: botocore looks for nothing beyond the keys given (no config, no metadata server)
AWS_ISOLATION = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def _count_uploads() -> dict[str, int]:
    """Record the files (relative path -> bytes) this process (the client) stores in the object store."""
    from cellucid.ex._store import Destination

    sent: dict[str, int] = {}
    put, write_bytes = Destination.put, Destination.write_bytes

    def counted_put(self, local, relpath):
        sent[relpath] = os.path.getsize(local)
        put(self, local, relpath)

    def counted_write_bytes(self, relpath, data):
        sent[relpath] = len(data)
        write_bytes(self, relpath, data)

    Destination.put, Destination.write_bytes = counted_put, counted_write_bytes
    return sent


def _worker(mode: str, data: str, out: str, result: str, budget: str, rows: str) -> None:
    import warnings

    import anndata as ad

    import cellucid as cl

    warnings.simplefilter("ignore")
    os.environ["SOURCE_DATE_EPOCH"] = "0"
    os.environ.update(AWS_ISOLATION)  # inherited by the workers
    received = uploaded = None
    storage_options = None
    if mode == "cluster-s3":
        storage_options = {**S3_KEYS, "endpoint_url": os.environ["CELLUCID_BENCH_S3"]}
        uploaded = _count_uploads()
    if mode in ("dask", "dask-read", "cluster", "cluster-s3"):
        import distributed
        from anndata.experimental import read_lazy

        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
        # a warm cluster, as a long-lived one is: the workers import what the tasks need
        # (anndata, cellucid: seconds on a loaded machine) before the clock starts
        client.run(lambda: [__import__(m) for m in ("anndata", "cellucid.ex._distributed")])
        received = _count_gathered(distributed)
    start = time.perf_counter()
    if mode == "memory":
        adata = ad.read_h5ad(data)
    elif mode == "backed":
        adata = ad.read_h5ad(data, backed="r")
    elif mode == "zarr":
        adata = ad.read_zarr(data)
    elif mode in ("cluster", "cluster-s3"):
        adata = _read_lazy_x(data, int(rows))
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
    peak_before_export = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    kwargs = {"progress": False, "memory_budget": int(budget), **OPTIONS}
    if storage_options is not None:
        out = f"s3://{S3_BUCKET}/{Path(out).parent.name}/{mode}"
        kwargs["storage_options"] = storage_options
    if received is None:
        cl.ex.export(adata, out, **kwargs)
    else:  # the cluster's tasks, timed by the workers: per-block throughput for the model
        with distributed.get_task_stream(client) as stream:
            cl.ex.export(adata, out, **kwargs)
    seconds = time.perf_counter() - start
    obs_obsm = (
        sum(v.nbytes for v in adata.obsm.values() if hasattr(v, "nbytes")) if mode != "dask" else 0
    )
    record = {
        "read_seconds": read_seconds,
        "seconds": seconds,
        "peak_rss_before_export": peak_before_export,
    }
    if mode != "dask":
        obs_obsm += int(adata.obs.memory_usage(deep=True).sum())
    if uploaded is not None:
        record["client_uploaded_bytes"] = sum(uploaded.values())
        record["client_uploaded_files"] = uploaded
    if received is not None:
        record.update(
            client_bytes=received[0],
            workers_peak_rss=_workers_peak_rss(client),
            tasks=_task_seconds(stream.data),
        )
        client.close()
        cluster.close()
    # this process's own peak: wait4's would include the worker processes it reaped
    record["self_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(result).write_text(json.dumps({**record, "obs_obsm_bytes": obs_obsm}))


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


def _run(mode: str, data: Path, out: Path, budget: int, rows: int) -> dict:
    result = out.with_suffix(".json")
    load_before = os.getloadavg()
    start = time.perf_counter()
    args = [mode, str(data), str(out), str(result), str(budget), str(rows)]
    proc = subprocess.Popen([sys.executable, __file__, "--worker", *args])
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        msg = f"{mode} export of {data} failed ({status})"
        raise RuntimeError(msg)
    record = json.loads(result.read_text())
    record.update(
        mode=mode,
        wall=time.perf_counter() - start,
        peak_rss=record.pop("self_peak_rss", usage.ru_maxrss * 1024),
        load_before=load_before,
        load_after=os.getloadavg(),
    )
    # dask workers are other processes: their memory is not in this peak
    if mode == "cluster-s3":  # the published version, downloaded for the identical check
        _download_published(f"{S3_BUCKET}/{out.parent.name}/{mode}", out)
    return record


def _s3() -> object:
    import s3fs

    return s3fs.S3FileSystem(**S3_KEYS, endpoint_url=os.environ["CELLUCID_BENCH_S3"])


def _download_published(prefix: str, out: Path) -> None:
    """Copy the version ``prefix/datasets.json`` points to into ``out``, then empty ``prefix``."""
    fs = _s3()
    (entry,) = json.loads(fs.cat_file(f"{prefix}/datasets.json"))["datasets"]
    fs.get(f"{prefix}/{entry['path']}", str(out), recursive=True)
    fs.rm(prefix, recursive=True)  # the server holds objects in memory


def _start_s3_server() -> object:
    """A local S3 server (moto) with the benchmark's bucket; its URL goes to the runs' environment."""
    import logging

    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ISOLATION)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["CELLUCID_BENCH_S3"] = f"http://{host}:{port}"
    _s3().mkdir(S3_BUCKET)
    return server


def _median_run(runs: list[dict]) -> dict:
    """The run of median read + export time (all runs kept under ``runs``)."""
    ranked = sorted(runs, key=lambda r: r["read_seconds"] + r["seconds"])
    return {**ranked[(len(ranked) - 1) // 2], "runs": runs}


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
    ap.add_argument(
        "--rows-per-chunk",
        type=int,
        default=100_000,
        help="cluster mode: rows of each chunk of the lazy X",
    )
    ap.add_argument(
        "--repeats", type=int, default=1, help="run the modes this many times, alternating"
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    server = _start_s3_server() if "cluster-s3" in args.modes.split(",") else None
    rows = []
    for data in map(Path, args.data):
        scratch = Path(args.scratch) / f"cellucid-large-{data.stem}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        zarr = data.with_suffix(".zarr")
        modes = args.modes.split(",")
        from_zarr = ("dask", "dask-read", "zarr", "cluster", "cluster-s3")
        if any(m in from_zarr for m in modes) and not zarr.exists():
            import anndata as ad

            ad.read_h5ad(data).write_zarr(zarr)
        records = {}
        for repeat in range(args.repeats):  # alternating modes: same-run ratios on a shared machine
            for mode in modes:
                source = zarr if mode in from_zarr else data
                shutil.rmtree(scratch / mode, ignore_errors=True)
                run = _run(mode, source, scratch / mode, args.memory_budget, args.rows_per_chunk)
                records.setdefault(mode, []).append(run)
                print(
                    f"{data.name} {mode} (run {repeat + 1}): read {run['read_seconds']:.1f} s, "
                    f"export {run['seconds']:.1f} s, peak RSS {run['peak_rss'] / 2**30:.2f} GiB "
                    f"({run.get('peak_rss_before_export', 0) / 2**30:.2f} before the export)"
                    + (
                        f", {run['client_bytes'] / 2**20:.1f} MiB reached the client"
                        if "client_bytes" in run
                        else ""
                    )
                    + (
                        f", the client uploaded {run['client_uploaded_bytes'] / 2**20:.1f} MiB"
                        if "client_uploaded_bytes" in run
                        else ""
                    )
                    + ", load average {:.1f} / {:.1f} before / after".format(
                        run["load_before"][0], run["load_after"][0]
                    ),
                    flush=True,
                )
                if "tasks" in run:
                    print(f"  cluster tasks (count, compute s): {run['tasks']}", flush=True)
        records = {mode: _median_run(runs) for mode, runs in records.items()}
        base = scratch / modes[0]
        for mode in modes[1:]:
            if mode != "dask-read":  # writes nothing
                records[mode]["identical_to_" + modes[0]] = _same(base, scratch / mode)
        rows.append({"data": data.name, "size_bytes": data.stat().st_size, **records})
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        "\n| data | mode | read s | export s | read + export s | peak RSS GiB | obs+obsm GiB "
        "| to client MiB | workers' peak RSS GiB | identical |"
        "\n|---|---|--:|--:|--:|--:|--:|--:|--:|---|"
    )
    for row in rows:
        for mode in args.modes.split(","):
            r = row[mode]
            same = next((str(v) for k, v in r.items() if k.startswith("identical_to_")), "—")
            to_client = f"{r['client_bytes'] / 2**20:.1f}" if "client_bytes" in r else "—"
            workers = (
                "/".join(f"{b / 2**30:.2f}" for b in r["workers_peak_rss"])
                if "workers_peak_rss" in r
                else "—"
            )
            print(
                f"| {row['data']} | {mode} | {r['read_seconds']:.1f} | {r['seconds']:.1f} "
                f"| {r['read_seconds'] + r['seconds']:.1f} | {r['peak_rss'] / 2**30:.2f} "
                f"| {r['obs_obsm_bytes'] / 2**30:.2f} | {to_client} | {workers} | {same} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
