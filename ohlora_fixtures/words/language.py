"""The report's words: translations.toml, read once; `text(key, lang)` picks one and fills it in."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Any

LANGUAGES = ("en", "ko")


@lru_cache(maxsize=1)
def translations() -> dict[str, dict[str, str]]:
    """Every key with its string per language; a key missing a language is a packaging error, caught here."""
    document = tomllib.loads(resources.files(__package__).joinpath("translations.toml").read_text(encoding="utf-8"))
    for key, strings in document.items():
        missing = [lang for lang in LANGUAGES if lang not in strings]
        if missing:
            raise KeyError(f"translations.toml: [{key}] lacks {', '.join(missing)}")
    return document


def text(key: str, lang: str, **values: Any) -> str:
    """A report string in `lang` ("en" or "ko"), its {placeholders} filled from `values`."""
    return translations()[key][lang if lang in LANGUAGES else "en"].format(**values)


def word(key: str, value: str, lang: str) -> str:
    """A value from a data file or record in `lang` where translations.toml knows it (by `key`), else as it is."""
    try:
        return text(key, lang)
    except KeyError:
        return value
