"""Every option of the three entry points, declared once, parsed and checked once at start-up.

`OPTIONS` is the one table: parser, default (from defaults.py) and help of each
option. An `EntryPoint` says which of them a command offers and how it spells
them: pytest offers all as `--ohlora-*`, `report` and `plan` a few as `--*`.
Messages name the option as the entry point in use spells it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs import defaults, gpus
from ohlora_fixtures.inputs.dataset import PRESETS
from ohlora_fixtures.inputs.paths import check_report_dir
from ohlora_fixtures.inputs.policy import DEFAULT_LICENCES, BadWeight, parse_weights
from ohlora_fixtures.inputs.registry import DEFAULT_REGISTRY, SCALES
from ohlora_fixtures.inputs.resources import DATASET, bundled
from ohlora_fixtures.records.record import MAX_RANK

DEFAULT_DATASET = bundled(DATASET)
DEFAULT_REPORT_DIR = Path(".benchmarks") / "ohlora"
WEIGHTS = ("random", "pretrained")
QUANTIZATIONS = ("none", "8bit", "4bit")  # measure/quantize.py's PRECISIONS (inputs cannot import measure)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


# What torch.manual_seed really accepts is [-2**63, 2**64), but a negative seed wraps onto a
# positive one (-1 is 2**64 - 1): only the unsigned range names each seed once.
SEED_RANGE = range(0, 2**64)


def _seed(text: str) -> int:
    value = int(text)
    if value not in SEED_RANGE:
        raise ValueError
    return value


def _finite(text: str) -> float:
    # float() also accepts "inf" and "nan": no setting means them, and JSON cannot store them.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise ValueError
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError
    return value


def _non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise ValueError
    return value


def _share(text: str) -> float:
    """A share of a whole: 0.5, or 50%."""
    percent = text.strip().endswith("%")
    value = _finite(text.strip().removesuffix("%")) / (100 if percent else 1)
    if not 0 <= value <= 1:
        raise ValueError
    return value


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError
    return names


def _ranks(text: str) -> tuple[int, ...]:
    ranks = tuple(sorted({positive_int(part.strip()) for part in text.split(",")}))
    if ranks[-1] > MAX_RANK:
        raise ValueError
    return ranks


def _quantizations(text: str) -> tuple[str, ...]:
    named = {part.strip() for part in text.split(",") if part.strip()}
    if not named or not named <= set(QUANTIZATIONS):
        raise ValueError
    return tuple(q for q in QUANTIZATIONS if q in named)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError
        return text

    parse.expected = "one of " + ", ".join(choices)  # type: ignore[attr-defined]
    return parse


@dataclass(frozen=True)
class Option:
    """One option: its parser, default and help; `flag` is its pytest spelling."""

    name: str
    parse: Callable[[str], Any] | None  # None: a flag
    default: Any
    help: str
    expected: str = ""

    @property
    def flag(self) -> str:
        return PYTEST.flag(self.name)


@dataclass(frozen=True)
class EntryPoint:
    """One command's view of the option table: which options it offers and how it spells them."""

    prefix: str
    names: tuple[str, ...] | None = None  # None: every option
    renamed: tuple[tuple[str, str], ...] = ()  # (option name, flag) where the flag is not prefix + name

    def offers(self, name: str) -> bool:
        """Whether this command has the option."""
        return self.names is None or name in self.names

    def flag(self, name: str) -> str:
        """The option as this command spells it, e.g. --ohlora-batch-size or --batch-size."""
        return dict(self.renamed).get(name) or self.prefix + name.replace("_", "-")


PYTEST = EntryPoint("--ohlora-")
REPORT = EntryPoint(
    "--",
    (
        "report_dir",
        "candidates",
        "licenses",
        "lang",
        "compare_study",
        "max_params",
        "min_params",
        "vram_budget_mb",
        "gpu",
        "ranking_weights",
    ),
    renamed=(("report_dir", "--out"),),
)
PLAN = EntryPoint(
    "--",
    (
        "candidates",
        "models",
        "ranks",
        "quantization",
        "batch_size",
        "max_new_tokens",
        "dataset",
        "preset",
        "train_rows",
        "valid_rows",
        "prompts",
        "epochs",
        "seed",
    ),
)


