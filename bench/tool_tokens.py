"""What clients' tool definitions really cost in prompt tokens, against ``context.tools_tokens``.

Each tool set is converted to chat tools as ragproxy converts it (Anthropic Messages tools by
``proxy/api/anthropic_wire.py``, Responses tools by ``proxy/api/responses_wire.py``; chat tools
as they are), then a short chat (a system prompt and one user message) is rendered with and
without the tools by real chat templates, and both renderings are tokenized; the tools' real
cost is the difference. Renderings:

- Qwen 2.5 (``bench/data/templates/Qwen-Qwen2.5-7B-Instruct.jinja``: the tools inside
  ``<tools></tools>`` in the system message, one ``tojson`` a line) with Qwen 2's tokenizer;
- Llama 3.1 (``meta-llama-Llama-3.1-8B-Instruct.jinja``: ``tojson(indent=4)`` in the first user
  message) with Llama 3's tokenizer;
- DeepSeek-R1 as llama.cpp serves it with tools (``llama-cpp-deepseek-r1.jinja``: the functions
  as one ``tojson(indent=2)`` list) with Qwen 2's tokenizer (DeepSeek-R1's own template drops
  tools);
- the tests' llama-server (SmolLM2's tokenizer) started with ``--jinja --chat-template-file``
  the Qwen 2.5 template: its own ``/apply-template`` and ``/tokenize``.

The templates are the official ones as the llama.cpp sources vendor them (the sdist the tests
build llama-server from); they are rendered as Hugging Face's transformers renders them
(``tojson``: ``json.dumps`` without ASCII escapes, keys in order, ``", "`` and ``": "``). The
tokenizers are bench/token_estimate.py's (llama.cpp's vocab GGUFs, checked against its test
vectors); special tokens count one each.

    .venv/bin/pip install gguf tokenizers jinja2
    .venv/bin/python bench/tool_tokens.py [--data ../shared/data] [--tools FILE ...] [--no-smollm2]

Tool sets: Claude Code and Codex captured requests (``<data>/clients``), Open WebUI
(``tests/data/open-webui-tools.json``), every ``tests/data/clients/*.json``, and each ``--tools``
file: a captured request (``{"body": {...}}``), a request body, ``{"tools": [...]}`` or a list.
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import orjson  # noqa: E402

from bench.token_estimate import gguf_tokenizer, vocab_dir  # noqa: E402
from proxy.api import anthropic_wire, responses_wire  # noqa: E402
from proxy.pipeline import context  # noqa: E402
from proxy.text import estimate_tokens  # noqa: E402

TEMPLATES = Path(ROOT) / "bench" / "data" / "templates"
QWEN25 = TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja"
LLAMA31 = TEMPLATES / "meta-llama-Llama-3.1-8B-Instruct.jinja"
DEEPSEEK_R1 = TEMPLATES / "llama-cpp-deepseek-r1.jinja"
MESSAGES = [
    {"role": "system", "content": "You are a helpful coding assistant. Answer briefly."},
    {"role": "user", "content": "Which files in this repository read the configuration?"},
]

Render = Callable[[list[dict[str, Any]] | None], str]


# -- tool sets ------------------------------------------------------------------------------------
def chat_tools(data: Any) -> list[dict[str, Any]]:
    """The chat tools ragproxy would forward for this file's tools."""
    if isinstance(data, dict) and isinstance(data.get("body"), dict):
        data = data["body"]
    tools = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(tools, list):
        raise SystemExit("no 'tools' list")
    out: list[dict[str, Any]] = []
    for tool in tools:
        if "function" in tool:  # chat completions
            out.append(tool)
        elif "input_schema" in tool or (tool.get("type") is None and "name" in tool):  # Anthropic
            out += anthropic_wire._tools([tool], anthropic_wire.Wire("", False, []))
        else:  # Responses: function, custom, namespace (hosted tools are dropped)
            out += responses_wire._tools([tool], responses_wire.Wire({}))
    return out


def tool_sets(data: Path, extra: Sequence[Path]) -> dict[str, list[dict[str, Any]]]:
    files = [
        ("Claude Code 2.1.197", data / "clients" / "claude-code-2.1.197-messages-request.json"),
        ("Codex 0.171.0", data / "clients" / "codex-0.171.0-responses-request.json"),
        ("Open WebUI 0.12.4", Path(ROOT) / "tests" / "data" / "open-webui-tools.json"),
    ]
    files += [(p.stem, p) for p in sorted((Path(ROOT) / "tests" / "data" / "clients").glob("*.json"))]
    files += [(p.stem, p) for p in extra]
    sets = {}
    for label, path in files:
        if not path.exists():
            print(f"{label}: {path} not found; skipped", file=sys.stderr)
            continue
        sets[label] = chat_tools(json.loads(path.read_text(encoding="utf-8")))
    return sets | synthetic()


def synthetic() -> dict[str, list[dict[str, Any]]]:
    """Schemas denser in structure than any client's: what an indented rendering costs."""

    def function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": parameters},
        }

    def nested(depth: int, i: int = 0) -> dict[str, Any]:
        if depth == 0:
            return {"type": "string", "enum": ["a", "b"]} if i % 2 else {"type": "integer"}
        properties = {f"p{j}": nested(depth - 1, j) for j in range(3)}
        return {"type": "object", "properties": properties, "required": ["p0"]}

    flat = {
        "type": "object",
        "properties": {f"x{i}": {"type": "string"} for i in range(15)},
        "required": ["x0"],
    }
    enum = {
        "type": "object",
        "properties": {"mode": {"type": "string", "enum": [f"m{i}" for i in range(30)]}},
    }
    return {
        "synthetic: 15 short parameters a tool": [function(f"t{k}", "Do it.", flat) for k in range(8)],
        "synthetic: objects nested 4 deep": [function(f"tool_{k}", "Nested.", nested(4)) for k in range(4)],
        "synthetic: an enum of 30": [function(f"pick{k}", "Pick.", enum) for k in range(6)],
    }


