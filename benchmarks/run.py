#!/usr/bin/env python3
"""Benchmark ``cellucid.ex.export`` against the reference exporter (``prepare()`` of cellucid 0.0.9).

One run of this script:

1. generates (or reuses from ``--data-dir``) deterministic .h5ad datasets with
   ``make_data.py`` (10k x 2k, 100k x 2k, 100k x 20k, 1M x 2k; density 0.05);
2. creates ``<data-dir>/venv-ref`` with ``cellucid==0.0.9`` if it is missing;
3. measures the machine's limits: gzip encoders (stdlib zlib 1/6/9, zlib-ng, isal,
   libdeflate where importable) on real 8-bit gene columns, on one core and on all
   cores, and sequential write throughput (1 GB + fsync) on the output disk;
4. times our export and the reference, each run in its own subprocess that reads the
   same h5ad, for two settings: float32 uncompressed, and 8-bit genes + 8-bit obs +
   gzip 6. For ours, per-stage times come from the export's own debug log (each
   stage's time, see ``STAGES``). Each run writes a folder of its own, and the exports
   are removed after the last run (``--remove-each-run``: after each): on a file system
   that discards freed blocks online (ext4 ``-o discard``), creating 20,000 files just
   after 20,000 were removed costs 5-20 s of system CPU, which the next run would pay;
5. prints Markdown tables and writes JSON (``--json``).

The script is also its own worker: ``run.py --worker ours|ref ...`` is what the
subprocesses run (the reference one with the reference venv's python).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = "/tmp/cellucid-bench"
REFERENCE_SPEC = "cellucid==0.0.9"

SIZES = {  # name: (cells, genes)
    "10k x 2k": (10_000, 2_000),
    "100k x 2k": (100_000, 2_000),
    "100k x 20k": (100_000, 20_000),
    "1M x 2k": (1_000_000, 2_000),
    # at half of --density: the stored values of 100k x 20k (does time follow them?)
    "100k x 40k": (100_000, 40_000),
}
#: sizes generated at a fraction of --density
DENSITY_FACTOR = {"100k x 40k": 0.5}
SETTINGS = {
    "float32": {"var_quantization": None, "obs_continuous_quantization": None, "compression": None},
    "8bit+gzip6": {"var_quantization": 8, "obs_continuous_quantization": 8, "compression": 6},
}
#: the stages ``cl.ex.export`` times and logs at debug level (``extra``: ``cellucid_stage``,
#: ``cellucid_seconds``), in order; ``genes.read``/``.encode``/``.write`` split ``genes``
STAGES = ("collect", "graph", "embeddings", "obs", "genes", "drain", "identity", "publish")


# --------------------------------------------------------------------------- #
# helpers shared by the workers (stdlib + numpy + anndata only: the reference venv
# runs this file too)
# --------------------------------------------------------------------------- #
def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _nbytes(x) -> int:
    """In-memory bytes of an array, sparse matrix or DataFrame."""
    import numpy as np

    if hasattr(x, "indptr"):  # scipy sparse
        return int(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes)
    if hasattr(x, "memory_usage"):  # DataFrame
        return int(x.memory_usage(index=True, deep=True).sum())
    return int(np.asarray(x).nbytes)


def _read_input(path: str):
    import anndata as ad

    t = time.perf_counter()
    adata = ad.read_h5ad(path)
    read_s = time.perf_counter() - t
    parts = {
        "X": _nbytes(adata.X),
        "obsm": sum(_nbytes(v) for v in adata.obsm.values()),
        "obsp": sum(_nbytes(v) for v in adata.obsp.values()),
        "obs": _nbytes(adata.obs),
        "var": _nbytes(adata.var),
    }
    # what the exporters actually consume (obsp["distances"] is read but not exported)
    used = (
        parts["X"]
        + parts["obsm"]
        + _nbytes(adata.obsp["connectivities"])
        + parts["obs"]
        + parts["var"]
    )
    return adata, read_s, {"parts": parts, "total": sum(parts.values()), "exported_inputs": used}


def _dir_stats(path: Path) -> tuple[int, int]:
    n = size = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            n += 1
            size += os.path.getsize(os.path.join(root, name))
    return size, n


def worker_ours(args) -> dict:
    import logging

    rss_start = _proc_status_kb("VmRSS")
    # the interpreter of a session holding an AnnData (what the export's memory is
    # measured from): anndata itself, and numba, which scanpy imports
    import anndata  # noqa: F401
    import numba
    import numpy as np  # noqa: F401

    import cellucid as cl

    rss_plain_imports = _proc_status_kb("VmRSS")
    # ... with numba's compiler up, as in a session that ran scanpy's neighbors or UMAP
    # (umap-learn's numba functions): ~58 MB, whatever the data (LLVM's code and heap)
    numba.njit(lambda x: x + 1)(1)
    rss_imports = _proc_status_kb("VmRSS")
    adata, read_s, sizes = _read_input(args.data)
    rss_after_read = _proc_status_kb("VmRSS")

    # the export logs the time of each of its stages at debug level: collect them
    times: dict[str, float] = {}

    class StageTimes(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stage = getattr(record, "cellucid_stage", None)
            if stage is not None:
                times[stage] = times.get(stage, 0.0) + record.cellucid_seconds

    logger = logging.getLogger("cellucid")
    for handler in logger.handlers:  # cellucid's own stderr handler: warnings only
        handler.setLevel(logging.WARNING)
    logger.addHandler(StageTimes())
    cl.logging.set_verbosity(3)
    out = Path(args.out)
    settings = SETTINGS[args.setting]
    prof = None
    if args.cprofile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    cl.ex.export(
        adata,
        out,
        overwrite=True,
        progress=False,
        n_jobs=args.n_jobs,
        gzip_encoder=args.gzip_encoder,
        **settings,
    )
    total = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        prof.dump_stats(args.cprofile)
    times["other (checks, progress, summary)"] = total - sum(times.get(k, 0.0) for k in STAGES)
    return {
        "read_s": read_s,
        "export_s": total,
        "stages": times,
        "input_bytes": sizes,
        "rss_kb": {
            "start": rss_start,
            "after_plain_imports": rss_plain_imports,
            "after_imports": rss_imports,
            "after_read": rss_after_read,
            "peak_self": _proc_status_kb("VmHWM"),
        },
    }


def _genes_s(stages: dict) -> float:
    """The gene stage's seconds ("write_var" in results saved before the stages were logged)."""
    return stages.get("genes", stages.get("write_var", 0.0))


