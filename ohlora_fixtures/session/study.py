"""What every benchmark of one session shares: the checked settings, candidates, data, device and peaks."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import pkgutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import torch

from ohlora_fixtures import __version__
from ohlora_fixtures.inputs import policy, registry
from ohlora_fixtures.inputs.dataset import ExperimentData, load_experiment
from ohlora_fixtures.inputs.options import Settings
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.inputs.tokenizer import experiment_tokenizer
from ohlora_fixtures.measure.devices import describe, dtype_name, resolve_device, resolve_dtype
from ohlora_fixtures.measure.finetune import FinetuneSettings
from ohlora_fixtures.measure.hardware import Peaks, device_peaks
from ohlora_fixtures.measure.inference import GenerationSettings
from ohlora_fixtures.measure.memory import needs_tensor_pass, runtime_baseline_mib
from ohlora_fixtures.measure.models import (
    BaseModel,
    WeightsUnavailable,
    build_random,
    check_candidate,
    check_pretrained,
    load_pretrained,
    random_config,
)
from ohlora_fixtures.measure.provenance import code_revision, config_revision, gpu_software, pretrained_revision
from ohlora_fixtures.measure.quantize import guard_hub_kernels, quantize
from ohlora_fixtures.measure.row_lengths import check_row_lengths
from ohlora_fixtures.records import results
from ohlora_fixtures.records.record import RunDescription, run_identity
from ohlora_fixtures.session.base_models import BaseModels
from ohlora_fixtures.session.progress import Progress
from ohlora_fixtures.session.remeasure import RemeasureBudget, times_decide
from ohlora_fixtures.session.session_records import SessionRecords

_PACKAGE = Path(__file__).resolve().parent.parent
# The code that shapes a figure: every module of these packages (walked, so that a new one is never left out:
# measure/torch_compat.py gives the CPU memory headline, measure/machine_load.py decides re-measuring), and
# these modules of the others. A change to any of them makes every stored measurement stale.
MEASURING_PACKAGES = ("measure", "session")
MEASURING_ELSEWHERE = ("inputs.tokenizer", "inputs.dataset", "judge.quality", "records.percentiles")


def measuring_modules(root: Path = _PACKAGE) -> tuple[str, ...]:
    """The measuring modules' dotted names under the package folder `root`, e.g. "measure.memory"."""
    walked = (
        f"{package}.{module.name}"
        for package in MEASURING_PACKAGES
        for module in pkgutil.iter_modules([str(root / package)])
        if not module.ispkg
    )
    return tuple(sorted({*walked, *MEASURING_ELSEWHERE}))


