"""Root conftest: makes the ohlora plugin available in a checkout that was not pip-installed.

When the package is installed, its `pytest11` entry point (named after the
module) has registered it already and this line does nothing.
"""

pytest_plugins = ["ohlora_fixtures.plugin"]
