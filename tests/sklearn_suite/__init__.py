"""scikit-learn's own MLP tests run against fastmlp.sklearn (a package, so that its conftest
does not shadow tests/conftest.py for the modules that import helpers from it)."""
