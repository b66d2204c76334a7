"""Inference: the untuned (or adapted) model answers the prompts; answers go to a CSV."""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import defaults
from .dataset import QAPair
from .devices import synchronize
from .registry import Candidate

ANSWER_COLUMNS = ("prompt_line", "prompt", "reference", "answer", "new_tokens", "seconds", "grade")


@dataclass(frozen=True)
class GenerationSettings:
    """At most `max_new_tokens` NEW tokens per answer (the study's cap counted the prompt too)."""

    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    greedy: bool = False
    seed: int = defaults.SEED


@dataclass(frozen=True)
class Answer:
    """One generated answer and what it cost."""

    prompt_line: int
    prompt: str
    reference: str
    answer: str
    prompt_tokens: int
    new_tokens: int
    seconds: float


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


def _generate(model: torch.nn.Module, input_ids: torch.Tensor, settings: GenerationSettings, pad_id: int) -> torch.Tensor:
    return model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=settings.max_new_tokens,
        do_sample=not settings.greedy,
        pad_token_id=pad_id,
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
    """The timed region: one `generate` per prompt, each timed between device synchronisations."""
    model.eval()
    torch.manual_seed(settings.seed)
    answers = []
    for index, prompt in enumerate(prompts, start=1):
        synchronize(device)
        started = time.perf_counter()
        output = _generate(model, prompt.input_ids, settings, tokenizer.pad_token_id)
        synchronize(device)
        seconds = time.perf_counter() - started
        new_ids = output[0, prompt.input_ids.shape[1] :].tolist()
        if tokenizer.eos_token_id in new_ids:
            new_ids = new_ids[: new_ids.index(tokenizer.eos_token_id) + 1]
        answer = Answer(
            prompt_line=prompt.pair.line,
            prompt=prompt.pair.question,
            reference=prompt.pair.answer or "",
            answer=tokenizer.decode(new_ids, skip_special_tokens=True).strip(),
            prompt_tokens=int(prompt.input_ids.shape[1]),
            new_tokens=len(new_ids),
            seconds=seconds,
        )
        answers.append(answer)
        if on_prompt is not None:
            on_prompt(index, answer)
    return answers


def write_answers(path: Path, answers: Sequence[Answer]) -> None:
    """The answers CSV, UTF-8 with BOM so spreadsheets show Korean; `grade` is left for a person.

    Grades a person already gave are kept where the prompt and answer are
    unchanged; if any cannot be carried over, the old file is kept beside it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = _existing_grades(path)
    carried = 0
    partial = path.with_suffix(".tmp")
    with partial.open("w", encoding="utf-8-sig", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=ANSWER_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for answer in answers:
            grade = previous.get((answer.prompt, answer.answer), "")
            carried += bool(grade)
            writer.writerow({**asdict(answer), "seconds": f"{answer.seconds:.4f}", "grade": grade})
    if carried < len(previous):
        path.replace(path.with_name(f"{path.stem}.graded-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}"))
    partial.replace(path)


def _existing_grades(path: Path) -> dict[tuple[str, str], str]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return {
            (row.get("prompt", ""), row.get("answer", "")): row["grade"].strip()
            for row in csv.DictReader(stream)
            if (row.get("grade") or "").strip()
        }
