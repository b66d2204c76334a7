"""The benchmark record: one typed value that carries a measurement from the runner to the report.

A record is stored as one JSON object per line of results.jsonl (`to_json`),
nested as the dataclasses are, with `schema` = SCHEMA_VERSION. `from_json`
checks every field's type and range (`LIMITS`: no negative time, size, count
or token number, no integer past 2**53, a rank within the option's bounds) and
raises `RecordError` naming the field and the bad value, so a reader can skip
one bad line and keep the rest; `to_json` refuses what `from_json` would. Records written
before the schema existed (one flat namespace, also the shape of
pytest-benchmark's `extra_info`) still load: `from_json` recognises them by the
missing `schema` key and reads them through `from_flat`. `flat()` writes that
same flat view for `extra_info`, so `pytest-benchmark compare` users keep their
keys (listed in README.md).

Adding a figure is one line in one of the dataclasses below (with a default,
so older records still load) plus the code that fills it in.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import types
import typing
from collections import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ohlora_fixtures.records.figures import (
    DecodeUtilisation,
    FinetuneUtilisation,
    MachineLoad,
    MemoryFigures,
    QualityFigures,
)

MAX_RANK = 65536  # above any model's hidden size: a larger LoRA rank is a typo (and overflows the plan's sums)
SCHEMA_VERSION = 2  # 1: the flat dicts written before this module existed (no `schema` key)


class RecordError(ValueError):
    """A stored record that cannot be read: names the field and the value at fault."""


class Status(str, enum.Enum):
    """How a benchmark ended; the values are the words stored in JSON."""

    OK = "ok"
    OOM = "oom"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    RUNNING = "running"  # never finished: the process died mid-benchmark

    @property
    def failed(self) -> bool:
        """Whether the benchmark broke (as opposed to ran, or was skipped on purpose)."""
        return self in (Status.OOM, Status.FAILED, Status.INTERRUPTED, Status.RUNNING)

    def __str__(self) -> str:
        return self.value


class Kind(str, enum.Enum):
    """Which benchmark a record is of."""

    FINETUNE = "finetune"
    INFERENCE = "inference"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RunDescription:
    """What a run was: device, dtype, weights kind and scale, data, settings, library versions."""

    run_id: str
    date: str
    device: str
    device_name: str
    dtype: str
    weights: str
    scale: str
    dataset: str
    preset: str
    data_fingerprint: str
    train_rows: int
    valid_rows: int
    prompts: int
    batch_size: int
    epochs: int
    learning_rate: float
    lora_alpha: int
    lora_dropout: float
    ranks: tuple[int, ...]
    max_new_tokens: int
    greedy: bool
    seed: int
    vram_budget_mb: float
    rounds: int = 1  # timed rounds per benchmark (--ohlora-rounds)
    min_new_tokens: int = 0  # --ohlora-min-new-tokens; 0 (and in older records): answers may end at any length
    gradient_checkpointing: bool = False  # --ohlora-gradient-checkpointing (older records: off)
    versions: dict[str, str] = field(default_factory=dict)
    code_revision: str = ""  # this project's git commit ("+modified" if the tree was), else its package version
    gpu_driver: str = ""  # NVIDIA driver and CUDA runtime on a GPU run; the GPU's name is device_name
    cuda_version: str = ""
    # Inputs that shape a figure beyond the settings, matched by the fingerprint (empty in older records):
    # the dataset tokenizer random-weight models share (sha256 of its serialized JSON; it is trained on every
    # registry candidate's prompt template) and the measuring code (package version + hash of its modules).
    tokenizer: str = ""
    measuring_code: str = ""
    # How the CPU's memory headline was profiled (--ohlora-memory-pass): "peak-steps" or "full"; "" in older
    # records, whose pass profiled the whole region.
    memory_pass: str = ""
    # The base weights' precision (--ohlora-quantization): "none" (the dtype's, and in older records), "8bit"
    # or "4bit". Each precision is its own run: a figure of one is never compared with another's.
    quantization: str = "none"

    @property
    def label(self) -> str:
        """E.g. "CPU: x86_64, float32, random weights, tiny scale" (", 4bit base" where quantized)."""
        quantized = f", {self.quantization} base" if self.quantization != "none" else ""
        return f"{self.device_name or self.device}, {self.dtype}{quantized}, {self.weights} weights, {self.scale} scale"


@dataclass(frozen=True)
class Answers:
    """One set of generated answers: where they are, their automatic figures and their human grade."""

    answers_csv: str
    quality: QualityFigures
    human_grade: float | None = None
    human_graded: int = 0


@dataclass(frozen=True)
class FinetuneFigures:
    """A fine-tuning benchmark's figures beyond time and memory."""

    steps: int
    losses: tuple[float, ...]
    final_loss: float
    eval_loss: float | None
    eval_rows: int
    trainable_params: int
    total_params: int  # the frozen base's parameters, adapter excluded
    tokens: int
    tokens_per_second: float
    utilisation: FinetuneUtilisation | None = None
    after_finetune: Answers | None = None  # --ohlora-eval-after-finetune
    step_median_s: float | None = None  # over the steps after the first (which creates AdamW's state)
    step_p90_s: float | None = None
    adapter_bytes: int | None = None  # adapter_model.safetensors as save_pretrained writes it


