"""bench/run.py's code paths at a tiny size (--quick), so the benchmark script cannot rot.
No timing is asserted: only that every section runs, reports and writes its files."""
import importlib.util
import json
import os

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "run.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fastmlp_bench_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_every_section_and_writes_results(bench, tmp_path, restore_threads):
    results = bench.main(["--quick", "--repetitions", "1", "--threads", "2", "--out", str(tmp_path)])
    # GEMM: one row per quick shape and thread count, with positive speeds for every library.
    assert {(row["shape"], row["threads"]) for row in results["gemm"]} == {
        (shape[0], n) for shape in bench.QUICK_GEMM_SHAPES for n in (1, 2)}
    assert all(speed > 0 for row in results["gemm"] for speed in row["gflops"].values())
    # Training: fastmlp and the NumPy reference at least, one epoch timed per repetition.
    small, wide = results["training"]
    assert small["sizes"] == [784, 256, 10] and wide["sizes"] == [784, 128, 128, 10]
    assert {"fastmlp", "NumPy reference"} <= set(small["seconds"])
    assert all(len(times) == 1 and times[0] > 0 for times in small["seconds"].values())
    assert set(results["inference"]["one"]) >= {"fastmlp"}
    assert set(results["thread_scaling"]) == {"1 thread", "2 threads"}
    # Files: markdown with the tables, JSON that round-trips.
    markdown = open(results["files"][0]).read()
    for title in ("## GEMM", "## Training: one epoch, 784-256-10", "## Inference", "## Thread scaling",
                  "machine:", "versions:"):
        assert title in markdown
    with open(results["files"][1]) as f:
        assert json.load(f)["training"][0]["sizes"] == [784, 256, 10]


def test_epoch_flops_counts_forward_dw_and_dx_but_not_the_first_dx(bench):
    # 784-256-10 on 60000 rows: forward + dW on both layers, dX on the second only.
    expected = 2 * 60000 * (2 * 784 * 256 + 3 * 256 * 10)
    assert bench.epoch_flops([784, 256, 10], 60000) == expected
    assert 48e9 < expected < 50e9  # the "about 49 GFLOP"


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--threads", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--repetitions", "0"])
    assert np.isfinite(bench.parse_args(["--quick"]).repetitions)


def test_sklearn_scores_runs_both_libraries_on_a_data_set():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "sklearn_scores.py")
    spec = importlib.util.spec_from_file_location("fastmlp_bench_sklearn_scores", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (row,) = module.main(["--seeds", "1", "--datasets", "iris"])
    assert set(row["scores"]) == {"fastmlp", "scikit-learn"}
    assert all(0.8 < scores[0] <= 1.0 for scores in row["scores"].values())
    with pytest.raises(SystemExit):
        module.parse_args(["--seeds", "0"])
