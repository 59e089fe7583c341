"""Data-parallel training (fit(comm=...)) against one process, on Fashion-MNIST:

    python bench/distributed.py                  # both networks, 3 interleaved rounds (~5 min)
    python bench/distributed.py --quick          # a smoke run at tiny sizes (seconds)

Epochs of 784-256-10 and 784-1024-1024-10 (global batch 128, Adam, float32) run as
1 process x 2 threads, 2 ranks x 1 thread (mpiexec -n 2 python -m mpi4py) and 1 x 1, the
configurations interleaved round by round; each run times one warm-up epoch and then
--epochs epochs, and its median epoch counts. The 2-rank runs also time the step's
communication (the hooks of the sharded step: the sum of the step's figures, the gathering of
the rows of a step by rows, or the reduce-scatter of the gradient of a batch-norm network, the
agreements on finiteness, and the all-gather of the updated parameters or, in shared memory on
one node, the barrier that replaces it; waiting for the other rank included), giving its share
of a step, and time the
fixed-order sum alone against MPI's in-place Allreduce and a shared-memory sum (the candidate
that docs/guide/distributed.md measured and did not keep) at both gradient sizes. Last, the
scaling model: a ring allreduce costs about 2 (P - 1) latency + 2 (P - 1) / P x buffer /
bandwidth per step; against the measured 1 x 1 step time divided over P ranks, it says
where more ranks stop paying at 10, 25 and 100 Gb/s. Results go to bench/results/.
Targets (this 2-core machine): 2 x 1 within 1.15x of 1 x 2 on 784-1024-1024-10 and 1.3x on
784-256-10; the reduction at most 10% of a 784-1024-1024-10 step.
"""
from __future__ import annotations

import argparse
import datetime as _datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

NETWORKS = {"784-256-10": [784, 256, 10], "784-1024-1024-10": [784, 1024, 1024, 10]}
CONFIGURATIONS = [("1x2", 1, 2), ("2x1", 2, 1), ("1x1", 1, 1)]  # (name, processes, threads each)
BATCH_SIZE = 128
LINK_GBITS = (10, 25, 100)
LATENCY_SECONDS = 5e-6  # one message between nodes, order of magnitude (RDMA ~2 us, TCP ~20 us)
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TARGETS = {"784-1024-1024-10": 1.15, "784-256-10": 1.3}


# ---- the worker: one run of one configuration (also under mpiexec) ----------------------------


