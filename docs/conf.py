"""Sphinx configuration of fastmlp's documentation site: MyST user guide, numpydoc API
reference, sphinx-gallery over examples/ at their --quick size, doctests of the pages."""
import sys
from pathlib import Path

import fastmlp
from fastmlp import datasets

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))  # gallery_hooks

project = "fastmlp"
author = "the fastmlp developers"
copyright = "2026, the fastmlp developers"
release = fastmlp.__version__
version = release

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "sg_execution_times.rst"]  # the latter: sphinx-gallery's timings
templates_path = ["_templates"]

# Every reference must resolve (the build runs with -W): links between pages, to headings
# (MyST gives each heading of depth <= 3 an anchor) and to documented Python objects.
nitpicky = True
myst_heading_anchors = 3

# API reference: autosummary writes one page per object, numpydoc renders the docstrings.
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc sections say the types in words
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Doctests: every {testcode} / {doctest} block of the pages runs (sphinx-build -b doctest).
# A small generated problem stands in where a page says X, y; the block that loads
# Fashion-MNIST is skipped when its files are not installed (:skipif: not HAS_FASHION_MNIST).
HAS_FASHION_MNIST = datasets.find_mnist_files(datasets.FASHION_MNIST_DIR) is not None
doctest_test_doctest_blocks = ""  # only the pages' directives, not docstrings' >>> lines
doctest_global_setup = f"""
import os, tempfile
import numpy as np
import fastmlp
HAS_FASHION_MNIST = {HAS_FASHION_MNIST!r}
from fastmlp.datasets import make_classification
X, y = make_classification(400, 20, 3, seed=0)
X, y, X_test, y_test = X[:300].astype(np.float32), y[:300], X[300:].astype(np.float32), y[300:]
_doc_cwd, _doc_dir = os.getcwd(), tempfile.TemporaryDirectory()
os.chdir(_doc_dir.name)  # the pages' files (model.npz, model.onnx ...) go there
"""
doctest_global_cleanup = "os.chdir(_doc_cwd)\n_doc_dir.cleanup()"

# The examples gallery: every script of examples/ runs at its --quick size.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"\.py$",  # run every example, not only plot_*.py
    "reset_argv": "gallery_hooks.quick_argv",
    "image_scrapers": ("matplotlib", "gallery_hooks.written_png_scraper"),
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "show_memory": False,
}

html_theme = "pydata_sphinx_theme"
html_title = f"fastmlp {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = []
html_show_sourcelink = False


def skip_scikit_learn_members(app, what, name, obj, skip, options):
    """Leave out the methods scikit-learn's base classes add to the estimators
    (set_fit_request and the like): they are scikit-learn's, documented there."""
    if getattr(obj, "__module__", "") and obj.__module__.startswith("sklearn."):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", skip_scikit_learn_members)