OPTIONS: tuple[Option, ...] = (
    Option("candidates", Path, DEFAULT_REGISTRY, "candidate registry TOML file", "a path"),
    Option("dataset", Path, DEFAULT_DATASET, "question/answer CSV (data_type, input_data, output_data)", "a path"),
    Option("preset", _choice(*PRESETS), "default", "row selection: default, or study (the reference study's rows)"),
    Option("models", _names, None, "comma-separated candidate names to run (default: all)", "comma-separated names"),
    Option(
        "ranks",
        _ranks,
        defaults.RANKS,
        "comma-separated LoRA ranks",
        f"comma-separated positive integers up to {MAX_RANK}",
    ),
    Option(
        "quantization",
        _quantizations,
        ("none",),
        "comma-separated base-weight precisions to fine-tune and run: none (the run's dtype), 8bit (LLM.int8) "
        "or 4bit (NF4, QLoRA); 8bit and 4bit need bitsandbytes",
        "comma-separated names from none, 8bit, 4bit",
    ),
    Option("weights", _choice(*WEIGHTS), "random", "random (seeded stand-in weights) or pretrained"),
    Option("scale", _choice(*SCALES), "tiny", "tiny stand-ins or full-size models (random weights)"),
    Option("device", str, "auto", "auto, cpu, cuda or cuda:N"),
    Option("dtype", _choice("auto", "float32", "bfloat16", "float16"), "auto", "weights dtype; auto = bf16 on GPU"),
    Option("train_rows", positive_int, defaults.TRAIN_ROWS, "train rows to fine-tune on", "a positive integer"),
    Option("valid_rows", positive_int, defaults.VALID_ROWS, "held-out rows for the eval loss", "a positive integer"),
    Option("prompts", positive_int, defaults.PROMPTS, "prompts for the inference benchmark", "a positive integer"),
    Option("batch_size", positive_int, defaults.BATCH_SIZE, "fine-tuning batch size", "a positive integer"),
    Option("epochs", positive_int, defaults.EPOCHS, "fine-tuning epochs", "a positive integer"),
    Option("lr", _positive_float, defaults.LEARNING_RATE, "AdamW learning rate", "a positive number"),
    Option("lora_alpha", positive_int, defaults.LORA_ALPHA, "LoRA alpha", "a positive integer"),
    Option("lora_dropout", _fraction, defaults.LORA_DROPOUT, "LoRA dropout", "a number in [0, 1)"),
    Option(
        "gradient_checkpointing",
        None,
        False,
        "fine-tune with gradient checkpointing: each layer's "
        "activations recomputed in the backward pass (less memory, more time)",
    ),
    Option(
        "max_new_tokens",
        positive_int,
        defaults.MAX_NEW_TOKENS,
        "new tokens per answer (not counting the prompt)",
        "a positive integer",
    ),
    Option(
        "min_new_tokens",
        _non_negative_int,
        0,
        "new tokens every answer must have before it may end "
        "(0: a model may stop at its end-of-sequence token); at most --ohlora-max-new-tokens",
        "an integer >= 0",
    ),
    Option("greedy", None, False, "greedy decoding instead of seeded sampling"),
    Option(
        "seed",
        _seed,
        defaults.SEED,
        "seed for weights, adapters, batches and sampling",
        f"an integer from 0 to {SEED_RANGE.stop - 1} (torch's seed range)",
    ),
    Option("allow_download", None, False, "let pretrained weights be downloaded from the hub"),
    Option("trust_remote_code", None, False, "allow remote code for registry entries that ask for it"),
    Option("allow_pickle", None, False, "allow pickle (.bin) checkpoints, which can run code when loaded"),
    Option("report_dir", Path, DEFAULT_REPORT_DIR, "where results.jsonl, answers and the report go", "a path"),
    Option("resume", None, False, "skip benchmarks already measured with identical settings in results.jsonl"),
    Option(
        "vram_budget_mb",
        _positive_float,
        defaults.VRAM_BUDGET_MB,
        "fail a benchmark whose peak memory exceeds this (MiB)",
        "a positive number of MiB",
    ),
    Option(
        "gpu",
        str,
        None,
        "screen for this card of data/gpus.toml: its memory, less the CUDA context and cuBLAS workspaces, replaces "
        "the VRAM budget, and the verdict says at which batch the choice fits (estimates)",
        "a card name such as T4 or A100-80GB",
    ),
    Option("lang", _choice("en", "ko"), "en", "report language: en or ko"),
    Option("compare_study", None, False, "show the reference study's figures beside ours in the report"),
    Option("eval_after_finetune", None, False, "also generate and score answers with the adapter attached"),
    Option(
        "rounds",
        positive_int,
        1,
        "timed rounds per benchmark, each with a fresh adapter; the record's "
        "figures come from the median round, its peak memory from the highest",
        "a positive integer",
    ),
    Option(
        "recalibrate",
        None,
        False,
        "measure this machine's peak FLOP/s and bandwidth again instead of reusing the cached calibration",
    ),
    Option(
        "busy_retries",
        _non_negative_int,
        2,
        "times a benchmark whose rounds ran on a busy machine is measured "
        "again before its figures are kept (and marked busy)",
        "an integer >= 0",
    ),
    Option(
        "remeasure_share",
        _share,
        0.5,
        "at most this share of the session's time goes to measuring busy benchmarks again (only full-size or "
        "pretrained runs, or with --benchmark-compare, are measured again); past it busy figures are kept, marked",
        "a share from 0 to 1, or a percentage such as 50%",
    ),
    Option(
        "memory_pass",
        _choice("peak-steps", "full"),
        "peak-steps",
        "CPU memory headline: profile only the "
        "training steps and prompts that reach the peak (peak-steps), or the whole region again (full)",
    ),
    Option("max_params", _positive_float, 3.0, "screening: at most this many billion parameters", "a positive number"),
    Option("min_params", _non_negative_float, 0.0, "screening: at least this many billion parameters", "a number >= 0"),
    Option(
        "ranking_weights",
        parse_weights,
        None,
        "recommendation weights, e.g. quality=4,leaderboard=2; unnamed criteria keep their "
        "setup.cfg ohlora_weight_* value or the default",
    ),
    Option("licenses", Path, DEFAULT_LICENCES, "licence policy TOML file for the recommendation's screening", "a path"),
)


