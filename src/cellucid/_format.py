"""The export format's names and rules, in one place.

Everything the viewer checks by name or number (see the format page of the docs) is
defined here; writers, the validator and the reader import these instead of spelling
them again. Payload paths, path patterns and layouts are built from these names in
:mod:`cellucid._layout`.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

# --- files and folders -------------------------------------------------------------------
IDENTITY_FILE = "dataset_identity.json"
OBS_MANIFEST = "obs_manifest.json"
VAR_MANIFEST = "var_manifest.json"
CONNECTIVITY_MANIFEST = "connectivity_manifest.json"
CATALOG_FILE = "datasets.json"
OBS_DIR = "obs"
VAR_DIR = "var"
CONNECTIVITY_DIR = "connectivity"
VECTORS_DIR = "vectors"

MANIFEST_FORMAT = "compact_v1"
IDENTITY_VERSION = 2
CATALOG_VERSION = 1
EDGE_FORMAT = "edge_pairs"

LayoutName = Literal["current", "legacy"]
LAYOUTS: tuple[LayoutName, ...] = ("current", "legacy")
DIMENSIONS = (1, 2, 3)

# --- dtypes --------------------------------------------------------------------------------
#: file extension of each payload dtype
EXT = {"float32": "f32", "uint8": "u8", "uint16": "u16"}
#: quantization bits -> dtype name
QUANT_DTYPE = {8: "uint8", 16: "uint16"}
#: largest code of a quantized value; the next code (``MAX_QUANT + 1``) means missing
MAX_QUANT = {8: 254, 16: 65534}
#: category codes dtype -> the code of a missing value
CODES_MISSING = {"uint8": 255, "uint16": 65535}
#: category codes dtype -> most categories it holds (codes 0-254 / 0-65534; the next code is missing)
MAX_CATEGORIES = {"uint8": 255, "uint16": 65535}
#: points, vectors and unquantized values
FLOAT_DTYPE = np.dtype("<f4")
WEIGHT_DTYPE = np.dtype("<f8")
#: largest ``n_cells`` whose edge indices fit in uint16
UINT16_INDEX_MAX_CELLS = 65536

#: the viewer refuses a payload larger than this decoded, and a JSON document larger than
#: this, before reading them (module-level so that tests can lower them)
MAX_PAYLOAD_BYTES = 512 * 2**20
MAX_JSON_BYTES = 64 * 2**20


#: the current viewer holds a graph's edges several times over while it checks and draws
#: them: 44 bytes per edge (+ 4 more with uint16 indices, which it widens) and 4 per cell
#: must fit this working set (its connectivity manifest contract)
MAX_CONNECTIVITY_WORKING_BYTES = 512 * 2**20
CELL_WORKING_BYTES = 4


def edge_working_bytes(n_cells: int) -> int:
    """Return the bytes the current viewer holds per edge of a graph of ``n_cells`` cells."""
    return 44 + (4 if n_cells <= UINT16_INDEX_MAX_CELLS else 0)


def max_edges(layout_name: str = "current", *, n_cells: int | None = None) -> int:
    """Return the most edges the export writes for a graph of ``n_cells`` cells.

    Its largest edge file (weights; 4-byte indices in legacy) must fit one payload, and in
    the current layout the viewer's working set must hold the graph as well.
    """
    bytes_per_edge = WEIGHT_DTYPE.itemsize if layout_name == "current" else 4
    limit = MAX_PAYLOAD_BYTES // bytes_per_edge
    if layout_name == "current" and n_cells is not None:
        room = max(MAX_CONNECTIVITY_WORKING_BYTES - CELL_WORKING_BYTES * n_cells, 0)
        limit = min(limit, room // edge_working_bytes(n_cells))
    return limit


# --- gzip ------------------------------------------------------------------------------------
#: largest stored (uncompressed) deflate block
STORED_BLOCK_BYTES = 65535


def gzip_ceiling(raw: int) -> int:
    """Return the largest ``.gz`` file the viewer accepts for a payload of ``raw`` bytes decoded.

    The worst case of stored deflate blocks (5 bytes per block of at most 65535 bytes, one
    more block), gzip's 18 bytes of header and trailer, and 1 KiB of slack.
    """
    return raw + 5 * (-(-raw // STORED_BLOCK_BYTES) + 1) + 18 + 1024


# --- names -----------------------------------------------------------------------------------
#: longest file name most file systems allow
MAX_FILE_NAME_BYTES = 255
#: longest sanitized key the legacy layout can name files by (``<key>.outliers.f32.gz`` is the longest)
LEGACY_MAX_STEM = MAX_FILE_NAME_BYTES - len(".outliers.f32.gz")
#: the characters JavaScript's ``String.prototype.trim`` removes (the viewer's "non-empty"):
#: ECMAScript WhiteSpace and LineTerminator, a different set from Python's ``str.strip()``
JS_WHITESPACE = (
    "\t\n\v\f\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def js_trim(text: str) -> str:
    """Return ``text`` without leading and trailing whitespace, as JavaScript's ``trim()`` does."""
    return text.strip(JS_WHITESPACE)


