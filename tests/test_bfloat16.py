"""bfloat16 compute: the bfloat16 GEMM against its NumPy mirror bit for bit on every instruction
set this CPU has that sums in the canonical order (VDPBF16PS and the emulation), AMX's within
its stated bound, batch and thread invariance on all, and compute_dtype="bfloat16" models
against ReferenceMLP with bfloat16 products."""
import json

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, optim, reference
from fastmlp._core import kernels
from fastmlp.reference import ReferenceMLP

# The instruction sets whose bfloat16 GEMM sums in the canonical order (bit for bit with the
# mirror); amx_bf16 sums in AMX's own order (the bfloat16 guide), checked against a bound.
ISAS = [isa for isa in ("portable", "avx2", "avx512", "avx512_bf16") if kernels.cpu_supports_isa(isa)]
AMX = kernels.cpu_supports_isa("amx_bf16")
needs_amx = pytest.mark.skipif(not AMX, reason="needs a CPU with AMX-BF16 and an OS that lets the process use "
                                               "its tiles (Linux >= 5.16)")

# Shapes (M, K, N): 1s, odd K (a zero-padded last pair), K across a block boundary (256 k,
# 128 pairs; 258 = 2 blocks of 130 and 128), non-multiples of every tile, the MLP's layers,
# the skinny (N <= 16) and row (M == 1) paths.
SHAPES = [(1, 1, 1), (3, 5, 7), (17, 33, 19), (40, 513, 33), (1, 300, 70), (5, 258, 16),
          (70, 1, 40), (33, 600, 10), (128, 784, 64), (20, 257, 300), (1, 784, 256), (6, 129, 59)]


@pytest.fixture(params=ISAS)
def isa(request):
    kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa("auto")


@pytest.fixture(params=ISAS + ["amx_bf16"] * AMX)
def any_isa(request):
    """Every instruction set this CPU has, AMX's included."""
    kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa("auto")


@pytest.fixture
def amx():
    kernels.set_isa("amx_bf16")
    yield
    kernels.set_isa("auto")


def operands(rng, M, K, N, transpose_a, transpose_b, scale=1.0):
    a = (scale * rng.standard_normal((K, M) if transpose_a else (M, K))).astype(np.float32)
    b = (scale * rng.standard_normal((N, K) if transpose_b else (K, N))).astype(np.float32)
    return a, b


def assert_same_bits(actual, expected):
    assert actual.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


# ---- rounding --------------------------------------------------------------------------------

def test_round_to_bfloat16_ties_to_even_and_special_values():
    values = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -(1 + 2 ** -8),
                       3.4028235e38, np.inf, -np.inf, 1e-40, -1e-40, 0.0, -0.0], np.float32)
    expected = np.array([1.0, 1.0, 1 + 2 ** -6, 1 + 2 ** -7, -1.0,
                         np.inf, np.inf, -np.inf, 0.0, -0.0, 0.0, -0.0], np.float32)
    assert_same_bits(reference.round_to_bfloat16(values), expected)
    assert np.signbit(reference.round_to_bfloat16(values))[[4, 7, 9, 11]].all()
    nan = reference.round_to_bfloat16(np.array([np.nan, -np.nan], np.float32))
    assert np.isnan(nan).all() and (nan.view(np.uint32) & 0xFFFF == 0).all()


def test_round_to_bfloat16_matches_torch_on_normal_numbers():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(100_000) * np.exp(rng.uniform(-30, 30, 100_000))).astype(np.float32)
    theirs = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    assert_same_bits(reference.round_to_bfloat16(x), theirs)


def test_the_kernel_rounds_its_operands_as_the_mirror(any_isa):
    # c = a @ I: each element is one rounded operand (times 1, plus zeros).
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((9, 37)) * np.exp(rng.uniform(-20, 20, (9, 37)))).astype(np.float32)
    c = kernels.gemm_bfloat16(a, np.eye(37, dtype=np.float32))
    assert_same_bits(c, reference.round_to_bfloat16(a))


def with_rounding_cases(x):
    """x with ties (to even, both ways), float32 denormals (to zeros of their sign) and
    magnitudes 2^+-29 apart strewn through it."""
    x = x.copy()
    x.flat[::7] = 1 + 2 ** -8
    x.flat[2::9] = -(1 + 3 * 2 ** -8)
    x.flat[3::11] = 1e-40
    x.flat[4::13] = -1e-40
    return x


