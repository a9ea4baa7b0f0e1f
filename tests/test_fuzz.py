"""Hostile exports: ``validate`` never raises, ``read`` raises only ValueError, memory stays bounded.

Valid exports of both layouts are mutated (every JSON value of every manifest replaced by
values of other types, keys deleted, documents made unparsable; payloads truncated,
extended, replaced by gzip bombs or by links out of the export). The mutations are drawn
with a fixed seed and a fixed count, so the test is deterministic and its time bounded.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from _data import make_adata
from _mutate import DS, MUTATIONS, Mutation

import cellucid as cl
from cellucid.ex import read, validate

SEED = 20261201
#: mutated exports checked per base export (JSON values, then payload files)
JSON_CASES = 150
PAYLOAD_CASES = 40
MANIFESTS = (
    "dataset_identity.json",
    "obs_manifest.json",
    "var_manifest.json",
    "connectivity_manifest.json",
)
#: one value of each JSON type, and the awkward members of each type
VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    2**53,
    10**400,
    1.5,
    1e308,
    "",
    " ",
    "\u3000",
    "x",
    "../../x",
    "/etc/passwd",
    [],
    [None],
    [1, "a", True],
    [[[[[]]]]],
    json.loads("[" * 600 + "]" * 600),
    {},
    {"x": None},
]


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def locations(obj: object, path: tuple = ()) -> Iterator[tuple]:
    """Every location in a JSON document (list items after the third are skipped)."""
    yield path
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from locations(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:3]):
            yield from locations(value, (*path, i))


def get_at(obj: object, path: tuple) -> object:
    for key in path:
        obj = obj[key]  # type: ignore[index]
    return obj


def json_mutations(rel: str, doc: object) -> Iterator[tuple[str, Callable[[object], str]]]:
    """Every single-value mutation of a document: (description, document -> text)."""
    for path in locations(doc):
        original = get_at(doc, path)
        for value in VALUES:
            if json_type(value) == json_type(original):
                continue

            def replace(d: object, path: tuple = path, value: object = value) -> str:
                if not path:
                    return json.dumps(value)
                get_at(d, path[:-1])[path[-1]] = value  # type: ignore[index]
                return json.dumps(d)

            yield f"{rel} {list(path)} = {value!r:.40}", replace
        if path and isinstance(get_at(doc, path[:-1]), dict):

            def delete(d: object, path: tuple = path) -> str:
                del get_at(d, path[:-1])[path[-1]]  # type: ignore[union-attr]
                return json.dumps(d)

            yield f"{rel} del {list(path)}", delete


TEXT_MUTATIONS: dict[str, Callable[[str], str]] = {
    "deeply nested": lambda text: "[" * 100_000 + "]" * 100_000,
    "nested 900 deep in a value": lambda text: text.replace(
        '"_format"', '"x": ' + "[" * 900 + "]" * 900 + ', "_format"', 1
    ),
    "NaN": lambda text: text.replace("0", "NaN", 1),
    "a number parsing to Infinity": lambda text: text.replace("0", "1e400", 1),
    "UTF-8 BOM": lambda text: "\ufeff" + text,
    "trailing garbage": lambda text: text + " x",
    "truncated": lambda text: text[: len(text) // 2],
    "not UTF-8": lambda text: text.replace('"', "\udcff", 1),
}


def gzip_bomb(size: int) -> bytes:
    """A gzip member of ``size`` zero bytes in about ``size / 1000`` bytes (CRC left 0)."""
    block = 2**20
    pieces, rest = divmod(size, block)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = end.compress(bytes(rest)) + end.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + piece * pieces + tail + struct.pack("<II", 0, size % 2**32)


def payload_mutations(ds: Path) -> list[tuple[str, str, Callable[[Path], None]]]:
    """Every payload mutation of every payload file: (description, file, apply)."""
    files = sorted(
        str(p.relative_to(ds)) for p in ds.rglob("*") if p.is_file() and p.suffix != ".json"
    )
    small_bomb = gzip_bomb(2**20)
    big_bomb = gzip_bomb(64 * 2**20)

    def truncate(p: Path) -> None:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def extend(p: Path) -> None:
        p.write_bytes(p.read_bytes() + b"\x00" * 8)

    def flip(p: Path) -> None:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))

    def regzip_longer(p: Path) -> None:
        p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()) + b"\x01" * 64, mtime=0))

    def sparse_giant(p: Path) -> None:
        with open(p, "r+b") as f:
            f.truncate(600 * 2**20)  # a hole: no disk used

    def link_out(p: Path) -> None:
        outside = ds.parent / f"outside-{p.name}"
        shutil.copy(p, outside)
        p.unlink()
        p.symlink_to(outside)

    out = []
    for rel in files:
        kinds: dict[str, Callable[[Path], None]] = {
            "truncated": truncate,
            "extended": extend,
            "a byte flipped": flip,
            "linked out": link_out,
        }
        if rel.endswith(".gz"):
            kinds["a small bomb"] = lambda p: p.write_bytes(small_bomb)
            kinds["a 64 MiB bomb"] = lambda p: p.write_bytes(big_bomb)
            kinds["longer data re-gzipped"] = regzip_longer
        else:
            kinds["a 600 MiB sparse file"] = sparse_giant
        out += [(f"{rel}: {name}", rel, fn) for name, fn in kinds.items()]
    return out


def assert_refused_alike(ds: Path, what: str) -> None:
    """validate never raises; read raises only ValueError, naming validate's first problem."""
    try:
        report = validate(ds)
    except Exception as exc:  # any exception is the failure reported here
        pytest.fail(f"validate raised {exc!r} on {what}")
    refusal = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read(ds)
    except ValueError as exc:
        refusal = str(exc)
    except Exception as exc:
        pytest.fail(f"read raised {exc!r} on {what}")
    if report.ok:
        return
    assert refusal is not None, f"read accepted what validate refuses ({what}): {report}"
    first = report.problems[0]
    assert f"{first.file}: [{first.rule}]" in refusal, (what, refusal)