def worker_ref(args) -> dict:
    import contextlib
    import io

    rss_start = _proc_status_kb("VmRSS")
    import numpy as np
    from cellucid.prepare_data import prepare

    rss_imports = _proc_status_kb("VmRSS")
    adata, read_s, sizes = _read_input(args.data)
    rss_after_read = _proc_status_kb("VmRSS")
    settings = SETTINGS[args.setting]
    out = Path(args.out)
    # each run is a fresh process that read the h5ad itself, so every array is fresh;
    # the vector field is copied anyway since prepare() scales float32 vectors in place
    kwargs = dict(
        latent_space=adata.obsm["X_pca"],
        obs=adata.obs,
        var=adata.var,
        gene_expression=adata.X,
        connectivities=adata.obsp["connectivities"],
        X_umap_2d=adata.obsm["X_umap"],
        X_umap_3d=adata.obsm["X_umap_3d"],
        vector_fields={"velocity_umap": np.array(adata.obsm["velocity_umap"], copy=True)},
        out_dir=out,
        force=True,
        **settings,
    )
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        prepare(**kwargs)
    total = time.perf_counter() - t0
    return {
        "read_s": read_s,
        "export_s": total,
        "stages": {},
        "input_bytes": sizes,
        "rss_kb": {
            "start": rss_start,
            "after_imports": rss_imports,
            "after_read": rss_after_read,
            "peak_self": _proc_status_kb("VmHWM"),
        },
    }


def worker_main(args) -> int:
    fn = worker_ours if args.worker == "ours" else worker_ref
    result = fn(args)
    Path(args.result).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- #
