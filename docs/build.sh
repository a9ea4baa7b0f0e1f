#!/usr/bin/env bash
# Build the documentation as CI and Read the Docs do: notebooks executed, warnings are errors.
#
#   bash docs/build.sh                 # into docs/_build/html
#   bash docs/build.sh OUTPUT_DIR      # elsewhere (Read the Docs passes $READTHEDOCS_OUTPUT/html)
#
# Uses the Python on PATH (activate the virtualenv that has `pip install -e . --group doc`),
# or the one in $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/_build/html}
python=${PYTHON:-python}
# autosummary regenerates these; stale stubs of removed functions would otherwise linger
rm -rf docs/generated
start=$(date +%s)
"$python" -m sphinx -W --keep-going -b html docs "$out"
echo "docs built in $(( $(date +%s) - start )) s: $out/index.html"
