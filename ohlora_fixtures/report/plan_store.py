"""The full-size plans a report shows, planned once and stored beside the report.

Planning builds every candidate on the meta device (torch, transformers and peft: seconds and some hundred
MB). Re-rendering stored results should not: so each plan is stored in `plans.json` in the report folder,
keyed by everything that shapes it (`plan_key`: the candidate's registry entry, the ranks, dtype, batch size
and answer length, the dataset file's content, rows and batching, which tokenizer is on this machine, the
planning code and the libraries' versions). A report over the same results, here or from a folder that
holds its `plans.json`, finds every plan there and loads none of those libraries; a key not found is planned
and stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

from ohlora_fixtures.errors import DatasetError
from ohlora_fixtures.inputs import defaults
from ohlora_fixtures.inputs.options import Settings
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.inputs.usercache import read_json, write_json
from ohlora_fixtures.records.plans import CandidatePlan, TokenWidths
from ohlora_fixtures.records.record import RunDescription
from ohlora_fixtures.records.storage import read_regular

PLANS_FILE = "plans.json"
# The source files whose code shapes a plan: a change to any of them plans again.
PLANNING_CODE = (
    "measure/plan.py", "measure/finetune.py", "measure/models.py", "measure/utilisation.py",
    "inputs/tokenizer.py", "inputs/dataset.py", "records/plans.py",
)
_LIBRARIES = ("torch", "transformers", "peft", "tokenizers")
_PACKAGE = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def _code_and_versions() -> str:
    digest = hashlib.sha256()
    for name in PLANNING_CODE:
        digest.update(name.encode() + b"\0" + (_PACKAGE / name).read_bytes() + b"\0")
    versions = []
    for library in _LIBRARIES:
        try:
            versions.append(f"{library}=={metadata.version(library)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{library} absent")
    return digest.hexdigest()[:16] + " " + " ".join(versions)


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(read_regular(Path(path))).hexdigest()[:16]
    except OSError as error:
        return f"unreadable: {error.strerror or error}"  # the plan then assumes its widths; so does the key


def _hub_snapshots(hub_id: str) -> list[str]:
    """The snapshots of `hub_id` in the Hugging Face cache: whether the candidate's own tokenizer is here."""
    from huggingface_hub import constants  # light: no model code

    folder = Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def widths_source(
    run: RunDescription | None, settings: Settings
) -> tuple[str, str, tuple[int, int, int], int, int, int]:
    """Where the plan's token widths come from: the run's dataset, rows and batching (the options' without a run)."""
    if run is None:
        return (
            str(settings.dataset),
            settings.preset,
            (settings.train_rows, settings.valid_rows, settings.prompts),
            settings.batch_size,
            settings.epochs,
            settings.seed,
        )
    return (
        run.dataset,
        run.preset,
        (run.train_rows, run.valid_rows, run.prompts),
        run.batch_size,
        run.epochs,
        run.seed,
    )


def plan_key(
    candidate: Candidate,
    ranks: Sequence[int],
    dtype: str,
    batch_size: int,
    max_new_tokens: int,
    source: tuple[Any, ...],
) -> str:
    """Everything that shapes one candidate's plan, hashed."""
    local = str(candidate.path) if candidate.path is not None else _hub_snapshots(candidate.hub_id)
    payload = [
        asdict(candidate),
        list(ranks),
        dtype,
        batch_size,
        max_new_tokens,
        list(source),
        _file_digest(source[0]),
        local,
        _code_and_versions(),
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def plans_for(
    candidates: Sequence[Candidate],
    ranks: Sequence[int],
    dtype: str,
    batch_size: int,
    max_new_tokens: int,
    run: RunDescription | None,
    settings: Settings,
    folders: Iterable[Path],
) -> dict[str, CandidatePlan]:
    """Every candidate's plan: read from a `plans.json` in `folders` (the report's first), else planned and
    stored in the report's."""
    source = widths_source(run, settings)
    keys = {c.name: plan_key(c, ranks, dtype, batch_size, max_new_tokens, source) for c in candidates}
    out = settings.report_dir / PLANS_FILE
    stored: dict[str, Any] = {}
    for folder in dict.fromkeys([settings.report_dir, *folders]):
        stored = {**read_json(folder / PLANS_FILE, "stored plans", "planning again"), **stored}
    plans: dict[str, CandidatePlan] = {}
    for candidate in candidates:
        try:
            plans[candidate.name] = CandidatePlan.from_dict(stored[keys[candidate.name]])
        except (KeyError, TypeError, ValueError):
            continue
    missing = [c for c in candidates if c.name not in plans]
    if missing:
        widths = _widths(tuple(candidates), *source)
        for candidate in missing:
            plans[candidate.name] = _plan(
                candidate, tuple(ranks), dtype, batch_size, widths[candidate.name], max_new_tokens
            )
    mine = read_json(out, "stored plans", "planning again")
    wanted = {keys[c.name]: plans[c.name].as_dict() for c in candidates}
    if any(mine.get(key) != value for key, value in wanted.items()):
        write_json(out, {**mine, **wanted}, "stored plans", "the next report plans again")
    return {c.name: plans[c.name] for c in candidates}


# Planning needs torch, transformers and peft: imported here, only when a plan is not stored.
@lru_cache(maxsize=None)
def _plan(
    candidate: Candidate, ranks: tuple[int, ...], dtype: str, batch_size: int, widths: TokenWidths, max_new_tokens: int
) -> CandidatePlan:
    from ohlora_fixtures.measure.plan import plan_candidate

    return plan_candidate(candidate, ranks, dtype, batch_size, widths, max_new_tokens)


@lru_cache(maxsize=None)
def _widths(
    candidates: tuple[Candidate, ...],
    dataset: str,
    preset: str,
    rows: tuple[int, int, int],
    batch_size: int,
    epochs: int,
    seed: int,
) -> dict[str, TokenWidths]:
    from ohlora_fixtures.inputs.dataset import load_experiment
    from ohlora_fixtures.measure.finetune import FinetuneSettings
    from ohlora_fixtures.measure.plan import experiment_widths, fixed_widths

    batching = FinetuneSettings(rank=1, batch_size=batch_size, epochs=epochs, seed=seed)
    try:
        return experiment_widths(candidates, load_experiment(dataset, preset, *rows), batching)
    except (DatasetError, OSError) as error:
        # The report still renders from what was measured; only the plan's widths fall back.
        warnings.warn(f"the full-size plan assumes {defaults.PLAN_SEQ_LEN} tokens per row: {error}", stacklevel=2)
        return {c.name: fixed_widths(defaults.PLAN_SEQ_LEN, "assumed; dataset unreadable") for c in candidates}