@pytest.mark.parametrize("M,K,N,transpose_a,transpose_b",
                         [(9, 37, 10, False, False), (9, 37, 10, True, False), (40, 33, 3, True, True),
                          (1, 37, 16, False, False), (1, 36, 5, True, False), (17, 300, 16, False, True)])
def test_the_skinny_and_row_paths_round_their_operands_as_the_mirror(any_isa, M, K, N, transpose_a, transpose_b):
    # These paths (c at most 16 wide, or one row) read rounded copies of a and b, made 16
    # lanes at a time on AVX-512: every case of the rounding, odd K and both layouts of a.
    # Under AMX these shapes take AMX's path too (gemm_bfloat16): within its bound, and a
    # row's bits those of the row alone.
    rng = np.random.default_rng(M + K + N)
    a, b = operands(rng, M, K, N, transpose_a, transpose_b)
    a = with_rounding_cases(a * np.exp(rng.uniform(-20, 20, a.shape)).astype(np.float32))
    b = with_rounding_cases(b)
    ours = kernels.gemm_bfloat16(a, b, transpose_a, transpose_b)
    mirror = reference.gemm_bfloat16(a, b, transpose_a, transpose_b)
    if any_isa != "amx_bf16":
        return assert_same_bits(ours, mirror)
    assert (np.abs(ours.astype(np.float64) - mirror) <= amx_bound(a, b, transpose_a, transpose_b)).all()
    first_row = kernels.gemm_bfloat16(a[:, :1] if transpose_a else a[:1], b, transpose_a, transpose_b)
    assert_same_bits(first_row, ours[:1])


# ---- the GEMM --------------------------------------------------------------------------------

@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_bfloat16_equals_its_mirror_bit_for_bit(isa, M, K, N, transpose_a, transpose_b):
    rng = np.random.default_rng(M * 1000 + K + N)
    a, b = operands(rng, M, K, N, transpose_a, transpose_b)
    ours = kernels.gemm_bfloat16(a, b, transpose_a, transpose_b)
    assert_same_bits(ours, reference.gemm_bfloat16(a, b, transpose_a, transpose_b))


def test_gemm_bfloat16_accumulates_as_its_mirror(isa):
    rng = np.random.default_rng(2)
    a, b = operands(rng, 30, 301, 45, False, False)
    c = rng.standard_normal((30, 45)).astype(np.float32)
    expected = reference.gemm_bfloat16(a, b, c=c)
    ours = kernels.gemm_bfloat16(a, b, c=c.copy(), accumulate=True)
    assert_same_bits(ours, expected)


def test_gemm_bfloat16_is_the_float32_gemm_of_rounded_pair_swapped_operands(isa):
    # The canonical order in another form: k in pairs with the odd one first, blocks of whole
    # pairs. With K = 512 (two 256-blocks either way) that is the float32 GEMM of the rounded
    # operands with each pair of k swapped -- and, as the sums are not associative, not
    # the float32 GEMM without the swap.
    rng = np.random.default_rng(3)
    a, b = operands(rng, 64, 512, 48, False, False)
    rounded_a, rounded_b = reference.round_to_bfloat16(a), reference.round_to_bfloat16(b)
    swap = np.arange(512) ^ 1
    assert_same_bits(kernels.gemm_bfloat16(a, b), kernels.gemm(rounded_a[:, swap], rounded_b[swap]))
    assert not np.array_equal(kernels.gemm_bfloat16(a, b), kernels.gemm(rounded_a, rounded_b))


