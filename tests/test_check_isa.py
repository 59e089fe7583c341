"""tools/check_isa.py, which CI runs on the wheel's build tree: it passes objects within their
translation unit's instruction set and names each one beyond it (compiled here with g++)."""
import importlib.util
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not shutil.which("g++")
    or not shutil.which("objdump"), reason="needs x86-64, g++ and objdump")

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_isa.py"
# A loop the compiler vectorises with whatever instruction set it is given.
SOURCE = "void scale(float* x, int n) { for (int i = 0; i < n; ++i) x[i] *= 3.0f; }\n"


def load_tool():
    spec = importlib.util.spec_from_file_location("check_isa", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_into(build_dir, target, *flags):
    directory = build_dir / "CMakeFiles" / f"{target}.dir" / "csrc"
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "scale.cpp"
    source.write_text(SOURCE)
    subprocess.run(["g++", "-O3", "-c", *flags, str(source), "-o", str(source) + ".o"], check=True)


def test_objects_within_their_instruction_sets_pass(tmp_path):
    compile_into(tmp_path, "fastmlp_kernels")
    compile_into(tmp_path, "fastmlp_avx2", "-mavx2", "-mfma")
    compile_into(tmp_path, "fastmlp_avx512", "-mavx512f", "-mprefer-vector-width=512")
    assert list(load_tool().findings(tmp_path)) == []


def test_each_object_beyond_its_instruction_set_is_named(tmp_path):
    compile_into(tmp_path, "fastmlp_kernels", "-mavx2")
    compile_into(tmp_path, "fastmlp_avx2", "-mavx512f", "-mprefer-vector-width=512")
    (tmp_path / "build.ninja").write_text("FLAGS = -O3 -march=native\n")
    found = list(load_tool().findings(tmp_path))
    assert len(found) == 3, found
    (avx_in_portable,) = [finding for finding in found if "fastmlp_kernels" in finding]
    (avx512_in_avx2,) = [finding for finding in found if "fastmlp_avx2" in finding]
    (march_native,) = [finding for finding in found if "build.ninja" in finding]
    assert "fastmlp_kernels.dir" in avx_in_portable and "AVX instructions in a portable" in avx_in_portable
    assert "fastmlp_avx2.dir" in avx512_in_avx2 and "AVX-512 registers in a avx2" in avx512_in_avx2
    assert "build.ninja" in march_native and "-march=native" in march_native


def test_an_empty_directory_is_not_a_build_tree(tmp_path):
    assert "not a fastmlp build tree" in list(load_tool().findings(tmp_path))[0]
