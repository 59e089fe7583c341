"""Data-parallel steps by rows (csrc/network.cpp: train_step_by_rows), in one process. A rank
shares the rows its weight gradients are made from and makes the gradient of its own range of
the parameters from every rank's rows. Played by a single "rank" whose hooks copy, the step must
give exactly the bits of an ordinary step -- forward, loss, deltas, the bounds that let the
update run inside the weight-gradient GEMMs, the update itself -- for every optimizer and
precision, fused or not. The hooks' contract is checked here too: what they may return, what the
step refuses, and parameters lent from outside (share_params). The same steps across real ranks
are tests/test_distributed.py's."""
import numpy as np
import pytest

import fastmlp
from test_update_in_weight_gradients import OPTIMIZERS as EVERY_OPTIMIZER
from test_update_in_weight_gradients import PRECISIONS, assert_same_bits, blobs, model_state

OPTIMIZERS = {name: EVERY_OPTIMIZER[name]
              for name in ("sgd-nesterov-decay", "rmsprop-centered", "adam", "adamw-amsgrad")}


class OneRank:
    """The hooks of a data-parallel fit whose only rank is this process: the sums over the
    ranks are the rank's own figures, the gathered rows its own rows (copied into the step's
    buffers, or kept in arrays of the hooks' own when `own_arrays`)."""

    def __init__(self, own_arrays=False):
        self.own_arrays = own_arrays
        self.calls = {"sum_figures": 0, "gather_rows": 0, "all_ranks_finite": 0, "params_written": 0}
        self.kept = []

    def reduce(self, gradient, figures, partial):
        raise AssertionError("a step by rows does not sum gradients")

    def sum_figures(self, figures):
        self.calls["sum_figures"] += 1

    def gather_rows(self, pairs, magnitudes):
        self.calls["gather_rows"] += 1
        assert magnitudes.shape == (len(pairs),)  # per layer: its input's, its delta's
        if not self.own_arrays:
            for local, gathered in pairs:
                assert not local.flags.writeable  # the step's rows, maybe the caller's X
                gathered[...] = local
            return None
        self.kept = [local.copy() for local, _ in pairs]
        return self.kept

    def all_ranks_finite(self, finite):
        self.calls["all_ranks_finite"] += 1
        return finite

    def params_written(self, seen_finite):
        self.calls["params_written"] += 1
        return seen_finite

    def connect(self, network, shared_params=False):
        chunks = network.parameter_chunks(1)
        exchange = {"params_written": self.params_written} if shared_params else {"gather_params": lambda params: None}
        network.set_gradient_reduction(self.reduce, updates=(chunks[0], chunks[1]),
                                       all_ranks_finite=self.all_ranks_finite, sum_figures=self.sum_figures,
                                       gather_rows=self.gather_rows, **exchange)


def trained(optimizer, precision, fused=True, rank=None, shared_params=False, x_scale=1.0, sample_weight=False,
            activation="relu"):
    """Four steps of 130 rows: an ordinary model's, or (rank given) by rows through its hooks."""
    X, y = blobs(n=4 * 130, features=70)
    X = (X * x_scale).astype(np.float32 if precision != "float64" else np.float64)
    weights = np.random.default_rng(3).uniform(0.2, 2.0, len(X)).astype(X.dtype) if sample_weight else None
    model = fastmlp.MLP([70, 301, 133, 3], seed=2, optimizer=OPTIMIZERS[optimizer](), n_threads=2,
                        activation=activation, **PRECISIONS[precision])
    network = model._network
    network.update_in_weight_gradients = fused
    if rank is not None:
        rank.connect(network, shared_params)
        assert network.steps_by_rows
    results = []
    for batch in range(4):
        rows = slice(130 * batch, 130 * (batch + 1))
        arguments = (X[rows], y[rows]) + ((weights[rows],) if sample_weight else ())
        results.append(network.train_step(*arguments))
    if rank is not None:
        network.set_gradient_reduction(None)
    return model_state(model), results


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_a_step_by_rows_of_one_rank_gives_the_bits_of_an_ordinary_step(optimizer, precision):
    expected = trained(optimizer, precision)
    for own_arrays in (False, True):
        rank = OneRank(own_arrays)
        got = trained(optimizer, precision, rank=rank)
        assert_same_bits(got[0], expected[0])
        assert got[1] == expected[1]  # loss sums, counts
        # the update ran in the GEMMs: no agreement on a gradient read afterwards
        assert rank.calls == {"sum_figures": 4, "gather_rows": 4, "all_ranks_finite": 0, "params_written": 0}


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_unfused_steps_by_rows_and_sample_weights_give_the_same_bits(precision):
    expected = trained("adam", precision, fused=False, sample_weight=True)
    rank = OneRank()
    got = trained("adam", precision, fused=False, rank=rank, sample_weight=True)
    assert_same_bits(got[0], expected[0])
    assert got[1] == expected[1]
    assert rank.calls["all_ranks_finite"] == 4  # the gradient made first, then agreed finite


