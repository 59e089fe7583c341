"""The typed API: mypy --strict passes on the installed package, the stubs of fastmlp._core
match the compiled module name for name and parameter for parameter, py.typed is shipped,
and every public function and class carries a numpydoc docstring."""
import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

import fastmlp
from fastmlp import _core

PACKAGE_DIR = os.path.dirname(fastmlp.__file__)


def test_py_typed_and_the_core_stubs_are_installed():
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "py.typed"))
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "_core.pyi"))


def test_mypy_strict_passes_on_the_installed_package():
    pytest.importorskip("mypy")
    # A cache that outlives the run keeps repeated runs at about a second; the working
    # directory is neutral so that the installed package, not a source tree, is checked.
    cache = os.path.join(tempfile.gettempdir(), f"fastmlp-mypy-cache-{os.getuid()}")
    with tempfile.TemporaryDirectory() as neutral:
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", cache,
             "-p", "fastmlp"], cwd=neutral, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the stubs against the compiled module ----------------------------------------------------


def stub_tree():
    with open(os.path.join(PACKAGE_DIR, "_core.pyi")) as file:
        return ast.parse(file.read())


def stub_parameters(function):
    """Parameter names of a stub function, without self."""
    names = [arg.arg for arg in function.args.args + function.args.kwonlyargs]
    return [name for name in names if name != "self"]


def runtime_parameters(function):
    """Parameter names from pybind11's signature line, e.g. ``f(x: numpy.ndarray, act: str) -> ...``."""
    first_line = function.__doc__.splitlines()[0]
    inside = first_line[first_line.index("(") + 1:first_line.rindex(") ->")]
    depth, names, current = 0, [], ""
    for char in inside + ",":
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            names.append(current.split(":")[0].strip())
            current = ""
        else:
            current += char
    return [name for name in names if name and name != "self"]


def stub_functions(body):
    return {node.name: node for node in body if isinstance(node, ast.FunctionDef)}


def stub_class(tree, name):
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)


def public_names(obj):
    return {name for name in dir(obj) if not name.startswith("__") and name != "_pybind11_conduit_v1_"}


def test_stub_module_functions_match_the_compiled_module():
    tree = stub_tree()
    functions = stub_functions(tree.body)
    compiled = {name for name in public_names(_core) if callable(getattr(_core, name))
                and not isinstance(getattr(_core, name), type)}
    assert set(functions) == compiled
    for name in compiled:
        assert stub_parameters(functions[name]) == runtime_parameters(getattr(_core, name)), name
    stub_classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)
                    and not node.name.startswith("_")}
    assert stub_classes == {name for name in public_names(_core) if isinstance(getattr(_core, name), type)}


def test_stub_kernels_match_the_compiled_submodule():
    body = stub_class(stub_tree(), "_Kernels").body
    functions = stub_functions(body)
    classes = {node.name for node in body if isinstance(node, ast.ClassDef)}
    assert set(functions) | classes == public_names(_core.kernels)
    for name, function in functions.items():
        assert stub_parameters(function) == runtime_parameters(getattr(_core.kernels, name)), name


def test_stub_network_matches_both_compiled_network_classes():
    network = stub_class(stub_tree(), "_Network")
    methods = stub_functions(network.body)
    attributes = {node.target.id for node in network.body if isinstance(node, ast.AnnAssign)}
    for compiled in (_core.NetworkFloat32, _core.NetworkFloat64):
        assert set(methods) - {"__init__"} | attributes == public_names(compiled)
        for name, method in methods.items():
            if not any(getattr(d, "id", None) == "property" for d in method.decorator_list):
                assert stub_parameters(method) == runtime_parameters(getattr(compiled, name)), name


# ---- numpydoc docstrings on the public API -------------------------------------------------------

PUBLIC_MODULES = ["fastmlp", "fastmlp.optim", "fastmlp.datasets", "fastmlp.classic",
                  "fastmlp.feedback", "fastmlp.reference"]


def public_api():
    """(qualified name, object) for every public function, class, method and property."""
    seen = {}
    for module_name in PUBLIC_MODULES:
        module = sys.modules.get(module_name) or __import__(module_name, fromlist=["_"])
        names = getattr(module, "__all__", None) or [
            name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module_name]
        for name in names:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                seen[f"{module_name}.{name}"] = value
                if inspect.isclass(value):
                    for member, attribute in vars(value).items():
                        if not member.startswith("_") and (inspect.isfunction(attribute)
                                                           or isinstance(attribute, property)):
                            seen[f"{module_name}.{name}.{member}"] = attribute
    return sorted(seen.items())


def missing_numpydoc(name, value):
    """What the docstring of `value` lacks, or None. The NumPy reference's kernels mirror
    csrc/kernels.h, which documents their arguments: they need a docstring only."""
    doc = inspect.getdoc(value.fget if isinstance(value, property) else value)
    if not doc:
        return "no docstring"
    if isinstance(value, property) or name.startswith("fastmlp.reference."):
        return None
    if inspect.isclass(value) and issubclass(value, BaseException):
        return None
    function = value.__init__ if inspect.isclass(value) else value
    if inspect.isclass(value) and function is object.__init__:
        return None
    parameters = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
    if parameters and not re.search(r"^Parameters\n-+$", doc, re.M):
        return f"no Parameters section for {parameters}"
    if inspect.isfunction(value):
        returns = inspect.signature(value).return_annotation
        if returns not in ("None", None, inspect.Signature.empty) and not re.search(r"^Returns\n-+$", doc, re.M):
            return f"no Returns section for -> {returns}"
    return None


def test_every_public_function_and_class_has_a_numpydoc_docstring():
    problems = {name: missing_numpydoc(name, value) for name, value in public_api()}
    assert len(problems) > 50  # the walk really found the API
    assert {name: problem for name, problem in problems.items() if problem} == {}
