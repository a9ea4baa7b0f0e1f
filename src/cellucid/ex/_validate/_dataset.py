"""One dataset directory: its files checked in order, each on the facts of those before it."""

from __future__ import annotations

import logging

from ..._format import CONNECTIVITY_MANIFEST, IDENTITY_FILE, OBS_MANIFEST, VAR_MANIFEST
from ..._layout import MixedLayoutError, detect_layout, layout
from ._connectivity import ConnectivityChecker
from ._context import Context
from ._files import _Fail
from ._identity import IdentityChecker
from ._obs import ObsChecker
from ._values import _is_int, _raw
from ._var import VarChecker

logger = logging.getLogger("cellucid")

#: the manifests a dataset can advertise
_KNOWN_MANIFESTS = frozenset({OBS_MANIFEST, VAR_MANIFEST, CONNECTIVITY_MANIFEST})


class _DatasetChecker(Context):
    """Check one dataset directory; :meth:`run` fills :attr:`problems` and :attr:`documents`."""

    #: the parsed identity and manifests (``_FAILED`` when unreadable, None when absent)
    documents: tuple[object, object, object, object] = (None, None, None, None)

    @property
    def layout(self) -> str:
        return self.facts.layout

    def run(self) -> None:
        identity = self.load_json(IDENTITY_FILE)
        obs = self.load_json(OBS_MANIFEST)
        var = self.load_json(VAR_MANIFEST, required=False)
        conn = self.load_json(CONNECTIVITY_MANIFEST, required=False)
        self.documents = (identity, obs, var, conn)
        try:
            name = detect_layout(identity, obs, var, conn)
        except MixedLayoutError as e:  # reported; the rest is checked in the first layout named
            self.add(e.file, "layout.mixed", e.found, "one layout for every file")
            name = e.first
        self.facts.lay = layout(name)
        logger.debug("validating %s (%s layout)", self.dir, self.layout)

        checker = IdentityChecker(self)
        identity_ok = isinstance(identity, dict)
        if not isinstance(identity, _Fail):
            checker.check_identity_head(identity)
        if (
            isinstance(obs, dict)
            and _is_int(obs.get("n_points"))
            and obs["n_points"] > 0
            and self.facts.n_cells is None
        ):
            self.facts.n_cells = int(obs["n_points"])
        if not isinstance(obs, _Fail):
            ObsChecker(self).check(obs)
        if var is not None and not isinstance(var, _Fail):
            VarChecker(self).check(var)
        if conn is not None and not isinstance(conn, _Fail):
            ConnectivityChecker(self).check_connectivity(conn)
        if identity_ok:
            # what in the identity needs the manifests: obs_fields, vectors, points, settings
            if "obs_fields" in identity:
                checker.check_obs_fields(identity["obs_fields"])
            if "vector_fields" in identity:
                checker.points.check_vector_fields(identity["vector_fields"])
            checker.points.check_points()
            checker.check_export_settings_agree()
            self.check_presence(var, conn)
        self.check_unadvertised()
        self.check_compression()

    def check_presence(self, var: object, conn: object) -> None:
        if self.facts.n_genes is not None:
            if self.facts.n_genes > 0 and var is None:
                self.add(
                    VAR_MANIFEST,
                    "file.missing",
                    "no such file",
                    f"a var manifest (stats.n_genes = {self.facts.n_genes})",
                )
            elif self.facts.n_genes == 0 and var is not None:
                self.add(
                    VAR_MANIFEST,
                    "files.unadvertised",
                    "a var manifest on disk",
                    "none: stats.n_genes is 0",
                )
        if self.facts.has_connectivity is not None:
            if self.facts.has_connectivity and conn is None:
                self.add(
                    CONNECTIVITY_MANIFEST,
                    "file.missing",
                    "no such file",
                    "a connectivity manifest (stats.has_connectivity)",
                )
            elif not self.facts.has_connectivity and conn is not None:
                self.add(
                    CONNECTIVITY_MANIFEST,
                    "files.unadvertised",
                    "a connectivity manifest on disk",
                    "none: stats.has_connectivity is false",
                )

    def check_unadvertised(self) -> None:
        try:
            names = sorted(p.name for p in self.dir.glob("*_manifest.json"))
        except OSError:
            return
        for name in names:
            if name not in _KNOWN_MANIFESTS:
                self.add(
                    name,
                    "files.unadvertised",
                    "a manifest the identity does not advertise",
                    f"only {sorted(_KNOWN_MANIFESTS)}",
                )

    def check_compression(self) -> None:
        levels = {k: v for k, v in self.facts.compressions.items()}
        distinct = set(levels.values())
        if len(distinct) > 1:
            self.add(
                IDENTITY_FILE,
                "compression.mixed",
                ", ".join(f"{k}: {_raw(v)}" for k, v in levels.items()),
                "one compression setting for every file",
            )
            return
        if not distinct:
            return
        level = distinct.pop()
        wrong = [k for k, gz in self.facts.gz_paths.items() if gz != bool(level)]
        if wrong:
            self.add(
                IDENTITY_FILE,
                "compression.mixed",
                f"{'.gz' if not level else 'no .gz'} on {', '.join(wrong)}",
                f"every file {'gzipped' if level else 'uncompressed'} (compression {_raw(level)})",
            )