@dataclass(frozen=True)
class InferenceFigures:
    """An inference benchmark's figures beyond time and memory."""

    prompts: int
    mean_seconds_per_prompt: float
    new_tokens: int
    max_new_tokens_seen: int
    prompt_tokens: int
    tokens_per_second: float
    total_params: int
    answers: Answers
    utilisation: DecodeUtilisation | None = None
    # Latency anatomy over the prompts (inference.latency_figures): time to first token (the prefill),
    # decode time per new token after it, decode throughput, and the spread of whole generate calls.
    first_token_median_s: float | None = None
    first_token_p90_s: float | None = None
    decode_token_median_s: float | None = None
    decode_token_p90_s: float | None = None
    decode_tokens_per_second: float | None = None
    generate_median_s: float | None = None
    generate_p90_s: float | None = None
    generate_max_s: float | None = None


@dataclass
class BenchmarkRecord:
    """One benchmark of one candidate (and rank): identity, run, outcome and figures.

    `seconds` is the timed region (see runner.py); `memory` what it used. A
    record that did not end `ok` may lack every figure.
    """

    id: str
    kind: Kind
    candidate: str
    rank: int | None
    approximate: bool
    fingerprint: str
    run: RunDescription
    status: Status = Status.RUNNING
    weights_revision: str | None = None  # provenance.weights_revision: which weights were measured
    error: str | None = None
    finished: float | None = None
    over_budget: bool = False
    seconds: float | None = None  # the median round's (the lower of the two middle ones for an even count)
    round_seconds: tuple[float, ...] = ()  # every timed round, in order
    round_peak_mib: tuple[float, ...] = ()  # each round's peak; `memory` is the highest round's
    load: MachineLoad | None = None  # the machine's load around the rounds (load.py)
    memory: MemoryFigures | None = None
    finetune: FinetuneFigures | None = None
    inference: InferenceFigures | None = None

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What identifies a benchmark across runs: candidate, kind, rank."""
        return self.candidate, self.kind.value, self.rank

    @property
    def ok(self) -> bool:
        """Whether the benchmark finished and its figures are there."""
        return self.status is Status.OK

    @property
    def peak_mib(self) -> float | None:
        """The headline peak memory of the timed region, or None when not measured."""
        return self.memory.peak_mib if self.memory else None

    @property
    def answers(self) -> Answers | None:
        """The answers this benchmark scored: the base model's, or the adapter's after fine-tuning."""
        if self.inference is not None:
            return self.inference.answers
        return self.finetune.after_finetune if self.finetune else None

    @property
    def benchmark_name(self) -> str:
        """E.g. "fine-tuning r16" or "inference"."""
        return f"fine-tuning r{self.rank}" if self.kind is Kind.FINETUNE else "inference"

    def to_json(self) -> str:
        """One line of results.jsonl (no newline); refuses NaN and infinity, which JSON cannot hold, and any
        figure `from_json` would refuse (a negative time, an absurd count), so that no bad line is written."""
        payload = {"schema": SCHEMA_VERSION, **plain(self)}
        try:
            line = json.dumps(payload, ensure_ascii=False, sort_keys=True, allow_nan=False)
        except ValueError as error:
            raise RecordError(f"record {self.id}: {error} ({_non_finite(payload)})") from None
        try:
            _build(BenchmarkRecord, payload, "")
        except RecordError as error:
            raise RecordError(f"record {self.id}: {error}") from None
        return line

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> "BenchmarkRecord":
        """A record from a line of results.jsonl (or its parsed object), either schema; RecordError if malformed."""
        if isinstance(data, str):
            data = parse_json(data)
        if not isinstance(data, Mapping):
            raise RecordError(f"a record is a JSON object, not {type(data).__name__}")
        if "schema" not in data:
            return from_flat(data)
        schema = data["schema"]
        if schema != SCHEMA_VERSION:
            raise RecordError(f"schema: {schema!r} is not {SCHEMA_VERSION}, the version this code reads")
        return _build(cls, data, "")

    def flat(self) -> dict[str, Any]:
        """The flat view: one namespace, as records were stored before SCHEMA_VERSION 2 (pytest-benchmark's
        extra_info)."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "candidate": self.candidate,
            "rank": self.rank,
            "approximate": self.approximate,
            "fingerprint": self.fingerprint,
            "run": plain(self.run),
            "status": self.status.value,
            "error": self.error,
            "finished": self.finished,
            "over_budget": self.over_budget,
            "weights_revision": self.weights_revision,
        }
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.round_seconds:
            out["round_seconds"], out["round_peak_mib"] = list(self.round_seconds), list(self.round_peak_mib)
        if self.load is not None:
            out["load"] = plain(self.load)
        if self.memory is not None:
            memory = plain(self.memory)
            memory["memory_metric"] = memory.pop("metric")
            out.update({k: v for k, v in memory.items() if v is not None or k not in _MEMORY_SINCE_SCHEMA_2})
        for figures in (self.finetune, self.inference):
            if figures is None:
                continue
            for name, value in plain(figures).items():
                if name == "utilisation":
                    out.update(value or {})
                elif name == "answers":
                    out.update(value)
                elif name == "after_finetune":
                    if value is not None:
                        out["quality_after_finetune"] = value
                else:
                    out[name] = value
        return out


