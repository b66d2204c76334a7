"""The full-size plan: widths from the dataset's own batches, and peaks that meet measured ones."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs import gpus, registry
from ohlora_fixtures.inputs.dataset import ExperimentData, QAPair
from ohlora_fixtures.measure import gpu_fit, hardware, plan
from ohlora_fixtures.measure.finetune import IGNORE_INDEX, Example, FinetuneSettings
from ohlora_fixtures.records.figures import MIB
from ohlora_fixtures.report.reference import load_study

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = {candidate.name: candidate for candidate in registry.load_registry()}


class WordTokenizer:
    """One token per space-separated word, plus an end token: lengths anyone can count."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> SimpleNamespace:
        return SimpleNamespace(input_ids=[1] * len(text.split()))


def _examples(*lengths: int) -> list[Example]:
    return [Example(tuple([1] * n), tuple([IGNORE_INDEX] * n)) for n in lengths]


def test_one_batch_is_as_wide_as_its_longest_row():
    widths = plan.batch_widths(_examples(2, 4, 10, 6, 8), FinetuneSettings(rank=1, batch_size=5, epochs=2))
    assert widths == [10, 10]


def test_every_step_has_a_width_of_one_of_its_rows_and_the_widest_is_the_longest_row():
    widths = plan.batch_widths(_examples(3, 3, 9, 9, 5), FinetuneSettings(rank=1, batch_size=2, epochs=4))
    assert len(widths) == 4 * 3  # 5 rows in batches of 2: three steps an epoch
    assert set(widths) <= {3, 5, 9} and max(widths) == 9
    # pairs of the two 9s or of a 9 with a shorter row: a 9 lands in at least one batch of each epoch
    assert all(9 in widths[epoch * 3:(epoch + 1) * 3] for epoch in range(4))


def test_dataset_widths_count_the_prompt_template_the_answer_and_the_end_token(monkeypatch):
    monkeypatch.setattr(plan, "own_tokenizer", lambda candidate: None)
    candidate = CANDIDATES["TinyKo-v5-a"]
    template = len(candidate.prompt("").split())
    train = (
        QAPair("one two", "a b c", 2),  # 2 + 3 words
        QAPair("one", "a", 3),  # 1 + 1
        QAPair("one two three four", "a b c d e f", 4),  # 4 + 6: the longest row
        QAPair("no answer here at all and longer still", None, 5),  # left out, as fine-tuning leaves it out
    )
    experiment = ExperimentData(Path("rows.csv"), "default", train, (), ())
    widths = plan.dataset_widths(
        candidate, experiment, FinetuneSettings(rank=1, batch_size=4, epochs=1), WordTokenizer()
    )
    assert widths.widest == template + 4 + 6 + 1
    assert widths.batches == 1 and widths.mean == widths.widest
    assert widths.source == "rows.csv, dataset tokenizer"


def test_a_wider_batch_plans_more_activations_and_the_peak_adds_up():
    candidate = CANDIDATES["TinyKo-v5-a"]
    narrow = plan.plan_candidate(candidate, (16,), "float32", 4, plan.fixed_widths(20))
    wide = plan.plan_candidate(candidate, (16,), "float32", 4, plan.fixed_widths(40))
    assert wide.ranks[0].activations_mib > 2 * narrow.ranks[0].activations_mib * 0.99
    rank = narrow.ranks[0]
    adapter_weights = rank.trainable_params * plan.ADAPTER_BYTES / MIB
    assert rank.finetune_increase_estimate_mib == pytest.approx(3 * adapter_weights + rank.activations_mib)
    assert rank.finetune_peak_estimate_mib == pytest.approx(
        narrow.weights_mib + adapter_weights + rank.finetune_increase_estimate_mib
    )


