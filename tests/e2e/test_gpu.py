"""The CUDA paths: run by the GPU workflow (.github/workflows/gpu-benchmarks.yml); skipped, with the reason, elsewhere.

    .venv/bin/pytest tests -m gpu -rs
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from ohlora_fixtures.measure.hardware import CALIBRATION, calibrate_gbps, calibrate_tflops, datasheet, device_peaks
from ohlora_fixtures.measure.memory import MemoryMeter
from ohlora_fixtures.records import results
from ohlora_fixtures.records.figures import MIB
from tests.conftest import TINY_RUN, run_grid

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


def test_cuda_peak_rises_by_exactly_the_allocated_tensor(cuda):
    with MemoryMeter(cuda) as meter:
        block = torch.empty(256 * MIB, dtype=torch.uint8, device=cuda)
        del block
    figures = meter.figures
    assert figures.metric == "cuda_max_allocated"
    assert figures.peak_increase_mib == pytest.approx(256, abs=1)
    assert figures.after_mib == pytest.approx(figures.start_mib, abs=1)


def test_nvml_sampler_reads_the_devices_memory(cuda):
    with MemoryMeter(cuda, interval_s=0.001) as meter:
        block = torch.ones(512 * MIB // 4, device=cuda)
        torch.cuda.synchronize(cuda)
        del block
    figures = meter.figures
    assert figures.sampler == "nvml_device_used"
    assert figures.samples >= 2
    # NVML sees the whole device (the CUDA context, the allocator's cache), so at least torch's own peak.
    assert figures.sampled_peak_mib >= figures.peak_mib


def test_datasheet_or_calibration_gives_this_gpus_peaks(cuda):
    peaks = device_peaks(cuda, torch.bfloat16)
    sheet = datasheet(torch.cuda.get_device_name(cuda))
    assert peaks.gbps_source == ("datasheet" if sheet else "calibrated")
    if sheet is None or sheet.bf16_tflops is None:
        pytest.skip(f"{peaks.device_name}: no bf16 datasheet figure to check the calibration against")
    # A measured matmul and copy reach most of the datasheet's peak and never pass it.
    measured_tflops = calibrate_tflops(cuda, torch.bfloat16, CALIBRATION["cuda"])
    measured_gbps = calibrate_gbps(cuda, CALIBRATION["cuda"])
    assert 0.3 * sheet.bf16_tflops < measured_tflops < 1.05 * sheet.bf16_tflops
    assert 0.3 * sheet.gbps < measured_gbps < 1.05 * sheet.gbps


def test_bf16_run_of_one_tiny_candidate(tmp_path):
    result = run_grid(tmp_path, *TINY_RUN, "--ohlora-models", "llama1B", "--ohlora-device", "cuda",
                      "--ohlora-dtype", "bfloat16", f"--benchmark-json={tmp_path / 'run.json'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["ohlora"]["model_loads"] == {"llama1B": 1}
    assert saved["ohlora"]["dtype"] == "bfloat16"
    for record in results.read(tmp_path / "ohlora" / "results.jsonl"):
        assert record.ok and record.memory.metric == "cuda_max_allocated"
        assert record.run.device.startswith("cuda")
        assert (record.get("mfu") or record.get("bandwidth_utilisation")) > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs (one per pytest-xdist worker)")
def test_each_xdist_worker_runs_on_its_own_gpu(tmp_path):
    result = run_grid(tmp_path, *TINY_RUN, "--ohlora-models", "llama1B,polyglot-ko-1.3b", "-n", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    devices = {r.candidate: r.run.device for r in results.read(tmp_path / "ohlora" / "results.jsonl")}
    assert sorted(devices.values()) == ["cuda:0", "cuda:1"]


def test_nvml_sampler_gives_mean_and_p99_below_its_peak(cuda):
    with MemoryMeter(cuda, interval_s=0.001) as meter:
        block = torch.ones(512 * MIB // 4, device=cuda)
        torch.cuda.synchronize(cuda)
        del block
    figures = meter.figures
    assert figures.sampled_mean_mib <= figures.sampled_p99_mib <= figures.sampled_peak_mib


def test_step_clock_reads_cuda_events_that_cover_the_queued_work(cuda):
    from ohlora_fixtures.measure.devices import StepClock

    a = torch.randn(4096, 4096, device=cuda)
    clock = StepClock(cuda)
    for repeats in (1, 8):
        for _ in range(repeats):
            a @ a
        clock.mark()
    short, long = clock.seconds()
    assert 0 < short < long  # eight matmuls take longer than one, though the host never waited


def test_first_token_is_timed_after_the_prefill_has_run_on_the_gpu(cuda):
    # a 2048-token prefill takes far longer than queueing it: a clock read before the device finished would be near 0
    from transformers import LlamaConfig, LlamaForCausalLM

    from ohlora_fixtures.measure.inference import FirstTokenClock

    config = LlamaConfig(vocab_size=256, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8)
    model = LlamaForCausalLM(config).to(cuda).eval()
    ids = torch.randint(0, 256, (1, 2048), device=cuda)
    with torch.no_grad():
        model.generate(input_ids=ids, max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
        torch.cuda.synchronize(cuda)
        clock = FirstTokenClock()
        started = time.perf_counter()
        model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=0,
                       streamer=clock)
        torch.cuda.synchronize(cuda)
        total = time.perf_counter() - started
    assert 0 < clock.at - started < total


def test_gpu_software_names_driver_and_cuda(cuda):
    from ohlora_fixtures.measure.provenance import gpu_software

    found = gpu_software(cuda)
    assert found["cuda_version"] == torch.version.cuda and found["gpu_driver"][:1].isdigit()
