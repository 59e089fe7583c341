#!/usr/bin/env bash
# Builds the documentation site as CI checks it: HTML with every warning an error (broken
# links between pages, to headings or to Python objects included), then the pages' code
# blocks as doctests. Needs the package built and the docs extra: pip install ".[docs]".
# Usage: docs/build.sh [output directory, default docs/_build]
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-_build}"
export MPLBACKEND=Agg

echo "== docs: html (warnings are errors; runs examples/ at --quick for the gallery)"
python -m sphinx -W --keep-going -q -b html . "$out/html"
echo "== docs: doctest (the code blocks of the pages)"
python -m sphinx -W --keep-going -q -D plot_gallery=0 -b doctest . "$out/doctest"
echo "== docs: built in $out/html (open $out/html/index.html)"