# orchestration
# --------------------------------------------------------------------------- #
def _git_describe() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE), "status", "--porcelain", "--", "../src"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("+dirty src" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def data_path(data_dir: Path, cells: int, genes: int, density: float) -> Path:
    return data_dir / f"data_{cells}x{genes}_d{density}_s0.h5ad"


def ensure_data(data_dir: Path, cells: int, genes: int, density: float) -> Path:
    path = data_path(data_dir, cells, genes, density)
    if path.exists():
        return path
    log(f"generating {path.name} (make_data.py prints progress)")
    tmp = path.with_suffix(".tmp.h5ad")
    subprocess.run(
        [
            sys.executable,
            str(HERE / "make_data.py"),
            "--cells",
            str(cells),
            "--genes",
            str(genes),
            "--density",
            str(density),
            "--out",
            str(tmp),
        ],
        check=True,
    )
    tmp.rename(path)
    return path


def ensure_reference(data_dir: Path) -> Path:
    venv = data_dir / "venv-ref"
    python = venv / "bin" / "python"
    ok = (
        python.exists()
        and subprocess.run(
            [str(python), "-c", "import cellucid.prepare_data, anndata, h5py"], capture_output=True
        ).returncode
        == 0
    )
    if not ok:
        log(f"creating {venv} with {REFERENCE_SPEC}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", REFERENCE_SPEC, "anndata", "h5py"],
            check=True,
        )
    return python


def _ratio_or_dash(peak_kb: int, baseline_kb: int | None, input_bytes: int) -> str:
    return "—" if baseline_kb is None else f"{(peak_kb - baseline_kb) * 1024 / input_bytes:.2f}"


def _cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_worker(
    python: str,
    kind: str,
    data: Path,
    setting: str,
    out: Path,
    scratch: Path,
    timeout: float | None,
    n_jobs: int | None,
    cprofile: str | None = None,
    gzip_encoder: str = "auto",
    remove: bool = False,
) -> dict:
    """Run one export in a fresh subprocess; return its timings, peak RSS and output size.

    ``out`` must not exist; it is removed after the run when ``remove``.
    """
    result = scratch / f"result-{kind}.json"
    result.unlink(missing_ok=True)
    if out.exists():
        msg = f"{out} exists: each run writes a folder of its own"
        raise RuntimeError(msg)
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--data",
        str(data),
        "--setting",
        setting,
        "--out",
        str(out),
        "--result",
        str(result),
    ]
    if kind == "ours":
        cmd += ["--gzip-encoder", gzip_encoder]
    if n_jobs:
        cmd += ["--n-jobs", str(n_jobs)]
    if cprofile:
        cmd += ["--cprofile", cprofile]
    env = dict(os.environ)
    if kind == "ref":
        env.pop("PYTHONPATH", None)
    errf = open(scratch / f"stderr-{kind}.txt", "w+")  # noqa: SIM115  (read back and closed below)
    busy0 = _cpu_busy_s()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, env=env)
    timed_out = False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if timeout and time.perf_counter() - t0 > timeout:
            proc.kill()
            pid, status, rusage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    errf.seek(0)
    err = errf.read()
    errf.close()
    cpu = rusage.ru_utime + rusage.ru_stime
    # CPU used by other processes on the machine meanwhile (this machine may be shared)
    foreign = max(0.0, _cpu_busy_s() - busy0 - cpu)
    rec: dict = {
        "process_wall_s": wall,
        "peak_rss_kb": rusage.ru_maxrss,
        "cpu_s": cpu,
        "foreign_cpu_pct": 100 * foreign / wall,
    }
    if timed_out:
        rec.update(timed_out=True, export_s=None, timeout_s=timeout)
    elif proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed ({proc.returncode}):\n{err[-4000:]}")
    else:
        rec.update(json.loads(result.read_text()))
        rec["output_bytes"], rec["output_files"] = _dir_stats(out)
    if remove and out.exists():
        shutil.rmtree(out)
    return rec


# --------------------------------------------------------------------------- #
# machine limits
# --------------------------------------------------------------------------- #
def gene_columns_u8(data: Path, scratch: Path, n_cols: int) -> list[bytes]:
    """Real 8-bit gene columns: our exporter's own uncompressed 8-bit payloads."""
    import numpy as np

    out = scratch / "u8-columns"
    code = (
        "import anndata as ad, cellucid as cl, sys;"
        "a = ad.read_h5ad(sys.argv[1]);"
        f"a = a[:, :{n_cols}].copy();"
        "cl.ex.export(a, sys.argv[2], var_quantization=8, overwrite=True, progress=False,"
        " connectivities_key=False)"
    )
    subprocess.run([sys.executable, "-c", code, str(data), str(out)], check=True)
    cols = [np.fromfile(p, dtype=np.uint8).tobytes() for p in sorted((out / "var").glob("*"))]
    shutil.rmtree(out)
    return cols


