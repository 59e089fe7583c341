"""fastmlp's GEMM (fastmlp._core.kernels.gemm) against NumPy in float64: shapes, transposes,
accumulation, both micro-kernels, bitwise thread-count independence and argument checks."""
import os
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest

from fastmlp import _core

kernels = _core.kernels

DTYPES = [np.float32, np.float64]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]
MLP_SHAPES = [(128, 784, 256), (784, 128, 256), (128, 256, 784), (128, 256, 10), (1, 784, 256)]


ISAS = ["avx512", "avx2", "portable"]
# avx512_bf16 and amx_bf16 run the avx512 kernels above (and VDPBF16PS or AMX in
# gemm_bfloat16, test_bfloat16.py).
ISA_NAMES = ISAS + ["avx512_bf16", "amx_bf16"]
# The AVX-512 float tiles (one chosen by CPU vendor, the other forced), then the other ISAs.
AVX512_TILES = ["16x16", "8x32"]
MICRO_KERNELS = [f"avx512:{tile}" for tile in AVX512_TILES] + ["avx2", "portable"]


@pytest.fixture(params=MICRO_KERNELS)
def micro_kernel(request):
    """Runs the test once with each instruction set's kernels this CPU can run (and with each
    AVX-512 float tile)."""
    isa, _, tile = request.param.partition(":")
    if not kernels.cpu_supports_isa(isa):
        pytest.skip(f"{isa} kernels not available on this CPU")
    kernels.set_isa(isa)
    kernels.set_avx512_tile(tile or "auto")
    assert kernels.gemm_kernel_name() == isa
    yield request.param
    kernels.set_isa("auto")
    kernels.set_avx512_tile("auto")


@pytest.fixture
def restore_threads():
    saved = _core.get_num_threads()
    yield
    _core.set_num_threads(saved)


def operands(rng, M, K, N, dtype, transpose_a, transpose_b):
    """a and b stored so that op(a) is (M, K) and op(b) is (K, N)."""
    a = rng.standard_normal((K, M) if transpose_a else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if transpose_b else (K, N)).astype(dtype)
    return a, b


