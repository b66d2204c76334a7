"""Root conftest: makes the ohlora plugin available in a checkout that was not pip-installed.

When the package is installed, its `pytest11` entry point (named after the
module) has registered it already and this line does nothing.
"""

import warnings

import pytest

pytest_plugins = ["ohlora_fixtures.plugin"]


def pytest_configure(config: pytest.Config) -> None:
    # setup.cfg turns autosave on for `pytest benchmarks`; runs without benchmarks need no notice of it.
    warnings.filterwarnings("ignore", message="Not saving anything, no benchmarks have been run")
