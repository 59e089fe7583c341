"""Every script in examples/ at its smoke size (--quick), asserting what it claims: convergence
or not, accuracy bounds, agreement with closed forms and with NumPy. The scripts that read
Fashion-MNIST run on it when it is installed and always on their stand-in (generated blob images,
given an empty --data directory), which must be learned too. One thread each, so the run time
does not depend on how busy the machine is (threads are tested elsewhere)."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import datasets

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAS_FASHION = datasets.find_mnist_files(datasets.FASHION_MNIST_DIR) is not None
CHANCE = 0.1  # ten classes, balanced


@pytest.fixture(params=["fashion-mnist", "generated"])
def data(request, tmp_path):
    """(--data arguments, the least test accuracy the quick runs must reach) for each source."""
    if request.param == "generated":
        return ["--data", str(tmp_path)], 4 * CHANCE
    if not HAS_FASHION:
        pytest.skip("Fashion-MNIST absent: apt-get install dataset-fashion-mnist")
    return [], 0.7


def load_example(name):
    """Import examples/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name, *arguments):
    """Call examples/<name>.py's main with the given arguments."""
    return load_example(name).main(list(arguments))


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    fastmlp.set_num_threads(1)


def test_every_example_is_tested():
    tested = {"logic_gates", "linear_regression", "hebbian", "xor_mlp", "fashion_mnist_mlp",
              "losses", "regularisation", "optimizers", "hyperparameter_search",
              "data_parallel"}  # data_parallel: tests/test_distributed.py (under mpiexec)
    assert {path.stem for path in EXAMPLES.glob("*.py")} == tested


def test_logic_gates(capsys):
    models = run_example("logic_gates", "--quick")
    for gate in ("and", "or", "nand", "nor"):
        assert models[gate].converged_, gate
    assert not models["xor"].converged_ and models["xor"].n_epochs_ == 20
    assert "not linearly separable" in capsys.readouterr().out


def test_linear_regression_reaches_the_closed_form():
    result = run_example("linear_regression", "--quick")
    np.testing.assert_allclose(result["gd"], result["closed_form"], atol=1e-6)
    assert result["loss_curve"][-1] == pytest.approx(result["closed_form_loss"], rel=1e-9)


def test_hebbian_oja_finds_the_eigenvector_and_hebb_grows():
    result = run_example("hebbian", "--quick")
    cosine = abs(result["oja_weights"] @ result["reference"]) / np.linalg.norm(result["oja_weights"])
    assert cosine > math.cos(math.radians(2))
    assert np.linalg.norm(result["oja_weights"]) == pytest.approx(1.0, abs=0.05)
    assert all(b > a for a, b in zip(result["hebb_norms"], result["hebb_norms"][1:]))


def test_xor_mlp_hidden_layer_makes_xor_separable(capsys):
    result = run_example("xor_mlp", "--quick")
    assert result["accuracy"] == 1.0
    assert not result["raw_perceptron_converged"]
    assert result["feature_perceptron_converged"] and result["readout_separates"]
    assert "hidden features" in capsys.readouterr().out


def test_fashion_mnist_mlp(capsys, data):
    data_arguments, least_accuracy = data
    result = run_example("fashion_mnist_mlp", "--quick", *data_arguments)
    assert result["shapes"] == [(784, 256), (256,), (256, 10), (10,)]
    assert len(result["history"]["loss"]) == 2
    assert result["history"]["loss"][1] < result["history"]["loss"][0]
    assert result["test"]["accuracy"] >= least_accuracy  # 2 epochs on 2000 images
    # The example's NumPy evaluation agrees with the C++ one.
    assert result["test"]["accuracy"] == result["core_evaluate"]["accuracy"]
    assert result["test"]["loss"] == pytest.approx(result["core_evaluate"]["loss"], rel=1e-5)
    out = capsys.readouterr().out
    assert "W1 (784, 256), b1 (256,), W2 (256, 10), b2 (10,)" in out
    assert ("generated 28x28 blob images" in out) == bool(data_arguments)