@dataclass(frozen=True)
class Settings:
    """Every `--ohlora-*` option, parsed."""

    candidates: Path
    dataset: Path
    preset: str
    models: tuple[str, ...] | None
    ranks: tuple[int, ...]
    quantization: tuple[str, ...]
    weights: str
    scale: str
    device: str
    dtype: str
    train_rows: int
    valid_rows: int
    prompts: int
    batch_size: int
    epochs: int
    lr: float
    lora_alpha: int
    lora_dropout: float
    gradient_checkpointing: bool
    max_new_tokens: int
    min_new_tokens: int
    greedy: bool
    seed: int
    allow_download: bool
    trust_remote_code: bool
    allow_pickle: bool
    report_dir: Path
    resume: bool
    vram_budget_mb: float
    gpu: str | None
    lang: str
    compare_study: bool
    eval_after_finetune: bool
    rounds: int
    recalibrate: bool
    busy_retries: int
    remeasure_share: float
    memory_pass: str
    max_params: float
    min_params: float
    ranking_weights: tuple[tuple[str, float], ...] | None
    licenses: Path

    @property
    def results_path(self) -> Path:
        """The JSONL log every benchmark is appended to."""
        return self.report_dir / "results.jsonl"


# OPTIONS and Settings must list the same names in the same order.
assert [option.name for option in OPTIONS] == [field.name for field in dataclasses.fields(Settings)]


def add_options(add: Callable[..., Any], entry: EntryPoint = PYTEST) -> None:
    """Declare `entry`'s options through `add`: a pytest group's `addoption` or argparse's `add_argument`.

    Outside pytest each option's dest is its name, so `parse(vars(args), entry)` finds it.
    """
    for option in OPTIONS:
        if not entry.offers(option.name):
            continue
        dest = {} if entry is PYTEST else {"dest": option.name}
        if option.parse is None:
            add(entry.flag(option.name), action="store_true", default=False, help=option.help, **dest)
        else:
            # Values stay strings here, so that parsing and its messages live in one place.
            add(
                entry.flag(option.name),
                default=None,
                metavar=option.name.upper(),
                help=f"{option.help} (default: {_shown(option.default)})",
                **dest,
            )


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return str(value)


def parse(raw: dict[str, Any], entry: EntryPoint = PYTEST) -> Settings:
    """Settings from raw option values (strings or None); a bad value is a UsageError naming the option
    as `entry` spells it. Options `entry` does not offer keep their defaults."""
    values = {}
    for option in OPTIONS:
        value = raw.get(option.name) if entry.offers(option.name) else None
        if option.parse is None or value is None:
            values[option.name] = bool(value) if option.parse is None else option.default
            continue
        try:
            values[option.name] = option.parse(value)
        except BadWeight as error:  # a list of pairs: the bad pair, not the whole value
            raise UsageError(f"{entry.flag(option.name)}: {error.part!r} is not valid; {error.why}") from None
        except (ValueError, TypeError):
            expected = option.expected or getattr(option.parse, "expected", "a valid value")
            raise UsageError(f"{entry.flag(option.name)}: {value!r} is not valid; expected {expected}") from None
    settings = Settings(**values)
    if settings.min_params > settings.max_params:
        raise UsageError(
            f"{entry.flag('min_params')} {settings.min_params} is above "
            f"{entry.flag('max_params')} {settings.max_params}"
        )
    if settings.min_new_tokens > settings.max_new_tokens:
        raise UsageError(
            f"{entry.flag('min_new_tokens')} {settings.min_new_tokens} is above "
            f"{entry.flag('max_new_tokens')} {settings.max_new_tokens}: lower the first or raise the second"
        )
    if settings.gpu is not None:
        gpus.load_gpus().select([settings.gpu], entry.flag("gpu"))  # an unknown card: one line naming the known
    if entry.offers("report_dir"):
        check_report_dir(settings.report_dir, settings.results_path, entry.flag("report_dir"))
    return settings


def from_pytest(config: Any) -> Settings:
    """Settings from a pytest config's `--ohlora-*` options."""
    return parse({option.name: config.getoption(option.flag) for option in OPTIONS})