def _encoders() -> dict:
    import zlib

    from cellucid.ex._payload import gzip_bytes

    enc: dict = {
        # what export uses for quantized and category codes: deflate's run-length strategy
        "cellucid codes (stdlib zlib, Z_RLE)": lambda b: gzip_bytes(b, 6, run_length=True),
    }
    try:
        from zlib_ng import zlib_ng

        enc["cellucid codes (zlib-ng, Z_RLE)"] = lambda b: gzip_bytes(
            b, 6, run_length=True, lib=zlib_ng
        )
    except ImportError:
        pass
    for lvl in (1, 6, 9):
        enc[f"zlib {lvl} (stdlib {zlib.ZLIB_RUNTIME_VERSION})"] = lambda b, lvl=lvl: zlib.compress(
            b, lvl, wbits=31
        )
    try:
        from zlib_ng import zlib_ng

        for lvl in (1, 6, 9):
            enc[f"zlib-ng {lvl}"] = lambda b, lvl=lvl: zlib_ng.compress(b, lvl, wbits=31)
    except ImportError:
        pass
    try:
        from isal import isal_zlib

        for lvl in (0, 1, 2, 3):
            enc[f"isal {lvl}"] = lambda b, lvl=lvl: isal_zlib.compress(b, lvl, wbits=31)
    except ImportError:
        pass
    try:
        import deflate

        for lvl in (1, 4, 6, 9):
            enc[f"libdeflate {lvl}"] = lambda b, lvl=lvl: deflate.gzip_compress(b, lvl)
    except ImportError:
        pass
    return enc


def measure_encoders(cols: list[bytes], n_threads: int, min_time: float = 0.3) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    raw = sum(len(c) for c in cols)
    rows = []
    for name, fn in _encoders().items():
        comp = sum(len(fn(c)) for c in cols)  # warm-up + ratio
        res = {"encoder": name, "ratio": raw / comp, "out_over_in": comp / raw}
        for threads in (1, n_threads):
            best = 0.0
            for _ in range(3):  # best of 3: the limit, not the noise of a shared machine
                reps, t0 = 0, time.perf_counter()
                while True:
                    if threads == 1:
                        for c in cols:
                            fn(c)
                    else:
                        with ThreadPoolExecutor(threads) as ex:
                            list(ex.map(fn, cols))
                    reps += 1
                    el = time.perf_counter() - t0
                    if el >= min_time:
                        break
                best = max(best, raw * reps / el / 1e6)
            res[f"MBps_{threads}t"] = best
        rows.append(res)
        log(
            f"  {name}: ratio {res['ratio']:.2f}, "
            f"{res['MBps_1t']:.0f} MB/s 1 thread, {res[f'MBps_{n_threads}t']:.0f} MB/s {n_threads} threads"
        )
    return rows


def measure_disk(directory: Path, size: int = 1 << 30) -> dict:
    import numpy as np

    path = directory / "write-test.bin"
    chunk = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        t_buffered = time.perf_counter() - t0
        f.flush()
        os.fsync(f.fileno())
    el = time.perf_counter() - t0
    path.unlink()
    # many small files (what the gene stage writes): 20,000 files of 100 kB, no fsync
    small_dir = directory / "small-files-test"
    small_dir.mkdir(exist_ok=True)
    blob = chunk[:100_000]
    n_small = 20_000
    t0 = time.perf_counter()
    for i in range(n_small):
        with open(small_dir / f"{i}.bin", "wb") as f:
            f.write(blob)
    el_small = time.perf_counter() - t0
    shutil.rmtree(small_dir)
    return {
        "bytes": size,
        "seq_write_fsync_MBps": size / el / 1e6,
        "seq_write_page_cache_MBps": size / t_buffered / 1e6,
        "small_files_per_s": n_small / el_small,
        "small_files_MBps": n_small * len(blob) / el_small / 1e6,
    }


