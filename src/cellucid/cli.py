"""The ``cellucid`` command line: export, validate, catalog, inspect, serve.

Exit codes: 0 success; 1 failure (bad input data, an error writing, or ``validate`` found
problems); 2 usage error; 3 ``validate`` could not check the path (missing, not an export,
unreadable); 130 interrupted (Ctrl-C, SIGTERM). Every error is one line on stderr naming
the path and the cause.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNCHECKED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = (
    "Exit codes: 0 success, 1 failure (bad input, an error writing, or validate found problems), "
    "2 usage error, 3 validate could not check the path, 130 interrupted."
)


def _one_of(*choices: str) -> dict[str, object]:
    """Return the ``add_argument`` keywords of a flag taking one of ``choices``, shown as a|b."""
    return {"choices": choices, "metavar": "|".join(choices)}


def _bits(value: str) -> int:
    if value not in ("8", "16"):
        msg = f"must be 8 or 16, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(value)


def _level(value: str) -> int | None:
    level = int(value)
    if not 0 <= level <= 9:
        msg = f"must be a gzip level 0-9 (0: uncompressed), not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return level or None


def _key_or_off(
    parent: argparse._ActionsContainer, flag: str, *, off: tuple[str, ...], off_help: str, **kwargs
) -> None:
    """Add ``flag`` (a key overriding a discovery) and the ``off`` flags that skip it instead, as one choice."""
    group = parent.add_mutually_exclusive_group()
    action = group.add_argument(flag, **kwargs)
    group.add_argument(*off, dest=action.dest, action="store_const", const=False, help=off_help)


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _quantile(value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        msg = f"must be a fraction between 0 and 1, or none, not {value!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _n_jobs(value: str) -> int:
    from .ex._settings import Resources

    try:
        return Resources(n_jobs=int(value)).n_jobs  # the export's own check
    except ValueError as e:
        msg = f"must be a positive number of threads, or -1 for all cores, not {value!r}"
        raise argparse.ArgumentTypeError(msg) from e


def _target(value: str) -> Path | str:
    """Return a local path, or a URL as written (``s3://bucket/x``: Path would fold its ``//``)."""
    from .ex._store import is_url

    return value if is_url(value) else Path(value)


def _storage_option(value: str) -> tuple[str, object]:
    key, sep, text = value.partition("=")
    if not sep or not key:
        msg = f"must be KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000), not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    try:  # true, 3, {"region_name": "eu-west-1"}: JSON; anything else is a string
        return key, json.loads(text)
    except ValueError:
        return key, text


def _add_storage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-option",
        "--storage-options",
        dest="storage_options",
        type=_storage_option,
        action="append",
        metavar="KEY=VALUE",
        help="an option of the fsspec filesystem when the path is a URL (s3://, gs://, az://), "
        "repeatable; VALUE is read as JSON when it parses (true, 3, {...}), else as text",
    )


_BYTE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def _bytes(value: str) -> int:
    number, unit = value[:-1] if value[-1:].upper() in _BYTE_UNITS else value, value[-1:].upper()
    try:
        return int(float(number) * _BYTE_UNITS[unit if unit in _BYTE_UNITS else ""])
    except ValueError:
        msg = f"must be a number of bytes (suffix K, M or G: 256M), not {value!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _command(
    commands: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    *,
    subject: str = "",
) -> argparse.ArgumentParser:
    """Add the command ``name``, run by ``run(args)``; its errors name ``args.<subject>``.

    ``run``'s docstring is the command's help: its first line in ``cellucid --help``, the
    rest in ``cellucid name --help``.
    """
    summary, _, details = inspect.getdoc(run).partition("\n\n")
    help = summary[0].lower() + summary[1:].rstrip(".")
    p = commands.add_parser(name, help=help, description=" ".join(details.split()))
    p.set_defaults(run=run, subject=subject)
    return p


