"""What a user installs: the version in one place (pyproject.toml, read back through the package
metadata and compiled into the core), the MIT licence shipped with the package, a changelog entry
for the version."""
import importlib.metadata
import re
from pathlib import Path

import fastmlp

REPOSITORY = Path(__file__).resolve().parent.parent


def pyproject_field(name):
    """A top-level string field of pyproject.toml's [project] table, read without tomllib (3.9)."""
    text = (REPOSITORY / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    return re.search(rf'^{name}\s*=\s*"([^"]+)"', project, re.MULTILINE).group(1)


def test_one_version_everywhere():
    version = pyproject_field("version")
    assert fastmlp.__version__ == version
    assert importlib.metadata.version("fastmlp") == version
    assert fastmlp.build_info()["version"] == version


def test_the_installed_package_carries_the_mit_licence():
    shipped = [path for path in importlib.metadata.files("fastmlp") if path.name == "LICENSE"]
    assert len(shipped) == 1, shipped
    text = shipped[0].read_text()
    assert text.startswith("MIT License") and text == (REPOSITORY / "LICENSE").read_text()
    assert importlib.metadata.metadata("fastmlp")["License"] == "MIT"


def test_the_changelog_says_what_this_version_added():
    changelog = (REPOSITORY / "CHANGELOG.md").read_text()
    section = changelog.split(f"\n## {fastmlp.__version__}\n", 1)
    assert len(section) == 2, f"CHANGELOG.md has no '## {fastmlp.__version__}' section"
    assert section[1].lstrip().split("\n## ", 1)[0].strip()  # and it says something