# Memory fields added after schema 1: left out of the flat view when unknown, so an old record's view is unchanged.
_MEMORY_SINCE_SCHEMA_2 = frozenset({"absolute_peak_mib", "baseline_mib", "trimmed", "lifetime_peak_mib"})

# Fields of the flat view that belong to each part (the rest are the record's own or run).
_MEMORY_FLAT = {f.name if f.name != "metric" else "memory_metric": f.name for f in dataclasses.fields(MemoryFigures)}


# What identifies a run: everything RunDescription holds but these, recorded and never matched: when and as
# what a run happened, where its data file lay, the grid it chose (each record carries its own rank) and
# provenance of the code and driver (the measuring code's own hash, `measuring_code`, is matched).
RUN_PROVENANCE = ("run_id", "date", "dataset", "ranks", "code_revision", "gpu_driver", "cuda_version")
# Comparing runs for one leaderboard leaves out the budget too: it judges figures, never shapes one.
NOT_COMPARED = (*RUN_PROVENANCE, "vram_budget_mb")


def run_identity(run: RunDescription) -> dict[str, Any]:
    """The run's settings that shape a measurement, as plain values: what --ohlora-resume's fingerprint covers."""
    described = plain(run)
    for name in RUN_PROVENANCE:
        described.pop(name, None)
    if described.get("quantization") == "none":
        # Full precision is what every record before the axis measured: their fingerprints stay as they were.
        del described["quantization"]
    return described


def comparable(run: RunDescription) -> str:
    """What makes two runs' figures comparable: everything that shapes a figure, as one JSON string.

    Device and its name, dtype, weights, scale, data content and rows, training and generation
    settings, seed, library versions, the dataset tokenizer's contents and the measuring code's version.
    """
    described = run_identity(run)
    described.pop("vram_budget_mb", None)
    # pytest-xdist workers each run on their own GPU (cuda:0, cuda:1): the same kind of device.
    described["device"] = described["device"].split(":")[0]
    return json.dumps(described, sort_keys=True, default=str)