def _add_export(commands: argparse._SubParsersAction) -> None:
    # every keyword of cl.ex.export has a flag spelled like it (--var-quantization), stored
    # under its name with the function's default; earlier spellings (--quantize-genes) stay
    from .ex import _settings
    from .ex._payload import GZIP_ENCODERS

    p = _command(commands, "export", _export, subject="out_dir")
    p.add_argument("input", type=Path, help="the .h5ad file or .zarr store")
    p.add_argument(
        "out_dir",
        type=_target,
        nargs="?",
        help=f"the dataset folder to create, or its URL (s3://bucket/exports/pbmc) "
        f"(default: {_settings.DEFAULT_EXPORTS_ROOT}/<dataset id>, the id "
        "from --dataset-id, --dataset-name or the input file's name)",
    )
    found = p.add_argument_group("what to export")
    found.add_argument(
        "--basis",
        default=_settings.DEFAULT_BASIS,
        help="embedding name: umap (or X_umap) reads obsm X_umap, X_umap_3d, ...; spatial reads "
        "obsm spatial (default: %(default)s)",
    )
    _key_or_off(
        found,
        "--latent-key",
        off=("--no-latent",),
        off_help="write outlier quantiles as unavailable",
        help="obsm key of the latent space for outlier quantiles (default: X_scVI, else X_pca)",
    )
    _key_or_off(
        found,
        "--vector-fields",
        off=("--no-vector-fields",),
        off_help="skip vector fields",
        type=_csv,
        default=True,
        metavar="KEY,...",
        help="obsm keys of vector fields (default: discovered)",
    )
    _key_or_off(
        found,
        "--connectivities-key",
        off=("--no-graph", "--no-connectivities"),
        off_help="skip the kNN graph",
        help="obsp key of the kNN graph (default: from uns['neighbors'], else connectivities)",
    )
    found.add_argument(
        "--obs-keys",
        type=_csv,
        metavar="KEY,...",
        help="obs columns to export, comma-separated (default: all)",
    )
    genes = found.add_mutually_exclusive_group()
    genes.add_argument(
        "--var-names",
        "--genes",
        type=_csv,
        metavar="NAME,...",
        help="genes to export, comma-separated (default: all)",
    )
    genes.add_argument(
        "--genes-file", type=Path, metavar="FILE", help="file with one gene name per line"
    )
    genes.add_argument(
        "--no-genes", dest="var_names", action="store_const", const=[], help="export no genes"
    )
    source = found.add_mutually_exclusive_group()
    source.add_argument("--layer", help="take gene values from this layer instead of X")
    source.add_argument(
        "--use-raw", action="store_true", help="take gene values and names from raw"
    )
    found.add_argument(
        "--gene-id-column",
        "--gene-symbols",
        metavar="COLUMN",
        help="var column with the gene names users search for (default: var_names)",
    )
    enc = p.add_argument_group("encoding")
    enc.add_argument(
        "--layout",
        **_one_of("current", "legacy"),
        default=_settings.DEFAULT_LAYOUT,
        help="file layout (default: %(default)s)",
    )
    enc.add_argument(
        "--var-quantization",
        "--quantize-genes",
        type=_bits,
        metavar="8|16",
        help="store gene values as 8- or 16-bit codes (default: float32)",
    )
    enc.add_argument(
        "--obs-continuous-quantization",
        "--quantize-obs",
        type=_bits,
        metavar="8|16",
        help="store continuous obs values as 8- or 16-bit codes (default: float32)",
    )
    enc.add_argument(
        "--obs-categorical-dtype",
        "--categorical-dtype",
        **_one_of("auto", "uint8", "uint16"),
        default=_settings.DEFAULT_OBS_CATEGORICAL_DTYPE,
        help="category codes dtype (default: %(default)s)",
    )
    enc.add_argument(
        "--compression",
        type=_level,
        metavar="N",
        help="gzip level 1-9 for every payload (default: none)",
    )
    enc.add_argument(
        "--gzip-encoder",
        **_one_of(*GZIP_ENCODERS),
        default=_settings.DEFAULT_GZIP_ENCODER,
        help="deflate implementation; auto: zlib-ng when installed (default: %(default)s)",
    )
    enc.add_argument(
        "--centroid-outlier-quantile",
        "--centroid-quantile",
        type=_quantile,
        default=_settings.DEFAULT_CENTROID_OUTLIER_QUANTILE,
        metavar="Q",
        help="fraction of a category's cells its centroid averages; none: no centroids "
        "(default: %(default)s)",
    )
    enc.add_argument(
        "--centroid-min-points",
        type=int,
        default=_settings.DEFAULT_CENTROID_MIN_POINTS,
        metavar="N",
        help="fewest cells for a centroid (default: %(default)s)",
    )
    meta = p.add_argument_group("dataset metadata")
    meta.add_argument(
        "--dataset-name",
        "--name",
        metavar="NAME",
        help="dataset name shown in the viewer (default: the folder name)",
    )
    meta.add_argument(
        "--dataset-description",
        "--description",
        default="",
        metavar="TEXT",
        help="dataset description",
    )
    meta.add_argument(
        "--dataset-id",
        "--id",
        metavar="ID",
        help="dataset id in a catalog (default: from the name)",
    )
    meta.add_argument("--source-name", help="where the data comes from")
    meta.add_argument("--source-url", help="link to the data source")
    meta.add_argument("--source-citation", help="how to cite the data")
    run = p.add_argument_group("running")
    run.add_argument(
        "--overwrite", action="store_true", help="replace an existing OUT_DIR (an earlier export)"
    )
    run.add_argument(
        "--n-jobs",
        "--jobs",
        type=_n_jobs,
        metavar="N",
        help="threads encoding and compressing files; -1: all cores (default: all cores)",
    )
    run.add_argument(
        "--memory-budget",
        type=_bytes,
        default=_settings.DEFAULT_MEMORY_BUDGET,
        metavar="BYTES",
        help="bytes the blocks of genes in flight may take; suffix K, M or G "
        f"(default: {_settings.DEFAULT_MEMORY_BUDGET // 2**20}M)",
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show a progress bar (default: on a terminal, not when CI is set)",
    )
    run.add_argument(
        "--backed", action="store_true", help="read .h5ad in backed mode: genes stream from disk"
    )
    _add_storage_options(run)