# -- rendering and counting -----------------------------------------------------------------------
def hf_template(path: Path) -> Callable[..., str]:
    """A chat template as transformers renders it (its environment and ``tojson``)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        if not isinstance(x, (dict, list, str, int, float, bool, type(None))):
            x = list(x)  # a filter's generator (``map``)
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(path.read_text(encoding="utf-8")).render


_TOKENIZERS: dict[str, Callable[[str], int]] = {}


def special_counter(name: str, extra: Sequence[str] = ()) -> Callable[[str], int]:
    """A rendered prompt's tokens: control tokens (and ``extra``, tokens the model's own
    vocabulary adds) one each, the text between them through the tokenizer."""
    import gguf

    count = _TOKENIZERS.get(name) or _TOKENIZERS.setdefault(name, gguf_tokenizer(name))
    reader = gguf.GGUFReader(vocab_dir() / f"ggml-vocab-{name}.gguf")
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    kinds = reader.fields["tokenizer.ggml.token_type"].contents()
    specials = {t for t, k in zip(tokens, kinds, strict=True) if k == 3} | set(extra)
    split = re.compile("(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")")

    def total(text: str) -> int:
        return sum(1 if i % 2 else count(part) for i, part in enumerate(split.split(text)) if part)

    return total


def renderings() -> dict[str, tuple[Render, Callable[[str], int]]]:
    qwen25, llama31, r1 = hf_template(QWEN25), hf_template(LLAMA31), hf_template(DEEPSEEK_R1)
    qwen_count = special_counter("qwen2", ("<tool_call>", "</tool_call>"))
    deepseek = ["<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"]
    deepseek += ["<｜tool▁calls▁end｜>", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>"]
    return {
        "Qwen 2.5 / Qwen 2": (
            lambda tools: qwen25(messages=MESSAGES, tools=tools, add_generation_prompt=True),
            qwen_count,
        ),
        "Llama 3.1 / Llama 3": (
            lambda tools: llama31(
                messages=MESSAGES, tools=tools, add_generation_prompt=True, bos_token="<|begin_of_text|>"
            ),
            special_counter("llama-bpe"),
        ),
        "DeepSeek-R1 (llama.cpp) / Qwen 2": (
            lambda tools: r1(
                messages=MESSAGES,
                tools=tools,
                add_generation_prompt=True,
                bos_token="<｜begin▁of▁sentence｜>",
            ),
            special_counter("qwen2", deepseek),
        ),
    }


def server_rendering(base: str, client: httpx.Client) -> tuple[Render, Callable[[str], int]]:
    def render(tools: list[dict[str, Any]] | None) -> str:
        body: dict[str, Any] = {"messages": MESSAGES}
        if tools:
            body["tools"] = tools
        reply = client.post(base + "/apply-template", json=body)
        reply.raise_for_status()
        prompt: str = reply.json()["prompt"]
        return prompt

    def count(prompt: str) -> int:
        reply = client.post(base + "/tokenize", json={"content": prompt, "parse_special": True})
        reply.raise_for_status()
        return len(reply.json()["tokens"])

    return render, count


# -- estimates ------------------------------------------------------------------------------------
def old_estimate(tools: list[dict[str, Any]]) -> int:
    """``context.tools_tokens`` as it was: the compact JSON of the list, priced as text."""
    return estimate_tokens(orjson.dumps(tools).decode())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(ROOT).parent / "shared" / "data")
    parser.add_argument("--tools", type=Path, nargs="*", default=[], help="more tool sets")
    parser.add_argument("--no-smollm2", action="store_true")
    parser.add_argument("--dump", type=Path, help="write each rendering's tool part here (JSON lines)")
    args = parser.parse_args()
    sets = tool_sets(args.data, args.tools)
    rows = []
    with httpx.Client(timeout=60) as client, ExitStack() as stack:
        ways = renderings()
        if not args.no_smollm2:
            from tests.servers import llama_server

            server = stack.enter_context(
                llama_server("--jinja", "--chat-template-file", str(QWEN25), slots=1)
            )
            ways["Qwen 2.5 on llama-server / SmolLM2"] = server_rendering(server.url, client)
        dump = stack.enter_context(args.dump.open("w", encoding="utf-8")) if args.dump else None
        for label, tools in sets.items():
            for way, (render, count) in ways.items():
                without, with_tools = render(None), render(tools)
                real = count(with_tools) - count(without)
                old, new = old_estimate(tools), context.tools_tokens({"tools": tools})
                rows.append((label, way, len(tools), real, old, new))
                if dump:
                    dump.write(
                        json.dumps({"set": label, "way": way, "real": real, "prompt": with_tools}) + "\n"
                    )
    print("| tools of | template / tokenizer | tools | real | old est. | old/real | new est. | new/real |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, way, n, real, old, new in rows:
        print(
            f"| {label} | {way} | {n} | {real:,} | {old:,} | {old / real:.2f} | {new:,} | {new / real:.2f} |"
        )


if __name__ == "__main__":
    main()