def comparable_json(run: Any) -> str | None:
    """`comparable` of a run as a record's JSON holds it, None where what it compares is not valid (its other
    fields, which `comparable` leaves out, are not checked). Memoised by what it compares: a long log's runs
    mostly share their settings, and building and flattening each took seconds."""
    if not isinstance(run, Mapping):
        return None
    try:
        text = json.dumps({k: v for k, v in run.items() if k not in NOT_COMPARED}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return _comparable_text(text)


# Stand-ins for the fields `comparable` leaves out, which a RunDescription still needs to be built.
_NOT_COMPARED_STAND_INS = {"run_id": "", "date": "", "dataset": "", "ranks": [], "vram_budget_mb": 0.0}


@functools.lru_cache(maxsize=256)
def _comparable_text(compared: str) -> str | None:
    try:
        return comparable(_build(RunDescription, {**json.loads(compared), **_NOT_COMPARED_STAND_INS}, "run"))
    except RecordError:
        return None


class MergeHead(typing.NamedTuple):
    """What merging the log needs of a record (`report.stored.Merged`), read from its JSON without building
    the rest: its benchmark, when it finished, its status and its run's id. A tuple: a long log's index makes
    one per line, and a frozen dataclass is several times slower to make."""

    key: tuple[str, str, int | None]
    finished: float | None
    status: Status
    run_id: str


def merge_head(data: Mapping[str, Any]) -> MergeHead | None:
    """`MergeHead` of a current-schema record's JSON, each field checked as a built record's is; None where
    one is missing or not valid (or the record is of an older schema): build that record instead."""
    if data.get("schema") != SCHEMA_VERSION or not isinstance(data.get("run"), Mapping):
        return None
    try:
        # A field left out takes the record's default, as when the record is built.
        head = {name: convert(data[name], name) if name in data or required else _DEFAULTS[name]
                for name, convert, required in _fields(BenchmarkRecord) if name in _MERGE_FIELDS}
        run_id = _converter(str, "run_id")(data["run"]["run_id"], "run.run_id")
    except (RecordError, KeyError):
        return None
    return MergeHead((head["candidate"], head["kind"].value, head["rank"]), head["finished"], head["status"], run_id)


_MERGE_FIELDS = ("candidate", "kind", "rank", "finished", "status")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(BenchmarkRecord)}


