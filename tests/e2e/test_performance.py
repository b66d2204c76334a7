"""Performance: figures against the hardware's limit, one model build per candidate, the CI gates, scale-out.

The tests that read a grid's output share the session's one tiny run (conftest.tiny_grid: two candidates at
two ranks); the gates and the scale-out run the tiny grid (conftest.TINY_RUN) themselves, as small as each
check allows.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import peft
import pytest
import torch
from pytest_benchmark.utils import parse_compare_fail
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

from ohlora_fixtures import report
from ohlora_fixtures.measure import hardware
from ohlora_fixtures.measure.devices import resolve_device
from ohlora_fixtures.measure.estimate import decode_bytes, finetune_flops
from ohlora_fixtures.measure.finetune import adapter_file_bytes
from ohlora_fixtures.measure.hardware import Peaks, datasheet, device_peaks
from ohlora_fixtures.measure.utilisation import kv_cache_bytes_per_token, matmul_weights
from ohlora_fixtures.records import results
from ohlora_fixtures.records.record import BenchmarkRecord
from ohlora_fixtures.session.scaleout import candidate_units
from tests.conftest import (
    REPO,
    SESSION_BENCHMARKS,
    SESSION_MODELS,
    SESSION_RANKS,
    SESSION_RUN,
    TINY_RUN,
    GridRun,
    run_grid_inprocess,
)

FIRST, SECOND = SESSION_MODELS
LOW, HIGH = SESSION_RANKS


def _grid_keys(records: list[BenchmarkRecord]) -> set[tuple]:
    return {(r.kind.value, r.candidate, r.rank) for r in records}


def tiny_lora_model(rank: int = 4) -> peft.PeftModel:
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    lora = peft.LoraConfig(
        r=rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    return peft.get_peft_model(LlamaForCausalLM(config), lora)


# --- formulas ------------------------------------------------------------------------------------


def test_matmul_weights_split_the_frozen_base_from_the_adapter():
    model = tiny_lora_model(rank=4)
    weights = matmul_weights(model)
    # Per layer: q 32x32, k and v 32x16 (2 KV heads of 8), o 32x32, gate and up 32x64, down 64x32; head 32x64.
    base = 2 * (32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64) + 32 * 64
    adapter = 2 * 4 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 3 * (32 + 64))
    assert (weights.frozen, weights.adapter) == (base, adapter)
    assert adapter == model.get_nb_trainable_parameters()[0]
    assert weights.bytes == (base + adapter) * 4


def test_adapter_file_grows_linearly_with_rank():
    """Each fine-tune record's adapter_bytes: the float32 A and B matrices grow with r, the file's header hardly."""
    models = {rank: tiny_lora_model(rank) for rank in (4, 8, 16)}
    sizes = {rank: adapter_file_bytes(model) for rank, model in models.items()}
    trainable = {rank: model.get_nb_trainable_parameters()[0] for rank, model in models.items()}
    assert sizes[8] - sizes[4] == pytest.approx((sizes[16] - sizes[4]) / 3, rel=0.02)
    assert sizes[8] - sizes[4] == pytest.approx(4 * (trainable[8] - trainable[4]), rel=0.02)


def test_lora_flops_formula_agrees_with_torchs_flop_counter():
    """4 x frozen + 6 x adapter per token, against the FLOPs torch counts for one training step.

    The counter sees the attention scores too, which the formula leaves out, and
    skips the input gradients of the first layer's base matmuls, which nothing
    below needs; on two layers of width 32 these still leave it within 15%.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_lora_model(rank=4)
    input_ids = torch.randint(0, 64, (2, 16))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=input_ids, labels=input_ids).loss.backward()
    estimate = finetune_flops(matmul_weights(model), tokens=input_ids.numel())
    assert counter.get_total_flops() == pytest.approx(estimate, rel=0.15)


def test_decode_reads_the_weights_and_a_growing_kv_cache_per_new_token():
    weights, per_token, prompt, new = 1000, 10, 7, 5
    by_step = sum(weights + per_token * (prompt + step) for step in range(new))
    assert decode_bytes(weights, per_token, prompt, new) == by_step
    assert decode_bytes(weights, per_token, prompt, 0) == 0


def test_kv_cache_per_token_follows_the_attention_shape():
    llama = AutoConfig.for_model(
        "llama", num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, hidden_size=2048
    )
    assert kv_cache_bytes_per_token(llama, torch.bfloat16) == 2 * 16 * 8 * 64 * 2
    neox = AutoConfig.for_model("gpt_neox", num_hidden_layers=24, num_attention_heads=16, hidden_size=2048)
    assert kv_cache_bytes_per_token(neox, torch.float32) == 2 * 24 * 16 * 128 * 4
    assert kv_cache_bytes_per_token(AutoConfig.for_model("rwkv"), torch.float32) == 0  # fixed-size state