def _read_input(path: Path, *, backed: bool) -> object:
    import anndata as ad

    if not path.exists():
        msg = f"{path} does not exist."
        raise FileNotFoundError(msg)
    if path.suffix == ".zarr" or path.is_dir():
        if backed:
            msg = "--backed works with .h5ad files; .zarr stores are read lazily only through anndata's read_lazy."
            raise ValueError(msg)
        read = partial(ad.read_zarr, path)
    else:
        read = partial(ad.read_h5ad, path, backed="r" if backed else None)
    try:
        return read()
    except OSError as e:  # h5py's errors name no file
        msg = f"{path}: cannot read it as AnnData ({e.strerror or e})."
        raise ValueError(msg) from e


def _export(args: argparse.Namespace) -> int:
    """Export an .h5ad or .zarr file to a dataset folder.

    Export an AnnData file (.h5ad or .zarr) to a dataset folder the Cellucid viewer opens.
    Embeddings, latent space, vector fields, kNN graph, obs columns and genes are found in
    the file; each option overrides one discovery. The options are the keywords of
    cellucid.ex.export, with the same defaults.
    """
    import inspect

    from .ex import export
    from .ex._cloud import check_remote_target, is_remote
    from .ex._export import default_out_dir
    from .ex._publish import check_target

    options = {
        name: getattr(args, name)
        for name, parameter in inspect.signature(export).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and hasattr(args, name)
    }
    if args.genes_file is not None:
        options["var_names"] = [
            line.strip() for line in args.genes_file.read_text().splitlines() if line.strip()
        ]
    if args.out_dir is None:  # exports/data for data.h5ad, named after the file
        args.out_dir, options["dataset_name"] = default_out_dir(
            args.dataset_name, args.dataset_id, fallback_name=args.input.stem
        )
    options["storage_options"] = dict(args.storage_options or [])
    # refuse the target before the input is read; the input must not be in it
    if is_remote(args.out_dir):
        check_remote_target(args.out_dir, options["storage_options"], overwrite=args.overwrite)
    else:
        check_target(args.out_dir, overwrite=args.overwrite, input_path=args.input)
    adata = _read_input(args.input, backed=args.backed)
    print(export(adata, args.out_dir, **options))
    return EXIT_OK


