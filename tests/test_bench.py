"""bench/run.py's code paths at a tiny size (--quick), so the benchmark script cannot rot.
No timing is asserted: only that every section runs, reports and writes its files."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

import fastmlp
from fastmlp import datasets

BENCH_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "bench")


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"fastmlp_bench_{name}", os.path.join(BENCH_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_script("run")


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
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        assert {"onnxruntime"} <= set(results["inference"]["one"]) & set(results["inference"]["many"])
    assert results["peak_isa"] == fastmlp.build_info().get("isa", fastmlp.build_info()["gemm_kernel"])
    assert set(results["thread_scaling"]) == {"1 thread", "2 threads"}
    # bfloat16 beside float32: timed where this build / torch has it, else a row saying why.
    assert set(results["bf16_peaks"]) == set(results["amx_peaks"]) == {1, 2}
    assert all((peak is not None) == bench.kernels.cpu_supports_isa("amx_bf16")
               for peak in results["amx_peaks"].values())
    # Inference at each thread count, bf16 beside float32.
    assert set(results["inference"]["by_threads"]) == {1, 2}
    for by_size in results["inference"]["by_threads"].values():
        assert ("fastmlp bf16" in by_size["one"] and "fastmlp bf16" in by_size["many"]) == bench.has_bf16_model()
    for table in (small, wide):
        if bench.has_bf16_model():
            assert "fastmlp bf16" in table["seconds"]
        else:
            assert table["missing"] == {"fastmlp bf16": bench.NO_BF16}
        if importlib.util.find_spec("torch"):
            assert {"torch eager", "torch bf16 autocast"} <= set(table["seconds"])
            assert not any(name.startswith("torch.compile") for name in table["seconds"])  # not in --quick
    gemm_names = set(results["gemm"][0]["gflops"])
    assert ("fastmlp bf16" in gemm_names) == ("fastmlp bf16 packed b" in gemm_names) == bench.has_bf16_gemm()
    if importlib.util.find_spec("torch"):
        assert "torch bf16" in gemm_names and "torch bf16 autocast" in results["inference"]["many"]
    # Files: markdown with the tables, JSON that round-trips.
    markdown = open(results["files"][0]).read()
    for title in ("## GEMM, float32", "## GEMM, bfloat16", "## Training: one epoch, 784-256-10",
                  "## Inference", "## Thread scaling", "measured bf16 peak (VDPBF16PS",
                  "measured AMX bf16 peak", "% of engine peak",
                  "machine:", "versions:", f"FMA peak ({results['peak_isa']} registers)",
                  "BLAS (threadpoolctl):", "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE:"):
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


def test_imported_the_bench_leaves_the_openblas_environment_alone(bench, monkeypatch):
    # Only a script run drops the overrides (before NumPy loads); the tests keep theirs.
    assert bench.DROPPED_OPENBLAS_OVERRIDES == {}
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert bench._drop_openblas_overrides([]) == {}  # NumPy is loaded: too late to matter
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"
    assert "in force: OPENBLAS_CORETYPE=Haswell" in bench.openblas_environment()


def test_contention_quick_run_times_every_workload_and_stops_its_competitors(tmp_path, restore_threads):
    contention = load_script("contention")
    fastmlp.set_num_threads(None)
    results = contention.main(["--quick", "--only", "contended", "--competitors", "1", "--out", str(tmp_path)])
    rows = results["contended"]
    assert [row["workload"].split(",")[0] for row in rows] == [
        "predict", "predict", "fastmlp.sklearn.MLPClassifier.fit", "fastmlp.sklearn.MLPClassifier.fit", "fit"]
    for row in rows:
        assert row["ratio"] > 0 and row["default"]["p90"] >= row["default"]["median"] > 0
        assert 1 <= row["default_threads"] <= max(1, fastmlp.get_num_threads())
    assert rows[0]["default_threads"] == 1  # one row is far below the whole-call threshold
    assert rows[0]["competitors_running"] == 1
    for pid in results["competitor_pids"]:  # stopped and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "## contended" in open(results["files"][0]).read()
    with pytest.raises(SystemExit):
        contention.parse_args(["--competitors", "0"])


def cpu_flags():
    """The CPU's feature flags as Linux reports them (an independent check of the cpuid test)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    pytest.skip("no /proc/cpuinfo to say what the CPU has")