# --- peaks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100.*PCIe"),
        ("NVIDIA H100 NVL", "H100.*NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA A100-SXM4-80GB", "A100.*80GB"),
        ("NVIDIA A100 80GB PCIe", "A100.*80GB.*PCIe"),
        ("NVIDIA L4", r"\bL4\b"),
        ("Tesla T4", r"\bT4\b"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA A10", r"\bA10\b"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("Tesla V100-PCIE-32GB", "V100.*PCIe"),
        ("Quadro M6000", "M6000"),
    ],
)
def test_datasheet_finds_each_listed_gpu_by_its_torch_name(name, pattern):
    assert datasheet(name).pattern == pattern


def test_unlisted_gpu_has_no_datasheet():
    assert datasheet("NVIDIA GeForce GTX 1080") is None


def test_listed_gpu_uses_the_datasheet_and_a_missing_dtype_is_calibrated(monkeypatch):
    monkeypatch.setattr(hardware, "describe", lambda device: "Tesla T4")
    monkeypatch.setattr(hardware, "calibrate_tflops", lambda device, dtype, sizes: 12.5)
    monkeypatch.setattr(hardware, "calibrate_gbps", lambda device, sizes: pytest.fail("T4 bandwidth is listed"))
    monkeypatch.setattr(hardware, "calibrate_overhead_us", lambda device, sizes: 9.0)
    monkeypatch.setattr(hardware, "calibrate_gemv_gbps", lambda device, dtype, sizes: 250.0)
    cuda = torch.device("cuda")
    # Only the short load probe is calibrated where the datasheet has the peaks (12.5: the fake's figure).
    listed = device_peaks(cuda, torch.float16)
    assert listed == Peaks("Tesla T4", "float16", 65.0, "datasheet", 320.0, "datasheet", 12.5, listed.calibrated,
                           9.0, 250.0)
    # A T4 has no bf16 tensor-core rate to look up.
    missing = device_peaks(cuda, torch.bfloat16)
    assert missing == Peaks("Tesla T4", "bfloat16", 12.5, "calibrated", 320.0, "datasheet", 12.5, missing.calibrated,
                            9.0, 250.0)


def test_cpu_peaks_are_calibrated_quickly():
    started = time.perf_counter()
    peaks = device_peaks(torch.device("cpu"), torch.float32)
    assert time.perf_counter() - started < 3
    assert (peaks.tflops_source, peaks.gbps_source) == ("calibrated", "calibrated")
    assert peaks.tflops > 0 and peaks.gbps > 0


# --- one build per candidate, figures in every record ------------------------------------------------


def test_each_base_model_is_built_once_per_session(tiny_grid: GridRun):
    saved = json.loads(tiny_grid.json.read_text())
    assert saved["ohlora"]["model_loads"] == {name: 1 for name in SESSION_MODELS}
    assert _grid_keys([BenchmarkRecord.from_json(b["extra_info"]) for b in saved["benchmarks"]]) == SESSION_BENCHMARKS


def test_every_record_is_set_against_the_calibrated_peaks(tiny_grid: GridRun):
    saved = json.loads(tiny_grid.json.read_text())
    assert saved["ohlora"]["peaks"]["tflops_source"] == saved["ohlora"]["peaks"]["gbps_source"] == "calibrated"
    records = list(results.read(tiny_grid.log))
    assert _grid_keys(records) == SESSION_BENCHMARKS
    for record in records:
        used = (record.finetune or record.inference).utilisation
        assert used.peak_source == "calibrated"
        assert used.utilisation_estimate.startswith("estimate")
        if record.finetune is not None:
            assert used.model_flops > 0 and used.mfu > 0
            assert used.achieved_tflops == pytest.approx(used.model_flops / record.seconds / 1e12, rel=1e-3)
        else:
            assert used.decode_bytes > 0 and used.bandwidth_utilisation > 0
            generate_seconds = record.inference.mean_seconds_per_prompt * record.inference.prompts
            assert used.achieved_gbps == pytest.approx(used.decode_bytes / generate_seconds / 1e9, rel=1e-3)
    flops = {r.rank: r.finetune.utilisation.model_flops for r in records if r.finetune and r.candidate == FIRST}
    assert flops[LOW] < flops[HIGH]  # same tokens, larger adapter


