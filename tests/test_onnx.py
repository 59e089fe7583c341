"""MLP.to_onnx: the exported graph, run by onnxruntime, predicts what fastmlp predicts."""
import os
import sys

import numpy as np
import pytest

import fastmlp
from fastmlp._files import write_atomically

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

N_ROWS = 1000
FLOAT32_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
FLOAT64_TOLERANCE = dict(rtol=1e-12, atol=1e-13)


def targets(rng, loss, n, width):
    if loss == "cross_entropy":
        return rng.integers(0, width, size=n)
    if loss == "bce":
        return (rng.random((n, width)) < 0.4).astype(np.float64)
    return rng.normal(size=(n, width))


def trained(rng, loss="cross_entropy", activation="relu", dtype="float32", width=3, **kwargs):
    """A model a few epochs into training, so weights and batch statistics are not the initial ones."""
    hidden = [9] if isinstance(activation, str) else [9] * len(activation)
    model = fastmlp.MLP([5, *hidden, width], activation=activation, loss=loss, dtype=dtype,
                        seed=3, leaky_relu_slope=0.2, **kwargs)
    X = rng.normal(size=(300, 5)) * 2
    model.fit(X, targets(rng, loss, 300, width), epochs=3, batch_size=32)
    return model


def run_onnx(path, X):
    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"X": X})))


def tolerance(model):
    # float64 graphs are exact but for GELU, whose erf runs in float32 (onnxruntime has no double Erf).
    exact = model.dtype == np.float64 and "gelu" not in model.activations
    return FLOAT64_TOLERANCE if exact else FLOAT32_TOLERANCE


def assert_same_labels(onnx_labels, model, X):
    """Equal labels, except where fastmlp's two best classes tie to float32 precision."""
    expected = model.predict(X)
    differ = onnx_labels != expected
    if differ.any():
        top_two = np.sort(model.predict_proba(X)[differ], axis=1)[:, -2:]
        np.testing.assert_allclose(top_two[:, 0], top_two[:, 1], rtol=1e-5)


CASES = [
    dict(activation="relu"),
    dict(activation="gelu"),
    dict(activation="gelu", dtype="float64"),
    dict(activation=["tanh", "leaky_relu"], batch_norm=True),
    dict(activation=["sigmoid", "identity"], batch_norm=True, dtype="float64"),
    dict(activation="relu", dropout=0.3, batch_norm=True),
    dict(loss="bce", activation="tanh"),
    dict(loss="bce", activation="gelu", dtype="float64", batch_norm=True),
    dict(loss="mse", activation="sigmoid"),
    dict(loss="mse", activation="leaky_relu", dtype="float64", dropout=0.2),
    dict(loss="gaussian_nll", activation="tanh", width=2),
    dict(loss="gaussian_nll", activation="gelu", batch_norm=True, dtype="float64", width=1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(
    str(value) if not isinstance(value, list) else "+".join(value) for value in case.values()))
def test_onnxruntime_predicts_what_fastmlp_predicts(rng, tmp_path, case):
    model = trained(rng, **case)
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    X = (rng.normal(size=(N_ROWS, 5)) * 2).astype(model.dtype)
    outputs = run_onnx(path, X)
    if model.loss in ("cross_entropy", "bce"):
        assert set(outputs) == {"label", "probabilities"}
        assert outputs["probabilities"].dtype == model.dtype and outputs["label"].dtype == np.int64
        np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(X), **tolerance(model))
        if model.loss == "cross_entropy":
            assert_same_labels(outputs["label"], model, X)
        else:
            # Threshold at 0.5 of the same probabilities: differs only at float32 distance from 0.5.
            near_half = np.isclose(model.predict_proba(X), 0.5, atol=1e-6)
            np.testing.assert_array_equal(outputs["label"][~near_half], model.predict(X)[~near_half])
    elif model.loss == "mse":
        assert list(outputs) == ["predictions"]
        np.testing.assert_allclose(outputs["predictions"], model.predict(X).reshape(N_ROWS, -1),
                                   **tolerance(model))
    else:
        mean, variance = model.predict_distribution(X)
        assert list(outputs) == ["mean", "variance"]
        np.testing.assert_allclose(outputs["mean"], mean, **tolerance(model))
        np.testing.assert_allclose(outputs["variance"], variance, **tolerance(model))


def test_graph_is_gemms_and_activations_with_batch_norm_folded_and_dropout_dropped(rng, tmp_path):
    model = trained(rng, activation=["gelu", "relu"], batch_norm=True, dropout=0.5)
    model.to_onnx(tmp_path / "model.onnx")
    proto = onnx.load(tmp_path / "model.onnx")
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("Gemm") == 3 and "Erf" in ops and ops.count("Relu") == 1
    assert not {"BatchNormalization", "Dropout"} & set(ops)
    assert [i.name for i in proto.graph.input] == ["X"]
    batch, features = proto.graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param == "N" and features.dim_value == 5
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert metadata == {"loss": "cross_entropy", "layer_sizes": "5,9,9,3",
                        "activations": "gelu,relu", "dtype": "float32"}
    assert proto.producer_name == "fastmlp"


def test_unfitted_model_is_refused_and_no_file_written(tmp_path):
    model = fastmlp.MLP([5, 4, 2])
    with pytest.raises(fastmlp.NotFittedError, match="not fitted"):
        model.to_onnx(tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []


def test_unwritable_paths_give_clear_errors(rng, tmp_path):
    model = trained(rng)
    with pytest.raises(FileNotFoundError, match=r"cannot write .*no-such-dir"):
        model.to_onnx(tmp_path / "no-such-dir" / "model.onnx")
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        model.to_onnx(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got 42"):
        model.to_onnx(42)
    assert os.listdir(tmp_path) == []


def test_an_existing_file_survives_a_failed_export(rng, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the previous model")
    model = trained(rng)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    with pytest.raises(ImportError, match=r"needs the onnx package: pip install fastmlp\[onnx\]"):
        model.to_onnx(path)
    assert path.read_bytes() == b"the previous model" and os.listdir(tmp_path) == ["model.onnx"]


def test_a_write_failing_midway_leaves_the_destination_and_no_temporary(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the previous model")

    def half_then_fail(file):
        file.write(b"half a model")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half_then_fail)
    assert path.read_bytes() == b"the previous model" and os.listdir(tmp_path) == ["model.onnx"]
    write_atomically(path, lambda file: file.write(b"the new model"))
    assert path.read_bytes() == b"the new model" and os.listdir(tmp_path) == ["model.onnx"]