def test_losses():
    result = run_example("losses", "--quick")
    regression = result["regression"]
    assert regression["std_correlation"] > 0.5  # the variance head follows the noise
    assert regression["predicted_std"][-1] > regression["predicted_std"][len(regression["predicted_std"]) // 2]
    lines = result["outliers"]["lines"]
    np.testing.assert_allclose(lines["MSE, with outliers (fastmlp)"],
                               lines["MSE, with outliers (lstsq)"], atol=1e-6)
    np.testing.assert_allclose(lines["MSE, clean data (fastmlp)"], [2.0, 1.0], atol=0.1)
    assert abs(lines["MSE, with outliers (fastmlp)"][0] - 2.0) > 0.5  # dragged by 5% of points
    np.testing.assert_allclose(lines["L1, with outliers (IRLS)"], [2.0, 1.0], atol=0.1)
    assert result["outliers"]["outlier_share_of_loss"] > 0.5
    classification = result["classification"]
    assert classification["accuracy"] >= 0.95
    assert classification["numpy_nll"] == pytest.approx(classification["core_loss"], rel=1e-9)


def test_regularisation_table(capsys, data):
    data_arguments, least_accuracy = data
    result = run_example("regularisation", "--quick", *data_arguments)
    rows = result["rows"]
    assert len(rows) == 9 and "plain" in rows and "ensemble of 2 plain" in rows
    for name, row in rows.items():  # 3 epochs on 600 images: every method learns
        assert 3 * CHANCE < row["test"] <= 1 and 3 * CHANCE < row["train"] <= 1, name
    assert rows["plain"]["test"] >= least_accuracy
    assert rows["plain"]["train"] > rows["plain"]["test"]  # the generalisation gap
    assert rows["ensemble of 2 plain"]["test"] >= min(result["member_test_accuracies"])
    assert result["cv"]["test_score"].shape == (2,)
    assert np.all(result["cv"]["test_score"] > 3 * CHANCE)
    assert "| train acc | test acc |" in capsys.readouterr().out


def test_optimizers_curves_and_plot(tmp_path):
    png = tmp_path / "curves.png"
    result = run_example("optimizers", "--quick", "--plot", str(png))
    assert set(result["curves"]) == {"SGD", "momentum", "Nesterov", "Adagrad", "Adadelta",
                                     "RMSprop", "Adam"}
    for name, (losses, accuracy) in result["curves"].items():
        assert len(losses) == 15 and np.all(np.isfinite(losses)), name
        assert losses[-1] < losses[0], name
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result["plot"] is None and not png.exists()
    else:
        assert result["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_search_result(result, method):
    from_example = {"hidden": (32, 512), "learning_rate_init": (1e-4, 3e-2), "dropout": (0.0, 0.5)}
    assert result["method"] == method
    for name, (low, high) in from_example.items():
        assert low <= result["best_params"][name] <= high, name
    # A few epochs on a small subset: about 0.7 on Fashion-MNIST, 0.5 on the blob images.
    assert result["validation_accuracy"] > 4 * CHANCE and result["test_accuracy"] > 4 * CHANCE


def test_hyperparameter_search_with_optuna(capsys, data):
    pytest.importorskip("sklearn")
    pytest.importorskip("optuna")
    result = run_example("hyperparameter_search", "--quick", *data[0])
    check_search_result(result, "optuna")
    out = capsys.readouterr().out
    assert out.count("trial ") == 3 and "best: hidden=" in out


def test_hyperparameter_search_with_randomized_search_cv(capsys, data):
    pytest.importorskip("sklearn")
    result = run_example("hyperparameter_search", "--quick", "--method", "random", "--trials", "2",
                         "--epochs", "2", "--train-size", "600", *data[0])
    check_search_result(result, "random")
    assert "search: random, 2 trials" in capsys.readouterr().out


def test_hyperparameter_search_takes_the_whole_test_set():
    """The default size asks for as many test images as there are (10,000): all of them."""
    pytest.importorskip("sklearn")
    module = load_example("hyperparameter_search")
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    assert module.stratified_subset(X, y, 20, seed=0)[0] is X
    subset, labels = module.stratified_subset(X, y, 10, seed=0)
    assert len(subset) == 10 and np.bincount(labels).tolist() == [5, 5]
