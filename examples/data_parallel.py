"""Data-parallel training over MPI
================================

The 784-256-10 MLP on Fashion-MNIST trained by several processes: every rank opens the same
memmap of the training images (on a shared disk on a cluster), fit(comm=...) shares every
global batch of 128 out over the ranks and sums their gradients, and rank 0 prints the
per-epoch table once. Every rank ends with the same model, bit for bit::

    mpiexec -n 2 python -m mpi4py examples/data_parallel.py [--quick]

(``python -m mpi4py`` makes an uncaught exception on one rank end every rank.) Run as a plain
``python examples/data_parallel.py`` it is one process (without mpi4py too). Needs the IDX
files (Debian: apt-get install dataset-fashion-mnist, or --data) and, for several processes,
mpi4py (pip install "fastmlp[mpi]")."""
import argparse
import os
import tempfile

import numpy as np

import fastmlp
from fastmlp.datasets import load_fashion_mnist


class OneProcess:
    """What the example uses of a communicator, for a run without mpi4py."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Barrier(self):
        pass

    def allgather(self, value):
        return [value]


def world():
    """MPI.COMM_WORLD, or one process when mpi4py is not installed."""
    try:
        from mpi4py import MPI
    except ImportError:
        return OneProcess()
    return MPI.COMM_WORLD


def shared_memmap(comm, directory, data_dir, rows):
    """The training images as a float32 memmap every rank opens (rank 0 writes it once), the
    labels, and the test set."""
    path = os.path.join(directory, f"fashion-mnist-train-{rows or 'all'}.f32.npy")
    if comm.Get_rank() == 0 and not os.path.exists(path):
        X, _, _, _ = load_fashion_mnist(data_dir)
        X = X[:rows] if rows else X
        partial = f"{path}.{os.getpid()}.part"
        with open(partial, "wb") as file:
            np.save(file, np.ascontiguousarray(X, dtype=np.float32))
        os.replace(partial, path)
    comm.Barrier()  # the file is complete before anyone opens it
    _, y, X_test, y_test = load_fashion_mnist(data_dir)
    X = np.load(path, mmap_mode="r")
    return X, y[:X.shape[0]], X_test, y_test


def main(argv=None):
    """Train on every rank; return rank 0's history and test accuracy (None elsewhere)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4000 training images, 2 epochs (smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (2 with --quick)")
    parser.add_argument("--data", default=None, help="directory of the IDX files")
    parser.add_argument("--cache", default=tempfile.gettempdir(),
                        help="a directory every rank sees (the memmap goes there)")
    args = parser.parse_args(argv)
    comm = world()
    rank, ranks = comm.Get_rank(), comm.Get_size()
    epochs = args.epochs or (2 if args.quick else 10)
    X, y, X_test, y_test = shared_memmap(comm, args.cache, args.data, 4000 if args.quick else None)

    model = fastmlp.MLP([784, 256, 10], optimizer=fastmlp.optim.Adam(lr=1e-3), seed=0)
    history = model.fit(X, y, epochs=epochs, batch_size=128, comm=comm if ranks > 1 else None,
                        validation_data=(X_test, y_test))
    every_rank = comm.allgather(model.flat_parameters.tobytes())
    same = all(copy == every_rank[0] for copy in every_rank)
    if rank != 0:
        return None
    accuracy = model.score(X_test, y_test)
    print(f"{ranks} rank(s) x {fastmlp.get_num_threads()} thread(s); {X.shape[0]} training images "
          f"read from {X.filename}")
    print(f"\n{'epoch':>5} {'loss':>8} {'accuracy':>9} {'val_loss':>9} {'val_acc':>8} {'seconds':>8}")
    for epoch, loss, train_accuracy, val_loss, val_accuracy, seconds in zip(
            history.epoch, history["loss"], history["accuracy"], history["val_loss"],
            history["val_accuracy"], history["seconds"]):
        print(f"{epoch:5d} {loss:8.4f} {train_accuracy:9.4f} {val_loss:9.4f} {val_accuracy:8.4f} {seconds:8.2f}")
    print(f"test accuracy {accuracy:.4f}; every rank holds the same parameters: {same}")
    return {"history": history, "test_accuracy": accuracy, "same_on_every_rank": same, "ranks": ranks}


if __name__ == "__main__":
    main()
