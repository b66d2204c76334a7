"""ohlora-bench: a pytest benchmark plugin for choosing a base model to fine-tune with LoRA.

PYTEST_DONT_REWRITE: the package holds no assertions for pytest to rewrite, and `ohlora-bench` imports it
before pytest starts, which made an installed copy warn that it could not be rewritten.
"""

__version__ = "0.1.0"
