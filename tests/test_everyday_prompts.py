"""The everyday prompts that ship with the package (proxy/data/everyday_prompts.jsonl): the unrelated
side a relevance gate is calibrated on. They are read as the installed package reads them, and must
stay apart from the evaluation set (bench/data/unrelated_prompts.jsonl), or the gate would be tuned
on what measures it."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

LANGS = {"en", "zh-Hans", "zh-Hant"}
KINDS = {
    "smalltalk",
    "assistant",
    "coding",
    "math",
    "translation",
    "advice",
    "writing",
    "general",
    "near_topic",
    "misc",
}
PER_LANG = 200
EVALUATION = Path(__file__).resolve().parents[1] / "bench" / "data" / "unrelated_prompts.jsonl"


def read(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@cache
def prompts() -> tuple[dict[str, Any], ...]:
    text = resources.files("proxy.data").joinpath("everyday_prompts.jsonl").read_text("utf-8")
    return tuple(read(text))


def normal(text: str) -> str:
    """Case, width, whitespace and punctuation folded away: "Hi there!" and "hi  there" are one prompt."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if not c.isspace() and not unicodedata.category(c).startswith("P"))


def test_every_line_has_the_shape() -> None:
    for entry in prompts():
        assert set(entry) == {"lang", "kind", "text"}, entry
        assert entry["lang"] in LANGS, entry
        assert entry["kind"] in KINDS, entry
        text = entry["text"]
        assert isinstance(text, str) and text == text.strip() and text, entry


def test_enough_of_every_language_and_every_kind_in_each() -> None:
    languages = Counter(entry["lang"] for entry in prompts())
    assert all(languages[lang] >= PER_LANG for lang in LANGS), languages
    kinds = Counter((entry["lang"], entry["kind"]) for entry in prompts())
    missing = [(lang, kind) for lang in LANGS for kind in KINDS if not kinds[lang, kind]]
    assert not missing


def test_no_duplicates() -> None:
    texts = Counter(entry["text"] for entry in prompts())
    assert [text for text, n in texts.items() if n > 1] == []
    folded = Counter(normal(entry["text"]) for entry in prompts())
    assert [text for text, n in folded.items() if n > 1] == []


def test_apart_from_the_evaluation_set() -> None:
    evaluation = read(EVALUATION.read_text("utf-8"))
    assert len(evaluation) >= 200
    exact = {entry["text"] for entry in evaluation}
    folded = {normal(entry["text"]) for entry in evaluation}
    assert [entry["text"] for entry in prompts() if entry["text"] in exact] == []
    assert [entry["text"] for entry in prompts() if normal(entry["text"]) in folded] == []
