"""Requests made to hurt the server: each is answered or refused, bounded in time and memory,
and the server keeps answering everyone else meanwhile."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.api.schemas import MAX_MESSAGES, MAX_STOP, MAX_TOOLS
from tests.conftest import CHAT_MODEL, UpstreamLog
from tests.ragdocs import CANARY, QUESTION
from tests.servers import HealthProbe, Server, answered_in_time, ragproxy_process


def long_history(messages: int) -> list[dict[str, Any]]:
    """``messages`` short turns, ending with the question about the documents."""
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: nothing to see here"}
        for i in range(messages - 1)
    ]
    if history and history[-1]["role"] == "user":
        history.append({"role": "assistant", "content": "ok"})
        history.pop(0)
    return [*history, {"role": "user", "content": QUESTION}]


def agent_history(messages: int) -> list[dict[str, Any]]:
    """An agent's session of ``messages``: rounds of tool calls and their results, the user
    saying "go on" every few rounds, then a question."""
    history: list[dict[str, Any]] = []
    i = 0
    while len(history) < messages - 3:
        if i % 4 == 0:
            history.append({"role": "user", "content": "Go on, step by step."})
        function = {"name": f"tool_{i % 7}", "arguments": "{}"}
        history += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"call_{i}", "type": "function", "function": function}],
            },
            {"role": "tool", "tool_call_id": f"call_{i}", "content": "nothing"},
        ]
        i += 1
    history += [{"role": "user", "content": "And one more thing."}] * (messages - 1 - len(history))
    return [*history, {"role": "user", "content": QUESTION}]


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_a_history_of_the_most_messages_is_fitted_while_the_server_keeps_answering(
    api: str, llama: Server, ollama: Server, docs_index: tuple[Path, Path], upstream_log: UpstreamLog
) -> None:
    """A chat UI's long history to a llama.cpp server, an agent's to Ollama (whose tool results
    are named after their calls, looked up across the whole history)."""
    folder, db = docs_index
    upstream = llama.url if api == "openai" else ollama.url
    flags = ("--upstream", upstream, "--upstream-api", api, "--model", CHAT_MODEL, "--num-ctx-max", "2048")
    messages = long_history(MAX_MESSAGES) if api == "openai" else agent_history(MAX_MESSAGES)
    assert len(messages) == MAX_MESSAGES
    body = {"model": CHAT_MODEL, "messages": messages, "max_tokens": 8, "temperature": 0}
    # encoded before the probe starts: the probe times the server, and encoding a body of 10,000
    # messages in this process (with a full suite's heap to collect) held the probe's thread too
    sent_body = json.dumps(body).encode()
    with ragproxy_process(*flags, "--db", str(db), "--docs", f"manuals={folder}") as proxy:
        with httpx.Client(base_url=proxy.url, timeout=120) as client, HealthProbe(proxy.url) as probe:
            time.sleep(0.2)  # the probe has its connection up before the long request starts
            started = time.perf_counter()
            reply = client.post(
                "/v1/chat/completions", content=sent_body, headers={"content-type": "application/json"}
            )
            took = time.perf_counter() - started
            time.sleep(0.1)
    assert reply.status_code == 200, reply.text
    assert probe.failures == 0
    during = sorted(probe.seconds)
    print(f"{len(messages)} messages answered in {took:.2f} s; /healthz max {during[-1] * 1000:.0f} ms")
    # Fitting runs in linear time, in a thread: /healthz is never held up behind it (the quadratic
    # fit on the event loop held it for the whole request, 27 s).
    assert answered_in_time(probe.seconds), during[-5:]
    if api == "ollama":
        (sent,) = upstream_log.requests("/api/chat")
        kept = sent["body"]["messages"]
        assert 2 < len(kept) < len(messages) / 10  # the oldest history gave way to the window
        assert CANARY in kept[0]["content"]  # the passage did not
        results = [m for m in kept if m["role"] == "tool"]
        assert results and all(m.get("tool_name") in {f"tool_{i}" for i in range(7)} for m in results)


def test_more_than_the_most_messages_is_refused_on_both_wires(proxy_ollama: str) -> None:
    messages = long_history(MAX_MESSAGES + 1)
    reply = httpx.post(
        f"{proxy_ollama}/v1/chat/completions", json={"model": CHAT_MODEL, "messages": messages}, timeout=30
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == ("messages", "too_many_messages")
    assert f"{MAX_MESSAGES:,}" in error["message"]
    reply = httpx.post(
        f"{proxy_ollama}/api/chat", json={"model": CHAT_MODEL, "messages": messages}, timeout=30
    )
    assert reply.status_code == 400
    assert "at most" in reply.json()["error"]


def test_tools_parts_and_stop_sequences_past_their_limits_are_refused(proxy_openai: str) -> None:
    """A body near the size limit of 100,000 tool definitions, 200,000 content parts or stop
    sequences held the server and went upstream (the estimate of millions of tokens)."""
    tool = {"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}
    question = {"role": "user", "content": "hi"}
    cases = {
        "tools": {"messages": [question], "tools": [tool] * (MAX_TOOLS + 1)},
        "messages[0].content": {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 10_001}]
        },
        "stop": {"messages": [question], "stop": ["x"] * (MAX_STOP + 1)},
    }
    for param, body in cases.items():
        reply = httpx.post(
            f"{proxy_openai}/v1/chat/completions", json={"model": "smollm2", **body}, timeout=30
        )
        assert reply.status_code == 400, (param, reply.text)
        assert reply.json()["error"]["param"] == param
    within = {"messages": [question], "tools": [tool] * 8, "stop": ["x"] * 4, "max_tokens": 2}
    assert httpx.post(
        f"{proxy_openai}/v1/chat/completions", json={"model": "smollm2", **within}, timeout=60
    ).is_success
