"""The prompt's token estimate against real counts: each text below with what Qwen 2's tokenizer
(DeepSeek-R1 1.5b-32b, Qwen 2.5) and Llama 3's (DeepSeek-R1 8b) count for it, as llama.cpp
tokenizes with their vocabularies (bench/token_estimate.py measures whole evaluation sets)."""

from __future__ import annotations

import pytest

from proxy.text import chunk_tokens, estimate_tokens

# text: (Qwen 2 tokens, Llama 3 tokens)
COUNTED = {
    "千人基因组计划使绘制由稀有变异构成的遗传序列变异图谱成为可能，这些稀有变异的外显效应大于常见变异。"
    "英国有1/2000的人PrP检测呈异常阳性。": (49, 63),
    "Family: 👨\u200d👩\u200d👧\u200d👦 👩\u200d👩\u200d👦 — flags: 🇺🇸 🇨🇳 🇯🇵 🇩🇪 — hands 👋🏽✌🏾🤞🏿🫶🏻 — "
    "rare 🫠🫡🫢🫣🫤🥹": (72, 97),
    "ＦＵＬＬ　ＷＩＤＴＨ　ＴＥＸＴ！＃＄％＆（）＊＋，－．／　ｈｔｔｐｓ：／／ｅｘａｍｐｌｅ．ｃｏｍ": (
        48,
        65,
    ),
    "commit 3f9a2b7c4d1e0f8a9b6c5d4e3f2a1b0c9d8e7f6a\n"
    "sha256:9f86d081884c7d659a2feaea0c55ad015a3bf4f1b2b0b822cd15d08c15b0f00a": (106, 88),
    "In a prior report, we described the isolation and characterization of a distinct primate lentivirus.": (
        19,
        19,
    ),
    "def chunk_document(document: Document, target_tokens: int = 256) -> list[Chunk]:\n"
    "    return [c for c in chunks if c.text.strip()]\n": (35, 33),
}


@pytest.mark.parametrize(
    "text", list(COUNTED), ids=["chinese", "emoji", "full-width", "hex", "english", "code"]
)
def test_the_estimate_is_never_more_than_5_percent_under_and_not_far_over(text: str) -> None:
    real = max(COUNTED[text])
    assert 0.95 * real <= estimate_tokens(text) <= 1.6 * real


def test_the_estimate_of_nothing_is_nothing() -> None:
    assert estimate_tokens("") == 0 and estimate_tokens(" ") == 1


def test_a_long_text_costs_what_its_parts_cost() -> None:
    """The weights are summed in blocks: a long text is not wrapped round a modulus."""
    part = "表情😀符号ＡＢ" * 40
    assert estimate_tokens(part * 50) in range(
        50 * estimate_tokens(part) - 50, 50 * estimate_tokens(part) + 1
    )


def test_chunk_sizes_keep_their_own_measure() -> None:
    """The index sizes chunks as before (one per CJK character, a quarter per other character)."""
    assert chunk_tokens("中文" * 10) == 20 and chunk_tokens("word " * 8) == 10