@pytest.mark.parametrize("K,N,transpose_a", [(784, 256, False), (257, 33, True), (600, 10, False)])
def test_gemm_bfloat16_rows_do_not_depend_on_the_batch_or_the_threads(any_isa, K, N, transpose_a):
    rng = np.random.default_rng(4)
    a, b = operands(rng, 150, K, N, False, False)
    whole = kernels.gemm_bfloat16(a, b)
    # A transposed a (the dW product's layout) gives the same rows as its copy.
    a_given = np.ascontiguousarray(a.T) if transpose_a else a
    assert_same_bits(kernels.gemm_bfloat16(a_given, b, transpose_a=transpose_a), whole)
    for row in (0, 77, 149):
        assert_same_bits(kernels.gemm_bfloat16(a[row:row + 1], b)[0], whole[row])
    assert_same_bits(kernels.gemm_bfloat16(a[10:27], b), whole[10:27])
    previous = fastmlp.get_num_threads()
    try:
        fastmlp.set_num_threads(1)
        one = kernels.gemm_bfloat16(a, b)
        fastmlp.set_num_threads(2)
        two = kernels.gemm_bfloat16(a, b)
    finally:
        fastmlp.set_num_threads(previous)
    assert_same_bits(one, whole)
    assert_same_bits(two, whole)


# ---- AMX: its own summation order, within a bound of the mirror -------------------------------

def amx_bound(a, b, transpose_a, transpose_b, c=None):
    """K * 2^-24 * (|c| + sum_k |a_ik b_kj|) of the rounded operands, twice: the first-order
    error bound of a K-term float32 sum in any order (the canonical one included), for the
    AMX result and for the mirror."""
    rounded_a = reference.round_to_bfloat16(a).astype(np.float64)
    rounded_b = reference.round_to_bfloat16(b).astype(np.float64)
    magnitude = np.abs(rounded_a.T if transpose_a else rounded_a) @ np.abs(rounded_b.T if transpose_b else rounded_b)
    if c is not None:
        magnitude += np.abs(c)
    K = rounded_a.shape[0 if transpose_a else 1]
    return 2 * (K + 1) * 2.0 ** -24 * magnitude


@needs_amx
@pytest.mark.parametrize("M,K,N", SHAPES + [(64, 1024, 1024), (2, 2048, 48)])
@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True), (True, True)])
def test_amx_gemm_bfloat16_is_within_its_bound_of_the_mirror(amx, M, K, N, transpose_a, transpose_b):
    rng = np.random.default_rng(M * 1000 + K + N)
    a, b = operands(rng, M, K, N, transpose_a, transpose_b)
    ours = kernels.gemm_bfloat16(a, b, transpose_a, transpose_b)
    mirror = reference.gemm_bfloat16(a, b, transpose_a, transpose_b)
    assert (np.abs(ours.astype(np.float64) - mirror) <= amx_bound(a, b, transpose_a, transpose_b)).all()


@needs_amx
def test_amx_gemm_bfloat16_accumulates_within_its_bound_of_the_mirror(amx):
    rng = np.random.default_rng(2)
    a, b = operands(rng, 30, 301, 45, False, False)
    c = rng.standard_normal((30, 45)).astype(np.float32)
    ours = kernels.gemm_bfloat16(a, b, c=c.copy(), accumulate=True)
    mirror = reference.gemm_bfloat16(a, b, c=c)
    assert (np.abs(ours.astype(np.float64) - mirror) <= amx_bound(a, b, False, False, c)).all()


@needs_amx
def test_amx_does_not_sum_in_the_canonical_order(amx):
    # Products (2^-24, 1, 2^-24, 0), (2^-24, 2^-24, 1, 0), (1, 2^-24, 0, 2^-24): exact sum
    # 1 + 2^-23 each; every float32 order gives 1 or 1 + 2^-23, the canonical one 1,
    # 1 + 2^-23, 1. On the Xeon this was written on AMX gives 1 + 2^-23, 1, 1 + 2^-23, which is
    # why its results are held to a bound, not to the mirror's bits. (c wider than 16 columns
    # so that the AMX path runs.)
    t = 2.0 ** -12
    results = []
    for square_roots in ([t, 1, t, 0], [t, t, 1, 0], [1, t, 0, t]):
        a = np.array([square_roots], np.float32)
        b = np.tile(a.T, (1, 20))
        ours, canonical = kernels.gemm_bfloat16(a, b), reference.gemm_bfloat16(a, b)
        assert ((ours == 1.0) | (ours == 1.0 + 2.0 ** -23)).all() and (ours == ours[0, 0]).all()
        results.append((ours[0, 0], canonical[0, 0]))
    assert [canonical for _, canonical in results] == [1.0, 1.0 + 2.0 ** -23, 1.0]
    assert any(ours != canonical for ours, canonical in results)


