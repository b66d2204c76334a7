"""LoRA fine-tuning: a fresh adapter on a clean base, the batches, the training loop."""

from __future__ import annotations

import contextlib
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch

from ohlora_fixtures.errors import DatasetError
from ohlora_fixtures.inputs import defaults
from ohlora_fixtures.inputs.dataset import QAPair
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.measure.devices import StepClock, synchronize

# peft is imported where an adapter is made: a session that resumes every benchmark trains nothing, and
# importing peft and transformers' model classes took 2 to 3 seconds of such a session's 9.
if TYPE_CHECKING:
    import peft
    from transformers import PreTrainedModel

IGNORE_INDEX = -100  # label value the causal-LM loss skips


@dataclass(frozen=True)
class FinetuneSettings:
    """The study's fine-tuning settings by default: 20 rows, batch 4, 10 epochs = 50 steps."""

    rank: int
    alpha: int = defaults.LORA_ALPHA
    dropout: float = defaults.LORA_DROPOUT
    init: str = "gaussian"
    learning_rate: float = defaults.LEARNING_RATE
    batch_size: int = defaults.BATCH_SIZE
    epochs: int = defaults.EPOCHS
    seed: int = defaults.SEED
    gradient_checkpointing: bool = False
    """Keep only each layer's input and recompute the rest in the backward pass: less memory, more time."""


@dataclass(frozen=True)
class Example:
    """One tokenised question/answer pair; `labels` mask the prompt so only the answer is learnt."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    line: int = 0
    """The dataset line the pair starts on."""
    truncated: bool = False
    """Whether the answer was cut to fit the model's positions."""


# Where transformers configs state how many positions a model has (RWKV: context_length).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "context_length", "n_ctx")


def position_limit(config: Any) -> int | None:
    """How many tokens (prompt and answer together) a model's config allows; None if it states none."""
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def lora_config(candidate: Candidate, settings: FinetuneSettings) -> peft.LoraConfig:
    """The adapter the study used, at `settings.rank`."""
    import peft

    return peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        init_lora_weights=settings.init,
        target_modules=list(candidate.target_modules),
        task_type=peft.TaskType.CAUSAL_LM,
    )


def has_adapter(model: torch.nn.Module) -> bool:
    """Whether any LoRA layer is attached to `model`."""
    import peft

    return any(isinstance(module, peft.tuners.lora.LoraLayer) for module in model.modules())


@contextlib.contextmanager
def fresh_adapter(
    base: PreTrainedModel, candidate: Candidate, settings: FinetuneSettings
) -> Iterator[peft.PeftModel]:
    """Attach a newly initialised adapter, and remove it afterwards, leaving the base as it was.

    The study re-wrapped one base rank after rank, so adapters could stack; here
    a base that still carries an adapter is refused. Gradient checkpointing, where
    asked for, is switched on for the adapter's life and off again with it.
    """
    if has_adapter(base):
        raise RuntimeError(f"{candidate.name}: base model still carries a LoRA adapter; refusing to stack another")
    import peft

    torch.manual_seed(settings.seed)
    model = peft.get_peft_model(base, lora_config(candidate, settings))
    if settings.gradient_checkpointing:
        _checkpointing(base, True)
    try:
        yield model
    finally:
        if settings.gradient_checkpointing:
            _checkpointing(base, False)
        model.unload()
        base.zero_grad(set_to_none=True)


def _checkpointing(base: PreTrainedModel, on: bool) -> None:
    """Gradient checkpointing on or off. Non-reentrant: it recomputes correctly although the frozen base's
    inputs need no gradient. (transformers 5 calls it activation checkpointing and deprecates the old name.)"""
    if hasattr(base, "activation_checkpointing_enable"):
        if on:
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.activation_checkpointing_disable()
    elif on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()