# --------------------------------------------------------------------------- #
# reporting
# --------------------------------------------------------------------------- #
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _resolved_encoder(name: str) -> str:
    from cellucid.ex._payload import gzip_encoder

    lib = gzip_encoder(name)
    return (
        "zlib-ng " + lib.ZLIBNG_VERSION
        if hasattr(lib, "ZLIBNG_VERSION")
        else "zlib " + lib.ZLIB_RUNTIME_VERSION
    )


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if not r.get("timed_out")]
    s = {"n": len(runs), "n_ok": len(ok), "timed_out": any(r.get("timed_out") for r in runs)}
    if s["timed_out"]:
        s["timeout_s"] = max(r.get("timeout_s") or 0 for r in runs)
    s["export_s"] = med([r["export_s"] for r in ok])
    s["export_s_all"] = [r.get("export_s") for r in runs]
    s["read_s"] = med([r["read_s"] for r in ok])
    s["peak_rss_kb"] = med([r["peak_rss_kb"] for r in runs])
    s["foreign_cpu_pct"] = med([r["foreign_cpu_pct"] for r in runs])
    s["cpu_s"] = med([r["cpu_s"] for r in runs])
    if ok:
        s["rss_after_read_kb"] = med([r["rss_kb"]["after_read"] for r in ok])
        s["rss_after_imports_kb"] = med([r["rss_kb"]["after_imports"] for r in ok])
        if all("after_plain_imports" in r["rss_kb"] for r in ok):
            s["rss_after_plain_imports_kb"] = med([r["rss_kb"]["after_plain_imports"] for r in ok])
        s["output_bytes"] = ok[0]["output_bytes"]
        s["output_files"] = ok[0]["output_files"]
        s["input_bytes"] = ok[0]["input_bytes"]
        keys = list(dict.fromkeys(k for r in ok for k in r["stages"]))
        s["stages"] = {k: med([r["stages"].get(k, 0.0) for r in ok]) for k in keys}
    return s