def test_a_quantized_base_holds_its_linear_weights_in_fewer_bytes_and_dequantizes_one_layer():
    from ohlora_fixtures.measure.quantized_weights import int8_bytes, nf4_bytes

    candidate = CANDIDATES["llama1B"]
    widths = plan.fixed_widths(32)
    full = plan.plan_candidate(candidate, (16,), "bfloat16", 2, widths)
    eight, four = (
        plan.plan_candidate(candidate, (16,), "bfloat16", 2, widths, quantization=q) for q in ("8bit", "4bit")
    )
    assert full.quantization == "none" and full.label == "llama1B" and four.label == "llama1B 4bit"
    assert full.weights_mib > eight.weights_mib > four.weights_mib
    # NF4: half a byte a weight and a float32 absmax per 64; double quantization a byte per 64 and a scale per
    # 256 blocks; LLM.int8: a byte a weight and a float32 scale per row.
    assert nf4_bytes(64 * 256) == 64 * 128 + 256 * 4
    assert nf4_bytes(64 * 256, double_quant=True) == 64 * 128 + 256 + 4 + 4
    assert int8_bytes(10, 20) == 200 + 40
    # Every peak holds the largest quantized layer dequantized (llama1B's MLP: 2048 x 8192 in bf16).
    buffer = 2048 * 8192 * 2 / MIB
    assert four.inference_peak_estimate_mib - four.weights_mib == pytest.approx(
        full.inference_peak_estimate_mib - full.weights_mib + buffer
    )
    assert four.ranks[0].activations_mib == pytest.approx(full.ranks[0].activations_mib + buffer)
    assert plan.CandidatePlan.from_dict(four.as_dict()) == four


def test_plan_command_reads_widths_from_the_dataset_unless_seq_len_overrides(capsys):
    from ohlora_fixtures.__main__ import main

    assert main(["plan", "--models", "TinyKo-v5-a", "--ranks", "16", "--json"]) == 0
    from_data = json.loads(capsys.readouterr().out)["plans"][0]
    assert from_data["width_source"].endswith("tokenizer") and from_data["seq_len"] >= from_data["mean_seq_len"] > 0
    assert main(["plan", "--models", "TinyKo-v5-a", "--ranks", "16", "--json", "--seq-len", "333"]) == 0
    given = json.loads(capsys.readouterr().out)["plans"][0]
    assert (given["seq_len"], given["width_source"]) == (333, "--seq-len")


@pytest.mark.slow
def test_full_size_finguai_plan_meets_the_measured_cpu_peak_within_15_percent():
    """FinguAI-Chat-v1 at full size, float32, r16, one epoch, on this CPU (about 2 min, ~3 GiB)."""
    comparison = _calibrate_script().compare("FinguAI-Chat-v1", rank=16, epochs=1)
    print(comparison)
    assert abs(comparison.increase_error) <= 0.15, comparison
    assert abs(comparison.peak_error) <= 0.15, comparison


