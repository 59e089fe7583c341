"""Typed stubs of fastmlp's compiled core, fastmlp._core (csrc/bindings*.cpp).

Arrays of real numbers must be float32 or float64 (never converted silently); a kernel
returns arrays of its first argument's dtype. tests/test_typing.py checks that every name and
parameter here matches the compiled module.
"""
from typing import (Any, Callable, Dict, Generic, List, Literal, Optional, Sequence, Tuple, TypeVar,
                    Union, overload)

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

# (loss_sum, correct, rows): loss_sum is the sum over batches of mean loss * rows. With
# sample_weight, loss_sum sums mean loss * the batch's weight sum and two more follow:
# (weight_sum, weighted_correct), the rows' weights summed and those of the correct rows.
_Totals = Union[Tuple[float, int, int], Tuple[float, int, int, float, float]]
# train_batches' result: the totals, the refused batch's index in the epoch (-1: none was
# refused), whether the parameters are finite and give finite outputs (False: an update
# overflowed them or the forward pass; the index is then the last batch trained, or the
# refused one), then (weight_sum, weighted_correct) with sample or class weights.
_BatchRunResult = Union[Tuple[float, int, int, int, bool], Tuple[float, int, int, int, bool, float, float]]
# X as the core reads it: a C-contiguous array, or a CSR matrix (an object with format "csr",
# shape, data of the network's dtype, int32/int64 indices, indptr: scipy's csr_matrix/csr_array
# or fastmlp._sparse.CsrRows), densified one batch or chunk at a time; a malformed row raises
# ValueError naming it.
_Rows = Any
# Targets of a network: int64 labels (cross_entropy) or values of the network's dtype.
_Targets = Union[NDArray[np.int64], NDArray[Any]]

def set_num_threads(n: Optional[int]) -> None:
    """Set the number of OpenMP threads fastmlp uses (n >= 1); None follows OpenMP again."""

def get_num_threads() -> int:
    """The number of OpenMP threads fastmlp uses (for the calling thread)."""

def num_threads_is_set() -> bool:
    """Whether set_num_threads fixed the count."""

def set_default_thread_cap(n: int) -> None:
    """Cap the OpenMP-derived default thread count (n <= 0: no cap)."""

def build_info() -> Dict[str, Any]:
    """Compiler, OpenMP and SIMD paths of this build."""

def network_size_problem(sizes: Sequence[int], batch_norm: bool, element_size: int) -> str:
    """Why a network of these widths cannot be held, or '' when it can."""

def _set_signal_check_interval(seconds: float) -> None:
    """How often training looks for Ctrl-C between steps, in [0, 10] s (a test hook)."""

def _thread_learner_choices(threads: int, seconds_one: Sequence[float],
                            seconds_many: Sequence[float]) -> List[int]:
    """The thread counts a fresh ThreadLearner picks for calls of equal work taking
    seconds_one[i] on one thread and seconds_many[i] on `threads` (a test hook)."""

