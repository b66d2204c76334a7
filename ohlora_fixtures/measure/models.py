"""The model factory: a candidate's base model, random or pretrained, tiny or full size."""

from __future__ import annotations

import difflib
import hashlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
import transformers
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ohlora_fixtures.errors import BenchmarkError, RegistryError, UsageError
from ohlora_fixtures.inputs.registry import SCALES, Candidate
from ohlora_fixtures.measure.provenance import config_revision, hub_snapshot, pretrained_revision

# Tiny stand-ins divide every width by this and keep TINY_LAYERS layers; the
# head counts stay, so the GQA ratio, tying and rotary fraction are the real ones.
TINY_WIDTH_DIVISOR = 16
TINY_LAYERS = 2
T = TypeVar("T")
_WIDTH_KEYS = ("hidden_size", "intermediate_size", "head_dim", "attention_hidden_size")


class WeightsUnavailable(Exception):
    """Pretrained weights that cannot be used here: not on this machine, or refused as unsafe.

    The message says what to do; the candidate's benchmarks are skipped with it.
    """


@dataclass
class BaseModel:
    """A loaded base model, the tokenizer that goes with it, and how it was made."""

    candidate: Candidate
    model: PreTrainedModel
    tokenizer: Any
    weights: str
    scale: str
    total_params: int
    revision: str = ""  # provenance: which weights these are (a hub commit or a content/config hash)
    precision: str = "none"  # the weights' quantization (measure/quantize.py): none, 8bit or 4bit


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
    return parameter_count(meta_model(candidate, scale))


def meta_model(candidate: Candidate, scale: str = "full") -> PreTrainedModel:
    """The candidate's model on the `meta` device: exact shapes, no memory."""
    with torch.device("meta"):
        return _from_config(candidate, build_config(candidate, scale))


def check_candidate(candidate: Candidate, scale: str) -> None:
    """Build the candidate's model on the meta device, so a registry mistake stops the run at start-up.

    This finds what the registry's own checks cannot: an unknown model_type,
    config values the model class rejects, an architecture mismatch, LoRA
    target modules the model does not have or LoRA cannot adapt, and a
    full-size config past the sanity bounds (the report plans at full size,
    whatever scale runs).
    """
    where = f"registry entry {candidate.name!r}"
    if candidate.model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(candidate.model_type, list(CONFIG_MAPPING.keys()), n=3)
        hint = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
        raise RegistryError(
            f"{where}: field 'model_type' = {candidate.model_type!r} is not a transformers model type{hint}"
        )
    # A stand-in has TINY_LAYERS layers, so it is safe to build before the full-size bounds are known.
    model = _checked_meta_model(where, candidate, scale) if scale != "full" else None
    layers = (
        getattr(_checked(where, candidate, "full", lambda: build_config(candidate, "full")), "num_hidden_layers", 0)
        or 0
    )
    if layers > MAX_LAYERS:
        raise RegistryError(
            f"{where}: field 'config' has num_hidden_layers = {layers:,}, above the sanity bound of "
            f"{MAX_LAYERS:,} layers for a full-size model; check the value"
        )
    full = _checked_meta_model(where, candidate, "full")
    _check_target_modules(where, full if model is None else model, candidate.target_modules)
    total = parameter_count(full)
    if total > MAX_FULL_PARAMS:
        raise RegistryError(
            f"{where}: field 'config' gives {total / 1e9:,.1f} B parameters at full size, above the "
            f"sanity bound of {MAX_FULL_PARAMS / 1e9:.0f} B; check the config values"
        )


def _checked_meta_model(where: str, candidate: Candidate, scale: str) -> PreTrainedModel:
    return _checked(where, candidate, scale, lambda: meta_model(candidate, scale))


