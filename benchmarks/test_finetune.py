"""Fine-tuning cost of every candidate at every LoRA rank: the test lives in the package
(ohlora_fixtures/benchmarks/test_finetune.py), so an installed copy runs the same one."""

from ohlora_fixtures.benchmarks.test_finetune import test_finetune  # noqa: F401