def _calibrate_script():
    spec = importlib.util.spec_from_file_location("calibrate_plan", REPO / "scripts" / "calibrate_plan.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses look their module up there
    spec.loader.exec_module(script)
    return script


# --- Named GPUs (data/gpus.toml) ---------------------------------------------------------------------------------

TABLE = gpus.load_gpus()


def test_the_gpu_table_has_the_common_cards_and_says_which_run_bf16_natively():
    assert {"T4", "L4", "A10G", "RTX-3090", "RTX-4090", "A100-40GB", "A100-80GB", "H100", "M6000"} <= set(TABLE.names)
    t4, a100, m6000 = TABLE.select(["t4", "A100-80GB", "Quadro-M6000"])
    assert (t4.memory_mib, t4.dtype, a100.memory_mib, a100.dtype, m6000.memory_mib) == (
        16384,
        "float16",
        81920,
        "bfloat16",
        12288,
    )
    assert "no native bf16" in t4.dtype_reason and m6000.fp16_tflops is None
    assert all(gpu.source for gpu in TABLE.gpus)


def test_each_card_is_found_by_its_own_label_and_no_other():
    # The driver patterns must not overlap: a measured run takes the figures of exactly one card.
    for gpu in TABLE.gpus:
        assert TABLE.for_device(gpu.label) is gpu, gpu.label
        assert hardware.datasheet(gpu.label) == gpu, gpu.label


def test_an_unknown_gpu_is_one_usage_line_listing_the_known_names(capsys):
    from ohlora_fixtures.__main__ import main

    with pytest.raises(UsageError, match=r"--gpu: unknown GPU 'X100'; known: T4, L4"):
        TABLE.select(["T4", "X100"])
    assert main(["plan", "--models", "TinyKo-v5-a", "--gpu", "T4,X100"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "A100-80GB" in error[0] and "M6000" in error[0]


GPT2_WITH_PAD = """
[[candidate]]
name = "gpt2-pad"
hub_id = "openai-community/gpt2"
params_label = "0.1 B"
leaderboard_average = 1.0
license = "mit"
korean = "none"
model_type = "gpt2"
architecture = "GPT2LMHeadModel"
target_modules = ["c_attn"]
[candidate.config]
n_layer = 2
n_embd = 64
n_head = 2
vocab_size = 512
pad_token_id = 0
"""


def test_a_gpt2_whose_config_names_a_pad_token_is_planned_on_meta(tmp_path: Path):
    # transformers' padding check read a meta token (Tensor.item) and failed the whole plan
    (tmp_path / "gpt2.toml").write_text(GPT2_WITH_PAD, encoding="utf-8")
    candidate = registry.load_registry(tmp_path / "gpt2.toml")[0]
    planned = plan.plan_candidate(candidate, (16,), "bfloat16", 2, plan.fixed_widths(8), 4)
    assert planned.total_params > 0 and planned.ranks[0].trainable_params > 0


def test_a_candidate_the_meta_pass_cannot_plan_is_one_line_and_the_others_are_planned(capsys, monkeypatch):
    from ohlora_fixtures.__main__ import main
    from ohlora_fixtures.measure import plan

    real = plan.plan_candidate

    def failing(candidate, *args, **kwargs):
        if candidate.name == "TinyKo-v5-a":
            raise RuntimeError("Tensor.item() cannot be called on meta tensors\nmore detail")
        return real(candidate, *args, **kwargs)

    monkeypatch.setattr(plan, "plan_candidate", failing)
    assert main(["plan", "--models", "TinyKo-v5-a,FinguAI-Chat-v1", "--seq-len", "8", "--gpu", "T4"]) == 1
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        "TinyKo-v5-a: not planned, the full-size meta pass failed (RuntimeError: Tensor.item() cannot be called "
        "on meta tensors)"
    ]
    assert "FinguAI-Chat-v1" in out and "TinyKo-v5-a" not in out


@pytest.mark.parametrize("value", ["", " ", "T4,"])
def test_an_empty_gpu_name_is_refused_by_plan_as_by_report(capsys, value: str):
    from ohlora_fixtures.__main__ import main

    assert main(["plan", "--models", "TinyKo-v5-a", "--gpu", value]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: --gpu: unknown GPU ''; known: T4")


def test_a_card_holds_the_tensors_plus_context_and_workspaces_and_the_largest_batch_is_the_last_that_fits():
    candidate = CANDIDATES["llama1B"]
    run = plan.plan_candidate(candidate, (16,), "bfloat16", 4, plan.fixed_widths(64))
    rank = run.ranks[0]
    t4, h100 = TABLE.select(["T4", "H100"])
    fit = gpu_fit.finetune_fit(run, rank, t4, TABLE)
    assert fit.workspace_mib == pytest.approx(2 * 8.125) and h100.workspace_mib(2) == pytest.approx(64)
    assert fit.total_mib == pytest.approx(rank.finetune_peak_estimate_mib + TABLE.cuda_context_mib + fit.workspace_mib)
    largest = fit.max_batch_size
    assert fit.fits and largest > 4
    at_largest = plan.plan_candidate(candidate, (16,), "bfloat16", largest, plan.fixed_widths(64))
    one_more = plan.plan_candidate(candidate, (16,), "bfloat16", largest + 1, plan.fixed_widths(64))
    assert gpu_fit.finetune_fit(at_largest, at_largest.ranks[0], t4, TABLE).fits
    assert not gpu_fit.finetune_fit(one_more, one_more.ranks[0], t4, TABLE).fits
    assert gpu_fit.finetune_fit(one_more, one_more.ranks[0], t4, TABLE).max_batch_size == largest
    with pytest.raises(ValueError, match="2-byte"):
        gpu_fit.finetune_fit(
            plan.plan_candidate(candidate, (16,), "float32", 4, plan.fixed_widths(64)), rank, t4, TABLE
        )


def test_plan_json_gives_each_rank_its_after_run_figure_and_each_card_fits_and_max_batch_size(capsys):
    from ohlora_fixtures.__main__ import main

    assert (
        main(
            [
                "plan",
                "--models",
                "gemma-2-2b-it",
                "--ranks",
                "16,64",
                "--seq-len",
                "1000",
                "--json",
                "--gpu",
                "M6000,A100-80GB",
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    (plain,) = json.loads(capsys.readouterr().out)["plans"]
    assert plain["dtype"] == "float32"
    for rank in plain["ranks"]:
        assert rank["finetune_after_mib"] < rank["finetune_peak_estimate_mib"]
        m6000, a100 = rank["gpus"]["M6000"], rank["gpus"]["A100-80GB"]
        # Cards run at 2 bytes a weight, whatever --dtype the table was planned at.
        assert m6000["dtype"] == "float16" and a100["dtype"] == "bfloat16"
        assert m6000["tensors_mib"] < rank["finetune_peak_estimate_mib"]
        assert (m6000["fits"], a100["fits"]) == (False, True)
        assert 0 <= m6000["max_batch_size"] < 4 <= a100["max_batch_size"]
    assert plain["inference_gpus"]["M6000"]["fits"] is True


def test_plan_json_gives_each_card_and_rank_its_time_estimates(capsys):
    from ohlora_fixtures.__main__ import main

    assert main(["plan", "--models", "TinyKo-v5-a", "--ranks", "16,64", "--seq-len", "64", "--train-rows", "20",
                 "--json", "--gpu", "T4,H100"]) == 0
    (plain,) = json.loads(capsys.readouterr().out)["plans"]
    assert "step_ops" not in plain["ranks"][0] and "decode_ops" not in plain  # the model's inputs, not figures
    for rank in plain["ranks"]:
        t4, h100 = rank["gpus"]["T4"], rank["gpus"]["H100"]
        for card in (t4, h100):
            assert card["seconds_per_step_estimate"] > 0 and card["seconds_per_answer_estimate"] > 0
            # 20 rows, 10 epochs (the default), batch 4: 50 steps.
            assert card["finetune_seconds_estimate"] == pytest.approx(50 * card["seconds_per_step_estimate"])
        assert t4["seconds_per_step_estimate"] > h100["seconds_per_step_estimate"]
    r16, r64 = (rank["gpus"]["T4"]["seconds_per_step_estimate"] for rank in plain["ranks"])
    assert r64 > r16  # a wider adapter is more work


def test_the_plans_after_run_figure_meets_the_studys_t4_cells_within_3_percent():
    """The study's "FT memory" was memory_allocated() after training on a T4 (bf16) and its inference
    memory the weights alone: weights, adapter and AdamW's moments plus torch's two cuBLAS workspaces meet
    all 21 fine-tuning cells, the weights all 7 inference cells."""
    study = load_study()
    t4 = TABLE.select(["T4"])[0]
    errors = {}
    for name, row in study.rows.items():
        run = plan.plan_candidate(CANDIDATES[name], study.ranks, "bfloat16")
        for rank, measured in zip(run.ranks, row["finetune_memory_mib"]):
            errors[name, rank.rank] = gpu_fit.finetune_fit(run, rank, t4, TABLE).after_allocated_mib / measured - 1
        errors[name, "inference"] = run.weights_mib / row["inference_memory_mib"] - 1
    assert len(errors) == 28
    assert max(abs(error) for error in errors.values()) <= 0.03, errors


# --- Gradient checkpointing ----------------------------------------------------------------------------------------

import dataclasses  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from ohlora_fixtures.measure.finetune import fresh_adapter, train  # noqa: E402
from ohlora_fixtures.measure.memory import TensorPeakMeter  # noqa: E402
from ohlora_fixtures.measure.models import build_config  # noqa: E402


def _full_shaped(name: str, divisor: int, layers: int, vocab: int = 2000):
    """The candidate with its widths divided by `divisor` (ratios kept: MLP to hidden, heads to width), fewer
    layers and a small vocabulary: the full model's shape at a size a test can train on the CPU."""
    candidate = CANDIDATES[name]
    config = dict(candidate.config, num_hidden_layers=layers, vocab_size=vocab)
    for key in ("hidden_size", "intermediate_size", "attention_hidden_size"):
        if key in config:
            config[key] //= divisor
    return dataclasses.replace(candidate, config=config)


def _measured_increase(candidate, settings: FinetuneSettings, seq_len: int) -> tuple[float, list[float]]:
    """The tensor peak above the adapted model over two float32 CPU steps on random tokens, and the losses."""
    torch.manual_seed(0)
    config = build_config(candidate)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    ids = torch.randint(0, config.vocab_size, (settings.batch_size, seq_len))
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    with fresh_adapter(model, candidate, settings) as adapted:
        meter = TensorPeakMeter()
        with meter.measuring(adapted):
            trained = train(adapted, [batch, batch], 2e-4, torch.device("cpu"))
    return meter.peak.peak_increase_mib, trained.losses


def test_gradient_checkpointing_trains_the_same_in_less_memory_and_the_plan_estimates_both_ways():
    """llama1B's shape (widths / 8, 4 layers), float32 on this CPU: the same losses, a lower tensor peak, and
    the plan's increase with checkpointing meets the measured one (never under it by more than 2 %)."""
    candidate, seq_len = _full_shaped("llama1B", 8, 4), 64
    plain, plain_losses = _measured_increase(candidate, FinetuneSettings(rank=16), seq_len)
    checkpointed, losses = _measured_increase(
        candidate, FinetuneSettings(rank=16, gradient_checkpointing=True), seq_len
    )
    assert losses == pytest.approx(plain_losses, rel=1e-5)
    assert checkpointed < 0.6 * plain
    rank = plan.plan_candidate(candidate, (16,), "float32", 4, plan.fixed_widths(seq_len)).ranks[0]
    planned = rank.finetune_increase_estimate_mib - rank.activations_mib + rank.checkpointed_activations_mib
    assert -0.02 <= planned / checkpointed - 1 <= 0.15, (planned, checkpointed)


def test_a_cards_time_is_the_time_models_at_the_cards_rates_in_its_dtype():
    from ohlora_fixtures.measure import step_time

    run = plan.plan_candidate(CANDIDATES["llama1B"], (16,), "bfloat16", 4, plan.fixed_widths(64, rows=20, epochs=10))
    assert run.train_tokens == 64 * 20 * 10 and run.mean_prompt_tokens == 64 and run.steps == 50
    t4, a100, m6000 = TABLE.select(["T4", "A100-80GB", "M6000"])
    assert (t4.tflops, a100.tflops, m6000.tflops) == (65, 312, 7.0)  # T4: fp16's rate, M6000: fp32's
    rank = run.ranks[0]
    seconds = {}
    for gpu in (t4, a100, m6000):
        rates = step_time.gpu_rates(gpu, TABLE)
        fit = gpu_fit.finetune_fit(run, rank, gpu, TABLE)
        expected = step_time.finetune_seconds(run, rank, rates)
        assert fit.seconds_estimate == expected == pytest.approx(50 * fit.seconds_per_step_estimate)
        answer = gpu_fit.inference_fit(run, gpu, TABLE).seconds_estimate
        assert answer == step_time.answer_seconds(run, rates)
        seconds[gpu.name] = fit.seconds_estimate
    assert seconds["A100-80GB"] < seconds["T4"] < seconds["M6000"]
    unknown = plan.plan_candidate(CANDIDATES["llama1B"], (16,), "bfloat16", 4, plan.fixed_widths(64))
    assert gpu_fit.finetune_fit(unknown, unknown.ranks[0], t4, TABLE).seconds_estimate is None


def test_the_option_reaches_fine_tuning_and_checkpointing_lives_and_ends_with_the_adapter():
    from ohlora_fixtures.inputs.options import PYTEST, parse

    assert parse({"gradient_checkpointing": True}, PYTEST).gradient_checkpointing is True
    assert parse({}, PYTEST).gradient_checkpointing is False
    candidate = CANDIDATES["llama1B"]
    base = AutoModelForCausalLM.from_config(build_config(candidate, "tiny", vocab_size=64))
    with fresh_adapter(base, candidate, FinetuneSettings(rank=4, gradient_checkpointing=True)):
        assert base.model.gradient_checkpointing
    assert not base.model.gradient_checkpointing
    with fresh_adapter(base, candidate, FinetuneSettings(rank=4)):
        assert not base.model.gradient_checkpointing


# One candidate per architecture family, as the registry adapts it: llama, qwen2, gemma and gemma2 with gated
# MLPs and LoRA on every projection; GPT-NeoX with LoRA on query_key_value alone; RWKV's time and channel mixing.
FAMILIES = ("llama1B", "FinguAI-Chat-v1", "gemma-2-2b-it", "gemma-ko-v01", "polyglot-ko-1.3b", "KoAlpaca-KoRWKV-1.5B")


@pytest.mark.parametrize("name", FAMILIES)
def test_each_familys_planned_increase_meets_its_measured_tensor_peak(name: str) -> None:
    """The family's shape (widths / 8, 2 layers, a small vocabulary), float32 on this CPU, the study's batch:
    the plan's increase (counted from what autograd saves, nothing fitted) is never under the measured one by
    more than 2 % and over it by at most 15 %."""
    candidate, seq_len = _full_shaped(name, 8, 2), 24
    measured, _ = _measured_increase(candidate, FinetuneSettings(rank=16), seq_len)
    planned = plan.plan_candidate(candidate, (16,), "float32", 4, plan.fixed_widths(seq_len)).ranks[0]
    assert -0.02 <= planned.finetune_increase_estimate_mib / measured - 1 <= 0.15, (
        planned.finetune_increase_estimate_mib, measured)



# One candidate of each family in the registry (the others share a family's layers).
FAMILIES = (
    "gemma-2-2b-it", "gemma-ko-v01", "polyglot-ko-1.3b", "KoAlpaca-KoRWKV-1.5B", "FinguAI-Chat-v1", "TinyKo-v5-a",
)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_adapter_counted_on_one_and_two_layers_is_the_full_models_own(name: str) -> None:
    from ohlora_fixtures.measure.models import meta_model

    candidate = registry.select(registry.load_registry(), [name])[0]
    rank1 = FinetuneSettings(rank=1)
    with torch.device("meta"), fresh_adapter(meta_model(candidate, "full"), candidate, rank1) as full:
        whole = plan.adapter_shape(full)
    assert plan.rank1_counts(candidate, 1, 8, "float32")[0] == whole


def test_a_card_whose_driver_pattern_is_not_a_regular_expression_is_refused_naming_it(tmp_path):
    bad = tmp_path / "gpus.toml"
    bad.write_text(
        '[[gpu]]\nname = "X"\nlabel = "X card"\ndriver = "X(("\nmemory_gb = 16\ncompute_capability = "8.0"\n'
        'bf16_native = false\nfp32_tflops = 1.0\ngbps = 100\nsource = "test"\n',
        encoding="utf-8",
    )
    with pytest.raises(UsageError, match=r"gpus\.toml \[\[gpu\]\] #1: 'driver' must be a non-empty regular"):
        gpus.load_gpus(bad)