def check_gemm(rng, M, K, N, dtype, transpose_a, transpose_b, accumulate):
    """One call against the float64 product, within the classic bound K * eps * (|a| @ |b|)."""
    a, b = operands(rng, M, K, N, dtype, transpose_a, transpose_b)
    op_a = (a.T if transpose_a else a).astype(np.float64)
    op_b = (b.T if transpose_b else b).astype(np.float64)
    expected = op_a @ op_b
    magnitude = np.abs(op_a) @ np.abs(op_b)
    if accumulate:
        c0 = rng.standard_normal((M, N)).astype(dtype)
        c = c0.copy()
        out = kernels.gemm(a, b, transpose_a, transpose_b, c=c, accumulate=True)
        assert out is c
        expected += c0
        magnitude += np.abs(c0)
    else:
        out = kernels.gemm(a, b, transpose_a, transpose_b)
    assert out.dtype == dtype and out.shape == (M, N)
    eps = np.finfo(dtype).eps
    tolerance = 2 * (K + 2) * eps * magnitude + np.finfo(dtype).tiny
    error = np.abs(out.astype(np.float64) - expected)
    bad = np.argwhere(error > tolerance)
    assert bad.size == 0, (
        f"M,K,N={M},{K},{N} ta={transpose_a} tb={transpose_b} acc={accumulate} {dtype.__name__}: "
        f"first bad element {tuple(bad[0])} error {error[tuple(bad[0])]:.3g} "
        f"tolerance {tolerance[tuple(bad[0])]:.3g}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("swept", ["M", "K", "N"])
def test_each_dimension_1_to_70(micro_kernel, dtype, swept):
    rng = np.random.default_rng(zlib.crc32(f"{swept} {dtype.__name__} {micro_kernel}".encode()))
    for size in range(1, 71):
        for other_1 in (1, 7, 64):
            for other_2 in (1, 7, 64):
                others = iter((other_1, other_2))
                shape = {d: size if d == swept else next(others) for d in "MKN"}
                transpose_a, transpose_b = TRANSPOSES[(size + other_1 + other_2) % 4]
                check_gemm(rng, shape["M"], shape["K"], shape["N"], dtype, transpose_a,
                           transpose_b, accumulate=(size % 2 == 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_shapes(micro_kernel, dtype):
    rng = np.random.default_rng(1234)
    for _ in range(150):
        M, K, N = rng.integers(1, 300, size=3)
        transpose_a, transpose_b = TRANSPOSES[rng.integers(4)]
        check_gemm(rng, int(M), int(K), int(N), dtype, transpose_a, transpose_b,
                   accumulate=bool(rng.integers(2)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose_a,transpose_b", TRANSPOSES)
@pytest.mark.parametrize("accumulate", [False, True])
def test_mlp_shapes(micro_kernel, dtype, transpose_a, transpose_b, accumulate):
    rng = np.random.default_rng(7)
    for M, K, N in MLP_SHAPES:
        check_gemm(rng, M, K, N, dtype, transpose_a, transpose_b, accumulate)


@pytest.mark.parametrize("dtype", DTYPES)
def test_beyond_one_cache_block(micro_kernel, dtype):
    """Several K blocks, several MC blocks and two NC panels, with ragged edges everywhere."""
    rng = np.random.default_rng(3)
    for transpose_a, transpose_b in TRANSPOSES[:3]:
        check_gemm(rng, 157, 600, 2100, dtype, transpose_a, transpose_b, accumulate=True)


# Around the tiles' edges: MR (8, 16), NR (16, 32), one and two K blocks (256), the 16-wide
# transposes that pack A and a transposed B, and the 8 x 32 tile's MC (96) and NC (1024).
TILE_EDGE_SHAPES = [(M, K, N) for M in (7, 8, 9, 15, 16, 17) for K in (15, 16, 17, 255, 257)
                    for N in (17, 31, 32, 33)] + [(95, 512, 48), (97, 300, 1023), (193, 40, 1025),
                                                   (128, 784, 1024), (64, 1024, 784)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_edges(micro_kernel, dtype):
    rng = np.random.default_rng(zlib.crc32(f"edges {dtype.__name__} {micro_kernel}".encode()))
    for index, (M, K, N) in enumerate(TILE_EDGE_SHAPES):
        transpose_a, transpose_b = TRANSPOSES[index % 4]
        check_gemm(rng, M, K, N, dtype, transpose_a, transpose_b, accumulate=index % 3 == 0)


def test_avx512_tile_choice_and_forcing():
    vendor_tile = kernels.avx512_tile()
    assert vendor_tile in AVX512_TILES and _core.build_info()["avx512_tile"] == vendor_tile
    with open("/proc/cpuinfo") as cpuinfo:
        intel = "GenuineIntel" in cpuinfo.read()
    assert vendor_tile == ("8x32" if intel else "16x16")
    try:
        for tile in AVX512_TILES:
            kernels.set_avx512_tile(tile)
            assert kernels.avx512_tile() == tile
        with pytest.raises(ValueError, match="tile must be '16x16', '8x32' or 'auto', got '32x32'"):
            kernels.set_avx512_tile("32x32")
        assert kernels.avx512_tile() == AVX512_TILES[-1]
    finally:
        kernels.set_avx512_tile("auto")
    assert kernels.avx512_tile() == vendor_tile


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_inner_dimension(dtype):
    a, b = np.ones((3, 0), dtype), np.ones((0, 4), dtype)
    np.testing.assert_array_equal(kernels.gemm(a, b), np.zeros((3, 4)))
    c = np.full((3, 4), 2.5, dtype)
    kernels.gemm(a, b, c=c, accumulate=True)
    np.testing.assert_array_equal(c, np.full((3, 4), 2.5))
    c[:] = 7
    kernels.gemm(a, b, c=c)
    np.testing.assert_array_equal(c, np.zeros((3, 4)))


def test_empty_output():
    assert kernels.gemm(np.ones((0, 5), np.float32), np.ones((5, 3), np.float32)).shape == (0, 3)
    assert kernels.gemm(np.ones((2, 5), np.float32), np.ones((5, 0), np.float32)).shape == (2, 0)


THREAD_SHAPES = MLP_SHAPES + [(97, 513, 131), (5, 300, 400), (300, 40, 13), (2, 1000, 70),
                              (1, 3000, 100), (700, 64, 700)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_give_the_same_bits(micro_kernel, dtype, restore_threads):
    rng = np.random.default_rng(11)
    for M, K, N in THREAD_SHAPES:
        for transpose_a, transpose_b in TRANSPOSES:
            a, b = operands(rng, M, K, N, dtype, transpose_a, transpose_b)
            c0 = rng.standard_normal((M, N)).astype(dtype)
            results = []
            for threads in (1, 2):
                _core.set_num_threads(threads)
                plain = kernels.gemm(a, b, transpose_a, transpose_b)
                summed = kernels.gemm(a, b, transpose_a, transpose_b, c=c0.copy(), accumulate=True)
                results.append((plain, summed))
            for one, two in zip(*results):
                assert np.array_equal(one, two), (M, K, N, transpose_a, transpose_b)


def test_concurrent_calls_from_python_threads(restore_threads):
    """Each call packs into its own scratch memory: simultaneous calls do not interfere."""
    _core.set_num_threads(2)
    rng = np.random.default_rng(5)
    problems = [operands(rng, 200 + 13 * i, 300, 250 - 7 * i, np.float32, i % 2 == 1, i % 3 == 1)
                + (i % 2 == 1, i % 3 == 1) for i in range(4)]
    expected = [kernels.gemm(a, b, ta, tb) for a, b, ta, tb in problems]
    failures = []

    def worker(index):
        a, b, ta, tb = problems[index]
        for _ in range(20):
            if not np.array_equal(kernels.gemm(a, b, ta, tb), expected[index]):
                failures.append(index)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert failures == []


def test_kernel_name_and_forcing():
    widest = _core.build_info()["cpu_widest_isa"]
    assert kernels.gemm_kernel_name() == widest
    kernels.force_portable_gemm(True)
    try:
        assert kernels.gemm_kernel_name() == "portable"
        assert _core.build_info()["isa"] == "portable"
        kernels.set_isa("auto")
        assert _core.build_info()["isa"] == widest
        assert kernels.gemm_kernel_name() == widest
    finally:
        kernels.set_isa("auto")


def test_set_isa_refuses_unknown_and_unsupported_names():
    with pytest.raises(ValueError, match="isa must be 'portable', 'avx2', 'avx512', 'avx512_bf16', 'amx_bf16' or 'auto', "
                       "got 'sse9'"):
        kernels.set_isa("sse9")
    for isa in ISA_NAMES:
        if not kernels.cpu_supports_isa(isa):
            with pytest.raises(ValueError, match=f"'{isa}' is not supported by this CPU"):
                kernels.set_isa(isa)
    assert kernels.gemm_kernel_name() == _core.build_info()["cpu_widest_isa"]


def _kernel_name_in_subprocess(**environment):
    code = "from fastmlp._core import kernels; print(kernels.gemm_kernel_name())"
    env = {k: v for k, v in os.environ.items() if k not in ("FASTMLP_ISA", "FASTMLP_FORCE_PORTABLE")}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_environment_variable_forces_portable():
    out = _kernel_name_in_subprocess(FASTMLP_FORCE_PORTABLE="1")
    assert out.returncode == 0 and out.stdout.strip() == "portable"


@pytest.mark.parametrize("isa", ISA_NAMES)
def test_fastmlp_isa_environment_variable(isa):
    out = _kernel_name_in_subprocess(FASTMLP_ISA=isa)
    if kernels.cpu_supports_isa(isa):
        assert out.returncode == 0 and out.stdout.strip() == isa
    else:
        assert out.returncode != 0 and f"FASTMLP_ISA={isa}: this CPU cannot run" in out.stderr


def test_fastmlp_isa_environment_variable_refuses_a_typo():
    out = _kernel_name_in_subprocess(FASTMLP_ISA="avx-512")
    assert out.returncode != 0
    assert "FASTMLP_ISA must be portable, avx2, avx512, avx512_bf16, amx_bf16 or auto, got 'avx-512'" in out.stderr


def test_non_contiguous_inputs_are_handled():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 60)).astype(np.float32)[:, ::2]   # (40, 30), strided
    b = np.asfortranarray(rng.standard_normal((30, 20)).astype(np.float32))
    np.testing.assert_allclose(kernels.gemm(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_wrong_dtypes_raise_type_error():
    f32, f64 = np.ones((2, 2), np.float32), np.ones((2, 2), np.float64)
    with pytest.raises(TypeError):
        kernels.gemm(np.ones((2, 2), np.int64), np.ones((2, 2), np.int64))
    with pytest.raises(TypeError):
        kernels.gemm(f32, f64)
    with pytest.raises(TypeError):
        kernels.gemm(f32, f32, c=np.zeros((2, 2), np.float64))


def test_wrong_shapes_raise_value_error_naming_them():
    a, b = np.ones((3, 4), np.float32), np.ones((5, 6), np.float32)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 6\)"):
        kernels.gemm(a, b)
    with pytest.raises(ValueError, match="a must be 2-D"):
        kernels.gemm(np.ones(3, np.float32), b)
    with pytest.raises(ValueError, match=r"c must have shape \(3, 6\)"):
        kernels.gemm(np.ones((3, 5), np.float32), b, c=np.zeros((6, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.gemm(np.ones((3, 5), np.float32), b, c=np.zeros((6, 3), np.float32).T)
    with pytest.raises(ValueError, match="accumulate"):
        kernels.gemm(np.ones((3, 5), np.float32), b, accumulate=True)
