#!/usr/bin/env bash
# Builds the documentation site as CI checks it: the README's relative links, then HTML with
# every warning an error (broken links between pages, to headings or to Python objects
# included), then the pages' code blocks as doctests. Needs the package built and the docs
# extra: pip install ".[docs]". About 1.5 minutes on 2 busy cores.
# Usage: docs/build.sh [output directory (absolute, or relative to docs/), default docs/_build]
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-_build}"
export MPLBACKEND=Agg
export TQDM_DISABLE=1  # the pages' verbose=1 fits would draw tqdm bars into the log

echo "== docs: README.md's links into the repository (GitHub shows them; Sphinx does not read the README)"
python - <<'PYTHON'
import re
import sys
from pathlib import Path

readme = Path("../README.md")
targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme.read_text(encoding="utf-8"))
missing = [target for target in targets if not (readme.parent / target).exists()]
if missing:
    sys.exit(f"README.md links to files that do not exist: {missing}")
print(f"{len(targets)} links, all present")
PYTHON
echo "== docs: html (warnings are errors; runs examples/ at --quick for the gallery)"
python -m sphinx -W --keep-going -q -b html . "$out/html"
echo "== docs: doctest (the code blocks of the pages)"
python -m sphinx -W --keep-going -q -D plot_gallery=0 -b doctest . "$out/doctest"
echo "== docs: built in $out/html (open $out/html/index.html)"
