"""Agents keep their tools and get their passages: an agent's tools on the chat wire never give way
(a chat UI's built-ins still do), fields meaningful only beside tools go with them, the window
grows for tools, passages and the answer where Ollama can grow it, and where it cannot the reply
says so once, naming the setting; a client's num_ctx is believed only up to the server's window;
an agent's continuation and compaction turns search for the question they continue; a client's
title requests get no passages."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.pipeline import context
from proxy.pipeline.context import tools_tokens
from proxy.pipeline.render import NOTE_MARK
from proxy.settings import Settings
from tests.conftest import CHAT_MODEL, UpstreamLog
from tests.ragdocs import CANARY, QUESTION
from tests.servers import Server, ragproxy
from tests.test_fitting import open_webui_tools

AGENT_TOOLS = ("bash", "read", "edit", "write", "glob", "grep", "webfetch", "todowrite", "task")


def agent_tools(tokens: int) -> list[dict[str, Any]]:
    """An agent's tool set (opencode's names) whose definitions take about ``tokens``."""
    tools: list[dict[str, Any]] = []
    words = 1
    while not tools or tools_tokens({"tools": tools}) < tokens:
        words += 10
        tools = [
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": " ".join(f"{name} does step {i} of its work." for i in range(words)),
                    "parameters": {
                        "type": "object",
                        "properties": {"path": {"type": "string", "description": "The file."}},
                        "required": ["path"],
                    },
                },
            }
            for name in AGENT_TOOLS
        ]
    return tools


def preview(url: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(url + "/v1/rag/preview", json={"model": CHAT_MODEL} | body, timeout=60)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


@pytest.fixture(scope="module")
def fixed_window(ollama: Server, docs_index: tuple[Path, Path]) -> Any:
    """ragproxy before a server of a fixed 2,048-token window, spoken to in OpenAI's API."""
    folder, db = docs_index
    with ragproxy(
        upstream=ollama.url,
        upstream_api="openai",
        model=CHAT_MODEL,
        docs=(f"manuals={folder}",),
        db=str(db),
        context_window=2048,
    ) as url:
        yield url


@pytest.fixture(scope="module")
def llama_proxy(llama: Server, docs_index: tuple[Path, Path]) -> Any:
    """ragproxy straight before llama.cpp, whose window (2,048 tokens a slot here) is fixed."""
    folder, db = docs_index
    with ragproxy(upstream=llama.url, upstream_api="openai", docs=(f"manuals={folder}",), db=str(db)) as url:
        yield url


# -- tools -----------------------------------------------------------------------------------------
def test_an_agents_tools_on_the_chat_wire_stay_with_their_fields(fixed_window: str) -> None:
    """opencode and Copilot CLI speak /v1/chat/completions: their tools never give way, even when
    the best passage then cannot fit; tool_choice and parallel_tool_calls go with them."""
    tools = agent_tools(1700)
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "max_tokens": 8,
    }
    result = preview(fixed_window, body)
    sent = result["upstream"]["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == list(AGENT_TOOLS)
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is True
    assert result["rag"]["found"] == 1 and result["rag"]["sent"] == 0
    assert "--context-window (now 2048)" in result["rag"]["no_room"]  # for the reply's note


def test_a_chat_uis_builtin_tools_give_way_and_take_their_fields_along(fixed_window: str) -> None:
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": open_webui_tools(),
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "max_tokens": 8,
    }
    result = preview(fixed_window, body)
    sent = result["upstream"]["body"]
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(sent)
    assert result["rag"]["sent"] == 1 and CANARY in json.dumps(sent["messages"])


def test_tool_choice_none_sends_neither_tools_nor_their_fields(fixed_window: str) -> None:
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": agent_tools(100),
        "tool_choice": "none",
        "parallel_tool_calls": False,
        "max_tokens": 8,
    }
    sent = preview(fixed_window, body)["upstream"]["body"]
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(sent)


