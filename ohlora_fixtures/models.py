"""The model factory: a candidate's base model, random or pretrained, tiny or full size."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from .errors import UsageError
from .registry import Candidate
from .settings import SCALES

# Tiny stand-ins divide every width by this and keep TINY_LAYERS layers; the
# head counts stay, so the GQA ratio, tying and rotary fraction are the real ones.
TINY_WIDTH_DIVISOR = 16
TINY_LAYERS = 2
_WIDTH_KEYS = ("hidden_size", "intermediate_size", "head_dim", "attention_hidden_size")


class WeightsNotFound(Exception):
    """A pretrained checkpoint that is not on this machine; the message says how to fetch it."""


@dataclass
class BaseModel:
    """A loaded base model, the tokenizer that goes with it, and how it was made."""

    candidate: Candidate
    model: PreTrainedModel
    tokenizer: Any
    weights: str
    scale: str
    total_params: int


def build_config(candidate: Candidate, scale: str = "full", vocab_size: int | None = None) -> PretrainedConfig:
    """The candidate's transformers config at full size or as a tiny stand-in.

    `vocab_size` replaces the registry's for tiny models, so that the embedding
    matches the dataset tokenizer instead of dominating the model.
    """
    values = dict(candidate.config)
    if scale == "tiny":
        for key in _WIDTH_KEYS:
            if key in values:
                values[key] = max(8, values[key] // TINY_WIDTH_DIVISOR)
        values["num_hidden_layers"] = TINY_LAYERS
        if vocab_size is not None:
            values["vocab_size"] = vocab_size
    elif scale != "full":
        raise UsageError(f"--ohlora-scale: {scale!r} is not one of {', '.join(SCALES)}")
    try:
        config = AutoConfig.for_model(candidate.model_type, **values)
    except (ValueError, TypeError) as error:
        raise UsageError(f"candidate {candidate.name!r}: config cannot be built: {error}") from None
    return config


def count_parameters(candidate: Candidate, scale: str = "full") -> int:
    """Total parameters of the candidate's model, built on the meta device (nothing allocated)."""
    return sum(parameter.numel() for parameter in meta_model(candidate, scale).parameters())


def meta_model(candidate: Candidate, scale: str = "full") -> PreTrainedModel:
    """The candidate's model on the `meta` device: exact shapes, no memory."""
    with torch.device("meta"):
        return _from_config(candidate, build_config(candidate, scale))


def _from_config(candidate: Candidate, config: PretrainedConfig, dtype: torch.dtype | None = None) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_config(config, dtype=dtype) if dtype else AutoModelForCausalLM.from_config(config)
    if type(model).__name__ != candidate.architecture:
        raise UsageError(
            f"candidate {candidate.name!r}: model_type {candidate.model_type!r} builds "
            f"{type(model).__name__}, but the registry says architecture {candidate.architecture!r}"
        )
    return model


def candidate_seed(candidate: Candidate, seed: int) -> int:
    """A per-candidate seed, stable across runs and Python processes."""
    digest = hashlib.sha256(f"{seed}:{candidate.name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def build_random(
    candidate: Candidate,
    tokenizer: Any,
    *,
    scale: str,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> BaseModel:
    """The candidate's own class with seeded random weights (real time and memory, no real answers)."""
    config = build_config(candidate, scale, vocab_size=len(tokenizer) if scale == "tiny" else None)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(config, key, getattr(tokenizer, key))
    torch.manual_seed(candidate_seed(candidate, seed))
    with torch.device(device):
        model = _from_config(candidate, config, dtype=dtype)
    _align_generation_config(model, tokenizer)
    return BaseModel(candidate, model, tokenizer, "random", scale, _total(model))


def load_pretrained(
    candidate: Candidate,
    *,
    device: torch.device,
    dtype: torch.dtype,
    allow_download: bool,
    trust_remote_code: bool,
    allow_pickle: bool,
) -> BaseModel:
    """`from_pretrained` from the registry's local path or the HF cache; offline unless allowed.

    Only safetensors checkpoints load unless `allow_pickle`; remote code runs only
    when both the registry entry and the user ask for it.
    """
    if candidate.trust_remote_code and not trust_remote_code:
        raise UsageError(
            f"candidate {candidate.name!r} needs remote code (trust_remote_code in its registry entry); "
            "it is refused unless you pass --ohlora-trust-remote-code after reviewing that code"
        )
    source = str(candidate.path) if candidate.path else candidate.hub_id
    options = {
        "local_files_only": not allow_download,
        "trust_remote_code": candidate.trust_remote_code and trust_remote_code,
    }
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **options)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, use_safetensors=None if allow_pickle else True, **options
        )
    except OSError as error:
        raise WeightsNotFound(_not_found_message(candidate, source, allow_download, allow_pickle, error)) from None
    model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    _align_generation_config(model, tokenizer)
    return BaseModel(candidate, model, tokenizer, "pretrained", "full", _total(model))


def _not_found_message(
    candidate: Candidate, source: str, allow_download: bool, allow_pickle: bool, error: OSError
) -> str:
    if candidate.path is not None and not allow_pickle and any(Path(source).glob("*.bin")):
        return (
            f"{candidate.name}: {source} holds only pickle (.bin) weights; they can run code when loaded, "
            "so they are refused. Convert them to safetensors, or pass --ohlora-allow-pickle if you trust them"
        )
    fetch = f"hf download {candidate.hub_id}"
    if allow_download:
        return f"{candidate.name}: could not load {source}: {error}"
    return (
        f"{candidate.name}: pretrained weights for {source} are not on this machine and downloads are off. "
        f"Fetch them with `{fetch}` (or pass --ohlora-allow-download), or set `path` in the registry "
        f"to a local checkpoint. ({str(error).splitlines()[0]})"
    )


def _align_generation_config(model: PreTrainedModel, tokenizer: Any) -> None:
    # generate() warns and guesses when these are unset; the tokenizer knows them.
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id


def _total(model: PreTrainedModel) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
