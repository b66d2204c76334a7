"""report/gather.py: a measured run's time beside the time model's estimate for the device that ran it."""

from __future__ import annotations

import dataclasses

from ohlora_fixtures.report.gather import _own_rates
from tests.records.test_record import schema1_records


def _on(device: str, device_name: str, dtype: str = "bfloat16"):
    record = schema1_records()[0]
    return dataclasses.replace(record, run=dataclasses.replace(record.run, device=device, device_name=device_name,
                                                               dtype=dtype))


def test_a_gpu_run_is_estimated_on_the_card_its_driver_names() -> None:
    record = _on("cuda", "NVIDIA A100-SXM4-80GB")
    rates = _own_rates(record, None, plan=None)
    assert rates is not None and rates.device == "A100-80GB"
    # The run's own dtype: bf16 on an A100 runs on its tensor cores, far above the fp32 rate.
    assert rates.rate("bfloat16") > 5 * rates.rate("float32")


def test_a_t4_run_in_bf16_takes_the_emulated_rate() -> None:
    rates = _own_rates(_on("cuda", "Tesla T4"), None, plan=None)
    assert rates is not None and rates.device == "T4"
    assert rates.rate("bfloat16") < rates.rate("float32") * 1.01


def test_an_unlisted_gpu_gets_no_estimate_rather_than_another_cards() -> None:
    assert _own_rates(_on("cuda", "NVIDIA GeForce GTX 1080"), None, plan=None) is None