def test_every_record_carries_its_anatomy_adapter_size_and_provenance(tiny_grid: GridRun, tmp_path: Path):
    """The grid's own records (tiny stand-ins, 2 prompts, 2 steps): figures in the log, the JSON and the report."""
    records = list(results.read(tiny_grid.log))
    revisions = {r.candidate: r.weights_revision for r in records}
    assert all(re.fullmatch(r"config-sha256:[0-9a-f]{16}", revision) for revision in revisions.values())
    assert len(set(revisions.values())) == 2
    assert {r.weights_revision for r in records if r.candidate == FIRST} == {revisions[FIRST]}
    assert all(r.run.code_revision for r in records)
    for record in records:
        if record.inference is not None:
            f = record.inference
            assert 0 < f.first_token_median_s <= f.first_token_p90_s <= f.generate_max_s
            assert f.first_token_median_s < f.generate_median_s <= f.generate_p90_s <= f.generate_max_s
            assert 0 < f.decode_token_median_s <= f.decode_token_p90_s and f.decode_tokens_per_second > 0
        else:
            assert 0 < record.finetune.step_median_s <= record.finetune.step_p90_s < record.seconds
    sizes = {r.rank: r.finetune.adapter_bytes for r in records if r.finetune and r.candidate == FIRST}
    assert 0 < sizes[LOW] < sizes[HIGH]  # in proportion to the rank: test_adapter_file_grows_linearly_with_rank
    saved = json.loads(tiny_grid.json.read_text())
    extra = [b["extra_info"] for b in saved["benchmarks"]]
    assert all(e["weights_revision"] == revisions[e["candidate"]] for e in extra)
    assert all("first_token_p90_s" in e for e in extra if e["kind"] == "inference")

    out = tmp_path / "anatomy-report"
    assert report.main([str(tiny_grid.log), "--out", str(out)]) == 0
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    inference = next(r.inference for r in records if r.inference and r.candidate == FIRST)
    # The cell carries its marks after the figures (the stand-in's †, (busy) on a busy machine).
    row = f"| {FIRST} | {inference.first_token_median_s * 1000:.1f} ms / {inference.first_token_p90_s * 1000:.1f} ms "
    assert row in markdown
    assert f"{FIRST}: {revisions[FIRST]}" in markdown and records[0].run.code_revision in markdown
    columns = (out / "results.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert {
        "first_token_median_s",
        "decode_tokens_per_second",
        "step_p90_s",
        "adapter_bytes",
        "weights_revision",
        "run.code_revision",
        "sampled_p99_mib",
    } <= set(columns)


# --- the CI gates ----------------------------------------------------------------------------------------


def test_vram_budget_fails_a_benchmark_over_it_and_says_why(pytester, tmp_path):
    result = run_grid_inprocess(
        pytester, tmp_path, *TINY_RUN, "--ohlora-models", FIRST, "-k", "finetune", "--ohlora-vram-budget-mb", "1"
    )
    assert result.ret == 1, result.stdout.str()[-3000:]
    assert re.search(r"peak memory \d+ MiB \(cpu_tensor_peak\) exceeds --ohlora-vram-budget-mb 1", result.stdout.str())
    [record] = results.read(tmp_path / "ohlora" / "results.jsonl")
    assert record.ok and record.over_budget is True


def _baseline_scaled(storage: Path, factor: float, name: str) -> None:
    """A copy of run 0001 with every timing multiplied by `factor`, saved as the next run."""
    [machine] = storage.iterdir()
    [first] = machine.glob("0001_*.json")
    saved = json.loads(first.read_text())
    for bench in saved["benchmarks"]:
        for field in ("min", "max", "mean", "median"):
            bench["stats"][field] *= factor
    (machine / name).write_text(json.dumps(saved))


def test_compare_fail_passes_against_a_slower_baseline_and_fails_against_a_faster_one(
    tiny_grid: GridRun, pytester, tmp_path
):
    # The session's run as the baseline; one benchmark of it run again (the cheapest) is enough for the gate.
    directory = tiny_grid.copy_to(tmp_path / "run")
    _baseline_scaled(directory / "storage", 1000.0, "0002_slower.json")
    _baseline_scaled(directory / "storage", 0.001, "0003_faster.json")
    one = (*SESSION_RUN, "-k", f"test_inference and {FIRST}")

    improved = run_grid_inprocess(
        pytester, directory, *one, "--benchmark-compare=0002", "--benchmark-compare-fail=min:5%"
    )
    assert improved.ret == 0, improved.stdout.str()[-3000:] + improved.stderr.str()[-3000:]

    regressed = run_grid_inprocess(
        pytester, directory, *one, "--benchmark-compare=0003", "--benchmark-compare-fail=min:5%"
    )
    output = regressed.stdout.str() + regressed.stderr.str()
    assert regressed.ret != 0
    assert "Performance has regressed" in output
    assert f"test_inference[{FIRST}]" in output


