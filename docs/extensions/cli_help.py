"""``cli-help``: show the output of a command (``cellucid --help``) run at build time.

The help text in the docs is then always the one of the installed version, with no
argparse-introspection dependency. In MyST::

    ```{cli-help} cellucid export --help
    ```

The command runs with the executables of the Python that runs Sphinx first on ``PATH``
(so the docs' virtualenv's ``cellucid`` is used even when it is not activated), a
terminal 80 columns wide and no colour. A failing command fails the build.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

if TYPE_CHECKING:
    from sphinx.application import Sphinx


class CliHelp(SphinxDirective):
    """Run the command given as argument and show its output as a text block."""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = False

    def run(self) -> list[nodes.Node]:
        command = self.arguments[0]
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "COLUMNS": "80",
            "NO_COLOR": "1",
        }
        try:
            done = subprocess.run(
                shlex.split(command),
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise self.error(f"cli-help: could not run {command!r}: {e}") from e
        if done.returncode != 0:
            raise self.error(f"cli-help: {command!r} exited with {done.returncode}:\n{done.stderr}")
        text = f"$ {command}\n{done.stdout.rstrip()}"
        block = nodes.literal_block(text, text, language="text")
        self.set_source_info(block)
        return [block]


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
