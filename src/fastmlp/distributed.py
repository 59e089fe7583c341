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
    """network's steps its own again: no sum over ranks, a single process's dropout masks, its
    parameters in its own memory (copied out of a node's shared window)."""
    _CONNECTED.discard(network)
    network.set_gradient_reduction(None)
    network.share_params(None)
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

    def __init__(self, comm: Any, size: int, dtype: np.dtype, edges: Optional[List[int]] = None) -> None:
        """`edges`: where the ranks' chunks begin (P + 1 offsets from 0 to size); by default
        as even as the elements allow."""
        self.comm, self.rank, self.ranks = comm, comm.Get_rank(), comm.Get_size()
        self.edges = (list(edges) if edges is not None
                      else [(chunk * size) // self.ranks for chunk in range(self.ranks + 1)])
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


class SharedWindow:
    """`count` elements of `dtype` that every rank of a node reads and writes in place: an MPI-3
    shared-memory window (MPI.Win.Allocate_shared), in one passive-target epoch for its whole
    life. After synchronise() every rank sees what every rank wrote before it."""

    def __init__(self, comm: Any, count: int, dtype: np.dtype) -> None:
        MPI = _mpi()
        dtype = np.dtype(dtype)
        self.comm = comm
        size = count * dtype.itemsize if comm.Get_rank() == 0 else 0  # one block, rank 0's
        self.window = MPI.Win.Allocate_shared(size, dtype.itemsize, comm=comm)
        memory, _ = self.window.Shared_query(0)
        self.array = np.frombuffer(memory, dtype=dtype, count=count)
        self.window.Lock_all(MPI.MODE_NOCHECK)

    def synchronise(self) -> None:
        self.window.Sync()
        self.comm.Barrier()
        self.window.Sync()

    def free(self) -> None:
        """Collective: every rank at once."""
        self.window.Unlock_all()
        self.window.Free()


class Ranks:
    """The ranks of one data-parallel fit: who this process is, how the ranks agree on errors
    and figures, and the step's reduction (Network.set_gradient_reduction's hooks)."""

    # When every rank runs on one node, the ranks step in one copy of the parameters in shared
    # memory, and share the rows of a step by rows through it, instead of exchanging copies
    # through MPI (False: always through MPI, as ranks on several nodes do).
    node_shared_memory = True

    def __init__(self, comm: Any, sharded: bool) -> None:
        self.comm, self.sharded = comm, sharded
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._gradient_sum: Optional[FixedOrderSum] = None
        self._rows_per_rank = np.zeros(self.size, dtype=np.int64)  # of the step in progress
        self._shared_params: Optional[SharedWindow] = None
        self._shared_rows: Optional[SharedWindow] = None
        self._rows_through_mpi = False  # (no room for them in shared memory)
        self._row_views: Optional[Tuple[Any, np.ndarray, List[np.ndarray]]] = None  # of _shared_rows

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
        # Chunks on rows of the weights, so that a network without batch norm steps by rows
        # (the ranks share each layer's input and delta rows, and each makes the gradient of
        # its chunk from all of them); with batch norm the ranks sum their gradients.
        self._gradient_sum = FixedOrderSum(self.comm, network.params.size, network.params.dtype,
                                           network.parameter_chunks(self.size))
        if self.node_shared_memory and self._on_one_node() and self._shared_memory_has_room(network.params.nbytes):
            self._shared_params = self._share_parameters(network)
        exchange: Dict[str, Any] = ({"gather_params": self._gradient_sum.all_gather} if self._shared_params is None
                                    else {"params_written": self._parameters_written})
        network.set_gradient_reduction(self.reduce_step, updates=self._gradient_sum.owned,
                                       all_ranks_finite=self.all_finite, sum_figures=self.sum_figures,
                                       gather_rows=self.gather_rows, **exchange)
        network.dropout_stream = self.rank  # masks of its own on each rank
        _CONNECTED.add(network)

    def disconnect(self, network: Any, cleanly: bool = True) -> None:
        """Undo connect(). `cleanly`: every rank disconnects at this point (the fit ended on all
        of them); else (an exception) no collective is called, and the shared windows are left
        to the end of the process rather than wait for ranks that may not come."""
        _make_local(network)  # the parameters copied out of the shared window, if any
        self._gradient_sum = None
        windows = [window for window in (self._shared_params, self._shared_rows) if window is not None]
        self._shared_params = self._shared_rows = self._row_views = None
        self._rows_through_mpi = False
        if cleanly and windows:
            self.comm.Barrier()  # every rank has copied the parameters out
            for window in windows:
                window.free()

    def _on_one_node(self) -> bool:
        node = self.comm.Split_type(_mpi().COMM_TYPE_SHARED)
        try:
            return bool(node.Get_size() == self.size)
        finally:
            node.Free()

    def _shared_memory_has_room(self, nbytes: int) -> bool:
        """Whether every rank sees room for twice `nbytes` more in /dev/shm, where MPICH and Open
        MPI place shared windows (a container's is often 64 MB): a window larger than the room
        left would be allocated, then kill the process with SIGBUS when first written. Unknown
        (no /dev/shm): yes."""
        try:
            stats = os.statvfs("/dev/shm")
            room = stats.f_bavail * stats.f_frsize
        except OSError:
            room = None
        return not self.any(room is not None and room < 2 * nbytes)

    def _share_parameters(self, network: Any) -> SharedWindow:
        """One copy of the parameters (rank 0's: every rank's, after broadcast_state) in a window
        that network steps in from now on: each rank updates its chunk in place, and a barrier
        replaces the all-gather."""
        window = SharedWindow(self.comm, network.params.size, network.params.dtype)
        if self.rank == 0:
            window.array[:] = network.params
        window.synchronise()
        network.share_params(window.array)
        return window

    def _parameters_written(self, seen_finite: bool) -> bool:
        """With shared parameters, after this rank's update of its chunk: returns once every
        rank's is done (and seen by this rank), whether every rank saw its chunk finite."""
        assert self._shared_params is not None
        window = self._shared_params.window
        window.Sync()
        every_rank = self.all_finite(seen_finite)  # (a collective: the barrier)
        window.Sync()
        return every_rank

    def reduce_step(self, gradient: np.ndarray, figures: np.ndarray, partial: np.ndarray) -> None:
        """Network.set_gradient_reduction's hook: the other ranks' sum of this rank's chunk of
        gradient into partial (the step adds this rank's part as it scales and checks them in
        one pass), and the figures summed over the ranks (the running statistics rank 0's);
        the same bits on every rank."""
        assert self._gradient_sum is not None
        self._gradient_sum.reduce_scatter(gradient, partial)
        self.sum_figures(figures)

    def sum_figures(self, figures: np.ndarray) -> None:
        """The step's figures (Network.set_gradient_reduction's) replaced by their sums over
        the ranks in rank order, the running statistics by rank 0's; each rank's row count kept
        for gather_rows."""
        gathered = np.empty((self.size, figures.size), dtype=np.float64)
        self.comm.Allgather(figures, gathered)
        self._rows_per_rank = gathered[:, 2].astype(np.int64)
        figures[:_STEP_SCALARS] = _sum_rows_in_order(gathered[:, :_STEP_SCALARS])
        figures[_STEP_SCALARS:] = gathered[0, _STEP_SCALARS:]

    def gather_rows(self, pairs: List[Tuple[np.ndarray, np.ndarray]],
                    magnitudes: np.ndarray) -> Optional[List[np.ndarray]]:
        """A step by rows' hook: every rank's rows of each `local` array, in rank order (copies:
        the same bits on every rank), and `magnitudes` replaced by their largest over the ranks.
        Through MPI the rows go into each `gathered`; on one node into a shared window, whose
        views are returned for the step to read in place."""
        if self._shared_params is None or self._rows_through_mpi:
            for local, gathered in pairs:
                self.comm.Allgatherv(local, [gathered, self._rows_per_rank * gathered.shape[1]])
            every = np.empty((self.size, magnitudes.size), dtype=np.float64)
            self.comm.Allgather(magnitudes, every)
            magnitudes[:] = every.max(axis=0)
            return None
        shared = self._shared_row_regions(pairs, magnitudes.size)
        if shared is None:  # no room in shared memory: through MPI from now on
            return self.gather_rows(pairs, magnitudes)
        every, regions = shared
        every[self.rank] = magnitudes
        first = int(self._rows_per_rank[:self.rank].sum())
        for (local, _), region in zip(pairs, regions):
            region[first:first + local.shape[0]] = local
        assert self._shared_rows is not None
        self._shared_rows.synchronise()
        magnitudes[:] = every.max(axis=0)
        # No rank writes the window again before every rank has read it: the next step's
        # sum_figures waits for all of them.
        return regions

    def _shared_row_regions(self, pairs: List[Tuple[np.ndarray, np.ndarray]],
                            count: int) -> Optional[Tuple[np.ndarray, List[np.ndarray]]]:
        """Views of the shared window for rows (made larger when this step needs it: every rank
        at once, as every rank needs the same): (ranks, count) float64 magnitudes, then one
        region shaped like each pair's `gathered`, each at a 64-byte boundary. None, and the
        rows through MPI from now on, when /dev/shm has no room for them."""
        def aligned(size: int) -> int:
            return -(-size // 64) * 64
        sizes = [aligned(self.size * count * 8)] + [aligned(gathered.nbytes) for _, gathered in pairs]
        if self._shared_rows is None or self._shared_rows.array.size < sum(sizes):
            if self._shared_rows is not None:
                self._shared_rows.free()
                self._shared_rows = self._row_views = None
            if not self._shared_memory_has_room(sum(sizes)):
                self._rows_through_mpi = True
                return None
            self._shared_rows = SharedWindow(self.comm, sum(sizes), np.dtype(np.uint8))
        # The views, made once per window and batch shape (the last batch of an epoch differs).
        key = (id(self._shared_rows), count, tuple((gathered.shape, gathered.dtype.str) for _, gathered in pairs))
        if self._row_views is None or self._row_views[0] != key:
            memory = self._shared_rows.array
            every = memory[:self.size * count * 8].view(np.float64).reshape(self.size, count)
            regions, offset = [], sizes[0]
            for (_, gathered), size in zip(pairs, sizes[1:]):
                regions.append(memory[offset:offset + gathered.nbytes].view(gathered.dtype).reshape(gathered.shape))
                offset += size
            self._row_views = (key, every, regions)
        return self._row_views[1], self._row_views[2]

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