def parse_json(line: str) -> Any:
    """A line of results.jsonl as JSON, RecordError where it is not (NaN and Infinity are not JSON)."""
    try:
        return json.loads(line, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise RecordError(f"not JSON: {error}") from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise RecordError(f"a number out of range: {error}") from None


def from_flat(data: Mapping[str, Any]) -> BenchmarkRecord:
    """A record from the flat view: results.jsonl before schema 2, or pytest-benchmark's extra_info."""
    own = {
        f.name: data[f.name]
        for f in dataclasses.fields(BenchmarkRecord)
        if f.name in data and f.name not in ("memory", "finetune", "inference")
    }
    if "peak_mib" in data:
        own["memory"] = {part: data[flat] for flat, part in _MEMORY_FLAT.items() if flat in data}
    kind = data.get("kind")
    if kind == Kind.FINETUNE.value and "steps" in data:
        figures = _pick(FinetuneFigures, data)
        figures["utilisation"] = _pick(FinetuneUtilisation, data) if "mfu" in data else None
        figures["after_finetune"] = data.get("quality_after_finetune")
        own["finetune"] = figures
    elif kind == Kind.INFERENCE.value and "prompts" in data:
        figures = _pick(InferenceFigures, data)
        figures["utilisation"] = _pick(DecodeUtilisation, data) if "bandwidth_utilisation" in data else None
        figures["answers"] = _pick(Answers, data)
        own["inference"] = figures
    return _build(BenchmarkRecord, own, "")


def _pick(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    return {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}


def _refuse_constant(name: str) -> float:
    raise RecordError(f"{name} is not a number a record may hold")


def _non_finite(value: Any, where: str = "") -> str:
    """The first NaN/infinity in a plain value, as "field: value"."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'value'}: {value!r}"
    if isinstance(value, dict):
        found = (_non_finite(v, f"{where}.{k}" if where else str(k)) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        found = (_non_finite(v, f"{where}[{i}]") for i, v in enumerate(value))
    else:
        return ""
    return next((f for f in found if f), "")


# What a number in a record may be, by field name wherever the field is (round_seconds[3] is a `round_seconds`).
# Times, sizes, counts and token numbers cannot be negative, and each has a ceiling no real run comes near:
# a figure past it is a corrupted or forged line, which would otherwise rank first, print 300 digits or
# overflow the plan's sums. A field not listed may be any finite number; an integer not listed is a count.
_SECONDS = (0.0, 1e7)  # 115 days
_MIB = (0.0, 2.0**30)  # a pebibyte
_RATE = (0.0, 1e15)
LIMITS: dict[str, tuple[float, float]] = {
    "rank": (1, MAX_RANK),
    "ranks": (1, MAX_RANK),
    "finished": (0.0, 1e11),
    **dict.fromkeys(
        (
            "seconds",
            "round_seconds",
            "mean_seconds_per_prompt",
            "step_median_s",
            "step_p90_s",
            "first_token_median_s",
            "first_token_p90_s",
            "decode_token_median_s",
            "decode_token_p90_s",
            "generate_median_s",
            "generate_p90_s",
            "generate_max_s",
        ),
        _SECONDS,
    ),
    # The headline peaks and their references; start/after/increase and the sampler's figures are differences
    # from the runtime baseline and may be negative.
    **dict.fromkeys(
        (
            "peak_mib",
            "round_peak_mib",
            "absolute_peak_mib",
            "baseline_mib",
            "lifetime_peak_mib",
            "max_reserved_mib",
        ),
        _MIB,
    ),
    **dict.fromkeys(
        (
            "tokens_per_second",
            "decode_tokens_per_second",
            "achieved_tflops",
            "peak_tflops",
            "achieved_gbps",
            "peak_gbps",
            "mfu",
            "bandwidth_utilisation",
            "learning_rate",
            "vram_budget_mb",
        ),
        _RATE,
    ),
    "seed": (-(2.0**63), 2.0**64),  # torch's seed range, either sign
}
_COUNT = (0, 2**53)  # JSON's exact integers; more parameters or tokens than any model or run has
_ANY = (-1e15, 1e15)


def plain(value: Any) -> Any:
    """Dataclasses, enums and tuples as JSON-ready dicts, strings and lists (e.g. a RunDescription for JSON)."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    """`cls` from a JSON object, every field checked against its annotation; unknown keys are ignored
    so that a record written by newer code with an extra figure still loads."""
    if not isinstance(data, abc.Mapping):
        raise RecordError(f"{where or cls.__name__}: {data!r} is not an object")
    values = {}
    for (field_name, convert, required), name in zip(_fields(cls), _paths(cls, where)):
        if field_name not in data:
            if required:
                raise RecordError(f"{name}: missing")
            continue
        values[field_name] = convert(data[field_name], name)
    return cls(**values)


@functools.lru_cache(maxsize=None)
def _paths(cls: type, where: str) -> tuple[str, ...]:
    """Where each field of `cls` is, for messages (e.g. "finetune.tokens"): a handful of strings, made once."""
    return tuple(f"{where}.{f.name}" if where else f.name for f in dataclasses.fields(cls))


Convert = Callable[[Any, str], Any]  # a checked value from a JSON value and where it is (for the message)


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[tuple[str, Convert, bool], ...]:
    """Each field's name, converter and whether it must be present, worked out once per class: resolving
    the annotations at every record took nine tenths of the time, minutes over a 100k-line log."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            f.name,
            _converter(hints[f.name], f.name),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )


@functools.lru_cache(maxsize=None)
def _converter(hint: Any, name: str) -> Convert:
    """The function that checks a JSON value against `hint` (the field `name`'s annotation, or an item's)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"{name}: unsupported annotation {hint}")  # a coding error, found at import
        inner = _converter(options[0], name)
        return lambda value, where: None if value is None else inner(value, where)
    if dataclasses.is_dataclass(hint):
        return lambda value, where: _build(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):

        def member(value: Any, where: str) -> Any:
            try:
                return hint(value)
            except ValueError:
                raise RecordError(f"{where}: {value!r} is not one of {[m.value for m in hint]}") from None

        return member
    if origin in (tuple, list):
        item = _converter(args[0], name)

        def items(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise RecordError(f"{where}: {value!r} is not a list")
            try:
                converted = [item(v, where) for v in value]
            except RecordError:  # again, naming the item: "round_seconds[3]"
                converted = [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(converted) if origin is tuple else converted

        return items
    if origin is dict:
        entry = _converter(args[1], name)

        def entries(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise RecordError(f"{where}: {value!r} is not an object")
            return {str(k): entry(v, f"{where}.{k}") for k, v in value.items()}

        return entries
    if hint is float:
        low, high = LIMITS.get(name, _ANY)

        def number(value: Any, where: str) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordError(f"{where}: {value!r} is not a number")
            if not math.isfinite(value):
                raise RecordError(f"{where}: {value!r} is not a finite number")
            if not low <= value <= high:
                raise _out_of_range(value, where, low, high)
            return float(value)

        return number
    if hint is int:
        low, high = LIMITS.get(name, _COUNT)

        def integer(value: Any, where: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecordError(f"{where}: {value!r} is not an integer")
            if not low <= value <= high:
                raise _out_of_range(value, where, low, high)
            return value

        return integer
    if hint in (str, bool):

        def exact(value: Any, where: str) -> Any:
            if not isinstance(value, hint):
                raise RecordError(f"{where}: {value!r} is not a {hint.__name__}")
            return value

        return exact
    raise TypeError(f"{name}: unsupported annotation {hint}")  # a coding error, found at the first read


def _out_of_range(value: int | float, where: str, low: float, high: float) -> RecordError:
    shown = (
        f"an integer of {len(str(abs(value)))} digits"
        if isinstance(value, int) and abs(value) > 10**15
        else f"{value:.6g}"
    )
    return RecordError(f"{where}: {shown} is out of range [{low:.6g}, {high:.6g}]")
