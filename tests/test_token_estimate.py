"""The prompt's token estimate against real counts: each text below with what Qwen 2's tokenizer
(DeepSeek-R1 1.5b-32b, Qwen 2.5) and Llama 3's (DeepSeek-R1 8b) count for it, as llama.cpp
tokenizes with their vocabularies (bench/token_estimate.py measures whole evaluation sets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.pipeline.context import tools_tokens
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


# -- tool definitions ---------------------------------------------------------------------------------
def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


SMALL_TOOLS = [
    _tool(
        "read_file",
        "Read a file of the workspace and return its text, with line numbers.",
        {
            "path": {"type": "string", "description": "The file's path, relative to the workspace."},
            "offset": {"type": "integer", "description": "The first line to read (1-based)."},
            "limit": {"type": "integer", "description": "How many lines to read."},
        },
        ["path"],
    ),
    _tool(
        "search",
        "Search the workspace's files for a regular expression.",
        {
            "pattern": {"type": "string"},
            "glob": {"type": "string", "description": "Only files matching this glob, e.g. *.py"},
            "case_sensitive": {"type": "boolean", "default": False},
        },
        ["pattern"],
    ),
    _tool(
        "run_command",
        "Run a shell command and return its output.",
        {
            "command": {"type": "string"},
            "timeout": {"type": "number", "description": "Seconds to wait, at most 600."},
            "mode": {"type": "string", "enum": ["foreground", "background"]},
        },
        ["command"],
    ),
]


def open_webui_tools() -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = json.loads(
        (Path(__file__).parent / "data" / "open-webui-tools.json").read_text(encoding="utf-8")
    )["tools"]
    return tools


# What the tools add to a chat's prompt (rendered with and without them), counted by
# bench/tool_tokens.py: Qwen 2.5's template with Qwen 2's tokenizer, Llama 3.1's with Llama 3's,
# llama.cpp's DeepSeek-R1 template with Qwen 2's, and Qwen 2.5's on llama-server with SmolLM2's.
TOOL_COUNTS = {
    "small": (SMALL_TOOLS, (399, 492, 455, 442)),
    "first-small": (SMALL_TOOLS[:1], (199, 215, 200, 232)),
    "open-webui": (open_webui_tools(), (6579, 8002, 7650, 7000)),
}


@pytest.mark.parametrize("name", list(TOOL_COUNTS))
def test_tool_definitions_are_never_undercounted_by_any_template(name: str) -> None:
    tools, counts = TOOL_COUNTS[name]
    estimated = tools_tokens({"tools": tools})
    assert max(counts) <= estimated <= 1.3 * min(counts)


def test_the_tools_estimate_grows_with_each_tool_and_covers_their_json() -> None:
    tools = open_webui_tools() + SMALL_TOOLS
    estimates = [tools_tokens({"tools": tools[:n]}) for n in range(len(tools) + 1)]
    assert estimates[0] == 0 and tools_tokens({}) == 0
    assert all(a < b for a, b in zip(estimates, estimates[1:], strict=False))
    # never below the JSON's own estimate plus the template's instructions around it
    for n in (1, 5, len(tools)):
        assert estimates[n] >= estimate_tokens(orjson.dumps(tools[:n]).decode()) + 100
