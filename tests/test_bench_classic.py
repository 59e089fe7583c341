"""bench/classic_rules.py at a tiny size (--quick), so the benchmark script cannot rot. No
timing is asserted: only that both sections run and report sensible accuracies."""
import importlib.util
import os

import pytest

from fastmlp.datasets import FASHION_MNIST_DIR

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "classic_rules.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fastmlp_bench_classic_rules", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_both_sections(bench, capsys):
    pytest.importorskip("sklearn")
    if not os.path.isdir(FASHION_MNIST_DIR):
        pytest.skip("Fashion-MNIST is not installed")
    results = bench.main(["--quick"])
    perceptron, sanger = results["perceptron"], results["sanger"]
    assert set(perceptron["median_seconds"]) == {"fastmlp", "scikit-learn"}
    assert all(seconds > 0 for seconds in perceptron["median_seconds"].values())
    # T-shirt vs rest is 90% "rest": both perceptrons must beat always answering "rest".
    assert all(accuracy > 0.9 for accuracy in perceptron["test_accuracy"].values())
    assert (sanger["rows"], sanger["inputs"], sanger["outputs"]) == (500, 784, 8)
    printed = capsys.readouterr().out
    assert "## Perceptron" in printed and "## Sanger" in printed and "machine:" in printed


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--repetitions", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--sanger-rows", "-1"])
