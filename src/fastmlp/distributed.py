"""Data-parallel training over MPI for ``MLP.fit(..., comm=...)``: the sum of the ranks'
gradients in a fixed order (the same bits on every rank, whatever MPI's own algorithms do), the
ranks' agreement on errors and figures, and each rank's share of its node's cores. mpi4py is
imported only here, and only when a communicator is handed to fit."""
from __future__ import annotations

import builtins
import importlib
import os
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import numpy as np

from . import _core

__all__ = ["Ranks", "FixedOrderSum", "ranks_of"]

_T = TypeVar("_T")

# Scalars each step reduces beside the gradient (Network::reduce_across_ranks): mean loss
# times normaliser, weight_sum, rows, correct, weighted_correct, ranks whose logits were not
# finite, the loss's normaliser; batch norm's running statistics follow them.
_STEP_SCALARS = 7

# Exception types a rank's failure is raised as on every rank (anything else: RuntimeError).
_AGREED_ERRORS = (ValueError, TypeError, FloatingPointError, MemoryError, FileNotFoundError, OSError)


# The networks a data-parallel fit of this process has connected (Ranks.connect), until it
# disconnects them. A child forked meanwhile (another thread of the rank forked: a process
# pool, a subprocess) holds copies whose steps would wait in a sum over the parent's
# communicator, which the child cannot use and no other rank would join: there the copies
# become plain local models, as their locks are made anew (fastmlp.mlp).
_CONNECTED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _make_local(network: Any) -> None:
    """network's steps its own again: no sum over ranks, a single process's dropout masks."""
    _CONNECTED.discard(network)
    network.set_gradient_reduction(None)
    network.dropout_stream = 0


def _disconnect_in_child() -> None:
    for network in list(_CONNECTED):
        _make_local(network)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disconnect_in_child)


def _mpi() -> Any:
    # The caller already uses mpi4py: it handed us a communicator. Imported by name so that
    # mypy checks this module the same with the `mpi` extra installed or not.
    return importlib.import_module("mpi4py.MPI")


def check_comm(comm: Any) -> Any:
    """`comm` when it is an mpi4py communicator (intracommunicator), else TypeError."""
    if comm is None:
        return None
    required = ("Get_rank", "Get_size", "Sendrecv", "Allgather", "Bcast", "allgather")
    if not all(hasattr(comm, name) for name in required):
        raise TypeError(f"comm must be an mpi4py communicator such as MPI.COMM_WORLD, got {comm!r}")
    return comm


def ranks_of(comm: Any, sharded: bool = False) -> Optional["Ranks"]:
    """The ranks of a data-parallel fit over `comm` (checked), or None for no communicator or
    one of a single process (an ordinary fit)."""
    comm = check_comm(comm)
    return Ranks(comm, sharded) if comm is not None and comm.Get_size() > 1 else None