@needs_amx
def test_amx_products_survive_another_librarys_tile_configuration(amx):
    # torch's oneDNN runs its bfloat16 matmuls on AMX too, in this thread, with tile shapes
    # of its own; the next product must configure the tiles again.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    a, b = operands(rng, 70, 300, 90, False, False)
    before = kernels.gemm_bfloat16(a, b)
    x = torch.randn(40, 72, dtype=torch.bfloat16)
    torch.matmul(x, torch.randn(72, 24, dtype=torch.bfloat16))
    assert_same_bits(kernels.gemm_bfloat16(a, b), before)


@needs_amx
def test_amx_flushes_denormals_as_vdpbf16ps():
    rng = np.random.default_rng(5)
    a, b = operands(rng, 8, 20, 24, False, False, scale=2.0 ** -65)
    kernels.set_isa("amx_bf16")
    try:
        assert (kernels.gemm_bfloat16(a, b) == 0).all()
    finally:
        kernels.set_isa("auto")


@pytest.mark.skipif("avx512_bf16" not in ISAS, reason="needs a CPU with AVX512_BF16")
def test_vdpbf16ps_flushes_denormals_where_the_emulation_keeps_them():
    # Products of about 2^-130 are float32 denormals: VDPBF16PS flushes them to zero, the
    # emulation (FMA) keeps them. The difference is below K smallest normals per element.
    rng = np.random.default_rng(5)
    a, b = operands(rng, 8, 20, 24, False, False, scale=2.0 ** -65)
    kernels.set_isa("avx512_bf16")
    native = kernels.gemm_bfloat16(a, b)
    kernels.set_isa("avx512")
    try:
        emulated = kernels.gemm_bfloat16(a, b)
    finally:
        kernels.set_isa("auto")
    assert (native == 0).all()
    assert (emulated != 0).any()
    assert np.abs(emulated).max() <= 20 * np.finfo(np.float32).tiny


def test_gemm_bfloat16_refuses_other_dtypes():
    with pytest.raises(TypeError, match="gemm_bfloat16: a and b must be float32"):
        kernels.gemm_bfloat16(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="inner dimensions differ"):
        kernels.gemm_bfloat16(np.ones((2, 3), np.float32), np.ones((2, 2), np.float32))


@pytest.mark.parametrize("isa_name", ["auto", "avx512"])
def test_build_info_says_whether_and_how_bfloat16_runs_natively(isa_name):
    kernels.set_isa(isa_name)
    try:
        info = _core.build_info()
    finally:
        kernels.set_isa("auto")
    assert info["bfloat16_native"] == (info["isa"] in ("avx512_bf16", "amx_bf16"))
    assert info["cpu_avx512_bf16"] == kernels.cpu_supports_isa("avx512_bf16")
    assert info["cpu_amx_bf16"] == AMX
    expected_path = info["isa"] if info["bfloat16_native"] else "emulated"
    assert info["bfloat16_path"] == expected_path
    assert info["bfloat16_canonical_order"] == (expected_path != "amx_bf16")
    # The default is AMX wherever the CPU and the OS allow it.
    assert (info["isa"] == "amx_bf16") == (AMX and isa_name == "auto")


# ---- b packed once (the prediction path's product) ---------------------------------------------

# M: one row, a few (the few-rows kernels: VDPBF16PS's up to 4, AMX's up to 16), the tiles' edges.
PACKED_ROWS = [1, 2, 4, 5, 16, 17, 33, 150]


def expected_packing(isa_name, N):
    if isa_name == "amx_bf16":  # every width, as gemm_bfloat16 under AMX
        return "amx"
    return "vdpbf16ps" if isa_name == "avx512_bf16" and N > 16 else "float_pairs"