class _Network(Generic[_F]):
    """An MLP's flat buffers, workspace and training loop in C++ (NetworkFloat32/64).

    The stubs' shared base: at run time the two classes are unrelated.
    """

    def __init__(self, sizes: Sequence[int], activations: Sequence[str], loss: str,
                 optimizer: Dict[str, Any], dropout: float = 0.0, batch_norm: bool = False,
                 seed: int = 0, class_weights: Sequence[float] = ..., label_smoothing: float = 0.0,
                 slope: float = 0.01, batch_norm_momentum: float = 0.1,
                 batch_norm_eps: float = 1e-05) -> None: ...
    @property
    def params(self) -> NDArray[_F]:
        """The flat parameter buffer (a writable view)."""
    @property
    def grads(self) -> NDArray[_F]:
        """The flat gradient buffer of the last backward (a view)."""
    @property
    def running_mean(self) -> NDArray[_F]:
        """Batch norm's running means, hidden widths concatenated (a view)."""
    @property
    def running_var(self) -> NDArray[_F]:
        """Batch norm's running variances, hidden widths concatenated (a view)."""
    @property
    def optimizer_state(self) -> Dict[str, NDArray[_F]]:
        """Name -> flat buffer (views), the layout of params."""
    @property
    def layers(self) -> List[Dict[str, int]]:
        """Per layer: offsets into params (weight, bias, gamma, beta; -1 when absent), fan_in, fan_out."""
    step: int
    bfloat16_compute: bool
    """When True (float32 models), every GEMM rounds its operands to bfloat16 and sums in
    float32 (kernels.gemm_bfloat16); parameters and everything else stay float32."""
    update_in_weight_gradients: bool
    """When True (default), a step in one process updates each weight matrix inside the GEMM
    that makes its gradient, block by block; False makes the whole gradient first (the same bits)."""
    track_weight_squares: bool
    """When True, every optimizer step adds ||W||^2 before it (all weight matrices), times the
    batch's rows over its weight sum, to weight_squares_sum."""
    weight_squares_sum: float
    """What track_weight_squares accumulated (scikit-learn's per-batch L2 penalty)."""
    decay_reference_weight: float
    """When > 0, a step's weight decay is the optimizer's times decay_reference_weight / (the
    batch's weight sum, its rows without sample weights); 0: as it is."""
    """When True, adam / adamw add eps to sqrt(v) before its bias correction, as
    scikit-learn's Adam (torch's eps divided by sqrt(1 - beta2^step))."""
    batch_mean_loss_sum: float
    """Every optimizer step adds its batch's (sample-weighted) mean loss times the batch's
    rows (scikit-learn's epoch loss is this sum over the epoch's rows)."""
    lr: float
    num_threads: int
    """Threads for this model's calls (applied per call); 0 follows the process setting."""
    dropout_stream: int
    """Added (times 2**40) to dropout's counter: each process of a data-parallel fit draws
    masks of its own; 0 (default) a single process's."""
    @property
    def reduces_gradient(self) -> bool:
        """Whether set_gradient_reduction's hook is set (a data-parallel fit is running)."""
    def set_gradient_reduction(
        self, reduce: Optional[Callable[[NDArray[_F], NDArray[np.float64], NDArray[_F]], Any]],
        updates: Optional[Tuple[int, int]] = None, all_ranks_finite: Optional[Callable[[bool], bool]] = None,
        gather_params: Optional[Callable[[NDArray[_F]], Any]] = None,
        sum_figures: Optional[Callable[[NDArray[np.float64]], Any]] = None,
        gather_rows: Optional[Callable[[List[Tuple[NDArray[_F], NDArray[_F]]], NDArray[np.float64]],
                                       Optional[List[NDArray[_F]]]]] = None,
        params_written: Optional[Callable[[bool], bool]] = None) -> None:
        """Data-parallel training: every training step calls reduce(gradient, figures, partial)
        between its gradient and its update (None: no longer). gradient is this process's
        gradient of its rows' loss summed (scratch for the hook); reduce writes to partial the
        other processes' sum of gradient[begin:end] and replaces, in place, figures (mean loss
        times its normaliser, weight_sum, rows, correct, weighted_correct, 1 if its logits were
        not finite, the normaliser, then running_mean and running_var) by their sums over the
        processes (running statistics: one process's); the step adds its own gradient[begin:end]
        and divides by the summed normaliser. [begin, end) is everything unless
        updates=(begin, end) shards the optimizer: the step then asks all_ranks_finite(bool)
        whether that range is finite on every process, updates params[begin:end] only, and
        gather_params(params) copies the other processes' ranges in; the optimizer state outside
        the range is not updated. With sum_figures and gather_rows too (updates from
        parameter_chunks), a network without batch norm steps by rows: sum_figures(figures)
        replaces the figures after the loss as reduce does; gather_rows(pairs, magnitudes) copies
        every process's rows of each pair's local array (layer inputs and deltas) into its
        gathered array, rank 0's first, or returns arrays of its own holding them, and replaces
        magnitudes by their largest over the processes; each process then makes and updates the
        gradient of its range from all the rows. params_written(seen_finite) -> bool replaces
        gather_params when the parameters are shared (share_params): it returns once every
        process has updated its range, whether every one saw its range finite."""
    def share_params(self, memory: Optional[NDArray[_F]]) -> None:
        """The network's parameters from now on are `memory` (which must hold them already: an
        MPI shared window the processes of a node step in), until share_params(None) copies
        them back into the network's own memory."""
    @property
    def params_shared(self) -> bool:
        """Whether the parameters are memory lent by share_params."""
    def parameter_chunks(self, P: int) -> List[int]:
        """P + 1 offsets into params cutting it into P ranges as even as whole rows of the
        weights allow (a layer's bias, gamma and beta with its last row)."""
    @property
    def steps_by_rows(self) -> bool:
        """Whether a training step now is a data-parallel step by rows."""
    @property
    def last_call_threads(self) -> int:
        """The thread count the model's last training or prediction call used."""
    def assign(self, name: str, values: NDArray[Any]) -> None:
        """Copy values into the buffer `name` (params, running_mean, running_var or an optimizer
        state) with the model locked: no prediction sees part of the old and part of the new."""
    def params_finite(self) -> bool:
        """Whether every parameter is finite."""
    @property
    def last_run_totals(self) -> Tuple[float, int, int, int, float, float]:
        """train_batches' totals of its last call, also when Ctrl-C (a signal handler's
        exception) ended it: the steps it took before; then weight_sum (the rows without
        sample weights) and weighted_correct."""
    def train_step(self, x: _Rows, y: _Targets, sample_weight: Optional[NDArray[_F]] = None) -> _Totals:
        """One optimizer step on one batch (no step when every sample weight is 0)."""
    def train_batches(self, X: _Rows, y: _Targets, order: NDArray[np.int64], batch_size: int,
                      first_batch: int, n_batches: int, partners: Optional[NDArray[np.int64]] = None,
                      lambdas: Optional[NDArray[_F]] = None,
                      sample_weight: Optional[NDArray[_F]] = None,
                      bounds: Optional[NDArray[np.int64]] = None,
                      check_outputs: bool = True) -> _BatchRunResult:
        """Optimizer steps over batches [first_batch, first_batch + n_batches) of X[order],
        order being the epoch's rows of X in the order visited (all or a subset); with partners
        (one row per position of order) and lambdas (one per batch of the epoch) each batch is
        mixed (mixup) first. A pending signal (Ctrl-C) raises its exception between steps. A
        batch whose loss or gradient is NaN/inf is not applied and ends the run; its index is
        the fourth total (-1 if none). An update that made a parameter NaN/inf (found within a
        signal-check interval) ends it too: the fifth value is then False and the fourth the
        last batch trained; so does a refused batch whose logits were NaN/inf, and, with
        check_outputs, a last update that leaves the outputs on its batch NaN/inf. A label outside [0, C) when its batch is read (the labels changed
        during the call) raises ValueError naming its row; that batch is not trained.
        sample_weight (one per row of X) weights every batch's loss; a batch whose rows all
        weigh 0 (sample weights, times class weights) takes no step. With bounds (0, ...,
        len(order), non-decreasing; one more than the epoch's batches) batch k is
        order[bounds[k]:bounds[k + 1]], possibly empty (a process's shares of the global
        batches in data-parallel training)."""
    def compute_gradients(self, x: _Rows, y: _Targets, training: bool = False,
                          sample_weight: Optional[NDArray[_F]] = None) -> _Totals:
        """Gradients of the batch's (weighted) mean loss into grads, no step."""
    @overload
    def predict(self, X: _Rows, check_finite: bool = False,
                ready_only: Literal[False] = False) -> NDArray[_F]:
        """Outputs after the loss's link, evaluation mode; check_finite rejects NaN/inf in X.
        The model stays locked for the whole call (one weight set); a pending signal (Ctrl-C)
        raises its exception between chunks of rows, as in evaluate and predict_labels.
        With ready_only, None unless X is taken as it is: an ndarray (not a subclass) of
        exactly the model's dtype, 2-D, C-contiguous, of its width, with a row at least
        (MLP.predict's fast path, which converts and checks anything else itself)."""
    @overload
    def predict(self, X: object, check_finite: bool, ready_only: Literal[True]) -> Optional[NDArray[_F]]: ...
    @overload
    def predict_labels(self, X: _Rows, check_finite: bool = False,
                       ready_only: Literal[False] = False) -> NDArray[np.int64]:
        """Class labels (argmax of predict's rows), cross_entropy only; check_finite and
        ready_only as in predict."""
    @overload
    def predict_labels(self, X: object, check_finite: bool,
                       ready_only: Literal[True]) -> Optional[NDArray[np.int64]]: ...
    def evaluate(self, X: _Rows, y: _Targets, sample_weight: Optional[NDArray[_F]] = None) -> _Totals:
        """Loss and correct count in evaluation mode (weighted with sample_weight)."""