def is_blank(text: object) -> bool:
    """Whether ``text`` is not a string that stays non-empty after JavaScript's ``trim()``."""
    return not isinstance(text, str) or not js_trim(text)


def _keys(names: str) -> frozenset[str]:
    return frozenset(names.split())


# --- identity ------------------------------------------------------------------------------
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ID_MAX_LENGTH = 180
CREATED_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

IDENTITY_REQUIRED_KEYS = _keys(
    "version id name description cellucid_data_version stats embeddings obs_fields"
)
IDENTITY_OPTIONAL_KEYS = _keys("created_at export_settings source vector_fields")
STATS_KEYS = _keys(
    "n_cells n_genes n_obs_fields n_categorical_fields n_continuous_fields has_connectivity n_edges"
)
EMBEDDINGS_KEYS = _keys("available_dimensions default_dimension files")
EXPORT_SETTINGS_KEYS = _keys(
    "compression var_quantization obs_continuous_quantization obs_categorical_dtype"
)
SOURCE_REQUIRED_KEYS = _keys("name")
SOURCE_OPTIONAL_KEYS = _keys("url citation filename")
VECTOR_FIELDS_KEYS = _keys("default_field fields")
VECTOR_FIELD_KEYS = _keys("label basis available_dimensions default_dimension files")
#: the basis the viewer's folder picker insists on for vector fields
VECTOR_BASIS = "umap"

OBS_MANIFEST_KEYS = _keys(
    "_format n_points centroid_outlier_quantile latent_key compression "
    "_obsSchemas _continuousFields _categoricalFields"
)
CONTINUOUS_SCHEMA_KEYS = _keys("pathPattern ext dtype quantized")
CATEGORICAL_SCHEMA_KEYS = _keys(
    "codesPathPattern outlierPathPattern outlierExt outlierDtype outlierQuantized"
)
VAR_MANIFEST_KEYS = _keys(
    "_format n_points var_gene_id_column compression quantization _varSchema fields"
)
_CONNECTIVITY_LEGACY_KEYS = _keys(
    "format n_cells n_edges max_neighbors index_bytes index_dtype sourcesPath destinationsPath "
    "compression"
)
#: the current layout adds the edge weights to the legacy manifest
CONNECTIVITY_MANIFEST_KEYS = {
    "current": _CONNECTIVITY_LEGACY_KEYS | _keys("weightsPath weight_dtype weight_bytes"),
    "legacy": _CONNECTIVITY_LEGACY_KEYS,
}
CATALOG_KEYS = _keys("version default datasets")
CATALOG_ENTRY_REQUIRED_KEYS = _keys("id path")
CATALOG_ENTRY_OPTIONAL_KEYS = _keys("name description n_cells n_genes")

#: largest integer the viewer accepts as a count or index (``Number.isSafeInteger``)
MAX_SAFE_INTEGER = 2**53 - 1

DEFAULT_CENTROID_OUTLIER_QUANTILE = 0.95
DEFAULT_CENTROID_MIN_POINTS = 10


def gz(path: str, compression: int | None) -> str:
    """Return ``path`` with ``.gz`` appended when ``compression`` is a gzip level."""
    return f"{path}.gz" if compression else path


def safe_filename_component(name: object) -> str:
    """Return the file-name-safe form of a key, as the legacy layout names its files."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return safe or "field"


def index_dtype(n_cells: int) -> np.dtype:
    """Return the smallest dtype the viewer accepts for edge indices of ``n_cells`` cells."""
    return np.dtype("<u2") if n_cells <= UINT16_INDEX_MAX_CELLS else np.dtype("<u4")