@pytest.mark.parametrize("K,N", [(784, 256), (1, 17), (257, 33), (600, 10), (40, 100), (300, 64)])
@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, True)])
def test_a_packed_b_gives_the_bits_of_gemm_bfloat16_at_every_batch_size(any_isa, K, N, transpose_a, transpose_b):
    rng = np.random.default_rng(K + N)
    a, b = operands(rng, max(PACKED_ROWS), K, N, transpose_a, transpose_b)
    packed = kernels.pack_bfloat16_b(b, transpose_b)
    assert packed.shape == (K, N)
    assert packed.packing == expected_packing(any_isa, N)
    if packed.packing != "float_pairs":  # bfloat16 words: half the float32 bytes, and tile padding
        assert 2 * K * N <= packed.nbytes <= 2 * (K + 64) * (N + 32)
    for M in PACKED_ROWS:
        rows = a[:, :M] if transpose_a else a[:M]
        ours = kernels.gemm_bfloat16_packed(np.ascontiguousarray(rows), packed, transpose_a)
        assert_same_bits(ours, kernels.gemm_bfloat16(rows, b, transpose_a, transpose_b))
        if any_isa != "amx_bf16":
            assert_same_bits(ours, reference.gemm_bfloat16(rows, b, transpose_a, transpose_b).astype(np.float32))


@pytest.mark.parametrize("K,N", [(784, 256), (258, 40), (33, 20)])
def test_a_packed_b_gives_each_row_the_same_bits_in_any_batch_and_on_any_threads(any_isa, K, N):
    rng = np.random.default_rng(21)
    a, b = operands(rng, 150, K, N, False, False)
    packed = kernels.pack_bfloat16_b(b)
    whole = kernels.gemm_bfloat16_packed(a, packed)
    for first, last in ((0, 1), (77, 78), (149, 150), (3, 6), (10, 26), (40, 57), (100, 150)):
        assert_same_bits(kernels.gemm_bfloat16_packed(a[first:last], packed), whole[first:last])
    previous = fastmlp.get_num_threads()
    try:
        for threads in (1, 2):
            fastmlp.set_num_threads(threads)
            assert_same_bits(kernels.gemm_bfloat16_packed(a, packed), whole)
            assert_same_bits(kernels.gemm_bfloat16_packed(a[:3], packed), whole[:3])
    finally:
        fastmlp.set_num_threads(previous)


@needs_amx
def test_a_packed_b_keeps_the_bits_of_the_instruction_set_it_was_packed_under():
    # The packing says which kernels multiply it: another set_isa meanwhile changes nothing.
    rng = np.random.default_rng(22)
    a, b = operands(rng, 20, 300, 48, False, False)
    kernels.set_isa("amx_bf16")
    try:
        packed, amx_bits = kernels.pack_bfloat16_b(b), kernels.gemm_bfloat16(a, b)
        kernels.set_isa("avx512")
        assert_same_bits(kernels.gemm_bfloat16_packed(a, packed), amx_bits)
        assert kernels.pack_bfloat16_b(b).packing == "float_pairs"
    finally:
        kernels.set_isa("auto")


def test_packing_and_packed_products_refuse_bad_operands():
    packed = kernels.pack_bfloat16_b(np.ones((6, 20), np.float32))
    with pytest.raises(TypeError, match="pack_bfloat16_b: b must be float32"):
        kernels.pack_bfloat16_b(np.ones((6, 20)))
    with pytest.raises(ValueError, match="b must be 2-D"):
        kernels.pack_bfloat16_b(np.ones(6, np.float32))
    with pytest.raises(TypeError, match="gemm_bfloat16_packed: a must be float32"):
        kernels.gemm_bfloat16_packed(np.ones((2, 6)), packed)
    with pytest.raises(ValueError, match=r"a has shape \(2, 5\), the packed b \(6, 20\)"):
        kernels.gemm_bfloat16_packed(np.ones((2, 5), np.float32), packed)
    with pytest.raises(TypeError):
        kernels.gemm_bfloat16_packed(np.ones((2, 6), np.float32), np.ones((6, 20), np.float32))


# ---- the model -------------------------------------------------------------------------------

SIZES = [12, 40, 24, 5]


def twin_models(loss="mse", activations=("relu", "tanh"), **options):
    """A bfloat16 fastmlp.MLP and a float32 ReferenceMLP with bfloat16 products, same bits."""
    optimizer = optim.Adam(lr=0.01)
    model = fastmlp.MLP(SIZES, activation=list(activations), loss=loss, optimizer=optimizer,
                        seed=7, compute_dtype="bfloat16", **options)
    twin = ReferenceMLP(SIZES, list(activations), loss=loss, optimizer="adam",
                        optimizer_options=dict(optimizer.options), seed=7, dtype=np.float32,
                        compute_dtype="bfloat16")
    twin.set_flat_params(model.flat_parameters)
    model.fitted = True
    return model, twin


