"""sphinx-gallery hooks for fastmlp's examples gallery (named in conf.py by their dotted path,
so Sphinx can cache the configuration): the examples' command line and a scraper for the
PNG files they write."""
import shutil
import time
from pathlib import Path

from sphinx_gallery.scrapers import figure_rst

BUILD_STARTED = time.time()


def quick_argv(gallery_conf, script_vars):
    """sys.argv[1:] for each example: its smoke size, the one tests/test_examples.py runs."""
    return ["--quick"]


def written_png_scraper(block, block_vars, gallery_conf):
    """Show the PNG files an example wrote into its own directory (the examples save plots
    with savefig and close the figure, which the matplotlib scraper cannot see); the files
    are moved into the gallery's images, leaving examples/ as it was."""
    example_dir = Path(block_vars["src_file"]).parent
    written = sorted(path for path in example_dir.glob("*.png")
                     if path.stat().st_mtime >= BUILD_STARTED)
    image_names = []
    for path, image_path in zip(written, block_vars["image_path_iterator"]):
        shutil.move(str(path), image_path)
        image_names.append(image_path)
    return figure_rst(image_names, gallery_conf["src_dir"])