def source_digest(root: Path = _PACKAGE) -> str:
    """A hash of the measuring modules' source under `root`."""
    digest = hashlib.sha256()
    for name in measuring_modules(root):
        digest.update(name.encode() + b"\0" + (root / (name.replace(".", "/") + ".py")).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and a hash of the measuring modules' source, e.g. "0.1.0+3f2a9c1d0b7e"."""
    return f"{__version__}+{source_digest()}"


@dataclass
class Study:
    """What every benchmark of one pytest session shares.

    Built at start-up, so that every bad option, registry entry or dataset row
    is reported before any model is loaded.
    """

    settings: Settings
    candidates: tuple[Candidate, ...]
    experiment: ExperimentData
    device: torch.device
    dtype: torch.dtype
    run_id: str = field(default_factory=results.new_run_id)
    # The prompt templates of every registry candidate, selected or not: the dataset tokenizer is trained on
    # them, so that `--ohlora-models` picks figures out of one vocabulary instead of making a new one.
    templates: tuple[str, ...] = ()
    records: SessionRecords = field(init=False)
    models: BaseModels = field(init=False)
    progress: Progress = field(init=False)  # the plugin gives it the terminal and the benchmark count
    remeasure: RemeasureBudget = field(init=False)  # the plugin sets `decides` under --benchmark-compare

    def __post_init__(self) -> None:
        self.records = SessionRecords(self.settings.results_path)
        self.models = BaseModels(self.load_base_model, self.device)
        self.progress = Progress()
        s = self.settings
        self.remeasure = RemeasureBudget(s.remeasure_share, times_decide(s.weights, s.scale, compare=False))

    @classmethod
    def from_settings(cls, settings: Settings, worker: int | None = None) -> "Study":
        """Check and load everything a run needs except the models; `worker` is a pytest-xdist worker's number."""
        guard_hub_kernels(settings.trust_remote_code)  # before peft imports bitsandbytes
        registered = registry.load_registry(settings.candidates)
        candidates = registry.select(registered, list(settings.models or []))
        if settings.eval_after_finetune and settings.resume:
            warnings.warn(
                "--ohlora-eval-after-finetune with --ohlora-resume: fine-tunes already in results.jsonl are not "
                "re-run, so they keep the adapter answers of their own run (none if it ran without this flag); "
                "leave out --ohlora-resume to answer with every adapter",
                stacklevel=2,
            )
        for candidate in candidates:
            check_candidate(candidate, "full" if settings.weights == "pretrained" else settings.scale)
            if settings.weights == "pretrained":
                check_pretrained(candidate, settings.trust_remote_code)
        policy.load_licences(settings.licenses)  # read now: a bad policy file must not wait for the report
        experiment = load_experiment(
            settings.dataset, settings.preset, settings.train_rows, settings.valid_rows, settings.prompts
        )
        device = resolve_device(settings.device, worker)
        study = cls(
            settings,
            candidates,
            experiment,
            device,
            resolve_dtype(settings.dtype, device),
            templates=tuple(candidate.prompt("") for candidate in registered),
        )
        if settings.weights == "random":
            # A pretrained model's tokenizer loads with its weights; the runner cuts its rows then.
            check_row_lengths(study.random_tokenizer, candidates, experiment, settings.scale, settings.max_new_tokens)
        runtime_baseline_mib()  # the CPU memory headlines count from here: libraries loaded, no model built
        return study

    def finetune_settings(self, rank: int) -> FinetuneSettings:
        """The fine-tuning settings of one rank."""
        s = self.settings
        return FinetuneSettings(
            rank=rank,
            alpha=s.lora_alpha,
            dropout=s.lora_dropout,
            learning_rate=s.lr,
            batch_size=s.batch_size,
            epochs=s.epochs,
            seed=s.seed,
            gradient_checkpointing=s.gradient_checkpointing,
        )

    @property
    def generation_settings(self) -> GenerationSettings:
        """How answers are generated."""
        s = self.settings
        return GenerationSettings(s.max_new_tokens, s.greedy, s.seed, s.min_new_tokens)

    @cached_property
    def random_tokenizer(self) -> Any:
        """The dataset-built tokenizer random-weight models share."""
        return experiment_tokenizer(
            self.templates or [c.prompt("") for c in self.candidates],
            self.experiment,
            self.settings.report_dir / "cache",
        )

    @cached_property
    def tokenizer_digest(self) -> str:
        """sha256 of the dataset tokenizer's serialized JSON (random weights), "" where each model brings its own."""
        if self.settings.weights != "random":
            return ""
        serialized = self.random_tokenizer.backend_tokenizer.to_str()
        return hashlib.sha256(serialized.encode("utf-8")).hexdigest()[:16]

    def load_base_model(self, candidate: Candidate, precision: str = "none") -> BaseModel:
        """Build (random weights) or load (pretrained) the candidate's base model on the run's device and dtype,
        its weights then quantized to `precision` where that is not "none"."""
        _ = self.peaks  # calibrated before the first model takes memory, and outside every timed region
        base = self._full_precision_base(candidate)
        if precision == "none":
            return base
        try:
            model = quantize(base.model, precision, self.device, self.dtype, self.settings.trust_remote_code)
        except ValueError as error:  # a shape bitsandbytes cannot run here: the benchmark is skipped with why
            raise WeightsUnavailable(f"{candidate.name}: {error}") from None
        return dataclasses.replace(base, model=model, precision=precision)

    def _full_precision_base(self, candidate: Candidate) -> BaseModel:
        s = self.settings
        if s.weights == "pretrained":
            return load_pretrained(
                candidate,
                device=self.device,
                dtype=self.dtype,
                allow_download=s.allow_download,
                trust_remote_code=s.trust_remote_code,
                allow_pickle=s.allow_pickle,
            )
        return build_random(
            candidate, self.random_tokenizer, scale=s.scale, seed=s.seed, device=self.device, dtype=self.dtype
        )

    def weights_revision(self, candidate: Candidate) -> str:
        """Which weights the candidate's benchmarks would measure now, as its records name them
        (`BaseModel.revision`), found without loading them: for --ohlora-resume to compare with a stored record."""
        if self.settings.weights == "pretrained":
            return pretrained_revision(candidate.hub_id, candidate.path)
        return config_revision(random_config(candidate, self.random_tokenizer, self.settings.scale))

    @cached_property
    def peaks(self) -> Peaks:
        """The device's peak throughput and bandwidth: looked up, or calibrated once per machine and settings
        (cached)."""
        return device_peaks(self.device, self.dtype, self.settings.recalibrate)

    def calibrate_again(self, what: str, share: float) -> bool:
        """After a figure measured against the calibrated peaks read above 100 % (`what` at `share`): the
        calibration read low (taken on a busier machine), so it is discarded with a warning and taken again for
        this figure and every later one. False where the peaks are a datasheet's, which a run cannot retake."""
        peaks = self.peaks
        if "calibrated" not in (peaks.tflops_source, peaks.gbps_source):
            return False
        warnings.warn(
            f"{what} read {share:.0%} of the calibrated peak ({peaks.calibrated}): a calibration cannot be beaten, so "
            "it was taken on a busier machine; calibrating again",
            stacklevel=2,
        )
        self.__dict__["peaks"] = device_peaks(self.device, self.dtype, recalibrate=True)
        return True

    def describe(self, quantization: str = "none") -> RunDescription:
        """What the run shows: device, dtype, weights kind and scale, settings, versions; `quantization` is the
        precision of the base weights the benchmark it describes measures."""
        import transformers

        s = self.settings
        return RunDescription(
            run_id=self.run_id,
            date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            device=str(self.device),
            device_name=describe(self.device),
            dtype=dtype_name(self.dtype),
            weights=s.weights,
            scale="full" if s.weights == "pretrained" else s.scale,
            dataset=str(self.experiment.source),
            preset=self.experiment.preset,
            data_fingerprint=self.experiment.fingerprint(),
            train_rows=len(self.experiment.train),
            valid_rows=len(self.experiment.valid),
            prompts=len(self.experiment.prompts),
            batch_size=s.batch_size,
            epochs=s.epochs,
            learning_rate=s.lr,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            gradient_checkpointing=s.gradient_checkpointing,
            ranks=tuple(s.ranks),
            max_new_tokens=s.max_new_tokens,
            min_new_tokens=s.min_new_tokens,
            greedy=s.greedy,
            seed=s.seed,
            vram_budget_mb=s.vram_budget_mb,
            rounds=s.rounds,
            versions={
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": importlib.metadata.version("peft"),  # its version without the seconds of its import
            },
            code_revision=code_revision(),
            **gpu_software(self.device),
            tokenizer=self.tokenizer_digest,
            measuring_code=code_version(),
            memory_pass=s.memory_pass if needs_tensor_pass(self.device) else "",
            quantization=quantization,
        )

    def fingerprint(self, kind: str, candidate: Candidate, detail: Any, quantization: str = "none") -> str:
        """Identifies every input of a benchmark's measurement, so --ohlora-resume reuses only identical ones:
        the candidate's whole registry entry (template, config, targets), the kind's settings, the run's
        settings and data, the dataset tokenizer's contents, library versions and the measuring code."""
        payload = json.dumps(
            [kind, asdict(candidate), detail, run_identity(self.describe(quantization))], sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