def test_predictions_equal_the_reference_with_bfloat16_products_bit_for_bit(isa):
    model, twin = twin_models()
    X = np.random.default_rng(8).standard_normal((300, SIZES[0])).astype(np.float32)
    assert_same_bits(model.predict(X), twin.predict(X))
    float32_twin = ReferenceMLP(SIZES, ["relu", "tanh"], loss="mse", dtype=np.float32)
    float32_twin.set_flat_params(model.flat_parameters)
    assert not np.array_equal(model.predict(X), float32_twin.predict(X))


def test_gradients_and_a_trajectory_follow_the_reference():
    # Bit for bit through the GEMMs; the losses' and column sums' float32 rounding differs
    # from NumPy's (pairwise sums), which a bfloat16 rounding can then amplify to 2^-8 of an
    # operand: a bound far below the distance to float32 products.
    model, twin = twin_models(loss="cross_entropy")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], 64)
    ours = model.gradients(x, y)[1]
    theirs = twin.compute_gradients(x, y)[1]
    float32_twin = ReferenceMLP(SIZES, ["relu", "tanh"], dtype=np.float32)
    float32_twin.set_flat_params(model.flat_parameters)
    float32_gradients = float32_twin.compute_gradients(x, y)[1]
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 1e-5 * scale
    assert np.abs(float32_gradients - theirs).max() > 100 * np.abs(ours - theirs).max()
    for step in range(10):
        xb = rng.standard_normal((32, SIZES[0])).astype(np.float32)
        yb = rng.integers(0, SIZES[-1], 32)
        loss_ours, loss_theirs = model.train_step(xb, yb), twin.train_step(xb, yb)
        np.testing.assert_allclose(loss_ours, loss_theirs, rtol=1e-4, err_msg=f"step {step}")
    np.testing.assert_allclose(model.flat_parameters, twin.params, rtol=0, atol=2e-4)


def forward_with_gemm_bfloat16(model, X):
    """A relu network's outputs (mse: no link) through kernels.gemm_bfloat16 layer by layer, the
    training forward's product, whatever the instruction set; bias and relu in NumPy (float32
    adds and max, the epilogue's bits)."""
    h = X
    for layer, (w, b) in enumerate(zip(model.weights, model.biases)):
        h = kernels.gemm_bfloat16(h, w) + b
        if layer < len(model.weights) - 1:
            h = np.maximum(h, np.float32(0))
    return h


def relu_model(sizes=(784, 256, 40, 10)):
    model = fastmlp.MLP(list(sizes), activation="relu", loss="mse", seed=3, compute_dtype="bfloat16")
    model.fitted = True
    return model


def test_bfloat16_prediction_runs_the_products_of_training_on_every_instruction_set(any_isa):
    # Under amx_bf16 the hidden layers run AMX in prediction as in training (not the emulation),
    # under avx512_bf16 VDPBF16PS: the bits of gemm_bfloat16 on every batch size.
    model = relu_model()
    X = np.random.default_rng(23).standard_normal((300, 784)).astype(np.float32)
    expected = forward_with_gemm_bfloat16(model, X)
    assert_same_bits(model.predict(X), expected)
    for first, last in ((0, 1), (7, 10), (20, 37), (100, 300)):
        assert_same_bits(model.predict(X[first:last]), expected[first:last])


def test_bfloat16_predictions_do_not_depend_on_batch_or_threads(any_isa):
    model, _ = twin_models()
    X = np.random.default_rng(10).standard_normal((2500, SIZES[0])).astype(np.float32)
    whole = model.predict(X)
    for first, last in ((5, 6), (7, 10), (30, 46), (1000, 2100)):
        assert_same_bits(model.predict(X[first:last]), whole[first:last])
    model.n_threads = 1
    assert_same_bits(model.predict(X), whole)
    model.n_threads = 2
    assert_same_bits(model.predict(X), whole)


def test_a_float32_model_switches_to_bfloat16_prediction_and_back():
    model, twin = twin_models()
    X = np.random.default_rng(11).standard_normal((50, SIZES[0])).astype(np.float32)
    bfloat16 = model.predict(X)
    model.compute_dtype = None
    float32 = model.predict(X)
    assert not np.array_equal(bfloat16, float32)
    model.compute_dtype = "bfloat16"
    assert_same_bits(model.predict(X), bfloat16)
    model.compute_dtype = "float32"
    assert_same_bits(model.predict(X), float32)


