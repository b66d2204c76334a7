"""Latency anatomy, step spread, sampled memory and adapter size: each figure measured on tiny stand-ins."""

from __future__ import annotations

import time

import numpy as np
import peft
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ohlora_fixtures.inputs import registry
from ohlora_fixtures.inputs.dataset import load_experiment
from ohlora_fixtures.inputs.options import DEFAULT_DATASET
from ohlora_fixtures.inputs.tokenizer import dataset_tokenizer
from ohlora_fixtures.measure import memory
from ohlora_fixtures.measure.devices import StepClock
from ohlora_fixtures.measure.finetune import (
    FinetuneSettings,
    adapter_file_bytes,
    encode,
    fresh_adapter,
    step_batches,
    train,
)
from ohlora_fixtures.measure.inference import GenerationSettings, encode_prompts, generate_answers, latency_figures
from ohlora_fixtures.measure.memory import MemoryMeter
from ohlora_fixtures.measure.models import build_random
from ohlora_fixtures.records.percentiles import median, percentile

CPU = torch.device("cpu")
LLAMA = next(c for c in registry.load_registry() if c.name == "llama1B")


@pytest.fixture(scope="module")
def experiment():
    return load_experiment(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def base(experiment, tmp_path_factory):
    pairs = (*experiment.train, *experiment.valid, *experiment.prompts)
    texts = [LLAMA.prompt("")] + [p.question for p in pairs] + [p.answer or "" for p in pairs]
    tokenizer = dataset_tokenizer(texts, tmp_path_factory.mktemp("tokenizer"))
    return build_random(LLAMA, tokenizer, scale="tiny", seed=0, device=CPU, dtype=torch.float32)


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_interpolates_as_numpy_does(q):
    values = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 1.5]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_one_value_is_that_value_and_of_none_is_an_error():
    assert median([2.5]) == percentile([2.5], 90) == 2.5
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_prefill_is_timed_inside_each_generate_call_and_below_its_total(base, experiment):
    prompts = encode_prompts(base.tokenizer, base.candidate, experiment.prompts[:6], CPU)
    settings = GenerationSettings(max_new_tokens=12, greedy=True, seed=0)
    answers = generate_answers(base.model, base.tokenizer, prompts, settings, CPU)
    for answer in answers:
        assert 0 < answer.first_token_seconds < answer.seconds
        assert answer.new_tokens <= answer.generated_tokens <= 12
    figures = latency_figures(answers)
    assert 0 < figures["first_token_median_s"] <= figures["first_token_p90_s"] < figures["generate_max_s"]
    assert 0 < figures["decode_token_median_s"] <= figures["decode_token_p90_s"]
    assert figures["generate_median_s"] <= figures["generate_p90_s"] <= figures["generate_max_s"]
    decoding = [a for a in answers if a.generated_tokens > 1]
    # tokens/s and seconds/token describe the same decode: their product is about one
    assert figures["decode_tokens_per_second"] == pytest.approx(
        sum(a.generated_tokens - 1 for a in decoding) / sum(a.seconds - a.first_token_seconds for a in decoding))
    assert 0.3 < figures["decode_tokens_per_second"] * figures["decode_token_median_s"] < 3


@pytest.fixture
def eos_prone(base):
    """The tiny stand-in with its end-of-sequence logit raised far above the rest: left alone, it ends every
    answer at its first token, as a pretrained model that stops early would, only always."""
    eos = base.tokenizer.eos_token_id

    def raise_eos(module, inputs, logits):
        logits[..., eos] += 1e4

    hook = base.model.get_output_embeddings().register_forward_hook(raise_eos)
    yield base
    hook.remove()


@pytest.mark.parametrize("greedy", [True, False])
def test_min_new_tokens_keeps_an_early_stopping_model_answering(eos_prone, experiment, greedy):
    prompts = encode_prompts(eos_prone.tokenizer, eos_prone.candidate, experiment.prompts[:4], CPU)

    def lengths(min_new_tokens: int) -> list[int]:
        settings = GenerationSettings(max_new_tokens=12, greedy=greedy, seed=0, min_new_tokens=min_new_tokens)
        answers = generate_answers(eos_prone.model, eos_prone.tokenizer, prompts, settings, CPU)
        assert all(a.generated_tokens == a.new_tokens for a in answers)  # each stopped at its end-of-sequence
        return [a.new_tokens for a in answers]

    assert lengths(0) == [1, 1, 1, 1]  # the default: the model may stop at once, and does
    # With a floor, generate masks the end-of-sequence token until N tokens stand; it ends right after.
    assert lengths(6) == [7, 7, 7, 7]


