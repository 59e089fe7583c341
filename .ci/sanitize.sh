#!/usr/bin/env bash
# CI stage 2: build fastmlp._core a second time with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option FASTMLP_SANITIZE) in its own venv, and run every test that calls into C++ -
# kernels, gradients, GEMM, the network, the public API and the fuzz tests - against it with
# the ASan runtime preloaded into Python. Any sanitizer report (memory error, leak from the
# extension, undefined behaviour) ends the run with a non-zero status.
#
# A third pass runs the tests of Python threads sharing a model under ThreadSanitizer.
#
# Usage: .ci/sanitize.sh [extra pytest arguments]. SANITIZE_BUILD_DIR (and SANITIZE_TSAN_BUILD_DIR)
# keep the CMake builds between local runs (default: fresh directories under $TMPDIR);
# SANITIZE_TSAN=0 skips the ThreadSanitizer pass.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

venv="${TMPDIR:-/tmp}/fastmlp-ci-asan-venv"
build_dir="${SANITIZE_BUILD_DIR:-${TMPDIR:-/tmp}/fastmlp-ci-asan-build}"
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
pip install -q scikit-build-core pybind11 cython ninja numpy pytest hypothesis

echo "== building the sanitized extension (FASTMLP_SANITIZE=ON)"
# RelWithDebInfo: optimised like the real build, with line numbers in the reports.
pip install -q --no-build-isolation --no-deps -Cbuild-dir="$build_dir" \
  -Ccmake.build-type=RelWithDebInfo -Ccmake.define.FASTMLP_SANITIZE=ON .
built=$SECONDS

# Found on disk, not imported: importing an ASan-linked module without the runtime preloaded
# aborts ("ASan runtime does not come first in initial library list").
platlib=$(python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
core=$(ls "$platlib"/fastmlp/_core*.so)
# ldd's output is captured before it is searched: `ldd | grep -q` under pipefail fails at
# random when grep exits on the first match and ldd dies of SIGPIPE writing the next line.
libraries=$(ldd "$core")
if [[ $libraries != *libasan* ]]; then
  echo "error: $core is not linked against libasan; the sanitizer build did not take" >&2
  echo "$libraries" >&2
  exit 1
fi

asan_runtime=$(g++ -print-file-name=libasan.so)
if [ ! -e "$asan_runtime" ]; then
  echo "error: g++ does not know libasan.so ($asan_runtime)" >&2
  exit 1
fi
# libstdc++ is preloaded too: Python does not link it, and ASan's __cxa_throw interceptor
# finds no real __cxa_throw when it is first loaded later with the extension (the first C++
# exception thrown then aborts with "CHECK failed ... real___cxa_throw").
preload="$asan_runtime $(g++ -print-file-name=libstdc++.so)"

tests=(tests/test_kernels.py tests/test_gemm.py tests/test_same_bits.py tests/test_mlp.py tests/test_fuzz.py tests/test_hardening.py
       tests/test_sample_weight.py tests/test_sparse.py
       tests/test_adversarial.py
       # ASan's operator new aborts on an impossible size instead of throwing std::bad_alloc,
       # so the MemoryError this test expects cannot happen under it.
       --deselect tests/test_mlp.py::test_a_network_too_large_for_memory_says_so)
# allocator_may_return_null: tests ask for absurd sizes and expect MemoryError, not an abort.
# detect_odr_violation=0: pybind11 modules legitimately repeat some globals.
# malloc_context_size=3: see .ci/lsan.supp (it keeps the leak suppressions to CPython/NumPy).
asan_common="malloc_context_size=3:allocator_may_return_null=1:detect_odr_violation=0:exitcode=86"
export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan.supp:print_suppressions=0:exitcode=87"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=88"
export FASTMLP_SANITIZED=1   # tests whose measurements ASan distorts (RSS, a 16 GiB array) skip
status=0

# Pass 1, leaks on: LeakSanitizer stops every thread at exit to scan them, which fails
# ("Tracer caught signal 11") when OpenMP's idle pool threads are alive in some
# environments (ptrace-restricted sandboxes), so OMP_THREAD_LIMIT=1 keeps the pool from
# ever being created; the thread-count tests still run, single-threaded.
echo "== pass 1: ASan + LSan + UBSan, OpenMP limited to one thread ($asan_runtime)"
ASAN_OPTIONS="detect_leaks=1:$asan_common" OMP_THREAD_LIMIT=1 LD_PRELOAD="$preload" \
  pytest -q -p no:cacheprovider "${tests[@]}" "$@" || status=$?
passed_one=$SECONDS

# Pass 2, leaks off: the multi-threaded paths (GEMM teams, parallel element-wise loops,
# concurrent Python threads) under ASan + UBSan with OpenMP's real thread count.
echo "== pass 2: ASan + UBSan, OpenMP threads on"
ASAN_OPTIONS="detect_leaks=0:$asan_common" LD_PRELOAD="$preload" \
  pytest -q -p no:cacheprovider "${tests[@]}" -k "thread or concurrent or parallel" "$@" || status=$?

passed_two=$SECONDS

# Pass 3, ThreadSanitizer (SANITIZE_TSAN=0 skips it; about 3 min, nearly all of it the build):
# the tests where Python threads share one model (predict against set_weights and fit, two
# fits, train_step against save, a thread rewriting labels) with a second build of the
# extension, instrumented for data races, installed beside the ASan one and put first on the
# path. OpenMP is held to one thread: libgomp is not instrumented, so TSan cannot see its
# barriers and reports every GEMM team's hand-over of a packed panel as a race.
if [ "${SANITIZE_TSAN:-1}" != 0 ]; then
  tsan_build_dir="${SANITIZE_TSAN_BUILD_DIR:-${TMPDIR:-/tmp}/fastmlp-ci-tsan-build}"
  tsan_target="${TMPDIR:-/tmp}/fastmlp-ci-tsan-package"
  rm -rf "$tsan_target"
  echo "== building the ThreadSanitizer extension"
  pip install -q --no-build-isolation --no-deps -Cbuild-dir="$tsan_build_dir" \
    -Ccmake.build-type=RelWithDebInfo "-Ccmake.define.CMAKE_CXX_FLAGS=-fsanitize=thread -fno-omit-frame-pointer" \
    "-Ccmake.define.CMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread" --target "$tsan_target" .
  tsan_core=$(ls "$tsan_target"/fastmlp/_core*.so)
  tsan_libraries=$(ldd "$tsan_core")
  if [[ $tsan_libraries != *libtsan* ]]; then
    echo "error: $tsan_core is not linked against libtsan; the ThreadSanitizer build did not take" >&2
    exit 1
  fi
  echo "== pass 3: TSan, Python threads sharing models, OpenMP limited to one thread"
  PYTHONPATH="$tsan_target" OMP_THREAD_LIMIT=1 \
    TSAN_OPTIONS="halt_on_error=1:exitcode=89:report_signal_unsafe=0" \
    LD_PRELOAD="$(g++ -print-file-name=libtsan.so) $(g++ -print-file-name=libstdc++.so)" \
    pytest -q -p no:cacheprovider tests/test_hardening.py tests/test_adversarial.py tests/test_mlp.py \
      -k "thread or concurrent or parallel" "$@" || status=$?
fi

echo "== sanitizer stage: build $((built - started)) s, pass 1 $((passed_one - built)) s," \
  "pass 2 $((passed_two - passed_one)) s, TSan build and pass 3 $((SECONDS - passed_two)) s, status $status"
exit $status