def test_training_in_bfloat16_learns():
    rng = np.random.default_rng(12)
    X = rng.standard_normal((2000, 10)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)
    results = {}
    for compute_dtype in (None, "bfloat16"):
        model = fastmlp.MLP([10, 32, 3], seed=0, compute_dtype=compute_dtype, optimizer=optim.Adam(lr=0.01))
        model.fit(X, y, epochs=10, batch_size=64)
        results[compute_dtype] = model.evaluate(X, y)
    assert model.flat_parameters.dtype == np.float32
    assert results["bfloat16"]["accuracy"] > 0.95
    assert abs(results["bfloat16"]["loss"] - results[None]["loss"]) < 0.1 * results[None]["loss"]


def test_compute_dtype_is_checked_and_refused_by_float64_models():
    with pytest.raises(ValueError, match="compute_dtype='bfloat16' needs a float32 model; this one is float64"):
        fastmlp.MLP([3, 2], dtype="float64", compute_dtype="bfloat16")
    model = fastmlp.MLP([3, 2], dtype="float64")
    with pytest.raises(ValueError, match="compute_dtype='bfloat16' needs a float32 model"):
        model.compute_dtype = "bfloat16"
    assert model.compute_dtype is None and not model._network.bfloat16_compute
    for bad in ("fp16", "float16", 16, np.float32):
        with pytest.raises(ValueError, match="compute_dtype must be one of"):
            fastmlp.MLP([3, 2], compute_dtype=bad)
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        fastmlp.MLP([3, 2], compute_dtype="float64")
    with pytest.raises(ValueError, match="needs a float32 model"):
        model._network.bfloat16_compute = True  # the core's own check


def test_save_and_load_keep_compute_dtype_and_older_files_load_with_none(tmp_path):
    model, _ = twin_models()
    X = np.random.default_rng(13).standard_normal((20, SIZES[0])).astype(np.float32)
    model.save(tmp_path / "model.npz")
    loaded = fastmlp.load(tmp_path / "model.npz")
    assert loaded.compute_dtype == "bfloat16"
    assert_same_bits(loaded.predict(X), model.predict(X))
    with np.load(tmp_path / "model.npz") as archive:
        arrays = dict(archive)
    header = json.loads(arrays["header"].tobytes())
    del header["compute_dtype"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    old = fastmlp.load(tmp_path / "old.npz")
    assert old.compute_dtype is None and not old._network.bfloat16_compute
    model.compute_dtype = None
    assert_same_bits(old.predict(X), model.predict(X))


def test_copies_keep_compute_dtype():
    import copy

    model, _ = twin_models()
    clone = copy.deepcopy(model)
    assert clone.compute_dtype == "bfloat16" and clone._network.bfloat16_compute
    X = np.random.default_rng(14).standard_normal((20, SIZES[0])).astype(np.float32)
    assert_same_bits(clone.predict(X), model.predict(X))


def test_sklearn_estimators_take_compute_dtype():
    from fastmlp.sklearn import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(15)
    X = rng.standard_normal((200, 6))  # float64: the bfloat16 model is float32 all the same
    y = (X[:, 0] > 0).astype(int)
    classifier = MLPClassifier((16,), max_iter=5, random_state=0, compute_dtype="bfloat16").fit(X, y)
    assert classifier.model_.compute_dtype == "bfloat16" and classifier.model_.dtype == np.float32
    # Binary: one sigmoid output; predict_proba's second column is the model's.
    np.testing.assert_array_equal(classifier.predict_proba(X)[:, 1].astype(np.float32),
                                  classifier.model_.predict_proba(X.astype(np.float32))[:, 0])
    bfloat16 = classifier.predict_proba(X)
    classifier.set_params(compute_dtype=None)  # applied at every predict
    assert not np.array_equal(classifier.predict_proba(X), bfloat16)
    assert classifier.model_.compute_dtype is None
    regressor = MLPRegressor((8,), max_iter=3, random_state=0, compute_dtype="bfloat16").fit(X, X[:, 0])
    assert regressor.model_.compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="compute_dtype"):
        MLPClassifier(compute_dtype="bfloat16", dtype="float64").fit(X, y)
    with pytest.raises(ValueError, match="compute_dtype"):
        MLPClassifier(compute_dtype="half").fit(X, y)