def test_operands_whose_bounds_allow_an_overflow_make_the_gradient_first_and_agree_on_it():
    # Activations of 2e37 (identity activations) put K max|input| max|dz| past float32's largest
    # value / 8 in the first and output layers: the update cannot run inside the GEMMs, so the
    # gradient is made, read and agreed on first -- the bits of an ordinary step, which takes
    # the same turn (tests/test_update_in_weight_gradients.py).
    expected = trained("adam", "float32", x_scale=2e37, activation="identity")
    rank = OneRank()
    got = trained("adam", "float32", rank=rank, x_scale=2e37, activation="identity")
    assert_same_bits(got[0], expected[0])
    assert got[0]["step"] == 4 and all(np.isfinite(result[0]) for result in got[1])
    assert rank.calls["all_ranks_finite"] == 4


def test_shared_parameters_are_seen_finite_as_they_are_written():
    rank = OneRank()
    got = trained("adam", "float32", rank=rank, shared_params=True)
    assert_same_bits(got[0], trained("adam", "float32")[0])
    assert rank.calls["params_written"] == 4


def test_a_refused_step_by_rows_changes_nothing():
    X, y = blobs(n=64, features=70)
    X = X.astype(np.float32)
    X[5, 3] = np.nan
    for rank in (None, OneRank()):
        model = fastmlp.MLP([70, 301, 133, 3], activation="identity", seed=2)  # (ReLU would drop the NaN)
        before = model_state(model)
        del before["grads"]  # (scratch of the step)
        if rank is not None:
            rank.connect(model._network)
        totals = model._network.train_step(X, y)
        assert not np.isfinite(totals[0])
        after = model_state(model)
        del after["grads"]
        assert_same_bits(after, before)
    assert rank.calls["gather_rows"] == 0  # refused from the summed loss, before the rows


def test_batch_norm_networks_sum_their_gradients_instead():
    model = fastmlp.MLP([6, 8, 3], batch_norm=True, seed=0)
    OneRank().connect(model._network)
    assert not model._network.steps_by_rows


@pytest.mark.parametrize("sizes, batch_norm", [([784, 1024, 1024, 10], False), ([784, 256, 10], False),
                                               ([6, 8, 3], True), ([5, 3], False), ([3, 1000, 2], False)])
@pytest.mark.parametrize("P", [1, 2, 3, 7])
def test_parameter_chunks_begin_on_rows_of_the_weights_and_are_near_even(sizes, batch_norm, P):
    model = fastmlp.MLP(sizes, batch_norm=batch_norm, seed=0)
    network = model._network
    n = network.params.size
    edges = network.parameter_chunks(P)
    assert len(edges) == P + 1 and edges[0] == 0 and edges[-1] == n
    assert all(a <= b for a, b in zip(edges, edges[1:]))
    row_starts = {0, n}
    for layer in network.layers:
        row_starts.update(layer["weight"] + r * layer["fan_out"] for r in range(layer["fan_in"]))
    assert set(edges) <= row_starts
    # each edge the row start nearest the even cut (ties either way)
    for chunk, edge in enumerate(edges[1:-1], start=1):
        even = chunk * n // P
        assert abs(edge - even) <= min(abs(start - even) for start in row_starts) + 1


