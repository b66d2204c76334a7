"""Inference: the untuned (or adapted) model answers the prompts; answers go to a CSV."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from transformers.generation.streamers import BaseStreamer

from ohlora_fixtures.inputs import defaults
from ohlora_fixtures.inputs.dataset import QAPair
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.measure.devices import synchronize
from ohlora_fixtures.records.answers import Answer
from ohlora_fixtures.records.percentiles import median, percentile


@dataclass(frozen=True)
class GenerationSettings:
    """At most `max_new_tokens` NEW tokens per answer (the study's cap counted the prompt too), and at least
    `min_new_tokens` (0: an answer may end at the first end-of-sequence token)."""

    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    greedy: bool = False
    seed: int = defaults.SEED
    min_new_tokens: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `generate` these settings stand for."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": not self.greedy}
        if self.min_new_tokens > 0:
            # Left out at 0 so that the default run calls generate exactly as before the option existed.
            kwargs["min_new_tokens"] = self.min_new_tokens
        return kwargs


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt tokenised ahead of the timed region."""

    pair: QAPair
    input_ids: torch.Tensor


def encode_prompts(
    tokenizer: Any, candidate: Candidate, prompts: Sequence[QAPair], device: torch.device
) -> list[EncodedPrompt]:
    """Tokenise every prompt once, on the device, before anything is timed."""
    return [
        EncodedPrompt(pair, tokenizer(candidate.prompt(pair.question), return_tensors="pt").input_ids.to(device))
        for pair in prompts
    ]


class FirstTokenClock(BaseStreamer):
    """Notes when the first new token reaches the host: the prefill and its token, inside the real generation.

    `generate` hands a streamer the prompt before the prefill, then each new
    token as it copies it to the host (`tokens.cpu()`), just before its own stop
    check reads a flag there. On CUDA that copy waits for the device, so the
    time is when the prefill and the first token's sampling have run, not when
    the host queued them, and the streamer adds no wait of its own: only a
    method call per token. (transformers defers the stop check, and so streams a
    token a step late, only on MPS.)
    """

    def __init__(self) -> None:
        self.at: float | None = None
        self._puts = 0

    def put(self, value: torch.Tensor) -> None:
        self._puts += 1
        if self._puts == 2:  # the first put is the prompt
            self.at = time.perf_counter()

    def end(self) -> None:
        """Nothing to flush: only the time is kept."""


def _generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    settings: GenerationSettings,
    pad_id: int,
    streamer: FirstTokenClock | None = None,
) -> torch.Tensor:
    return model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pad_token_id=pad_id,
        streamer=streamer,
        **settings.generate_kwargs(),
    )


def warm_up(model: torch.nn.Module, prompt: EncodedPrompt, pad_id: int) -> None:
    """A two-token generation outside the timed region, to pay one-off costs."""
    model.eval()
    with torch.no_grad():
        _generate(model, prompt.input_ids, GenerationSettings(max_new_tokens=2, greedy=True), pad_id)


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[EncodedPrompt],
    settings: GenerationSettings,
    device: torch.device,
    on_prompt: Callable[[int, Answer], None] | None = None,
) -> list[Answer]:
    """The timed region: one `generate` per prompt, each timed between device synchronisations,
    with its time to first token noted inside the same call (FirstTokenClock)."""
    model.eval()
    answers = []
    for index, prompt in enumerate(prompts, start=1):
        # Each answer has its own seed (the prompt's dataset line): it is the same whichever prompts run before it,
        # so the memory pass can repeat the few that reach the peak (peak_prompts).
        torch.manual_seed((settings.seed + prompt.pair.line) % 2**64)
        first_token = FirstTokenClock()
        synchronize(device)
        started = time.perf_counter()
        output = _generate(model, prompt.input_ids, settings, tokenizer.pad_token_id, first_token)
        synchronize(device)
        ended = time.perf_counter()
        new_ids = output[0, prompt.input_ids.shape[1] :].tolist()
        del output  # so that no tensor of one answer lives on into the next
        generated = len(new_ids)
        if tokenizer.eos_token_id in new_ids:
            new_ids = new_ids[: new_ids.index(tokenizer.eos_token_id) + 1]
        answer = Answer(
            prompt_line=prompt.pair.line,
            prompt=prompt.pair.question,
            reference=prompt.pair.answer or "",
            answer=tokenizer.decode(new_ids, skip_special_tokens=True).strip(),
            prompt_tokens=int(prompt.input_ids.shape[1]),
            new_tokens=len(new_ids),
            seconds=ended - started,
            first_token_seconds=(first_token.at or ended) - started,
            generated_tokens=generated,
        )
        answers.append(answer)
        if on_prompt is not None:
            on_prompt(index, answer)
    return answers


def peak_prompts(answers: Sequence[Answer]) -> list[int]:
    """Indices of the answers whose generation no other covers (as long a prompt or longer and as long a
    sequence, prompt and generated tokens, or longer): generating these again reaches the peak of generating
    all, since what a generation holds grows with both (the prompt's pass, the KV cache) and nothing is carried
    from one answer to the next."""
    sizes = [(a.prompt_tokens, a.prompt_tokens + (a.generated_tokens or a.new_tokens)) for a in answers]
    front = {size: index for index, size in enumerate(sizes)}  # one answer of each size
    return sorted(index for size, index in front.items()
                  if not any(other != size and other[0] >= size[0] and other[1] >= size[1] for other in front))


def latency_figures(answers: Sequence[Answer]) -> dict[str, float | None]:
    """The latency anatomy of one set of answers, as InferenceFigures' fields.

    Time to first token is each prompt's prefill (FirstTokenClock). Decode time
    per token is the rest of the call over the tokens generated after the
    first, for prompts that generated at least two; decode tokens/s is the
    same over all those prompts together. Medians and p90 are over prompts.
    """
    decoding = [a for a in answers if a.generated_tokens > 1]
    per_token = [(a.seconds - a.first_token_seconds) / (a.generated_tokens - 1) for a in decoding]
    decode_seconds = sum(a.seconds - a.first_token_seconds for a in decoding)
    first_token = [a.first_token_seconds for a in answers]
    generate = [a.seconds for a in answers]
    return {
        "first_token_median_s": median(first_token),
        "first_token_p90_s": percentile(first_token, 90),
        "decode_token_median_s": median(per_token) if per_token else None,
        "decode_token_p90_s": percentile(per_token, 90) if per_token else None,
        "decode_tokens_per_second": sum(a.generated_tokens - 1 for a in decoding) / decode_seconds
        if decode_seconds > 0 else None,
        "generate_median_s": median(generate),
        "generate_p90_s": percentile(generate, 90),
        "generate_max_s": max(generate),
    }