def _checked(where: str, candidate: Candidate, scale: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the model class rejects is a registry mistake
        raise RegistryError(
            f"{where}: field 'config' cannot build {candidate.architecture} at {scale} scale: "
            f"{type(error).__name__}: {_first_line(error)}"
        ) from None


# peft's LoRA dispatch (peft.tuners.lora.layer.dispatch_default) adapts these layer types only;
# a target that matches anything else makes get_peft_model raise.
LORA_LAYER_TYPES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.Linear,
    torch.nn.Embedding,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.MultiheadAttention,
    Conv1D,
)
# Sanity bounds on a full-size config, checked before and after building it on the meta device:
# the largest open models have about 130 layers and 400 B parameters; this benchmark targets small ones.
MAX_LAYERS = 1_000
MAX_FULL_PARAMS = 100_000_000_000


def _check_target_modules(where: str, model: PreTrainedModel, targets: tuple[str, ...]) -> None:
    modules = list(model.named_modules())
    # peft matches a target against a module's full name or its last dotted parts.
    matched = {t: [(n, m) for n, m in modules if n == t or n.endswith("." + t)] for t in targets}
    missing = [t for t, found in matched.items() if not found]
    if missing:
        raise RegistryError(
            f"{where}: field 'target_modules' names {missing}, which {type(model).__name__} does not have"
        )
    for target, found in matched.items():
        wrong = [(n, m) for n, m in found if not isinstance(m, LORA_LAYER_TYPES)]
        if wrong:
            name, module = wrong[0]
            usable = sorted({n.rsplit(".", 1)[-1] for n, m in modules if isinstance(m, torch.nn.Linear)})
            raise RegistryError(
                f"{where}: field 'target_modules' names {target!r}, which is a {type(module).__name__} "
                f"({name}); LoRA adapts only Linear, Embedding, Conv and Conv1D layers; "
                f"Linear layers of {type(model).__name__}: {', '.join(usable[:12])}"
            )


def _from_config(candidate: Candidate, config: PretrainedConfig, dtype: torch.dtype | None = None) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_config(config, dtype=dtype) if dtype else AutoModelForCausalLM.from_config(config)
    if type(model).__name__ != candidate.architecture:
        raise RegistryError(
            f"registry entry {candidate.name!r}: field 'architecture' = {candidate.architecture!r}, but "
            f"model_type {candidate.model_type!r} builds {type(model).__name__}"
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
    config = random_config(candidate, tokenizer, scale)
    # Named before building: from_config writes the dtype into the config, and --ohlora-resume names the
    # weights from random_config alone.
    revision = config_revision(config)
    torch.manual_seed(candidate_seed(candidate, seed))
    with torch.device(device):
        model = _from_config(candidate, config, dtype=dtype)
    _align_generation_config(model, tokenizer)
    return BaseModel(candidate, model, tokenizer, "random", scale, parameter_count(model), revision)


def random_config(candidate: Candidate, tokenizer: Any, scale: str) -> PretrainedConfig:
    """The config random weights are built from: the candidate's at `scale`, with the tokenizer's special ids
    (and, tiny, its vocabulary size)."""
    config = build_config(candidate, scale, vocab_size=len(tokenizer) if scale == "tiny" else None)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(config, key, getattr(tokenizer, key))
    return config


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
    check_pretrained(candidate, trust_remote_code)
    source = str(candidate.path) if candidate.path else candidate.hub_id
    options = {
        "local_files_only": not allow_download,
        "trust_remote_code": candidate.trust_remote_code and trust_remote_code,
    }
    loading = "weights"
    try:
        # The weights first: a refused pickle must be said before anything else about the checkpoint.
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, use_safetensors=None if allow_pickle else True, **options,
            # transformers does not pass local_files_only on to its look for an adapter config: without this, a
            # model in the HF cache waited 23 s on the hub's retries where HF_HUB_OFFLINE was not set.
            adapter_kwargs={"local_files_only": options["local_files_only"]},
        )
        loading = "tokenizer"
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **options)
    except OSError as error:
        raise WeightsUnavailable(_unavailable_message(candidate, source, allow_download, allow_pickle, error)) from None
    except pickle.UnpicklingError as error:
        # torch's weights-only unpickler met an object that is not a tensor: its advice runs to a screenful.
        found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed global|\n|$)", str(error))
        raise BenchmarkError(
            f"{candidate.name}: torch refuses the pickle weights in {_local_checkpoint(candidate) or source} "
            f"({found.group(1) if found else _first_line(error)}): they hold more than tensors, which could run "
            "code when loaded; convert them to safetensors where they come from a source you trust"
        ) from None
    except ValueError as error:
        # transformers' only signal that a checkpoint ships code the registry did not declare.
        if "trust_remote_code" not in str(error):
            raise BenchmarkError(
                f"{candidate.name}: could not load the {loading} of {_local_checkpoint(candidate) or source}: "
                f"{_first_line(error).rstrip(': ')}"
                + (" (the folder needs its tokenizer files beside the weights)" if loading == "tokenizer" else "")
            ) from None
        raise WeightsUnavailable(
            f"{candidate.name}: {source} ships its own model code, which is refused. If you have reviewed it, "
            "set trust_remote_code = true in its registry entry and pass --ohlora-trust-remote-code"
        ) from None
    model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    _align_generation_config(model, tokenizer)
    revision = pretrained_revision(candidate.hub_id, candidate.path)
    return BaseModel(candidate, model, tokenizer, "pretrained", "full", parameter_count(model), revision)


