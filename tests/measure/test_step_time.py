"""The time model's arithmetic: a roofline per operation plus a cost per operation, per device and dtype path."""

from __future__ import annotations

import pytest

from ohlora_fixtures.inputs import gpus
from ohlora_fixtures.measure import step_time

TABLE = gpus.load_gpus()


def test_each_operation_takes_the_longer_of_compute_and_memory_plus_its_overhead() -> None:
    rates = step_time.DeviceRates("x", {"float32": 1.0}, 10.0, 1e-6, foreach=False)
    compute = (2 * 10**12, 10**9, "float32", 3)  # 2 s of FLOPs, 0.1 s of bytes
    memory = (0, 5 * 10**9, "", 2)  # 0.5 s of bytes
    assert step_time.seconds((compute, memory), rates) == pytest.approx(3 * (2 + 1e-6) + 2 * (0.5 + 1e-6))


def test_bf16_on_a_t4_runs_on_its_measured_emulated_path_not_its_fp16_tensor_cores() -> None:
    t4 = TABLE.select(["T4"])[0]
    bf16 = step_time.gpu_rates(t4, TABLE, run_dtype="bfloat16")
    fp16 = step_time.gpu_rates(t4, TABLE)  # the card's own dtype: fp16 tensor cores
    assert t4.dtype == "float16" and bf16.tflops["bfloat16"] == t4.bf16_emulated_tflops == 2.2
    assert fp16.tflops["float16"] == pytest.approx(65 * TABLE.matmul_efficiency)
    assert bf16.tflops["float32"] == pytest.approx(8.1 * TABLE.matmul_efficiency)
    op = ((10**12, 10**6, "bfloat16", 1),)
    assert step_time.seconds(op, bf16) > 20 * step_time.seconds(op, fp16)


def test_every_card_has_its_time_constants_and_a_native_card_uses_its_tensor_rate() -> None:
    assert 0 < TABLE.matmul_efficiency <= 1 and 0 < TABLE.bandwidth_efficiency <= 1 and TABLE.overhead_us > 0
    assert {"L40S", "RTX-A6000", "RTX-6000-Ada", "A10", "H200"} <= set(TABLE.names)
    a100 = TABLE.select(["A100-80GB"])[0]
    rates = step_time.gpu_rates(a100, TABLE)
    assert rates.tflops["bfloat16"] == pytest.approx(312 * a100.matmul_efficiency) and rates.foreach
    assert rates.gbps == pytest.approx(2039 * TABLE.bandwidth_efficiency) and rates.device == "A100-80GB"


def test_the_cpu_reads_matmul_streams_at_its_matrix_vector_bandwidth() -> None:
    cpu = step_time.cpu_rates(0.1, 40.0, 5.0, gemv_gbps=20.0)
    gemv = ((2 * 10**6, 4 * 10**9, "float32", 1),)  # memory-bound matmul: 4 GB at 20 GB/s
    copy = ((0, 4 * 10**9, "", 1),)  # an elementwise op: 4 GB at 40 GB/s
    assert cpu.device == step_time.THIS_CPU and not cpu.foreach
    assert step_time.seconds(gemv, cpu) == pytest.approx(0.2 + 5e-6)
    assert step_time.seconds(copy, cpu) == pytest.approx(0.1 + 5e-6)