class NetworkFloat32(_Network[np.float32]): ...
class NetworkFloat64(_Network[np.float64]): ...

class _Kernels:
    class PackedBfloat16Matrix:
        """A gemm_bfloat16 b operand packed once (kernels.pack_bfloat16_b)."""
        @property
        def shape(self) -> Tuple[int, int]: ...
        @property
        def packing(self) -> str: ...
        @property
        def nbytes(self) -> int: ...
    """fastmlp._core.kernels: the individual kernels, for testing (a submodule at run time)."""

    @staticmethod
    def all_finite(x: NDArray[_F]) -> bool: ...
    @staticmethod
    def activation_forward(x: NDArray[_F], act: str, slope: float = 0.01) -> NDArray[_F]: ...
    @staticmethod
    def activation_backward(dy: NDArray[_F], x: NDArray[_F], y: NDArray[_F], act: str,
                            slope: float = 0.01) -> NDArray[_F]: ...
    @staticmethod
    def erf_forward(x: NDArray[_F]) -> NDArray[_F]: ...
    @staticmethod
    def softmax_forward(logits: NDArray[_F]) -> NDArray[_F]: ...
    @staticmethod
    def softmax_xent_forward(logits: NDArray[_F], labels: NDArray[np.int64],
                             class_weights: Optional[NDArray[_F]] = None,
                             label_smoothing: float = 0.0,
                             sample_weights: Optional[NDArray[_F]] = None) -> Tuple[float, NDArray[_F]]:
        """-> (mean loss, probabilities); sample_weights (B,) weight the rows' losses"""
    @staticmethod
    def softmax_xent_backward(probs: NDArray[_F], labels: NDArray[np.int64],
                              class_weights: Optional[NDArray[_F]] = None,
                              label_smoothing: float = 0.0,
                              sample_weights: Optional[NDArray[_F]] = None) -> NDArray[_F]: ...
    @staticmethod
    def softmax_xent_soft_forward(logits: NDArray[_F], targets: NDArray[_F],
                                  sample_weights: Optional[NDArray[_F]] = None) -> Tuple[float, NDArray[_F]]: ...
    @staticmethod
    def softmax_xent_soft_backward(probs: NDArray[_F], targets: NDArray[_F],
                                   sample_weights: Optional[NDArray[_F]] = None) -> NDArray[_F]: ...
    @staticmethod
    def mse_forward(pred: NDArray[_F], target: NDArray[_F],
                    sample_weights: Optional[NDArray[_F]] = None) -> float: ...
    @staticmethod
    def mse_backward(pred: NDArray[_F], target: NDArray[_F],
                     sample_weights: Optional[NDArray[_F]] = None) -> NDArray[_F]: ...
    @staticmethod
    def bce_logits_forward(logits: NDArray[_F], target: NDArray[_F],
                           sample_weights: Optional[NDArray[_F]] = None) -> float: ...
    @staticmethod
    def bce_logits_backward(logits: NDArray[_F], target: NDArray[_F],
                            sample_weights: Optional[NDArray[_F]] = None) -> NDArray[_F]: ...
    @staticmethod
    def gaussian_nll_forward(out: NDArray[_F], target: NDArray[_F],
                             sample_weights: Optional[NDArray[_F]] = None) -> float: ...
    @staticmethod
    def gaussian_nll_backward(out: NDArray[_F], target: NDArray[_F],
                              sample_weights: Optional[NDArray[_F]] = None) -> NDArray[_F]: ...
    @staticmethod
    def poisson_nll_forward(log_mean: NDArray[_F], target: NDArray[_F],
                            sample_weights: Optional[NDArray[_F]] = None) -> float: ...
    @staticmethod
    def poisson_nll_backward(log_mean: NDArray[_F], target: NDArray[_F],
                             sample_weights: Optional[NDArray[_F]] = None) -> NDArray[_F]: ...
    @staticmethod
    def csr_rows_to_dense(data: NDArray[_F], indices: NDArray[Any], indptr: NDArray[Any],
                          rows: Optional[NDArray[np.int64]], cols: int) -> Tuple[NDArray[_F], int]:
        """-> (the rows densified, duplicates summed; -1 or the first malformed position)"""
    @staticmethod
    def dense_forward(x: NDArray[_F], w: NDArray[_F], b: NDArray[_F], act: str,
                      slope: float = 0.01) -> Tuple[NDArray[_F], NDArray[_F]]:
        """-> (z, y)"""
    @staticmethod
    def dense_backward(dy: NDArray[_F], x: NDArray[_F], w: NDArray[_F], z: NDArray[_F],
                       y: NDArray[_F], act: str, slope: float = 0.01, need_dx: bool = True
                       ) -> Tuple[Optional[NDArray[_F]], NDArray[_F], NDArray[_F]]:
        """-> (dx or None, dw, db)"""
    @staticmethod
    def random_bits(seed: int, counter: int, index: int) -> int: ...
    @staticmethod
    def random_uniform(seed: int, counter: int, index: int) -> float: ...
    @staticmethod
    def dropout_forward(x: NDArray[_F], p: float, seed: int, counter: int) -> Tuple[NDArray[_F], NDArray[_F]]:
        """-> (y, mask)"""
    @staticmethod
    def dropout_backward(dy: NDArray[_F], mask: NDArray[_F]) -> NDArray[_F]: ...
    @staticmethod
    def batchnorm_forward_train(x: NDArray[_F], gamma: NDArray[_F], beta: NDArray[_F],
                                running_mean: NDArray[_F], running_var: NDArray[_F],
                                momentum: float = 0.1, eps: float = 1e-05
                                ) -> Tuple[NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F],
                                           NDArray[_F], NDArray[_F]]:
        """-> (y, xhat, mean, invstd, new running_mean, new running_var)"""
    @staticmethod
    def batchnorm_forward_eval(x: NDArray[_F], gamma: NDArray[_F], beta: NDArray[_F],
                               running_mean: NDArray[_F], running_var: NDArray[_F],
                               eps: float = 1e-05) -> NDArray[_F]: ...
    @staticmethod
    def batchnorm_backward(dy: NDArray[_F], xhat: NDArray[_F], gamma: NDArray[_F],
                           invstd: NDArray[_F]) -> Tuple[NDArray[_F], NDArray[_F], NDArray[_F]]:
        """-> (dx, dgamma, dbeta)"""
    @staticmethod
    def sgd_update(params: NDArray[_F], momentum_buffer: NDArray[_F], grads: NDArray[_F], lr: float,
                   momentum: float, dampening: float, nesterov: bool, weight_decay: float,
                   step: int) -> Tuple[NDArray[_F], NDArray[_F]]: ...
    @staticmethod
    def adagrad_update(params: NDArray[_F], state_sum: NDArray[_F], grads: NDArray[_F], lr: float,
                       lr_decay: float, weight_decay: float, eps: float,
                       step: int) -> Tuple[NDArray[_F], NDArray[_F]]: ...
    @staticmethod
    def adadelta_update(params: NDArray[_F], square_avg: NDArray[_F], acc_delta: NDArray[_F],
                        grads: NDArray[_F], lr: float, rho: float, eps: float,
                        weight_decay: float) -> Tuple[NDArray[_F], NDArray[_F], NDArray[_F]]: ...
    @staticmethod
    def rmsprop_update(params: NDArray[_F], square_avg: NDArray[_F], grad_avg: NDArray[_F],
                       momentum_buffer: NDArray[_F], grads: NDArray[_F], lr: float, alpha: float,
                       eps: float, weight_decay: float, momentum: float, centered: bool
                       ) -> Tuple[NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F]]: ...
    @staticmethod
    def adam_update(params: NDArray[_F], exp_avg: NDArray[_F], exp_avg_sq: NDArray[_F],
                    max_exp_avg_sq: NDArray[_F], grads: NDArray[_F], lr: float, beta1: float,
                    beta2: float, eps: float, weight_decay: float, amsgrad: bool,
                    decoupled_weight_decay: bool, step: int, eps_hat: bool = False
                    ) -> Tuple[NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F]]: ...
    @staticmethod
    def gemm(a: NDArray[_F], b: NDArray[_F], transpose_a: bool = False, transpose_b: bool = False,
             c: Optional[NDArray[_F]] = None, accumulate: bool = False) -> NDArray[_F]:
        """op(a) @ op(b), into c (and added to it with accumulate) when given."""
    @staticmethod
    def gemm_bfloat16(a: NDArray[np.float32], b: NDArray[np.float32], transpose_a: bool = False,
                      transpose_b: bool = False, c: Optional[NDArray[np.float32]] = None,
                      accumulate: bool = False) -> NDArray[np.float32]:
        """op(a) @ op(b) with a and b rounded to bfloat16, products summed in float32."""
    @staticmethod
    def pack_bfloat16_b(b: NDArray[np.float32], transpose_b: bool = False) -> _Kernels.PackedBfloat16Matrix:
        """op(b) rounded to bfloat16 and packed once for gemm_bfloat16_packed."""
    @staticmethod
    def gemm_bfloat16_packed(a: NDArray[np.float32], b: _Kernels.PackedBfloat16Matrix,
                             transpose_a: bool = False) -> NDArray[np.float32]:
        """op(a) @ b for a b packed by pack_bfloat16_b: gemm_bfloat16's bits."""
    @staticmethod
    def native_bfloat16() -> bool:
        """Whether gemm_bfloat16 runs VDPBF16PS or AMX (else the emulation)."""
    @staticmethod
    def bfloat16_path() -> str:
        """What gemm_bfloat16 runs for c wider than 16 columns: 'amx_bf16', 'avx512_bf16' or 'emulated'."""
    @staticmethod
    def gemm_kernel_name() -> str:
        """The instruction set in use: 'amx_bf16', 'avx512_bf16', 'avx512', 'avx2' or 'portable'."""
    @staticmethod
    def force_portable_gemm(flag: bool) -> None: ...
    @staticmethod
    def set_isa(isa: str) -> None:
        """Use one instruction set's kernels ('portable', 'avx2', 'avx512', 'avx512_bf16', 'amx_bf16', 'auto')."""
    @staticmethod
    def set_avx512_tile(tile: str) -> None:
        """The AVX-512 float tile: '16x16' (Zen 4), '8x32' (Intel) or 'auto' (by CPU vendor)."""
    @staticmethod
    def avx512_tile() -> str:
        """The float tile the AVX-512 kernels use: '16x16' or '8x32'."""
    @staticmethod
    def set_subnormal_guard(guard: str) -> None:
        """The float32 optimizer loops' subnormal guard: 'on' (Intel), 'off' (elsewhere) or 'auto' (by CPU vendor)."""
    @staticmethod
    def subnormal_guard() -> str:
        """Whether the float32 optimizer loops run behind the subnormal guard: 'on' or 'off'."""
    @staticmethod
    def cpu_supports_isa(isa: str) -> bool: ...
    @staticmethod
    def fma_peak_gflops(seconds: float = 0.2) -> float: ...
    @staticmethod
    def bf16_peak_gflops(seconds: float = 0.2) -> float: ...
    @staticmethod
    def amx_bf16_peak_gflops(seconds: float = 0.2) -> float: ...

kernels: _Kernels