def test_ollama_grows_the_window_for_an_agents_tools_passage_and_answer(
    make_proxy: Callable[..., AbstractContextManager[str]], ollama: Server, docs_index: tuple[Path, Path]
) -> None:
    """Claude Code asks max_tokens 32,000 whatever the model: that is a ceiling, not a length, and
    the window it would take (half of it, before) goes to the tools and the passage instead.
    num_ctx grows to hold them and the answer's share (the test models say 8,192 tokens)."""
    folder, db = docs_index
    with make_proxy(
        upstream=ollama.url, upstream_api="ollama", docs=(f"manuals={folder}",), db=str(db)
    ) as url:
        body = {
            "messages": [{"role": "user", "content": QUESTION}],
            "tools": agent_tools(5000),
            "max_tokens": 32000,
        }
        result = preview(url, body)
    sent, tokens = result["upstream"]["body"], result["tokens"]
    assert len(sent["tools"]) == len(AGENT_TOOLS) and CANARY in json.dumps(sent["messages"])
    assert tokens["window"] == 8192 and tokens["reserved_for_answer"] == 8192 // 4
    assert sent["options"]["num_ctx"] == 8192
    assert tokens["prompt_estimate"] + tokens["reserved_for_answer"] <= sent["options"]["num_ctx"]


def test_the_answer_reserve_is_the_clients_limit_within_a_quarter_of_the_window() -> None:
    settings = Settings(answer_tokens=1024)
    assert context.answer_reserve({"max_tokens": 32000}, settings, 8192) == 2048
    assert context.answer_reserve({"max_tokens": 32000}, settings, 32768) == 8192
    assert context.answer_reserve({"max_tokens": 300}, settings, 32768) == 300
    assert context.answer_reserve({}, settings, 2048) == 1024  # --answer-tokens, if larger
    assert context.answer_reserve({}, settings, 1024) == 512  # never more than half


# -- the note when the window cannot grow ----------------------------------------------------------
def crowded(window: int, reserve: int) -> list[dict[str, Any]]:
    """A system prompt that leaves no room for a passage in ``window`` less ``reserve``."""
    words = 10
    while True:
        messages = [
            {"role": "system", "content": " ".join(f"Rule {i}: be careful." for i in range(words))},
            {"role": "user", "content": QUESTION},
        ]
        if context.estimate(messages) > window - reserve - 40:
            return messages
        words += 10


def content_of(reply: httpx.Response) -> str:
    text = ""
    for line in reply.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    return text


