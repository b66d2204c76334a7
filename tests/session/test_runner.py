"""The harness measures what it says: exact shapes, clean adapters, real peaks, new-token caps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ohlora_fixtures.inputs import registry
from ohlora_fixtures.inputs.dataset import QAPair, load_experiment
from ohlora_fixtures.inputs.options import DEFAULT_DATASET
from ohlora_fixtures.inputs.tokenizer import dataset_tokenizer
from ohlora_fixtures.measure.finetune import (
    FinetuneSettings,
    encode,
    eval_batches,
    eval_loss,
    fresh_adapter,
    has_adapter,
    step_batches,
    train,
)
from ohlora_fixtures.measure.inference import GenerationSettings, encode_prompts, generate_answers
from ohlora_fixtures.measure.memory import MemoryMeter
from ohlora_fixtures.measure.models import build_config, build_random, count_parameters
from ohlora_fixtures.measure.plan import plan_candidate
from ohlora_fixtures.records.figures import MIB
from tests.conftest import SESSION_MODELS, SESSION_RUN, GridRun, run_grid_inprocess

CPU = torch.device("cpu")
CANDIDATES = {candidate.name: candidate for candidate in registry.load_registry()}
EXACT = {name: c.params_exact for name, c in CANDIDATES.items() if c.params_exact is not None}


@pytest.fixture(scope="module")
def experiment():
    return load_experiment(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def tokenizer(experiment, tmp_path_factory):
    pairs = (*experiment.train, *experiment.valid, *experiment.prompts)
    texts = [CANDIDATES["llama1B"].prompt("")] + [p.question for p in pairs] + [p.answer for p in pairs]
    return dataset_tokenizer(texts, tmp_path_factory.mktemp("tokenizer"))


def tiny(name: str, tokenizer):
    return build_random(CANDIDATES[name], tokenizer, scale="tiny", seed=0, device=CPU, dtype=torch.float32)


def test_registry_holds_the_studys_eight_candidates_with_seven_exact_counts():
    assert len(CANDIDATES) == 8
    assert len(EXACT) == 7
    assert CANDIDATES["TinyKo-v5-a"].approximate


@pytest.mark.parametrize("name", sorted(EXACT))
def test_full_size_config_reproduces_the_exact_parameter_count(name):
    assert count_parameters(CANDIDATES[name], "full") == EXACT[name]


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_tiny_stand_in_keeps_the_architecture(name):
    candidate = CANDIDATES[name]
    full, small = build_config(candidate, "full"), build_config(candidate, "tiny", vocab_size=512)
    assert type(full) is type(small)
    assert small.tie_word_embeddings == full.tie_word_embeddings
    for ratio_key in ("num_attention_heads", "num_key_value_heads", "rotary_pct"):
        assert getattr(small, ratio_key, None) == getattr(full, ratio_key, None)
    assert small.num_hidden_layers == 2 and small.vocab_size == 512
    assert small.hidden_size <= max(8, full.hidden_size // 16)


def test_rank_32_trains_exactly_twice_rank_16s_parameters(tokenizer):
    base = tiny("gemma-2-2b-it", tokenizer)
    counts = {}
    for rank in (16, 32):
        with fresh_adapter(base.model, base.candidate, FinetuneSettings(rank=rank)) as model:
            counts[rank] = model.get_nb_trainable_parameters()[0]
    assert counts[32] == 2 * counts[16] > 0


def test_plan_matches_peft_on_full_size_and_doubles_with_rank():
    plan = plan_candidate(CANDIDATES["polyglot-ko-1.3b"], ranks=(16, 32))
    assert plan.total_params == EXACT["polyglot-ko-1.3b"]
    # query_key_value: 24 layers x r x (2048 in + 6144 out)
    assert plan.ranks[0].trainable_params == 24 * 16 * (2048 + 3 * 2048)
    assert plan.ranks[1].trainable_params == 2 * plan.ranks[0].trainable_params
    assert plan.weights_mib == pytest.approx(EXACT["polyglot-ko-1.3b"] * 2 / MIB)
    assert plan.ranks[1].finetune_peak_estimate_mib > plan.ranks[0].finetune_peak_estimate_mib > plan.weights_mib


def test_adapters_never_stack_and_training_leaves_the_base_unchanged(tokenizer, experiment):
    base = tiny("llama1B", tokenizer)
    before = {name: value.clone() for name, value in base.model.state_dict().items()}
    settings = FinetuneSettings(rank=16, epochs=1)
    batches = step_batches(encode(tokenizer, base.candidate, experiment.train), settings, tokenizer.pad_token_id, CPU)
    for rank in (16, 32):
        with fresh_adapter(base.model, base.candidate, FinetuneSettings(rank=rank)) as model:
            assert has_adapter(base.model)
            with pytest.raises(RuntimeError, match="refusing to stack"):
                with fresh_adapter(base.model, base.candidate, settings):
                    pass
            train(model, batches, 1e-2, CPU)
        assert not has_adapter(base.model)
    after = base.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_loss_falls_over_the_studys_50_steps(tokenizer, experiment):
    base = tiny("polyglot-ko-1.3b", tokenizer)
    settings = FinetuneSettings(rank=16)
    examples = encode(tokenizer, base.candidate, experiment.train)
    batches = step_batches(examples, settings, tokenizer.pad_token_id, CPU)
    assert len(examples) == 20 and len(batches) == 50
    seen = eval_batches(examples, 4, tokenizer.pad_token_id, CPU)
    with fresh_adapter(base.model, base.candidate, settings) as model:
        before = eval_loss(model, seen)
        losses = train(model, batches, settings.learning_rate, CPU).losses
        after = eval_loss(model, seen)
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    # random weights learn slowly at the study's lr, but they do learn the 20 rows
    assert after < before - 0.03


def test_loss_is_computed_on_answer_tokens_only(tokenizer):
    candidate = CANDIDATES["llama1B"]
    [example] = encode(tokenizer, candidate, [QAPair("너는 누구야?", "난 하늘이야!", 2)])
    prompt_length = len(tokenizer(candidate.prompt("너는 누구야?")).input_ids)
    assert set(example.labels[:prompt_length]) == {-100}
    assert example.labels[prompt_length:] == example.input_ids[prompt_length:]
    assert example.labels[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("greedy", [True, False])
def test_max_new_tokens_counts_new_tokens_not_the_prompt(tokenizer, experiment, greedy):
    base = tiny("FinguAI-Chat-v1", tokenizer)
    # A prompt longer than the cap: the study's max_length bug would leave no room for an answer.
    long_question = " ".join(pair.question for pair in experiment.train[:12])
    prompts = encode_prompts(tokenizer, base.candidate, [QAPair(long_question, None, 2)], CPU)
    assert prompts[0].input_ids.shape[1] > 20
    settings = GenerationSettings(max_new_tokens=20, greedy=greedy, seed=1)
    [answer] = generate_answers(base.model, tokenizer, prompts, settings, CPU)
    assert 0 < answer.new_tokens <= 20
    assert answer.prompt_tokens == prompts[0].input_ids.shape[1]


def test_sampling_with_a_fixed_seed_repeats(tokenizer, experiment):
    base = tiny("TinyKo-v5-a", tokenizer)
    prompts = encode_prompts(tokenizer, base.candidate, experiment.prompts[:2], CPU)
    settings = GenerationSettings(max_new_tokens=8, greedy=False, seed=3)
    first = [a.answer for a in generate_answers(base.model, tokenizer, prompts, settings, CPU)]
    second = [a.answer for a in generate_answers(base.model, tokenizer, prompts, settings, CPU)]
    assert first == second


def test_measured_peak_rises_by_what_was_allocated():
    size_mib = 256
    with MemoryMeter(CPU) as meter:
        block = torch.ones(size_mib * MIB // 4, dtype=torch.float32)  # ones, so every page is touched
        del block
    figures = meter.figures
    assert figures.peak_increase_mib == pytest.approx(size_mib, rel=0.15)
    # freed before the end: the study's "allocated after the run" would have missed it
    assert figures.after_mib < figures.peak_mib - size_mib * 0.8


def test_each_meter_sees_only_its_own_peak():
    with MemoryMeter(CPU):
        block = torch.ones(128 * MIB // 4)
        del block
    with MemoryMeter(CPU) as quiet:
        pass
    assert quiet.figures.peak_increase_mib < 32


def test_dataset_tokenizer_is_deterministic(tmp_path):
    texts = ["안녕 나는 하늘이야", "별 보러 가자 ✨"]
    first = dataset_tokenizer(texts, tmp_path / "a")
    second = dataset_tokenizer(list(reversed(texts)), tmp_path / "b")
    assert first.get_vocab() == second.get_vocab()
    assert first("별 보러 가자").input_ids == second("별 보러 가자").input_ids


def test_k_selects_exactly_the_two_gemma_candidates(bench_pytester):
    result = bench_pytester.runpytest_inprocess("--collect-only", "-q", "-k", "gemma")
    ids = [line for line in result.stdout.lines if "::" in line]
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert len(ids) == 2 * 3 + 2
    assert all("gemma-2-2b-it" in line or "gemma-ko-v01" in line for line in ids)


def test_benchmarks_of_one_candidate_run_together(bench_pytester):
    result = bench_pytester.runpytest_inprocess("--collect-only", "-q", "--ohlora-models", "llama1B,TinyKo-v5-a")
    ids = [line.split("[")[1] for line in result.stdout.lines if "::" in line]
    assert ids == [
        "llama1B-r16]", "llama1B-r32]", "llama1B-r64]", "llama1B]",
        "TinyKo-v5-a-r16]", "TinyKo-v5-a-r32]", "TinyKo-v5-a-r64]", "TinyKo-v5-a]",
    ]


def test_saved_json_holds_every_figure(tiny_grid: GridRun):
    saved = json.loads(tiny_grid.json.read_text())
    finetune, inference = (next(b for b in saved["benchmarks"] if b["name"] == name)
                           for name in ("test_finetune[TinyKo-v5-a-r16]", "test_inference[TinyKo-v5-a]"))
    for key in (
        "peak_mib", "memory_metric", "after_mib", "losses", "final_loss", "eval_loss", "trainable_params",
        "total_params", "tokens", "tokens_per_second", "run",
    ):
        assert finetune["extra_info"][key] is not None, key
    assert finetune["extra_info"]["memory_metric"] == "cpu_tensor_peak"
    assert len(finetune["extra_info"]["losses"]) == finetune["extra_info"]["steps"] == 2
    for key in ("mean_seconds_per_prompt", "new_tokens", "peak_mib", "quality", "answers_csv"):
        assert inference["extra_info"][key] is not None, key
    assert inference["extra_info"]["max_new_tokens_seen"] <= 4
    run = saved["ohlora"]
    assert (run["weights"], run["scale"], run["dtype"], run["device"]) == ("random", "tiny", "float32", "cpu")
    assert set(run["versions"]) == {"torch", "transformers", "peft"}
    assert run["model_loads"] == {name: 1 for name in SESSION_MODELS}
    answers = Path(inference["extra_info"]["answers_csv"])
    assert answers.read_text(encoding="utf-8-sig").splitlines()[0].split(",")[-1] == "grade"
    _check_memory_belongs_to_its_benchmark(finetune["extra_info"], inference["extra_info"], run)


def _check_memory_belongs_to_its_benchmark(finetune: dict, inference: dict, run: dict) -> None:
    # Tiny models: the headline counts tensors, so it is far below the ~440 MiB of Python and torch.
    for figures in (finetune, inference):
        assert figures["memory_metric"] == "cpu_tensor_peak"
        assert 0 < figures["start_mib"] < figures["peak_mib"] < 50
        assert figures["peak_mib"] == pytest.approx(figures["start_mib"] + figures["peak_increase_mib"], abs=0.02)
        # The timed round's resident figures stay beside it.
        assert figures["trimmed"] is True
        assert figures["absolute_peak_mib"] == pytest.approx(
            figures["rss_peak_mib"] + figures["baseline_mib"], abs=0.02
        )
        assert figures["baseline_mib"] == run["runtime_baseline_mib"] > 100
        # Each reset of the kernel's high-water mark keeps the lifetime peak it would have hidden.
        # (records hold 0.01 MiB, the session figure full precision)
        assert run["lifetime_peak_mib"] + 0.01 >= figures["lifetime_peak_mib"] >= figures["absolute_peak_mib"]
    # The fine-tune and the inference are handed the same base; the fine-tune's adapter is on top of it.
    assert finetune["start_mib"] > inference["start_mib"]
    # A fine-tune's optimizer state, gradients and activations show in its increase.
    assert finetune["peak_increase_mib"] > 0


def test_memory_headline_does_not_depend_on_what_ran_before(tiny_grid: GridRun, pytester, tmp_path):
    # The session's run, against one more session, in this test process (after whatever tests ran in it), that
    # runs two of its benchmarks after other things: the first candidate's r16 fine-tune first of all (in the
    # session, after its r8), and TinyKo's inference after that other model's fine-tune (in the session, after
    # TinyKo's own).
    other = tmp_path / "other.json"
    picked = {"finetune": "test_finetune[FinguAI-Chat-v1-r16]", "inference": "test_inference[TinyKo-v5-a]"}
    run = run_grid_inprocess(
        pytester, tmp_path, *SESSION_RUN, "-k", "FinguAI-Chat-v1-r16 or (TinyKo-v5-a and inference)",
        f"--benchmark-json={other}",
    )
    assert run.ret == 0, run.stdout.str()[-2000:] + run.stderr.str()[-2000:]

    def figures(path: Path, name: str) -> dict:
        return next(b["extra_info"] for b in json.loads(path.read_text())["benchmarks"] if b["name"] == name)

    assert [b["name"] for b in json.loads(other.read_text())["benchmarks"]] == list(picked.values())
    for kind, name in picked.items():
        after, first = figures(tiny_grid.json, name), figures(other, name)
        # Tensors, not the process: inference after a fine-tune reads what it reads alone (issue 10 asks
        # within 5 %; the resident set read 6 % apart at full size, 11 vs 16 MiB at this scale), and a
        # fine-tune reads the same in another process (its resident increase moved by a third).
        assert after["peak_mib"] == pytest.approx(first["peak_mib"], rel=0.01), (kind, after, first)
        assert after["peak_increase_mib"] == pytest.approx(first["peak_increase_mib"], rel=0.01), (kind, after, first)
