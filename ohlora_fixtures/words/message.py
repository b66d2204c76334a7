"""Sentences that know their translations: a `Message` reads as English, and renders in any report language.

The judging code (selection, gather) words its reasons as messages, so the
report can show each one in the reader's language without a second copy of the
logic. The words themselves are data: words/translations.toml, looked up by key.
"""

from __future__ import annotations

from typing import Any, Mapping


def _text(key: str, lang: str, **values: Any) -> str:
    # Imported on use: the report package imports the modules that build messages.
    from ohlora_fixtures.words.language import text

    return text(key, lang, **values)


class Message(str):
    """A sentence from translations.toml (by key) or from data (per-language texts); its str value is English.

    Being a str keeps every English use as it was (joins, comparisons, `in`);
    `in_(lang)` gives the same sentence in another language, values that are
    messages themselves rendered in that language too.
    """

    key: str
    values: Mapping[str, Any]
    texts: Mapping[str, str]

    def __new__(cls, key: str, /, **values: Any) -> "Message":
        message = super().__new__(cls, _text(key, "en", **_localised(values, "en")))
        message.key, message.values, message.texts = key, values, {}
        return message

    @classmethod
    def literal(cls, texts: Mapping[str, str]) -> "Message":
        """A sentence given in each language by a data file; a missing language falls back to English."""
        message = str.__new__(cls, texts.get("en") or next(iter(texts.values()), ""))
        message.key, message.values, message.texts = "", {}, dict(texts)
        return message

    def in_(self, lang: str) -> str:
        """This sentence in `lang`."""
        if not self.key:
            return self.texts.get(lang) or str(self)
        return _text(self.key, lang, **_localised(self.values, lang))


def _localised(values: Mapping[str, Any], lang: str) -> dict[str, Any]:
    return {name: in_language(value, lang) for name, value in values.items()}


def in_language(value: Any, lang: str) -> Any:
    """A message in `lang`, a tuple of them as a list ("a, b"); anything else as it is."""
    if isinstance(value, Message):
        return value.in_(lang)
    if isinstance(value, tuple):
        return ", ".join(str(in_language(item, lang)) for item in value)
    return value
