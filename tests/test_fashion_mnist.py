"""The seed's main job: 784-256-10 relu, Adam lr 1e-3, batch 128, 3 epochs on the full
Fashion-MNIST training set reaches >= 0.85 test accuracy."""
import pytest

import fastmlp
from fastmlp import datasets

pytestmark = pytest.mark.skipif(
    datasets.find_mnist_files(datasets.FASHION_MNIST_DIR) is None,
    reason="Fashion-MNIST IDX files absent from /usr/share/datasets/fashion-mnist/ "
           "(apt-get install dataset-fashion-mnist; CI installs it)")


def test_784_256_10_reaches_085_in_three_epochs():
    X, y, X_test, y_test = datasets.load_fashion_mnist()
    assert X.shape == (60000, 784) and X_test.shape == (10000, 784)
    model = fastmlp.MLP([784, 256, 10], activation="relu", loss="cross_entropy",
                        optimizer=fastmlp.optim.Adam(lr=1e-3), seed=0)
    history = model.fit(X, y, epochs=3, batch_size=128)
    assert history["loss"][2] < history["loss"][0]
    accuracy = model.evaluate(X_test, y_test)["accuracy"]
    assert accuracy >= 0.85, f"test accuracy {accuracy:.4f}"