def test_parameter_chunks_refuse_no_ranks():
    with pytest.raises(ValueError, match="P must be at least 1, got 0"):
        fastmlp.MLP([5, 3])._network.parameter_chunks(0)


def test_hooks_must_return_the_gathered_rows_shaped_as_the_step_needs():
    X, y = blobs(n=32, features=70)
    model = fastmlp.MLP([70, 301, 133, 3], seed=2)
    network = model._network
    rank = OneRank()
    rank.connect(network)
    rank.gather_rows = lambda pairs, magnitudes: [np.zeros((1, 1), np.float32)] * len(pairs)
    rank.connect(network)
    with pytest.raises(ValueError, match=r"gather_rows returned an array of shape \(1, 1\)"):
        network.train_step(X.astype(np.float32), y)
    rank.gather_rows = lambda pairs, magnitudes: [local.astype(np.float64) for local, _ in pairs]
    rank.connect(network)
    with pytest.raises(TypeError, match="gather_rows returned an array of another dtype"):
        network.train_step(X.astype(np.float32), y)
    rank.gather_rows = lambda pairs, magnitudes: []
    rank.connect(network)
    with pytest.raises(ValueError, match="gather_rows must return None or one array per pair"):
        network.train_step(X.astype(np.float32), y)


def test_the_hooks_of_steps_by_rows_go_together():
    network = fastmlp.MLP([5, 3])._network
    rank = OneRank()
    with pytest.raises(ValueError, match="sum_figures and gather_rows go together, with updates"):
        network.set_gradient_reduction(rank.reduce, updates=(0, 18), all_ranks_finite=rank.all_ranks_finite,
                                       gather_params=lambda params: None, sum_figures=rank.sum_figures)
    with pytest.raises(ValueError, match="sum_figures and gather_rows go together, with updates"):
        network.set_gradient_reduction(rank.reduce, sum_figures=rank.sum_figures, gather_rows=rank.gather_rows)
    with pytest.raises(ValueError, match="one of gather_params and params_written"):
        network.set_gradient_reduction(rank.reduce, updates=(0, 18), all_ranks_finite=rank.all_ranks_finite,
                                       gather_params=lambda params: None, params_written=rank.params_written)
    with pytest.raises(TypeError, match="must be callable"):
        network.set_gradient_reduction(rank.reduce, updates=(0, 18), all_ranks_finite=rank.all_ranks_finite,
                                       gather_params=lambda params: None, sum_figures=1, gather_rows=2)


def test_parameters_lent_from_outside_are_the_models_until_taken_back():
    X, y = blobs(n=40, features=5)
    model = fastmlp.MLP([5, 7, 3], seed=0)
    model.train_step(X, y)
    network = model._network
    memory = network.params.copy()
    network.share_params(memory)
    assert network.params_shared
    memory[:] = 0  # the model's parameters now
    assert np.all(model.predict_proba(X) == 1 / 3)
    model.train_step(X, y)  # a step writes into the lent memory
    stepped = memory.copy()
    assert not np.array_equal(stepped, 0)
    network.share_params(None)
    assert not network.params_shared
    np.testing.assert_array_equal(network.params, stepped)  # copied back
    memory[:] = 7  # no longer the model's
    np.testing.assert_array_equal(network.params, stepped)


def test_share_params_refuses_memory_it_cannot_use():
    network = fastmlp.MLP([5, 7, 3], seed=0)._network
    n = network.params.size
    with pytest.raises(TypeError, match="memory must be a NumPy array of the parameters' dtype or None"):
        network.share_params(np.zeros(n, np.float64))
    with pytest.raises(ValueError, match=rf"memory must be a writable contiguous array of {n} elements, got shape \(5,\)"):
        network.share_params(np.zeros(5, np.float32))
    read_only = network.params.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writable contiguous"):
        network.share_params(read_only)
    with pytest.raises(ValueError, match="writable contiguous"):
        network.share_params(np.zeros(2 * n, np.float32)[::2])
    assert not network.params_shared