def fmt_s(x, timed_out=False, timeout=None):
    if timed_out and x is None:
        return f"> {timeout:.0f}"
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def markdown(report: dict) -> str:
    lines = []
    meta = report["meta"]
    lines.append(
        f"cellucid at {meta.get('cellucid_git')}; machine: {meta['cpus']} cores, {meta['mem_gib']:.0f} GiB; Python {meta['python']}; "
        f"numpy {meta['numpy']}; repeats ours={meta['repeats']}, reference={meta['reference_repeats_note']}; "
        f"our gzip encoder: {meta.get('gzip_encoder_resolved', 'zlib')}; exports written to {meta.get('out_dir', 'the scratch folder')}, "
        f"a folder per run, removed {meta.get('exports_removed', 'after each run')}."
    )
    lines.append("")
    lines.append("### End to end (median export time; the h5ad read is not included)")
    lines.append("")
    lines.append(
        "| dataset | setting | ours s | reference s (runs) | ref/ours | ours peak RSS GB | ref peak RSS GB "
        "| input in memory GB | ours peak / input | ours (peak − imports) / input "
        "| … without numba's compiler in imports | ours out MB (files) | ref out MB (files) | out ours/ref "
        "| other load % (ours/ref) |"
    )
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for row in report["results"]:
        o, r = row["ours"], row.get("ref")
        inp = o["input_bytes"]["total"]
        ratio = None
        if r and o["export_s"]:
            if r["export_s"] is not None:
                ratio = f"{r['export_s'] / o['export_s']:.1f}×"
            elif r["timed_out"]:
                ratio = f"> {r['timeout_s'] / o['export_s']:.0f}×"
        ref_s = (
            fmt_s(r["export_s"], r["timed_out"], r.get("timeout_s")) + f" ({r['n']})" if r else "—"
        )
        lines.append(
            f"| {row['dataset']} | {row['setting']} | {fmt_s(o['export_s'])} | {ref_s} | {ratio or '—'} "
            f"| {o['peak_rss_kb'] / 2**20:.2f} | {r['peak_rss_kb'] / 2**20:.2f} "
            if r
            else f"| {row['dataset']} | {row['setting']} | {fmt_s(o['export_s'])} | — | — | {o['peak_rss_kb'] / 2**20:.2f} | — "
        )
        lines[-1] += (
            f"| {inp / 2**30:.2f} | {o['peak_rss_kb'] * 1024 / inp:.2f} "
            f"| {(o['peak_rss_kb'] - o.get('rss_after_imports_kb', 0)) * 1024 / inp:.2f} "
            f"| {_ratio_or_dash(o['peak_rss_kb'], o.get('rss_after_plain_imports_kb'), inp)} "
            f"| {o['output_bytes'] / 1e6:.1f} ({o['output_files']:,}) "
        )
        if r and r.get("output_bytes"):
            lines[-1] += (
                f"| {r['output_bytes'] / 1e6:.1f} ({r['output_files']:,}) "
                f"| {o['output_bytes'] / r['output_bytes']:.3f} "
            )
        else:
            lines[-1] += "| — | — "
        lines[-1] += (
            f"| {o['foreign_cpu_pct']:.0f}/{r['foreign_cpu_pct']:.0f} |"
            if r
            else f"| {o['foreign_cpu_pct']:.0f}/— |"
        )
    lines.append("")
    lines.append(
        "'(peak − imports)': the peak RSS less the RSS of the worker after importing "
        "its libraries (ours: with numba, which scanpy imports, its compiler up as after "
        "scanpy's neighbors or UMAP), before reading the data: what the input and the export "
        "take; 'without numba's compiler': the same less the RSS before the compiler was up."
    )
    lines.append(
        "'other load %': CPU used by other processes on this (shared) machine during the runs, "
        "in % of one core (median); 200 would mean both cores were busy with other work."
    )
    lines.append("")
    lines.append("### Our per-stage times (median s)")
    lines.append("")
    keys = list(dict.fromkeys(k for row in report["results"] for k in row["ours"]["stages"]))
    lines.append("| dataset | setting | read h5ad | " + " | ".join(keys) + " | total |")
    lines.append("|---|---|" + "--:|" * (len(keys) + 2))
    for row in report["results"]:
        o = row["ours"]
        lines.append(
            f"| {row['dataset']} | {row['setting']} | {fmt_s(o['read_s'])} | "
            + " | ".join(fmt_s(o["stages"].get(k)) for k in keys)
            + f" | {fmt_s(o['export_s'])} |"
        )
    lines.append("")
    lines.append("### Linearity (ours): export time per matrix element and per nonzero")
    lines.append("")
    lines.append(
        "| dataset | setting | cells×genes | nnz | total ns/element | genes ns/element | genes ns/nnz |"
    )
    lines.append("|---|---|--:|--:|--:|--:|--:|")
    for row in report["results"]:
        o = row["ours"]
        el = row["cells"] * row["genes"]
        wv = _genes_s(o["stages"])
        lines.append(
            f"| {row['dataset']} | {row['setting']} | {el:,} | {row['nnz']:,} | "
            f"{o['export_s'] / el * 1e9:.2f} | {wv / el * 1e9:.2f} | {wv / row['nnz'] * 1e9:.1f} |"
        )
    lim = report.get("limits")
    if lim:
        lines.append("")
        lines.append(
            f"### Machine limits: gzip encoders on {lim['n_columns']} real 8-bit gene columns "
            f"({lim['column_bytes']:,} bytes each, from {lim['source']})"
        )
        lines.append("")
        nt = lim["threads"]
        lines.append(f"| encoder | ratio (in/out) | MB/s 1 thread | MB/s {nt} threads |")
        lines.append("|---|--:|--:|--:|")
        for e in lim["encoders"]:
            lines.append(
                f"| {e['encoder']} | {e['ratio']:.2f} | {e['MBps_1t']:.0f} | {e[f'MBps_{nt}t']:.0f} |"
            )
        d = lim["disk"]
        lines.append("")
        lines.append(
            f"Disk ({lim['disk_dir']}): sequential write {d['seq_write_fsync_MBps']:.0f} MB/s "
            f"(1 GB incl. fsync; {d['seq_write_page_cache_MBps']:.0f} MB/s into the page cache); "
            f"{d['small_files_per_s']:,.0f} files/s for 100 kB files "
            f"({d['small_files_MBps']:.0f} MB/s, no fsync)."
        )
        lines.append("")
        lines.append("### Gene stage vs its limit")
        lines.append("")
        lines.append(
            "| dataset | setting | raw gene bytes | genes s | genes MB/s (raw) | limit | limit MB/s | % of limit |"
        )
        lines.append("|---|---|--:|--:|--:|---|--:|--:|")
        # the limit of the gene stage with codes: the run-length encoder the export used
        codes = (
            "cellucid codes (zlib-ng, Z_RLE)"
            if "zlib-ng" in meta.get("gzip_encoder_resolved", "")
            else "cellucid codes (stdlib zlib, Z_RLE)"
        )
        zl6 = next(
            (e for e in lim["encoders"] if e["encoder"] == codes),
            next(e for e in lim["encoders"] if e["encoder"].startswith("zlib 6")),
        )
        for row in report["results"]:
            o = row["ours"]
            wv = _genes_s(o["stages"]) + o["stages"].get("drain", 0.0)
            item = 1 if row["setting"] == "8bit+gzip6" else 4
            raw = row["cells"] * row["genes"] * item
            if row["setting"] == "8bit+gzip6":
                limit_name, limit = f"{zl6['encoder']}, {nt} threads", zl6[f"MBps_{nt}t"]
            else:
                limit_name, limit = "sequential write (fsync)", d["seq_write_fsync_MBps"]
            rate = raw / wv / 1e6 if wv else float("nan")
            lines.append(
                f"| {row['dataset']} | {row['setting']} | {raw / 1e6:,.0f} MB | {wv:.2f} | {rate:.0f} "
                f"| {limit_name} | {limit:.0f} | {100 * rate / limit:.0f}% |"
            )
        lines.append("")
        lines.append("(genes here includes the final drain of the compression pool.)")
    return "\n".join(lines)


