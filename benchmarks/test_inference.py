"""Inference cost of every untuned candidate: the test lives in the package
(ohlora_fixtures/benchmarks/test_inference.py), so an installed copy runs the same one."""

from ohlora_fixtures.benchmarks.test_inference import test_inference  # noqa: F401
