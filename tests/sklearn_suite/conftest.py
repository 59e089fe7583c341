"""Fixtures scikit-learn's own test suite expects from scikit-learn's conftest."""
import os

import pytest


@pytest.fixture
def global_random_seed():
    """scikit-learn's seed fixture: SKLEARN_TESTS_GLOBAL_RANDOM_SEED (an int) or its default 42."""
    return int(os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED", "42"))