def encode(tokenizer: Any, candidate: Candidate, pairs: Sequence[QAPair], limit: int | None = None) -> list[Example]:
    """Tokenise prompt and answer apart, so the label mask falls exactly on the answer.

    Pairs without an answer are left out: there is nothing to learn or score.
    A row longer than `limit` positions keeps its prompt and as much of its
    answer as fits (`truncated`); one whose prompt leaves no room for an answer
    token is a DatasetError naming its line.
    """
    examples = []
    for pair in pairs:
        if not pair.answer:
            continue
        prompt_ids = tokenizer(candidate.prompt(pair.question)).input_ids
        answer_ids = tokenizer(pair.answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        truncated = limit is not None and len(prompt_ids) + len(answer_ids) > limit
        if truncated:
            if len(prompt_ids) >= limit:
                raise DatasetError(
                    f"dataset line {pair.line}: the prompt alone is {len(prompt_ids):,} tokens, but "
                    f"{candidate.name} has {limit:,} positions; shorten the question or leave {candidate.name} out"
                )
            answer_ids = answer_ids[: limit - len(prompt_ids)]
        examples.append(Example(
            tuple(prompt_ids + answer_ids), tuple([IGNORE_INDEX] * len(prompt_ids) + answer_ids), pair.line, truncated
        ))
    return examples


def collate(examples: Sequence[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad one batch and move it to the device."""
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        attention_mask[row, :length] = 1
    return {
        "input_ids": input_ids.to(device),
        "labels": labels.to(device),
        "attention_mask": attention_mask.to(device),
    }


def step_batches(
    examples: Sequence[Example], settings: FinetuneSettings, pad_id: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """Every optimizer step's batch, shuffled per epoch with a fixed seed, built before timing starts."""
    order = random.Random(settings.seed)
    batches = []
    for _ in range(settings.epochs):
        epoch = list(examples)
        order.shuffle(epoch)
        for start in range(0, len(epoch), settings.batch_size):
            batches.append(collate(epoch[start : start + settings.batch_size], pad_id, device))
    return batches


def eval_batches(
    examples: Sequence[Example], batch_size: int, pad_id: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """Held-out batches in file order."""
    return [
        collate(examples[start : start + batch_size], pad_id, device)
        for start in range(0, len(examples), batch_size)
    ]


def peak_batches(batches: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """The fewest steps that reach the peak of training on all of `batches`: the first (AdamW creates its state
    in its step), then one batch of each shape no other batch's covers (as many rows or more and as wide or
    wider), each now with the state. Every step holds the same weights, adapter and state; what differs is the
    activations, which grow with rows and width, so no step of the full run can keep more than one of these.
    (The full run's per-step loss scalars, a few bytes each, are all it holds beyond them.)"""
    shapes = {tuple(batch["input_ids"].shape): batch for batch in batches}
    front = [batch for shape, batch in shapes.items()
             if not any(other != shape and other[0] >= shape[0] and other[1] >= shape[1] for other in shapes)]
    return [batches[0], *front] if batches else []


def count_tokens(batches: Sequence[dict[str, torch.Tensor]]) -> int:
    """Non-padding tokens the model processes over all batches."""
    return int(sum(int(batch["attention_mask"].sum()) for batch in batches))


def warm_up(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """One forward and backward pass without an optimizer step, outside the timed region.

    It pays one-off costs (kernel selection, allocator growth) and changes no weight.
    """
    model.train()
    model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class Trained:
    """What the training loop returns: each step's loss and duration, in order."""

    losses: list[float]
    step_seconds: list[float]


def train(
    model: torch.nn.Module,
    batches: Sequence[dict[str, torch.Tensor]],
    learning_rate: float,
    device: torch.device,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> Trained:
    """The timed region: AdamW over the trainable (adapter) parameters, one step per batch.

    Losses stay on the device until the end, and step times are CUDA events
    there (StepClock), so neither adds a synchronisation to every step.
    """
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    losses = []
    clock = StepClock(device)
    for step, batch in enumerate(batches, start=1):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.mark()
        losses.append(loss.detach())
        if on_step is not None:
            on_step(step, losses[-1])
    synchronize(device)
    del optimizer
    return Trained([float(value) for value in torch.stack(losses).float().cpu()], clock.seconds())


def adapter_file_bytes(model: peft.PeftModel) -> int:
    """The adapter's size on disk: `save_pretrained` as safetensors into a temporary folder (never timed)."""
    with tempfile.TemporaryDirectory(prefix="ohlora-adapter-") as folder:
        model.save_pretrained(folder, safe_serialization=True)
        return sum(file.stat().st_size for file in Path(folder).rglob("adapter_model.safetensors"))


@torch.no_grad()
def eval_loss(model: torch.nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> float | None:
    """Mean answer-token loss over held-out batches; None when there are none."""
    if not batches:
        return None
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        answer_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(model(**batch).loss) * answer_tokens
        tokens += answer_tokens
    return total / tokens if tokens else None