def test_a_window_too_small_for_any_passage_is_told_once_with_the_setting(
    fixed_window: str, upstream_log: UpstreamLog
) -> None:
    messages = crowded(2048, 8)
    body = {"model": CHAT_MODEL, "messages": messages, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", fixed_window + "/v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.status_code == 200
        assert reply.headers["x-ragproxy-context"] == "0/1 passages fit"
        answer = content_of(reply)
    note = answer[answer.index(NOTE_MARK) :]
    assert "2048-token" in note and "--context-window (now 2048)" in note, note
    # the next turn: the note is in the history the client sends back; it is not said again, and
    # it does not reach the model
    upstream_log.clear()
    later = [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": QUESTION}]
    body = {"model": CHAT_MODEL, "messages": later, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", fixed_window + "/v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.status_code == 200
        assert NOTE_MARK not in content_of(reply)
    (sent,) = upstream_log.requests("/v1/chat/completions")
    assert NOTE_MARK not in json.dumps(sent["body"]["messages"])


def test_the_servers_own_window_is_named_when_it_is_what_holds_the_passages_out(llama_proxy: str) -> None:
    """llama.cpp reports its slot's window and cannot grow it."""
    result = preview(llama_proxy, {"model": "smollm2", "messages": crowded(2048, 8), "max_tokens": 8})
    assert result["tokens"]["window"] == 2048 and result["rag"]["sent"] == 0
    assert "the model server's context size (llama.cpp: --ctx-size)" in result["rag"]["no_room"]


def test_num_ctx_max_is_named_when_it_is_what_holds_the_passages_out(rag_proxy: str) -> None:
    result = preview(rag_proxy, {"messages": crowded(2048, 8), "max_tokens": 8})
    assert result["rag"]["sent"] == 0 and "--num-ctx-max (now 2048)" in result["rag"]["no_room"]


# -- a client's num_ctx ----------------------------------------------------------------------------
@pytest.mark.parametrize("num_ctx", [8947, 1024])
def test_a_clients_num_ctx_does_not_change_a_fixed_window(
    llama: Server, docs_index: tuple[Path, Path], captured: io.StringIO, num_ctx: int
) -> None:
    """aider sends its own estimate as num_ctx over the Ollama API (8,947, say); a server of a
    fixed window (2,048 tokens here) holds what it holds, neither more nor less."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": QUESTION}],
        "options": {"num_ctx": num_ctx, "num_predict": 4},
        "stream": False,
    }
    folder, db = docs_index
    with ragproxy(upstream=llama.url, upstream_api="openai", docs=(f"manuals={folder}",), db=str(db)) as url:
        reply = httpx.post(url + "/api/chat", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    (record,) = [r for r in records if r.get("event") == "request" and r.get("path") == "/api/chat"]
    assert record["context_window"] == 2048


# -- an agent's own turns --------------------------------------------------------------------------
CONTINUATIONS = {
    "Claude Code, output limit": "Output token limit hit. Resume directly \u2014 no apology, no recap of "
    "what you were doing. Pick up mid-thought if that is where the cut happened. Break remaining "
    "work into smaller pieces.",
    "Claude Code, compaction": "Your task is to create a detailed summary of the conversation so far, "
    "paying close attention to the user's explicit requests and your previous actions.",
    "Codex, compaction": "You are performing a CONTEXT CHECKPOINT COMPACTION. Create a handoff summary "
    "for another LLM that will resume the task.",
    "opencode, after compaction": "Continue if you have next steps, or stop and ask for clarification "
    "if you are unsure how to proceed.",
    "Copilot CLI, output limit": "Please continue from where you left off.",
}


@pytest.mark.parametrize("turn", sorted(CONTINUATIONS))
def test_a_continuation_turn_searches_for_the_question_it_continues(rag_proxy: str, turn: str) -> None:
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "The valve's maintenance code is"},
        {"role": "user", "content": CONTINUATIONS[turn]},
    ]
    result = preview(rag_proxy, {"messages": messages, "max_tokens": 8})
    assert result["rag"]["query"] == QUESTION
    assert result["rag"]["sent"] == 1 and CANARY in json.dumps(result["upstream"]["body"]["messages"])


TITLE_PROMPTS = {
    "Claude Code": "Generate a concise, sentence-case title (3-7 words) that captures the main topic "
    "or goal of this coding session. The title should be clear enough that the user recognizes the "
    "session in a list.",
    "opencode": "You are a title generator. You output ONLY a thread title. Nothing else.",
}


@pytest.mark.parametrize("client", sorted(TITLE_PROMPTS))
def test_a_clients_title_request_gets_no_passages(rag_proxy: str, client: str) -> None:
    messages = [
        {"role": "system", "content": TITLE_PROMPTS[client]},
        {"role": "user", "content": f"<session>\n{QUESTION}\n</session>"},
    ]
    result = preview(rag_proxy, {"messages": messages, "max_tokens": 8})
    assert result["rag"]["skipped"] == "title request" and result["sources"] == []


def test_a_user_asking_for_a_title_still_gets_passages(rag_proxy: str) -> None:
    messages = [{"role": "user", "content": f"Suggest a title for a note answering: {QUESTION}"}]
    result = preview(rag_proxy, {"messages": messages, "max_tokens": 8})
    assert result["rag"]["skipped"] is None and result["rag"]["sent"] == 1


# -- sources ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_a_turn_of_tool_calls_gets_no_footnote_and_the_answer_does(rag_proxy: str, api: str) -> None:
    """The test server's tools model calls a tool whenever it is offered one."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    body = {"model": CHAT_MODEL, "messages": messages, "stream": False}
    path = "/api/chat" if api == "ollama" else "/v1/chat/completions"

    def message(tools: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
        limit = (
            {"options": {"num_predict": tokens, "temperature": 0}}
            if api == "ollama"
            else {"max_tokens": tokens, "temperature": 0}
        )
        sent = {**body, **limit, **({"tools": tools} if tools else {})}
        reply = httpx.post(rag_proxy + path, json=sent, timeout=120)
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = (
            reply.json()["message"] if api == "ollama" else reply.json()["choices"][0]["message"]
        )
        return answer

    lookup = {
        "type": "function",
        "function": {
            "name": "read",
            "description": "Read a file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
    called = message([lookup], 60)
    assert called["tool_calls"] and "Sources:" not in (called.get("content") or "")
    assert "Sources:\n[1] valves/zephyr.md" in message([], 4)["content"]


def test_codexs_environment_context_is_not_searched(rag_proxy: str) -> None:
    """Codex sends the folder, shell and sandbox as a user message of its own before the question."""
    context = (
        "<environment_context>\n  <cwd>/home/me/project</cwd>\n  <shell>bash</shell>\n"
        "  <current_date>2026-12-01</current_date>\n</environment_context>"
    )
    messages = [{"role": "user", "content": context}, {"role": "user", "content": QUESTION}]
    result = preview(rag_proxy, {"messages": messages, "max_tokens": 8})
    assert result["rag"]["query"] == QUESTION and result["rag"]["sent"] == 1
