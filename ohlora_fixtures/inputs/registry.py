"""The candidate registry: which base models to compare, read from a TOML file."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ohlora_fixtures.errors import RegistryError
from ohlora_fixtures.inputs.resources import CANDIDATES, bundled
from ohlora_fixtures.records.storage import not_a_file

DEFAULT_REGISTRY = bundled(CANDIDATES)
DEFAULT_PROMPT_TEMPLATE = "### 질문: {question} ### 답변: "
KOREAN_SUPPORT = ("specialised", "supporting", "none")
# A name is the pytest id (`-k NAME`) and part of file names: pytest escapes non-ASCII ids
# (`-k 한국어` selects nothing) and `-k` parses and/or/not as operators.
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_K_OPERATORS = ("and", "or", "not")
SCALES = ("tiny", "full")  # a candidate is built as a tiny stand-in of its shape, or at full size


@dataclass(frozen=True)
class Candidate:
    """One base model under comparison, as the registry describes it."""

    name: str
    hub_id: str
    params_label: str
    leaderboard_average: float | None
    license: str
    korean: str
    model_type: str
    architecture: str
    target_modules: tuple[str, ...]
    config: dict[str, Any] = field(hash=False)
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    params_exact: int | None = None
    path: Path | None = None
    approximate: bool = False
    trust_remote_code: bool = False

    def prompt(self, question: str) -> str:
        """The text the model sees before its answer."""
        return self.prompt_template.replace("{question}", question)

    @property
    def params_billions(self) -> float:
        """Parameter count in billions: the exact count where known, else the label."""
        if self.params_exact is not None:
            return self.params_exact / 1e9
        return float(self.params_label.split()[0])


# field -> (types accepted, required)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "hub_id": ((str,), True),
    "params_label": ((str,), True),
    "leaderboard_average": ((int, float), False),
    "license": ((str,), True),
    "korean": ((str,), True),
    "model_type": ((str,), True),
    "architecture": ((str,), True),
    "target_modules": ((list,), True),
    "config": ((dict,), True),
    "prompt_template": ((str,), False),
    "params_exact": ((int,), False),
    "path": ((str,), False),
    "approximate": ((bool,), False),
    "trust_remote_code": ((bool,), False),
}


def load_registry(path: str | Path = DEFAULT_REGISTRY) -> tuple[Candidate, ...]:
    """Read and check a registry file; every problem names the entry and field."""
    path = Path(path)
    what = not_a_file(path)
    if what:
        raise RegistryError(
            f"candidate registry {path}: {what}; "
            "pass --ohlora-candidates with the path of a TOML registry like data/candidates.toml"
        )
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RegistryError(f"candidate registry {path}: not valid UTF-8 TOML: {error}") from None
    entries = document.get("candidate")
    if not isinstance(entries, list) or not entries:
        raise RegistryError(
            f"candidate registry {path}: no [[candidate]] entries; each model is one [[candidate]] table"
        )
    defaults = document.get("defaults", {})
    candidates = tuple(
        _candidate(path, index, {**defaults, **entry}) for index, entry in enumerate(entries, start=1)
    )
    names = [candidate.name for candidate in candidates]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RegistryError(f"candidate registry {path}: duplicate names {duplicates}; names must be unique")
    return candidates


def _candidate(path: Path, index: int, entry: dict[str, Any]) -> Candidate:
    where = f"candidate registry {path}, entry {index} ({entry.get('name', 'unnamed')!r})"
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(_FIELDS)}")
    for name, (types, required) in _FIELDS.items():
        if name not in entry:
            if required:
                raise RegistryError(f"{where}: missing field {name!r}")
            continue
        value = entry[name]
        # bool is an int subclass: `true` must not pass for a count.
        if not isinstance(value, types) or (type(value) is bool and bool not in types):
            expected = " or ".join(t.__name__ for t in types)
            raise RegistryError(f"{where}: field {name!r} should be {expected}, got {value!r}")
    _check_name(where, entry["name"])
    # Imported here, not at plugin load: huggingface_hub must not start before the offline switch is set.
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(entry["hub_id"])
    except HFValidationError as error:
        raise RegistryError(
            f"{where}: field 'hub_id' = {entry['hub_id']!r} is not a Hugging Face repo id: {error}"
        ) from None
    if entry["korean"] not in KOREAN_SUPPORT:
        raise RegistryError(f"{where}: field 'korean' should be one of {KOREAN_SUPPORT}, got {entry['korean']!r}")
    modules = entry["target_modules"]
    if not modules or not all(isinstance(module, str) and module for module in modules):
        raise RegistryError(f"{where}: field 'target_modules' should be a non-empty list of module names")
    template = entry.get("prompt_template", DEFAULT_PROMPT_TEMPLATE)
    if "{question}" not in template:
        raise RegistryError(f"{where}: field 'prompt_template' must contain {{question}}")
    local = entry.get("path")
    if local is not None:
        local_path = (path.parent / local).resolve()
        if not local_path.is_dir():
            raise RegistryError(f"{where}: field 'path' = {local!r} is not a directory ({local_path})")
    else:
        local_path = None
    return Candidate(
        name=entry["name"],
        hub_id=entry["hub_id"],
        params_label=entry["params_label"],
        leaderboard_average=entry.get("leaderboard_average"),
        license=entry["license"],
        korean=entry["korean"],
        model_type=entry["model_type"],
        architecture=entry["architecture"],
        target_modules=tuple(modules),
        config=dict(entry["config"]),
        prompt_template=template,
        params_exact=entry.get("params_exact"),
        path=local_path,
        approximate=entry.get("approximate", False),
        trust_remote_code=entry.get("trust_remote_code", False),
    )


def _check_name(where: str, name: str) -> None:
    if NAME_RULE.fullmatch(name) and name.lower() not in _K_OPERATORS:
        return
    raise RegistryError(
        f"{where}: field 'name' = {name!r} cannot be used: a name is the pytest id you select with -k and "
        "part of file names, so it must be 1-64 ASCII letters, digits, '.', '-' or '_', start with a letter "
        "or digit, and not be and/or/not; write a non-ASCII or longer title in a comment, e.g. "
        'name = "llama-ko-1b"  # 한국어 라마'
    )


def select(
    candidates: tuple[Candidate, ...], names: list[str] | None, option: str = "--ohlora-models"
) -> tuple[Candidate, ...]:
    """The candidates named by `option`, in registry order; all when None."""
    if not names:
        return candidates
    known = {candidate.name for candidate in candidates}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise RegistryError(f"{option}: unknown candidate(s) {unknown}; valid names: {', '.join(sorted(known))}")
    return tuple(candidate for candidate in candidates if candidate.name in names)
