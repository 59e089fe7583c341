"""The hyperparameter search example runs end to end (optuna, and the RandomizedSearchCV
fallback) and its result is consistent: parameters inside the search space, a model that learned."""
import importlib.util
import os

import pytest

pytest.importorskip("sklearn")
EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "hyperparameter_search.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("hyperparameter_search", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_result(example, result, method):
    params = result["best_params"]
    assert result["method"] == method
    assert example.HIDDEN_RANGE[0] <= params["hidden"] <= example.HIDDEN_RANGE[1]
    assert example.LR_RANGE[0] <= params["learning_rate_init"] <= example.LR_RANGE[1]
    assert example.DROPOUT_RANGE[0] <= params["dropout"] <= example.DROPOUT_RANGE[1]
    # Ten classes: chance is 0.1; a few epochs on a small subset reach about 0.7.
    assert result["validation_accuracy"] > 0.4 and result["test_accuracy"] > 0.4


def test_quick_optuna_search(example, capsys):
    pytest.importorskip("optuna")
    result = example.main(["--quick"])
    check_result(example, result, "optuna")
    out = capsys.readouterr().out
    assert out.count("trial ") == 3 and "best: hidden=" in out


def test_random_search_fallback(example, capsys):
    result = example.main(["--quick", "--method", "random", "--trials", "2", "--epochs", "2",
                           "--train-size", "600"])
    check_result(example, result, "random")
    assert "search: random, 2 trials" in capsys.readouterr().out