def _add_validate(commands: argparse._SubParsersAction) -> None:
    p = _command(commands, "validate", _validate, subject="path")
    p.add_argument(
        "path", type=_target, help="a dataset folder or an exports root, or its URL (s3://...)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_storage_options(p)


def _validate(args: argparse.Namespace) -> int:
    """Check an export (or an exports root with datasets.json) against the format.

    Check a dataset folder, or an exports root with datasets.json and every dataset under
    it, against every rule the viewer enforces. Exit 0 when valid, 1 with the list of
    problems otherwise, 3 when the path could not be checked (it does not exist, is not an
    export, or cannot be read).
    """
    from .ex import validate

    report = validate(args.path, storage_options=dict(args.storage_options or []))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _add_catalog(commands: argparse._SubParsersAction) -> None:
    p = _command(commands, "catalog", _catalog, subject="exports_root")
    p.add_argument("exports_root", type=_target, help="a folder of dataset folders, or its URL")
    p.add_argument(
        "--default",
        metavar="ID",
        help="id of the dataset the viewer opens first (default: the first)",
    )
    _add_storage_options(p)


def _catalog(args: argparse.Namespace) -> int:
    """Write datasets.json for the dataset folders under a root.

    Write EXPORTS_ROOT/datasets.json listing every dataset folder directly under
    EXPORTS_ROOT.
    """
    from .ex import write_catalog

    print(
        write_catalog(
            args.exports_root,
            default=args.default,
            storage_options=dict(args.storage_options or []),
        )
    )
    return EXIT_OK


def _add_info(commands: argparse._SubParsersAction) -> None:
    p = _command(commands, "info", _info, subject="path")
    p.add_argument("path", type=Path, help="a dataset folder or an exports root")


def _info(args: argparse.Namespace) -> int:
    """Summarize an export: cells, genes, fields, dimensions, sizes.

    Print a short summary of a dataset folder (or of every dataset of an exports root).
    """
    from .ex._info import summarize

    print(summarize(args.path))
    return EXIT_OK


def _add_serve(commands: argparse._SubParsersAction) -> None:
    p = _command(commands, "serve", _serve, subject="path")
    p.add_argument(
        "path",
        type=Path,
        nargs="?",
        help="a dataset folder or an exports root (optional with --update-viewer)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port; 0 picks a free one; a busy port is an error (default: 8765)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind; 0.0.0.0 exposes the data to the whole network, unauthenticated (default: 127.0.0.1)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to this host name (a proxy, this machine's name); repeatable",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.add_argument(
        "--update-viewer",
        action="store_true",
        help="download the hosted viewer's files into the cache first (without PATH: only that)",
    )
    p.add_argument(
        "--viewer-url",
        metavar="URL",
        help="hosted viewer address (default: https://www.cellucid.com)",
    )
    p.add_argument(
        "--viewer-cache",
        type=Path,
        metavar="DIR",
        help="viewer cache folder (default: ~/.cache/cellucid/viewer)",
    )


def _serve(args: argparse.Namespace) -> int:
    """Serve an export (or an exports root) and the viewer on this machine.

    Serve a dataset folder, or an exports root with datasets.json, to the Cellucid viewer:
    open the printed address in a browser. The viewer's own files come from a local cache,
    filled from the hosted viewer the first time. Serves until Ctrl-C.
    """
    from .ex import serve, update_viewer
    from .ex._viewer_cache import ViewerUnavailableError

    if args.path is None:
        if not args.update_viewer:
            print("cellucid serve: error: give PATH (or --update-viewer alone)", file=sys.stderr)
            return EXIT_USAGE
        try:
            print(update_viewer(viewer_url=args.viewer_url, cache_dir=args.viewer_cache))
        except ViewerUnavailableError as e:
            print(f"cellucid serve: error: {e}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    try:
        serve(
            args.path,
            host=args.host,
            port=args.port,
            open_browser=not args.no_browser,
            allowed_hosts=args.allow_host,
            viewer_url=args.viewer_url,
            viewer_cache=args.viewer_cache,
            update_viewer=args.update_viewer,
        )
    except OSError as e:  # a busy port
        print(f"cellucid serve: error: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _add_versions(commands: argparse._SubParsersAction) -> None:
    _command(commands, "versions", _versions)


def _versions(args: argparse.Namespace) -> int:
    """Print package versions for bug reports.

    Print the versions of cellucid, its dependencies, Python and the OS (through
    session-info).
    """
    from .logging import print_versions

    print_versions()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``cellucid`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="cellucid",
        description="Export AnnData to the Cellucid WebGL viewer, and check exports before publishing them.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"cellucid {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-vv: debug)"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    for add in (_add_export, _add_validate, _add_catalog, _add_info, _add_serve, _add_versions):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cellucid`` command; return its exit code."""
    from .logging import set_verbosity

    args = build_parser().parse_args(argv)
    set_verbosity(0 if args.quiet else 2 + min(args.verbose, 1) if args.verbose else 2)
    # data warnings (NaN fields, a symmetrized graph) read as log lines here, and -q silences them
    warnings.showwarning = lambda message, category, *_, **__: print(
        f"WARNING: {message}", file=sys.stderr
    )
    if args.quiet:
        warnings.simplefilter("ignore", UserWarning)
    try:
        return args.run(args)
    except KeyboardInterrupt as e:
        print(f"cellucid {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # one line, never a traceback (-v logs it)
        logging.getLogger("cellucid").debug("traceback", exc_info=True)
        subject = getattr(args, getattr(args, "subject", ""), None)
        print(f"cellucid {args.command}: error: {_describe(e, subject)}", file=sys.stderr)
        return EXIT_UNCHECKED if args.command == "validate" else EXIT_FAILED


def _describe(error: Exception, subject: Path | None) -> str:
    """Return one line on ``error``: the user's path (never a staging one) and the cause."""
    from .ex._publish import public_path

    where = f"{subject}: " if subject is not None else ""
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, OSError) and error.strerror:
        text = f"{where}{error.strerror}"
    elif isinstance(error, MemoryError):
        text = f"{where}out of memory{f' ({error})' if str(error) else ''}"
    elif isinstance(error, RecursionError):
        text = f"{where}too deeply nested to process ({error})"
    elif isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, (ValueError, ImportError, OSError)):
        text = str(error)
    else:
        text = (
            f"{where}internal error {type(error).__name__}: {error} "
            "(please report it, with the output of cellucid -v)"
        )
    return public_path(" ".join(text.split()))


if __name__ == "__main__":
    sys.exit(main())
