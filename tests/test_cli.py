"""`python -m fastmlp`: the train command's table on real and generated data, info, bad options."""
import json
import subprocess
import sys

import pytest

from fastmlp import datasets
from fastmlp.__main__ import main

HAS_FASHION = datasets.find_mnist_files(datasets.FASHION_MNIST_DIR) is not None


def table_rows(output):
    return [line.split("|") for line in output.splitlines() if line.count("|") == 5]


def test_train_on_generated_problem_when_no_idx_files(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--epochs", "2", "--limit", "600",
                 "--hidden", "32", "--lr", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "generated 28x28 blob images" in out and "dataset-fashion-mnist" in out
    rows = table_rows(out)
    assert [cell.strip() for cell in rows[0]] == ["epoch", "loss", "accuracy", "val_accuracy",
                                                    "seconds", "samples/s"]
    epochs = rows[2:]
    assert [int(row[0]) for row in epochs] == [1, 2]
    assert float(epochs[1][1]) < float(epochs[0][1])  # the loss falls
    assert float(epochs[1][3]) > 0.4  # learned: chance is 0.1
    assert "test accuracy" in out


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST absent: apt-get install dataset-fashion-mnist")
def test_train_on_fashion_mnist_files(capsys, tmp_path):
    saved = tmp_path / "m.npz"
    assert main(["train", "--epochs", "1", "--limit", "5000", "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "IDX files in /usr/share/datasets/fashion-mnist/" in out
    assert "784-256-10" in out
    accuracy = float(table_rows(out)[2][3])
    assert 0.6 < accuracy <= 1.0
    assert saved.exists()


def test_bad_option_exits_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def test_info_prints_build_json():
    out = subprocess.run([sys.executable, "-m", "fastmlp", "info"], capture_output=True, text=True,
                         check=True, cwd="/")
    info = json.loads(out.stdout)
    assert info["openmp"] is True and "gemm_kernel" in info and info["num_threads"] >= 1