def nnz_of(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["X"]["data"].shape[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="datasets, reference venv and scratch outputs (outside the repo)",
    )
    ap.add_argument(
        "--sizes", default=",".join(SIZES), help=f"comma-separated subset of: {', '.join(SIZES)}"
    )
    ap.add_argument(
        "--settings",
        default=",".join(SETTINGS),
        help="comma-separated subset of: " + ", ".join(SETTINGS),
    )
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument(
        "--repeats", type=int, default=3, help="runs of ours per case (median reported)"
    )
    ap.add_argument(
        "--reference-repeats",
        type=int,
        default=None,
        help="runs of the reference per case (default: --repeats)",
    )
    ap.add_argument(
        "--reference-repeats-large",
        type=int,
        default=None,
        help="runs of the reference for 100k x 20k and 1M x 2k (default: --reference-repeats)",
    )
    ap.add_argument(
        "--reference-timeout",
        type=float,
        default=900.0,
        help="seconds after which a reference run is killed and reported as '> N s'",
    )
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument(
        "--no-limits", action="store_true", help="skip the encoder and disk measurements"
    )
    ap.add_argument(
        "--n-jobs", type=int, default=None, help="n_jobs for our export (default: all cores)"
    )
    ap.add_argument(
        "--cprofile-dir", default=None, help="write a cProfile of our first run of each case here"
    )
    ap.add_argument(
        "--gzip-encoder",
        choices=["auto", "zlib", "zlib-ng"],
        default="auto",
        help="gzip_encoder of our export (default: auto, zlib-ng when installed)",
    )
    ap.add_argument(
        "--out-dir",
        default=None,
        help="where the exports are written (default: <data-dir>/scratch/out); "
        "e.g. a tmpfs folder to measure the exporters without the disk",
    )
    ap.add_argument(
        "--remove-each-run",
        action="store_true",
        help="remove each export right after its run (default: all after the last run), "
        "for a disk without room for them all",
    )
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--markdown", default=None, help="also write the Markdown tables here")
    ap.add_argument(
        "--report-from",
        default=None,
        metavar="JSON",
        nargs="+",
        help="print the Markdown tables of earlier (possibly partial) --json files, merged, and exit",
    )
    # worker mode (internal)
    ap.add_argument("--worker", choices=["ours", "ref"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--setting", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--cprofile", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.report_from:
        reports = [json.loads(Path(p).read_text()) for p in args.report_from]
        merged = dict(reports[0])
        merged["results"] = [row for r in reports for row in r["results"]]
        for r in reports:
            if "limits" in r:
                merged.setdefault("limits", r["limits"])
        if args.json:
            Path(args.json).write_text(json.dumps(merged, indent=1))
        print(markdown(merged))
        return 0

    import numpy as np

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = data_dir / "scratch"
    scratch.mkdir(exist_ok=True)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}")
    for s in settings:
        if s not in SETTINGS:
            ap.error(f"unknown setting {s!r}")
    ref_repeats = args.reference_repeats or args.repeats
    ref_repeats_large = args.reference_repeats_large or ref_repeats
    ncpu = len(os.sched_getaffinity(0))
    try:
        from threadpoolctl import threadpool_info

        blas = [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpool_info()
        ]
    except ImportError:
        blas = None
    note = f"{ref_repeats}"
    if ref_repeats_large != ref_repeats:
        note += f" ({ref_repeats_large} for 100k x 20k and 1M x 2k)"
    report: dict = {
        "meta": {
            "cpus": ncpu,
            "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "blas": blas,
            "openblas_env": {
                k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
            },
            "repeats": args.repeats,
            "reference_repeats": ref_repeats,
            "reference_repeats_large": ref_repeats_large,
            "reference_repeats_note": note,
            "reference": REFERENCE_SPEC,
            "reference_timeout_s": args.reference_timeout,
            "gzip_encoder": args.gzip_encoder,
            "gzip_encoder_resolved": _resolved_encoder(args.gzip_encoder),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cellucid_git": _git_describe(),
        },
        "results": [],
    }
    paths = {
        s: ensure_data(data_dir, *SIZES[s], args.density * DENSITY_FACTOR.get(s, 1.0))
        for s in sizes
    }
    ref_python = None if args.no_reference else str(ensure_reference(data_dir))

    if not args.no_limits:
        src = next((s for s in ("100k x 2k", "1M x 2k", "10k x 2k") if s in paths), sizes[0])
        log(f"limits: encoders on real 8-bit gene columns of {src}")
        cols = gene_columns_u8(paths[src], scratch, 200)
        report["limits"] = {
            "source": src,
            "n_columns": len(cols),
            "column_bytes": len(cols[0]),
            "threads": ncpu,
            "encoders": measure_encoders(cols, ncpu),
            "disk_dir": str(scratch),
        }
        log("limits: disk")
        report["limits"]["disk"] = measure_disk(scratch)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))

    out = Path(args.out_dir) if args.out_dir else scratch / "out"
    report["meta"]["out_dir"] = str(out)
    report["meta"]["exports_removed"] = "after each run" if args.remove_each_run else "at the end"
    if out.exists():
        shutil.rmtree(out)
    runs_started = 0

    def fresh_out() -> Path:
        nonlocal runs_started
        runs_started += 1
        return out / f"run-{runs_started}"

    for size in sizes:
        cells, genes = SIZES[size]
        large = cells * genes >= 1_000_000_000
        for setting in settings:
            row = {
                "dataset": size,
                "cells": cells,
                "genes": genes,
                "setting": setting,
                "nnz": nnz_of(paths[size]),
            }
            runs = []
            for i in range(args.repeats):
                prof = None
                if args.cprofile_dir and i == 0:
                    Path(args.cprofile_dir).mkdir(parents=True, exist_ok=True)
                    prof = str(
                        Path(args.cprofile_dir) / f"ours-{size.replace(' ', '')}-{setting}.prof"
                    )
                rec = run_worker(
                    sys.executable,
                    "ours",
                    paths[size],
                    setting,
                    fresh_out(),
                    scratch,
                    None,
                    args.n_jobs,
                    prof,
                    args.gzip_encoder,
                    remove=args.remove_each_run,
                )
                log(
                    f"ours {size} {setting} run {i + 1}: {rec['export_s']:.2f} s, "
                    f"peak RSS {rec['peak_rss_kb'] / 2**20:.2f} GB"
                )
                runs.append(rec)
            row["ours"] = summarize(runs)
            row["ours_runs"] = runs
            if ref_python:
                runs = []
                for i in range(ref_repeats_large if large else ref_repeats):
                    rec = run_worker(
                        ref_python,
                        "ref",
                        paths[size],
                        setting,
                        fresh_out(),
                        scratch,
                        args.reference_timeout,
                        None,
                        remove=args.remove_each_run,
                    )
                    log(
                        f"ref  {size} {setting} run {i + 1}: "
                        + (
                            f"> {args.reference_timeout:.0f} s (killed)"
                            if rec.get("timed_out")
                            else f"{rec['export_s']:.2f} s"
                        )
                        + f", peak RSS {rec['peak_rss_kb'] / 2**20:.2f} GB"
                    )
                    runs.append(rec)
                    if rec.get("timed_out"):
                        break
                row["ref"] = summarize(runs)
                row["ref_runs"] = runs
            report["results"].append(row)
            if args.json:  # keep partial results if a later case fails
                Path(args.json).write_text(json.dumps(report, indent=1))
    shutil.rmtree(out, ignore_errors=True)  # every run's export, now that none is timed
    md = markdown(report)
    report["markdown"] = md
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