def test_compare_fail_percentages_are_whole_numbers_and_spread_checks_need_rounds():
    assert parse_compare_fail("mean:0%").threshold == 0
    with pytest.raises(argparse.ArgumentTypeError):  # so --benchmark-compare-fail=mean:0.0001% is a usage error
        parse_compare_fail("mean:0.0001%")
    # Each benchmark is one round, so its stddev is 0 and any percentage of it is exceeded: always a failure.
    assert parse_compare_fail("stddev:1000%").fails({"stddev": 0.0}, {"stddev": 0.0})


def test_pytest_benchmark_compare_reads_two_saved_runs(tiny_grid: GridRun, tmp_path):
    cli = Path(sys.executable).parent / "pytest-benchmark"
    storage = tiny_grid.copy_to(tmp_path / "run") / "storage"
    _baseline_scaled(storage, 2.0, "0009_doubled.json")
    result = subprocess.run(
        [str(cli), "--storage", f"file://{storage}", "compare", "0001", "0009", "--group-by=name"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"test_finetune[{FIRST}-r{HIGH}]" in result.stdout and "0009_doubled" in result.stdout


# --- scale-out ----------------------------------------------------------------------------------------------


def test_two_xdist_workers_keep_each_candidate_together_and_merge_into_one_run(xdist_grid: GridRun):
    # Five benchmarks, the first candidate's three first: pytest-xdist's own scheduler would send each worker
    # two in a row, splitting that candidate; the plugin's must keep it on one worker.
    result = xdist_grid
    workers = defaultdict(set)
    for worker, ids in re.findall(r"\[(gw\d)\].* PASSED \S+\[(\S+)\]", result.stdout):
        workers[next(name for name in SESSION_MODELS if ids.startswith(name))].add(worker)
    assert set(workers) == set(SESSION_MODELS) and all(len(on) == 1 for on in workers.values()), result.stdout
    records = list(results.read(result.log))
    assert _grid_keys(records) == SESSION_BENCHMARKS - {("finetune", SECOND, LOW)}
    assert len({record.run.run_id for record in records}) == 1
    markdown = next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("report: "))
    assert all(name in Path(markdown).read_text(encoding="utf-8") for name in SESSION_MODELS)


@pytest.mark.parametrize(
    ("nodeid", "unit"),
    [
        ("b/test_finetune.py::test_finetune[polyglot-ko-1.3b-r16]", "polyglot-ko-1.3b"),
        ("b/test_inference.py::test_inference[koquality-polyglot-1.3b]", "koquality-polyglot-1.3b"),
        ("b/test_inference.py::test_inference[gemma-ko]", "gemma-ko"),
        ("b/test_finetune.py::test_finetune[gemma-ko-v01-r64]", "gemma-ko-v01"),
        ("scripts/overhead.py::test_finetune_overhead[3-gemma-ko]", "gemma-ko"),
        ("tests/test_x.py::test_other[1]", "tests/test_x.py::test_other[1]"),
    ],
)
def test_xdist_units_are_whole_candidates(nodeid, unit):
    names = ["polyglot-ko-1.3b", "koquality-polyglot-1.3b", "gemma-ko", "gemma-ko-v01"]
    assert candidate_units(names)(nodeid) == unit


@pytest.mark.parametrize(
    ("name", "worker", "expected"),
    [
        ("auto", 0, "cuda:0"),
        ("auto", 3, "cuda:1"),
        ("cuda", 2, "cuda:0"),
        ("cuda:1", 0, "cuda:1"),
        ("cpu", 1, "cpu"),
        ("auto", None, "cuda"),
    ],
)
def test_xdist_worker_is_pinned_to_one_gpu(monkeypatch, name, worker, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert str(resolve_device(name, worker)) == expected


# --- the overhead script --------------------------------------------------------------------------------------


def test_overhead_script_times_the_plugin_and_the_bare_loop(tmp_path):
    out = tmp_path / "overhead.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "overhead.py"),
            "harness",
            "--repeats",
            "1",
            "--out",
            str(out),
            *TINY_RUN,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for kind in ("finetune", "inference"):
        assert figures[kind]["repetitions"] == 1
        assert figures[kind]["ratio"]["median"] > 0 and figures[kind]["ratio_of_medians"] > 0