@pytest.mark.parametrize("name", ["fma_peak_gflops", "bf16_peak_gflops"])
@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf"), 61.0])
def test_peak_loops_refuse_durations_that_would_not_end_or_mean_nothing(name, seconds):
    with pytest.raises(ValueError, match=rf"{name}: seconds must be in \(0, 60\], got"):
        getattr(fastmlp._core.kernels, name)(seconds)


def test_bf16_peak_runs_where_the_cpu_has_avx512_bf16_and_says_why_not_elsewhere():
    has_bf16 = {"avx512f", "avx512_bf16"} <= cpu_flags()
    if has_bf16:
        assert 0 < fastmlp._core.kernels.bf16_peak_gflops(0.01) < 1e4
    else:
        with pytest.raises(RuntimeError, match="AVX512_BF16"):
            fastmlp._core.kernels.bf16_peak_gflops(0.01)


def test_optimizer_share_times_every_contestant_per_network_and_precision(restore_threads):
    share = load_script("optimizer_share")
    rows = share.main(["--quick", "--repetitions", "2"])
    precisions = ["float32"] + (["bfloat16"] if share.has_bf16_model() else [])
    assert [(row["sizes"], row["compute_dtype"]) for row in rows] == [
        (list(sizes), p) for sizes in share.NETWORKS for p in precisions]
    for row in rows:
        assert set(row["seconds"]) == {"train_step", "train_step, update after the gradient", "gradients",
                                       "core gradients", "train_step SGD"}
        assert all(len(s) == 2 and min(s) > 0 for s in row["seconds"].values())
        median = row["median_seconds"]
        unfused = median["train_step, update after the gradient"]
        assert row["beyond_gradients"] == pytest.approx(median["train_step"] - median["core gradients"])
        assert row["fused_saved"] == pytest.approx(unfused - median["train_step"])
        assert row["fused_saving"] == pytest.approx(max(unfused - median["core gradients"], 0) * 8 / 28)
    # 784-256-10: 784*256 + 256 + 256*10 + 10 parameters.
    assert rows[0]["parameters"] == 203530
    with pytest.raises(SystemExit):
        share.parse_args(["--repetitions", "0"])
    with pytest.raises(SystemExit):
        share.parse_args(["--trained-epochs", "-1"])


def test_optimizer_share_times_a_trained_model_on_training_images(restore_threads, monkeypatch):
    share = load_script("optimizer_share")
    rng = np.random.default_rng(0)
    images = rng.random((300, 784), dtype=np.float32), rng.integers(0, 10, 300)
    monkeypatch.setattr(share, "training_images", lambda: images)  # a small stand-in for the data
    made, make_model = [], share.make_model
    monkeypatch.setattr(share, "make_model", lambda *args: made.append(make_model(*args)) or made[-1])
    functions = share.contestants([784, 16, 10], "float32", 1, trained_epochs=2)
    adam, sgd = made
    assert adam._network.step == 2 * 3 and sgd._network.step == 0  # 2 epochs of 3 batches of 128
    functions["train_step"]()
    functions["train_step, update after the gradient"]()
    assert adam._network.step == 7
    # The copy that updates after the gradient took the same step: the same bits.
    after = functions["train_step, update after the gradient"].__closure__
    copies = [cell.cell_contents for cell in after if isinstance(cell.cell_contents, fastmlp.MLP)]
    assert len(copies) == 1 and copies[0] is not adam
    assert not copies[0]._network.update_in_weight_gradients
    np.testing.assert_array_equal(copies[0].flat_parameters, adam.flat_parameters)