def export_base(out: Path, layout: str) -> Path:
    adata = make_adata(n_cells=150, n_genes=12, seed=3)
    options: dict[str, object] = {"layout": layout}
    if layout == "legacy":
        adata = adata[:, [n for n in adata.var_names if n not in ("HLA-A/B", "MT CO1")]].copy()
    else:
        options |= {"compression": 6, "obs_continuous_quantization": 8, "var_quantization": 8}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return cl.ex.export(adata, out, **options)


@pytest.fixture(scope="module", params=["current", "legacy"])
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_base(tmp_path_factory.mktemp("fuzz") / request.param, request.param)


def test_fuzz_manifests(base: Path, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(base, ds)
    assert validate(ds).ok
    rng = random.Random(SEED)
    texts = {rel: (ds / rel).read_text() for rel in MANIFESTS}
    cases = [
        (rel, what, fn)
        for rel in MANIFESTS
        for what, fn in json_mutations(rel, json.loads(texts[rel]))
    ]
    cases = rng.sample(cases, JSON_CASES)
    for rel, what, fn in cases:
        (ds / rel).write_text(fn(json.loads(texts[rel])))
        assert_refused_alike(ds, what)
        (ds / rel).write_text(texts[rel])
    for rel in MANIFESTS:
        for what, fn in TEXT_MUTATIONS.items():
            (ds / rel).write_bytes(fn(texts[rel]).encode("utf-8", "surrogateescape"))
            assert_refused_alike(ds, f"{rel}: {what}")
            (ds / rel).write_text(texts[rel])
    assert validate(ds).ok


def test_fuzz_payloads(base: Path, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(base, ds)
    rng = random.Random(SEED)
    cases = payload_mutations(ds)
    for what, rel, fn in rng.sample(cases, min(PAYLOAD_CASES, len(cases))):
        original = (ds / rel).read_bytes()
        fn(ds / rel)
        assert_refused_alike(ds, what)
        (ds / rel).unlink()
        (ds / rel).write_bytes(original)
    assert validate(ds).ok


MUTATION_BASES = {"current": frozenset({"current", "gz", "quant", "vectors"})}
MUTATION_BASES["legacy"] = frozenset({"legacy", "raw", "f32", "vectors"})


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_read_refuses_what_validate_refuses(
    tmp_path_factory: pytest.TempPathFactory, layout: str
) -> None:
    """Each rule broken alone: read raises a ValueError naming the file and the rule."""
    base = export_base(tmp_path_factory.mktemp("rules") / layout, layout)
    for mut in (m for m in MUTATIONS if m.needs <= MUTATION_BASES[layout]):
        check_mutation(base, tmp_path_factory.mktemp(mut.name), mut)


def check_mutation(base: Path, where: Path, mut: Mutation) -> None:
    ds = where / "ds"
    shutil.copytree(base, ds)
    with pytest.MonkeyPatch.context() as mp:
        mut.fn(DS(ds, mp))
        report = validate(ds)
        assert mut.rule in report.rules, (mut.name, str(report))
        first = report.problems[0]
        with pytest.raises(ValueError, match=re.escape(f"{first.file}: [{first.rule}]")):
            read(ds)


# --- memory and time bounds, measured in a subprocess --------------------------------------------

MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time, warnings
    import cellucid as cl

    warnings.simplefilter("ignore")
    path = sys.argv[1]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    report = cl.ex.validate(path)
    try:
        cl.ex.read(path)
        outcome = "read"
    except ValueError as exc:
        outcome = "ValueError"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grew_mb": (after - before) / 1024, "peak_mb": after / 1024,
                      "seconds": time.perf_counter() - start, "outcome": outcome,
                      "rules": sorted(report.rules)}))
    """
)
#: the address space of the measuring process: an allocation past it fails at once
#: instead of taking the machine's memory
ADDRESS_SPACE = 4 * 2**30


def measure(path: Path) -> dict:
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def current_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_base(tmp_path_factory.mktemp("bounds") / "current", "current")


def edit(path: Path, fn: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_gzip_bomb_stays_in_bounds(current_base: Path, tmp_path: Path) -> None:
    """A 1 GiB gzip bomb (about 1 MB) in place of a gene payload."""
    ds = tmp_path / "ds"
    shutil.copytree(current_base, ds)
    (ds / "var" / "0.values.u8.gz").write_bytes(gzip_bomb(2**30))
    got = measure(ds)
    print("gzip bomb:", got)
    assert got["outcome"] == "ValueError"
    assert "gzip.ceiling" in got["rules"]
    assert got["grew_mb"] < 150, got
    assert got["seconds"] < 30, got


def test_huge_declared_cell_count_is_refused_before_decoding(
    current_base: Path, tmp_path: Path
) -> None:
    """n_cells = 10**12 everywhere and five payloads replaced by 64 MiB bombs."""
    ds = tmp_path / "ds"
    shutil.copytree(current_base, ds)
    n = 10**12

    def cells(doc: dict) -> None:
        doc["stats"]["n_cells"] = n

    def points(doc: dict) -> None:
        doc["n_points"] = n

    def conn(doc: dict) -> None:
        doc["n_cells"], doc["index_dtype"], doc["index_bytes"] = n, "uint32", 4

    edit(ds / "dataset_identity.json", cells)
    edit(ds / "obs_manifest.json", points)
    edit(ds / "var_manifest.json", points)
    edit(ds / "connectivity_manifest.json", conn)
    bomb = gzip_bomb(64 * 2**20)
    for rel in ("points_2d.bin.gz", "points_3d.bin.gz", "obs/0.values.u8.gz"):
        (ds / rel).write_bytes(bomb)
    for rel in ("var/0.values.u8.gz", "var/1.values.u8.gz"):
        (ds / rel).write_bytes(bomb)
    got = measure(ds)
    print("n_cells 10**12:", got)
    assert got["outcome"] == "ValueError"
    assert "payload.size" in got["rules"]
    assert got["grew_mb"] < 150, got
    assert got["seconds"] < 20, got


def test_edge_index_past_the_cells_allocates_nothing(current_base: Path, tmp_path: Path) -> None:
    """An edge index 2**32 - 2 under a connectivity manifest claiming 2**32 - 1 cells."""
    ds = tmp_path / "ds"
    shutil.copytree(current_base, ds)
    man = json.loads((ds / "connectivity_manifest.json").read_text())
    n_edges = man["n_edges"]
    man["n_cells"], man["index_dtype"], man["index_bytes"] = 2**32 - 1, "uint32", 4
    (ds / "connectivity_manifest.json").write_text(json.dumps(man))
    src = np.arange(n_edges, dtype="<u4")
    dst = src + 1
    dst[-1] = 2**32 - 2
    for rel, values in ((man["sourcesPath"], src), (man["destinationsPath"], dst)):
        (ds / rel).write_bytes(gzip.compress(values.tobytes(), mtime=0))
    got = measure(ds)
    print("edge index 2**32 - 2:", got)
    assert got["outcome"] == "ValueError"
    assert "connectivity.stats" in got["rules"]
    assert got["grew_mb"] < 150, got


def test_many_entries_take_linear_time(current_base: Path, tmp_path: Path) -> None:
    """300,000 obs fields with one key, 300,000 copies of one category: seconds, not hours."""
    ds = tmp_path / "ds"
    shutil.copytree(current_base, ds)
    n = 300_000

    def fields(ident: dict) -> None:
        ident["obs_fields"] = [{"key": "x", "kind": "continuous"}] * n

    edit(ds / "dataset_identity.json", fields)
    edit(ds / "obs_manifest.json", lambda m: m["_categoricalFields"][0].__setitem__(2, ["a"] * n))
    start = time.perf_counter()
    report = validate(ds)
    assert {"obs_fields.unique", "categories.value"} <= report.rules
    assert time.perf_counter() - start < 30