def worker(args: argparse.Namespace) -> None:
    import fastmlp
    from fastmlp import datasets
    from fastmlp.distributed import FixedOrderSum, Ranks

    comm = None
    reduce_seconds = [0.0]
    if args.mpi:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        hooks = ((Ranks, "sum_figures"), (Ranks, "gather_rows"), (Ranks, "all_finite"),
                 (FixedOrderSum, "reduce_scatter"), (FixedOrderSum, "all_gather"))
        for owner, name in hooks:
            setattr(owner, name, timed(getattr(owner, name), reduce_seconds))
    fastmlp.set_num_threads(args.threads)
    X, y, _, _ = datasets.load_fashion_mnist(args.data)
    X, y = np.ascontiguousarray(X[:args.rows], dtype=np.float32), y[:args.rows]
    model = fastmlp.MLP([int(size) for size in args.network.split("-")], optimizer="adam", seed=0)
    model.fit(X, y, epochs=1, batch_size=BATCH_SIZE, comm=comm)  # warm-up: pages, caches, threads
    reduce_seconds[0] = 0.0
    history = model.fit(X, y, epochs=args.epochs, batch_size=BATCH_SIZE, comm=comm)
    steps = args.epochs * -(-len(X) // BATCH_SIZE)
    result: Dict[str, Any] = {"epoch_seconds": history["seconds"], "steps": steps,
                              "reduce_seconds": reduce_seconds[0], "threads": fastmlp.get_num_threads()}
    if comm is not None:
        result["reduction_alone"] = time_reductions(comm, model.n_parameters)
    if comm is None or comm.Get_rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def timed(function: Callable[..., Any], seconds: List[float]) -> Callable[..., Any]:
    """`function`, adding the seconds each call takes to seconds[0]."""
    def timed_function(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            seconds[0] += time.perf_counter() - started
    return timed_function


def time_reductions(comm: Any, size: int, repetitions: int = 30) -> Dict[str, float]:
    """Median seconds over `size` float32 values, interleaved, of the fixed-order sum (what fit
    uses), MPI's in-place Allreduce and the shared-memory candidate (SharedMemorySum)."""
    from mpi4py import MPI

    from fastmlp.distributed import FixedOrderSum
    buffer = np.ones(size, dtype=np.float32)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    shared = SharedMemorySum(node, size, buffer.dtype) if node.Get_size() == comm.Get_size() else None
    summers = {"fixed_order": FixedOrderSum(comm, size, buffer.dtype),
               "allreduce": lambda values: comm.Allreduce(MPI.IN_PLACE, values)}
    if shared is not None:
        summers["shared_memory"] = shared
    times: Dict[str, List[float]] = {name: [] for name in summers}
    for _ in range(repetitions):
        for name, summer in summers.items():
            comm.Barrier()
            started = time.perf_counter()
            summer(buffer)
            times[name].append(time.perf_counter() - started)
            buffer.fill(1.0)
    if shared is not None:
        shared.window.Free()
    node.Free()
    return {name: statistics.median(values) for name, values in times.items()}


class SharedMemorySum:
    """The candidate measured against the fixed-order exchange (docs/guide/distributed.md):
    ranks on one node sum through an MPI-3 shared window. Rank r copies the chunks the others
    sum into its slot, a barrier, sums chunk r over the ranks in rank order (its own part read
    in place) into the window's result row, a barrier, and copies the other chunks' sums back;
    the window's two halves alternate between calls, so a rank may begin the next call while
    another still reads this one's result. The same bits on every rank."""

    def __init__(self, node: Any, size: int, dtype: np.dtype) -> None:
        from mpi4py import MPI
        self.node, self.rank, self.ranks = node, node.Get_rank(), node.Get_size()
        per_call = (self.ranks + 1) * size
        bytes_ = 2 * per_call * dtype.itemsize if self.rank == 0 else 0
        self.window = MPI.Win.Allocate_shared(bytes_, dtype.itemsize, comm=node)
        memory, _ = self.window.Shared_query(0)
        shared = np.frombuffer(memory, dtype=dtype, count=2 * per_call)
        self.halves = [shared[k * per_call:(k + 1) * per_call].reshape(self.ranks + 1, size) for k in range(2)]
        self.chunks = [slice((c * size) // self.ranks, ((c + 1) * size) // self.ranks) for c in range(self.ranks)]
        self.calls = 0

    def __call__(self, buffer: np.ndarray) -> None:
        slots = self.halves[self.calls % 2]
        self.calls += 1
        mine = self.chunks[self.rank]
        others = [chunk for c, chunk in enumerate(self.chunks) if c != self.rank]
        for chunk in others:
            slots[self.rank, chunk] = buffer[chunk]
        self.node.Barrier()
        parts = [buffer[mine] if r == self.rank else slots[r, mine] for r in range(self.ranks)]
        total = slots[self.ranks, mine]
        np.add(parts[0], parts[1], out=total)
        for part in parts[2:]:
            total += part
        self.node.Barrier()
        buffer[mine] = total
        for chunk in others:
            buffer[chunk] = slots[self.ranks, chunk]


# ---- the driver ----------------------------------------------------------------------------


def run_configuration(network: str, processes: int, threads: int, args: argparse.Namespace) -> Dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--network", network,
               "--threads", str(threads), "--rows", str(args.rows), "--epochs", str(args.epochs)]
    if args.data:
        command += ["--data", args.data]
    if processes > 1:
        command = [args.mpiexec, "-n", str(processes), sys.executable, "-m", "mpi4py", *command[1:], "--mpi"]
    environment = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(lines[-1][len("RESULT "):]))


def load_average() -> float:
    """The one-minute load average (NaN where /proc/loadavg is missing)."""
    try:
        with open("/proc/loadavg") as file:
            return float(file.read().split()[0])
    except OSError:
        return float("nan")


def scaling_model(step_seconds_one_core: float, parameters: int) -> List[Dict[str, Any]]:
    """Per link speed: the ring allreduce's time per step, and the step time and speed-up at
    P ranks of one core each (compute divided by P, communication added, not overlapped)."""
    buffer_bytes = 4 * parameters
    rows = []
    for gbits in LINK_GBITS:
        bandwidth = gbits * 1e9 / 8
        row: Dict[str, Any] = {"gbits": gbits, "ranks": {}}
        for ranks in (2, 4, 8, 16, 32, 64):
            communication = 2 * (ranks - 1) * LATENCY_SECONDS + 2 * (ranks - 1) / ranks * buffer_bytes / bandwidth
            step = step_seconds_one_core / ranks + communication
            row["ranks"][ranks] = {"allreduce_ms": 1e3 * communication,
                                   "speedup": step_seconds_one_core / step}
        # where communication equals the compute left per rank: more ranks than this barely pay
        limit = 2 * buffer_bytes / bandwidth
        row["break_even_ranks"] = step_seconds_one_core / limit
        rows.append(row)
    return rows


def report(results: Dict[str, Any]) -> str:
    loads = [run["load"] for runs in results["networks"].values() for name in runs for run in runs[name]]
    lines = [f"# Data-parallel training: {results['date']}, {results['rounds']} interleaved rounds, "
             f"{results['rows']} rows, global batch {BATCH_SIZE}; load average after the runs "
             f"{min(loads):.2f}-{max(loads):.2f} (the benchmark alone keeps it near 2: more is other jobs)", ""]
    lines.append("| network | 1 x 2 epoch | 2 x 1 epoch | 1 x 1 epoch | 2x1 / 1x2 (target) | reduction share of a 2x1 step |")
    lines.append("|---|---|---|---|---|---|")
    for network, runs in results["networks"].items():
        medians = {name: statistics.median(run["epoch"] for run in runs[name]) for name in runs}
        share = statistics.median(run["reduce_share"] for run in runs["2x1"])
        ratio = medians["2x1"] / medians["1x2"]
        lines.append(f"| {network} | {medians['1x2']:.3f} s | {medians['2x1']:.3f} s | {medians['1x1']:.3f} s | "
                     f"{ratio:.2f} (<= {TARGETS[network]}) | {100 * share:.1f}% |")
    lines += ["", "The reduction alone, two ranks on this machine (median of 30, float32):", "",
              "| network | gradient | fixed-order sum (fit's) | MPI Allreduce (in place) | shared memory (candidate) |",
              "|---|---|---|---|---|"]
    for network, alone in results["reduction_alone"].items():
        shared = f"{1e6 * alone['shared_memory']:.0f} us" if "shared_memory" in alone else "-"
        lines.append(f"| {network} | {alone['megabytes']:.2f} MB | {1e6 * alone['fixed_order']:.0f} us | "
                     f"{1e6 * alone['allreduce']:.0f} us | {shared} |")
    lines += ["", f"Scaling model (ring allreduce, {LATENCY_SECONDS * 1e6:.0f} us latency; step = 1x1 step / P "
              "+ allreduce, no overlap):", ""]
    for network, model in results["scaling"].items():
        lines.append(f"{network}: one-core step {1e3 * results['step_one_core'][network]:.1f} ms")
        lines.append("")
        lines.append("| link | allreduce at P=8 | speed-up P=2 | P=8 | P=32 | communication = compute at P ~ |")
        lines.append("|---|---|---|---|---|---|")
        for row in model:
            ranks = row["ranks"]
            lines.append(f"| {row['gbits']} Gb/s | {ranks[8]['allreduce_ms']:.2f} ms | {ranks[2]['speedup']:.2f} | "
                         f"{ranks[8]['speedup']:.2f} | {ranks[32]['speedup']:.2f} | {row['break_even_ranks']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2000 rows, 1 round, 1 epoch (smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per run (after a warm-up)")
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--only", choices=sorted(NETWORKS), default=None)
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--network", default="784-256-10", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.quick:
        args.rounds, args.epochs, args.rows = 1, 1, 2000
    args.mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if args.mpiexec is None:
        raise SystemExit("needs mpiexec and mpi4py: pip install 'fastmlp[mpi]'")
    networks = [args.only] if args.only else list(NETWORKS)
    results: Dict[str, Any] = {"date": _datetime.datetime.now().isoformat(timespec="seconds"),
                               "rounds": args.rounds, "rows": args.rows, "networks": {},
                               "reduction_alone": {}, "scaling": {}, "step_one_core": {}}
    for network in networks:
        runs: Dict[str, List[Dict[str, float]]] = {name: [] for name, _, _ in CONFIGURATIONS}
        for round_ in range(args.rounds):
            for name, processes, threads in CONFIGURATIONS:
                run = run_configuration(network, processes, threads, args)
                epoch = statistics.median(run["epoch_seconds"])
                entry = {"epoch": epoch, "threads": run["threads"], "load": load_average(),
                         "reduce_share": run["reduce_seconds"] / sum(run["epoch_seconds"])}
                runs[name].append(entry)
                if "reduction_alone" in run:
                    parameters = sum(a * b + b for a, b in zip(NETWORKS[network], NETWORKS[network][1:]))
                    results["reduction_alone"][network] = {**run["reduction_alone"],
                                                           "megabytes": 4 * parameters / 1e6}
                print(f"{network} round {round_ + 1} {name}: epoch {epoch:.3f} s"
                      + (f", reduction {100 * entry['reduce_share']:.1f}% of it" if processes > 1 else "")
                      + f" (load average {entry['load']:.2f})", flush=True)
        results["networks"][network] = runs
        sizes = NETWORKS[network]
        parameters = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        steps = -(-args.rows // BATCH_SIZE)
        step_one_core = statistics.median(run["epoch"] for run in runs["1x1"]) / steps
        results["step_one_core"][network] = step_one_core
        results["scaling"][network] = scaling_model(step_one_core, parameters)
    text = report(results)
    print("\n" + text)
    os.makedirs(args.out, exist_ok=True)
    stamp = results["date"].replace(":", "")
    with open(os.path.join(args.out, f"distributed-{stamp}.json"), "w") as file:
        json.dump(results, file, indent=1)
    with open(os.path.join(args.out, f"distributed-{stamp}.md"), "w") as file:
        file.write(text + "\n")
    return results


if __name__ == "__main__":
    main()