@pytest.fixture
def bench_dir_on_path():
    """Undoes what a script that imports bench/run.py as `run` does to sys.path and sys.modules:
    left in place, bench/distributed.py would shadow dask's `distributed` in later tests."""
    path, had_run = list(sys.path), "run" in sys.modules
    yield
    sys.path[:] = path
    if not had_run:
        sys.modules.pop("run", None)


def test_subnormal_guard_times_steps_and_epochs_both_ways_and_restores_the_cpus_choice(restore_threads,
                                                                                       bench_dir_on_path):
    script = load_script("subnormal_guard")
    choice = fastmlp._core.kernels.subnormal_guard()
    results = script.main(["--quick"])
    precisions = ["float32"] + (["bfloat16"] if script.run.has_bf16_model() else [])
    assert [(r["sizes"], r["precision"]) for r in results] == [(list(s), p) for s in script.NETWORKS for p in precisions]
    for result in results:
        assert set(result["steps"]) == set(result["epochs"]) == {"on", "off"}
        assert all(len(samples.seconds) == 2 and min(samples.seconds) > 0 for samples in result["steps"].values())
        assert all(len(samples.seconds) == 1 for samples in result["epochs"].values())
        assert 0 <= result["tiny_first_moments"] < 1
    assert fastmlp._core.kernels.subnormal_guard() == choice
    for bad in (["--repetitions", "0"], ["--trained-epochs", "0"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)


def test_bfloat16_training_times_every_product_of_a_step_and_the_four_epochs(restore_threads, capsys):
    script = load_script("bfloat16_training")
    results = script.main(["--quick", "--repetitions", "1"])
    assert set(results) == {"784-256-10", "784-1024-1024-10"}
    # 784-1024-1024-10: forward and dW of 3 layers, dX of the last 2.
    products = results["784-1024-1024-10"]["products"]
    assert list(products) == ["forward 0", "dW 0", "forward 1", "dW 1", "dX 1", "forward 2", "dW 2", "dX 2"]
    assert all(min(seconds.values()) > 0 for seconds in products.values())
    epochs = results["784-256-10"]["epochs"]
    expected = {"fastmlp float32", "fastmlp bf16"} | (
        {"torch float32", "torch bf16 autocast"} if importlib.util.find_spec("torch") else set())
    assert set(epochs) == expected and min(epochs.values()) > 0
    assert "fastmlp bf16 / fastmlp float32" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["--profile-threads", "0"])


@pytest.mark.skipif(datasets.find_mnist_files(datasets.FASHION_MNIST_DIR) is None,
                    reason="Fashion-MNIST absent: apt-get install dataset-fashion-mnist")
def test_bfloat16_accuracy_quick_run_writes_its_table_plot_and_figures(tmp_path, capsys):
    plot, figures = tmp_path / "curves.png", tmp_path / "figures.json"
    results = load_script("bfloat16_accuracy").main(
        ["--quick", "--networks", "784-256-10", "--plot", str(plot), "--json", str(figures)])
    runs = results["784-256-10"]
    assert set(runs) == {"float32", "bfloat16"}
    for run in runs.values():
        assert len(run["train_loss"]) == len(run["test_loss"]) == len(run["test_accuracy"]) == 2
        assert run["train_loss"][1] < run["train_loss"][0] and 0.5 < run["test_accuracy"][1] <= 1
    assert runs["float32"]["train_loss"] != runs["bfloat16"]["train_loss"]  # the products differ
    assert json.loads(figures.read_text())["results"] == results
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "final test accuracy: float32" in capsys.readouterr().out


def test_predict_latency_times_both_precisions_on_one_and_ten_rows(capsys):
    figures = load_script("predict_latency").main(["--calls", "3", "--rounds", "1"])
    assert set(figures) == {f"{p} {r}" for p in ("float32", "bfloat16") for r in ("1 row", "10 rows")}
    assert all(0 < low <= median for median, low in figures.values())
    assert "load average" in capsys.readouterr().out