def test_min_new_tokens_reaches_generate_only_when_set():
    assert "min_new_tokens" not in GenerationSettings(max_new_tokens=8).generate_kwargs()
    assert GenerationSettings(max_new_tokens=8, min_new_tokens=3).generate_kwargs() == {
        "max_new_tokens": 8, "do_sample": True, "min_new_tokens": 3}


def test_a_prompt_answered_in_one_token_has_no_decode_time():
    from ohlora_fixtures.records.answers import Answer

    answer = Answer(1, "q", "", "a", prompt_tokens=3, new_tokens=1, seconds=0.2, first_token_seconds=0.15,
                    generated_tokens=1)
    figures = latency_figures([answer])
    assert figures["decode_token_median_s"] is None and figures["decode_tokens_per_second"] is None
    assert figures["first_token_median_s"] == 0.15 and figures["generate_max_s"] == 0.2


def test_step_clock_times_each_step_on_the_cpu():
    started = time.perf_counter()
    clock = StepClock(CPU)
    for pause in (0.01, 0.03, 0.02):
        time.sleep(pause)
        clock.mark()
    elapsed = time.perf_counter() - started
    seconds = clock.seconds()
    assert len(seconds) == 3
    # Each interval holds its own pause (a sleep never ends early) and the intervals are consecutive:
    # together no longer than the whole loop. (Which pause is longest is not asserted: load stretches sleeps.)
    assert seconds[0] >= 0.01 and seconds[1] >= 0.03 and seconds[2] >= 0.02
    assert sum(seconds) <= elapsed


def test_training_times_every_step_and_the_steps_fill_the_loop(base, experiment):
    settings = FinetuneSettings(rank=4, epochs=1, batch_size=2)
    batches = step_batches(
        encode(base.tokenizer, LLAMA, experiment.train[:8]), settings, base.tokenizer.pad_token_id, CPU
    )
    with fresh_adapter(base.model, LLAMA, settings) as model:
        started = time.perf_counter()
        trained = train(model, batches, 1e-3, CPU)
        total = time.perf_counter() - started
    assert len(trained.step_seconds) == len(trained.losses) == len(batches) == 4
    assert all(step > 0 for step in trained.step_seconds)
    assert sum(trained.step_seconds) <= total


def _tiny_lora(rank: int) -> peft.PeftModel:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    return peft.get_peft_model(LlamaForCausalLM(config), peft.LoraConfig(r=rank, target_modules=["q_proj", "v_proj"]))


def test_adapter_size_on_disk_grows_linearly_with_rank():
    sizes, per_rank = {}, {}
    for rank in (2, 4, 8, 16):
        model = _tiny_lora(rank)
        sizes[rank] = adapter_file_bytes(model)
        per_rank[rank] = model.get_nb_trainable_parameters()[0] * 4 / rank  # float32 bytes per unit of rank
    assert len(set(per_rank.values())) == 1
    # beyond a fixed header, each unit of rank adds exactly its parameters' bytes
    for rank in (4, 8, 16):
        assert (sizes[rank] - sizes[2]) / (rank - 2) == pytest.approx(per_rank[2], rel=0.02)
    assert sizes[2] > per_rank[2] * 2  # the header is there, and small
    assert sizes[2] < per_rank[2] * 2 + 16_384


def test_memory_sampler_reports_mean_and_p99_beside_its_peak(monkeypatch):
    monkeypatch.setattr(memory, "_reset_high_water_mark", lambda: False)  # no kernel peak: the sampler runs
    with MemoryMeter(CPU, interval_s=0.001) as meter:
        held = [bytearray(8 * 1024 * 1024) for _ in range(4)]
        time.sleep(0.05)
        del held
    figures = meter.figures
    assert figures.sampler == "rss_poll" and figures.samples >= 3
    assert figures.sampled_mean_mib <= figures.sampled_p99_mib <= figures.sampled_peak_mib == figures.peak_mib
    assert figures.sampled_peak_mib - figures.start_mib >= 16  # the 32 MiB held was seen
