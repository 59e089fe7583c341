"""Checks a build tree of fastmlp (e.g. the one `python -m build -C build-dir=DIR` leaves) for
code beyond each translation unit's instruction set: the portable and binding objects hold no
AVX instruction at all, the AVX2 objects no AVX-512, and no object was compiled with
-march=native. A wheel linked from such objects runs on any x86-64 CPU and picks its kernels
at run time.  Run: python tools/check_isa.py BUILD_DIR  (needs objdump; exit status 1 on a finding)
"""
import re
import subprocess
import sys
from pathlib import Path

# Every VEX/EVEX-encoded (AVX, AVX2, FMA, AVX-512) instruction's mnemonic starts with "v"; no
# SSE2-baseline one does. AVX-512 is told by its registers: zmm, the mask registers, or
# xmm/ymm16-31.
AVX = re.compile(r"^\s*[0-9a-f]+:\s+v[a-z0-9]+\b", re.MULTILINE)
AVX512 = re.compile(r"%zmm\d|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b")
# Object library (CMake target) -> what its objects may hold.
ALLOWED = {"fastmlp_kernels": "baseline", "_core": "baseline", "_classic_rules": "baseline",
           "fastmlp_avx2": "avx2", "fastmlp_avx512": "avx512", "fastmlp_avx512_bf16": "avx512",
           "fastmlp_amx_bf16": "avx512"}


def findings(build_dir):
    """Yield one sentence per problem found in the build tree."""
    objects = sorted(build_dir.glob("CMakeFiles/*.dir/**/*.o"))
    if not objects:
        yield f"no object files under {build_dir}/CMakeFiles: not a fastmlp build tree"
    for path in objects:
        target = path.relative_to(build_dir / "CMakeFiles").parts[0][:-len(".dir")]
        allowed = ALLOWED.get(target)
        if allowed is None:
            yield f"{path}: object of an unknown target {target!r} (add it to ALLOWED)"
            continue
        code = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], check=True,
                              capture_output=True, text=True).stdout
        if allowed == "baseline" and AVX.search(code):
            yield f"{path}: AVX instructions in a portable translation unit: {AVX.search(code).group(0).strip()}"
        if allowed in ("baseline", "avx2") and AVX512.search(code):
            yield f"{path}: AVX-512 registers in a {allowed} translation unit"
    for rules in build_dir.glob("**/*.ninja"):
        if "-march=native" in rules.read_text():
            yield f"{rules}: compiled with -march=native (FASTMLP_NATIVE=ON): never for a wheel"
    for makefile in build_dir.glob("CMakeFiles/*.dir/flags.make"):
        if "-march=native" in makefile.read_text():
            yield f"{makefile}: compiled with -march=native (FASTMLP_NATIVE=ON): never for a wheel"


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    problems = list(findings(Path(argv[0])))
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{argv[0]}: every object within its instruction set; no -march=native")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