class FixedOrderSum:
    """Sums a flat buffer over the ranks, in place, with one association fixed by the number of
    ranks: every rank ends with the same bits, and a run repeats them.

    MPI's own Allreduce picks an algorithm by message size and library version, and has given
    ranks different bits; here the ranks run a ring: a reduce-scatter in which chunk c's partial
    sum travels c+1, c+2, ..., c (one fixed order per chunk; with two ranks, each sends the
    other its half and adds, a + b == b + a exactly), then an all-gather that copies the sums.
    Each rank sends and receives 2 (P - 1) / P of the buffer, as a ring Allreduce does. The
    halves also serve apart: after reduce_scatter, rank r holds the sum of chunk `owned`
    only, which is all a sharded optimizer step needs, and all_gather then shares any
    buffer's chunks (the updated parameters).
    """

    def __init__(self, comm: Any, size: int, dtype: np.dtype) -> None:
        self.comm, self.rank, self.ranks = comm, comm.Get_rank(), comm.Get_size()
        self.edges = [(chunk * size) // self.ranks for chunk in range(self.ranks + 1)]
        self.owned = (self.edges[self.rank], self.edges[self.rank + 1])
        self.received = np.empty(max(b - a for a, b in zip(self.edges, self.edges[1:])), dtype=dtype)

    def __call__(self, buffer: np.ndarray) -> None:
        self.reduce_scatter(buffer)
        self.all_gather(buffer)

    def _chunk(self, buffer: np.ndarray, chunk: int) -> np.ndarray:
        chunk %= self.ranks
        return buffer[self.edges[chunk]:self.edges[chunk + 1]]

    def reduce_scatter(self, buffer: np.ndarray, partial: Optional[np.ndarray] = None) -> None:
        """buffer[owned] becomes its sum over the ranks (the rest of buffer is scratch). After
        step s, this rank holds chunk (rank - s - 2) summed over ranks rank - s - 1 ... rank;
        after P - 1 steps, its own chunk `rank` summed over every rank, starting from rank + 1.
        With `partial` (the size of the owned chunk) the last addition is the caller's: partial
        receives the other ranks' sum, to which buffer[owned] is to be added (partial first)."""
        right, left = (self.rank + 1) % self.ranks, (self.rank - 1) % self.ranks
        for step in range(self.ranks - 1):
            outgoing = self._chunk(buffer, self.rank - step - 1)
            incoming = self._chunk(buffer, self.rank - step - 2)
            if partial is not None and step == self.ranks - 2:
                self.comm.Sendrecv(outgoing, dest=right, recvbuf=partial, source=left)
                return
            received = self.received[:incoming.size]
            self.comm.Sendrecv(outgoing, dest=right, recvbuf=received, source=left)
            np.add(received, incoming, out=incoming)  # the earlier ranks' sum, then this rank's

    def all_gather(self, buffer: np.ndarray) -> None:
        """Every rank's chunk `owned` of buffer copied to every rank. The ring again, copying:
        at step s this rank passes on chunk (rank - s), which it owns or received, and receives
        chunk (rank - s - 1) in place. (MPICH's in-place Allgatherv of the same chunks took 50
        times as long here.)"""
        right, left = (self.rank + 1) % self.ranks, (self.rank - 1) % self.ranks
        for step in range(self.ranks - 1):
            self.comm.Sendrecv(self._chunk(buffer, self.rank - step), dest=right,
                               recvbuf=self._chunk(buffer, self.rank - step - 1), source=left)


class Ranks:
    """The ranks of one data-parallel fit: who this process is, how the ranks agree on errors
    and figures, and the step's reduction (Network.set_gradient_reduction's hook)."""

    def __init__(self, comm: Any, sharded: bool) -> None:
        self.comm, self.sharded = comm, sharded
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._gradient_sum: Optional[FixedOrderSum] = None

    # ---- agreement ----

    def agree(self, action: Callable[[], _T]) -> _T:
        """action()'s result on every rank, or, when it raised on any rank, the first failing
        rank's exception (type and message) raised on every rank: no rank goes on to wait in
        a collective for one that stopped."""
        try:
            result, failure = action(), None
        except Exception as error:  # re-raised below, on every rank
            result, failure = None, (type(error).__name__, str(error))
        failures = self.comm.allgather(failure)
        for rank, failed in enumerate(failures):
            if failed is not None:
                name, message = failed
                error_type = getattr(builtins, name, None)
                if not (isinstance(error_type, type) and issubclass(error_type, _AGREED_ERRORS)):
                    error_type = RuntimeError
                where = "" if self.size == 1 else f" (on rank {rank} of {self.size})"
                raise error_type(f"{message}{where}")
        return result  # type: ignore[return-value]

    def all_same(self, value: Any) -> bool:
        """Whether every rank has the same `value` (a small picklable)."""
        values = self.comm.allgather(value)
        return all(other == values[0] for other in values)

    def require_same(self, what: str, value: Any) -> None:
        """ValueError on every rank unless every rank has the same `value` (a small picklable)."""
        values = self.comm.allgather(value)
        for rank, other in enumerate(values):
            if other != values[0]:
                raise ValueError(f"the ranks disagree on {what}: rank 0 has {values[0]!r}, "
                                 f"rank {rank} has {other!r}")

    def sum(self, values: List[float]) -> np.ndarray:
        """The values summed over the ranks in rank order (the same bits on every rank)."""
        local = np.asarray(values, dtype=np.float64)
        gathered = np.empty((self.size, local.size), dtype=np.float64)
        self.comm.Allgather(local, gathered)
        return _sum_rows_in_order(gathered)

    def any(self, flag: bool) -> bool:
        """Whether `flag` is True on any rank."""
        return bool(self.sum([1.0 if flag else 0.0])[0] > 0)

    def first_ranks(self, value: float) -> float:
        """Rank 0's `value`, on every rank."""
        return float(self.comm.bcast(value, root=0))

    def weighted_mean(self, mean: float, gradient: np.ndarray, weight: float) -> Tuple[float, np.ndarray]:
        """The mean and its gradient over the ranks' rows together, from each rank's over its
        own rows of total weight `weight`: the weighted sums added in a fixed order (float64),
        then divided by the ranks' total weight."""
        summed = gradient.astype(np.float64) * weight
        FixedOrderSum(self.comm, summed.size, summed.dtype)(summed)
        loss_sum, total = self.sum([mean * weight, weight])
        return float(loss_sum / total), summed / total

    # ---- the model ----

    def broadcast_state(self, network: Any, state: Dict[str, Any]) -> Dict[str, Any]:
        """Rank 0's parameters, optimizer state and running statistics copied into `network` on
        every rank, and rank 0's `state` (counters, random generators' states) returned."""
        buffers = [network.params, network.running_mean, network.running_var,
                   *(network.optimizer_state[name] for name in sorted(network.optimizer_state))]
        for buffer in buffers:
            if buffer.size:
                self.comm.Bcast(buffer, root=0)
        return dict(self.comm.bcast(state, root=0))

    def connect(self, network: Any) -> None:
        """Make every training step of `network` a data-parallel one: its gradient summed over
        the ranks, and its optimizer sharded (each rank updates its chunk of the parameters,
        then the ranks exchange the chunks). Until disconnect(), the optimizer state is whole
        only after gather_optimizer_state(). A child forked before disconnect() gets the
        network disconnected (_disconnect_in_child)."""
        self._gradient_sum = FixedOrderSum(self.comm, network.params.size, network.params.dtype)
        network.set_gradient_reduction(self.reduce_step, updates=self._gradient_sum.owned,
                                       all_ranks_finite=self.all_finite,
                                       gather_params=self._gradient_sum.all_gather)
        network.dropout_stream = self.rank  # masks of its own on each rank
        _CONNECTED.add(network)

    def disconnect(self, network: Any) -> None:
        """Undo connect()."""
        _make_local(network)
        self._gradient_sum = None

    def reduce_step(self, gradient: np.ndarray, figures: np.ndarray, partial: np.ndarray) -> None:
        """Network.set_gradient_reduction's hook: the other ranks' sum of this rank's chunk of
        gradient into partial (the step adds this rank's part as it scales and checks them in
        one pass), and the figures summed over the ranks (the running statistics rank 0's);
        the same bits on every rank."""
        assert self._gradient_sum is not None
        self._gradient_sum.reduce_scatter(gradient, partial)
        gathered = np.empty((self.size, figures.size), dtype=np.float64)
        self.comm.Allgather(figures, gathered)
        figures[:_STEP_SCALARS] = _sum_rows_in_order(gathered[:, :_STEP_SCALARS])
        figures[_STEP_SCALARS:] = gathered[0, _STEP_SCALARS:]

    def all_finite(self, finite: bool) -> bool:
        """Whether `finite` is True on every rank."""
        return not self.any(not finite)

    def gather_optimizer_state(self, network: Any) -> None:
        """The optimizer state made whole again on every rank: each rank's chunk, which only
        it updated, copied to the others (the same bits everywhere after)."""
        if self._gradient_sum is None:
            return
        for name in sorted(network.optimizer_state):
            buffer = network.optimizer_state[name]
            if buffer.size == network.params.size:  # (amsgrad's maximum is empty without it)
                self._gradient_sum.all_gather(buffer)

    # ---- threads ----

    def take_core_share(self) -> Optional[int]:
        """Unless a thread count was chosen (fastmlp.set_num_threads, OMP_NUM_THREADS), set
        fastmlp's process-wide count to this rank's share of its node's cores (the ranks on one
        node found with COMM_TYPE_SHARED) and return it; None when a count was chosen."""
        if _core.num_threads_is_set() or os.environ.get("OMP_NUM_THREADS"):
            return None
        node = self.comm.Split_type(_mpi().COMM_TYPE_SHARED)
        try:
            ranks_on_node = node.Get_size()
        finally:
            node.Free()
        share = node_thread_share(ranks_on_node)
        _core.set_num_threads(share)
        return share


def node_thread_share(ranks_on_node: int) -> int:
    """Threads for one of `ranks_on_node` ranks: its cores (those it may run on, when MPI
    binds it) or an equal share of the node's, at least 1."""
    cores = os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return max(1, min(allowed, cores // max(1, ranks_on_node)))


def _sum_rows_in_order(rows: np.ndarray) -> np.ndarray:
    """rows[0] + rows[1] + ... in that order."""
    total: np.ndarray = rows[0].copy()
    for row in rows[1:]:
        total += row
    return total


def shares_of_batches(n: int, batch_size: int, rank: int, ranks: int) -> Tuple[np.ndarray, np.ndarray]:
    """This rank's part of every global batch of an epoch of n rows (way (a): every rank has
    all rows): (positions in the epoch's order, bounds of its batches in them). Rank r takes
    rows [r B / P, (r + 1) B / P) of each batch of B rows (rounded down), so the shares differ
    by at most one row and together are the batch."""
    starts = np.arange(0, n, batch_size, dtype=np.int64)
    sizes = np.minimum(batch_size, n - starts)
    first = starts + (rank * sizes) // ranks
    counts = starts + ((rank + 1) * sizes) // ranks - first
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    positions = np.repeat(first - bounds[:-1], counts) + np.arange(bounds[-1], dtype=np.int64)
    return positions, bounds


def shard_bounds(n_local: int, n_batches: int) -> np.ndarray:
    """Way (b): this rank's n_local rows cut into n_batches consecutive runs of near-equal size
    (the global batch k is the ranks' k-th runs together)."""
    return (np.arange(n_batches + 1, dtype=np.int64) * n_local) // n_batches