def test_prediction_weights_are_prepared_again_after_every_change_of_the_weights(any_isa):
    # Prediction reads W_l packed once per change of the weights: a step, set_weights, a
    # write through the parameter view and loading must each be seen by the next predict.
    model, twin = twin_models()
    rng = np.random.default_rng(16)
    X = rng.standard_normal((40, SIZES[0])).astype(np.float32)

    def assert_predicts_with_current_weights():
        twin.set_flat_params(model.flat_parameters)
        expected = twin.predict(X)
        ours = model.predict(X)
        if any_isa == "amx_bf16":  # AMX's order: within its bound of the mirror, and no stale weights
            assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max()
            assert_same_bits(model.predict(X[:1]), ours[:1])
        else:
            assert_same_bits(ours, expected)

    assert_predicts_with_current_weights()
    model.train_step(X, rng.standard_normal((40, SIZES[-1])))
    assert_predicts_with_current_weights()
    model.set_weights([w * 0.5 for w in model.weights], model.biases)
    assert_predicts_with_current_weights()
    model._network.params[:] *= 1.5
    assert_predicts_with_current_weights()
    model._network.assign("params", model.flat_parameters[::-1].copy())
    assert_predicts_with_current_weights()


def test_packed_prediction_weights_follow_every_change_of_weights_dtype_and_isa(any_isa, tmp_path):
    # Bit for bit against the training product (forward_with_gemm_bfloat16) after each change
    # the packed weights must follow: a step, fit, set_weights, load, compute_dtype, set_isa.
    model = relu_model((30, 48, 20, 3))
    rng = np.random.default_rng(24)
    X = rng.standard_normal((64, 30)).astype(np.float32)
    y = rng.standard_normal((64, 3)).astype(np.float32)

    def assert_current():
        assert_same_bits(model.predict(X), forward_with_gemm_bfloat16(model, X))
        assert_same_bits(model.predict(X[:1]), forward_with_gemm_bfloat16(model, X[:1]))

    assert_current()
    model.train_step(X, y)
    assert_current()
    model.fit(X, y, epochs=2, batch_size=16)
    assert_current()
    model.set_weights([w[:, ::-1].copy() if w.shape[1] > 3 else w for w in model.weights], model.biases)
    assert_current()
    other = relu_model((30, 48, 20, 3))
    other.set_weights([w * 2 for w in model.weights], model.biases)
    other.save(tmp_path / "other.npz")
    loaded = fastmlp.load(tmp_path / "other.npz")
    assert loaded.compute_dtype == "bfloat16"
    assert_same_bits(loaded.predict(X), forward_with_gemm_bfloat16(loaded, X))
    model.compute_dtype = None
    float32 = model.predict(X)
    model.train_step(X, y)  # in float32: the packed weights are stale now
    model.compute_dtype = "bfloat16"
    assert_current()
    assert not np.array_equal(model.predict(X), float32)
    if any_isa != "portable":  # another instruction set packs for its own kernels
        kernels.set_isa("portable")
        assert_current()
        kernels.set_isa(any_isa)
        assert_current()


def test_a_float32_model_switched_to_bfloat16_predicts_with_the_native_products(any_isa):
    model = fastmlp.MLP([784, 256, 10], activation="relu", loss="mse", seed=5)
    rng = np.random.default_rng(25)
    X = rng.standard_normal((256, 784)).astype(np.float32)
    model.fit(X, rng.standard_normal((256, 10)).astype(np.float32), epochs=1, batch_size=64)
    float32 = model.predict(X)
    model.compute_dtype = "bfloat16"
    bfloat16 = model.predict(X)
    assert_same_bits(bfloat16, forward_with_gemm_bfloat16(model, X))
    assert_same_bits(model.predict(X[9:10]), bfloat16[9:10])
    assert not np.array_equal(bfloat16, float32)
    np.testing.assert_allclose(bfloat16, float32, rtol=0, atol=0.05 * np.abs(float32).max())