def check_pretrained(candidate: Candidate, trust_remote_code: bool) -> None:
    """Refuse, before anything loads, a candidate whose checkpoint cannot be loaded as the user asked.

    That is one whose registry entry asks for remote code the user has not
    allowed, or whose local `path` holds no checkpoint.
    """
    if candidate.trust_remote_code and not trust_remote_code:
        raise UsageError(
            f"candidate {candidate.name!r} needs remote code (trust_remote_code in its registry entry); "
            "it is refused unless you pass --ohlora-trust-remote-code after reviewing that code"
        )
    if candidate.path is not None and not (candidate.path / "config.json").is_file():
        raise RegistryError(
            f"registry entry {candidate.name!r}: field 'path' = {str(candidate.path)!r} holds no checkpoint "
            "(no config.json); point it at a directory written by save_pretrained or `hf download --local-dir`"
        )


def _local_checkpoint(candidate: Candidate) -> Path | None:
    """The directory holding the candidate's checkpoint on this machine, or None if there is none."""
    return candidate.path if candidate.path is not None else hub_snapshot(candidate.hub_id)


def _unavailable_message(
    candidate: Candidate, source: str, allow_download: bool, allow_pickle: bool, error: OSError
) -> str:
    local = _local_checkpoint(candidate)
    if local is not None and not allow_pickle and any(local.glob("*.bin")) and not any(local.glob("*.safetensors")):
        return (
            f"{candidate.name}: {local} holds only pickle (.bin) weights; they can run code when loaded, "
            "so they are refused. Convert them to safetensors, or pass --ohlora-allow-pickle if you trust them"
        )
    if local is None and not allow_download:
        return (
            f"{candidate.name}: pretrained weights for {source} are not on this machine and downloads are off. "
            f"Fetch them with `hf download {candidate.hub_id}` (or pass --ohlora-allow-download), or set `path` "
            f"in the registry to a local checkpoint. ({_first_line(error)})"
        )
    return f"{candidate.name}: could not load {local or source}: {_first_line(error)}"


def _first_line(error: Exception) -> str:
    # transformers' messages run to many lines of advice meant for its Python API.
    return str(error).partition("\n")[0]


def _align_generation_config(model: PreTrainedModel, tokenizer: Any) -> None:
    # generate() warns and guesses when these are unset; the tokenizer knows them.
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id


def parameter_count(model: torch.nn.Module) -> int:
    """Every parameter of the model, adapter included if attached: the one place parameters are counted."""
    return sum(parameter.numel() for parameter in model.parameters())
