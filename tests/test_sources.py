"""Sources people can see: Open WebUI's source chips from events on the stream, the footnote for
every other client (a script can turn it off), and ragproxy's own footnote kept out of the
next turn."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import CHAT_MODEL, UpstreamLog, sdk
from tests.ragdocs import CANARY, QUESTION

OPEN_WEBUI_AGENT = "Python/3.12 aiohttp/3.14.5"  # the aiohttp session Open WebUI sends chats with


def stream(url: str, agent: str) -> list[dict[str, Any]]:
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "max_tokens": 8,
    }
    chunks = []
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, headers={"user-agent": agent}, timeout=60
    ) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_open_webui_gets_source_events_and_no_footnote(rag_proxy: str) -> None:
    chunks = stream(rag_proxy, OPEN_WEBUI_AGENT)
    first = chunks[0]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    event = first["event"]
    assert event["type"] == "source"
    assert event["data"]["source"]["name"] == "valves/zephyr.md > Zephyr valve > Maintenance"
    assert CANARY in event["data"]["document"][0]
    assert event["data"]["metadata"][0]["source"] == event["data"]["source"]["id"]
    assert sum("event" in c for c in chunks) == 1  # one passage, one event
    assert all(c["choices"] for c in chunks)  # every chunk a valid delta for strict clients
    assert "Sources:" not in content(chunks)
    assert chunks[-1]["sources"][0]["file"] == "valves/zephyr.md"


def test_every_other_client_gets_the_footnote_and_a_script_can_turn_it_off(rag_proxy: str) -> None:
    """CLIs built on the official SDK (aider, Copilot CLI, llm) show nothing but the text: they get
    the footnote too. A script that reads ``sources`` turns it off with a header."""
    chunks = stream(rag_proxy, "curl/8.5.0")
    assert "Sources:\n[1] valves/zephyr.md" in content(chunks)
    assert not any("event" in c for c in chunks)
    question = [{"role": "user", "content": QUESTION}]
    reply = sdk(rag_proxy).chat.completions.create(model=CHAT_MODEL, messages=question, max_tokens=8)
    assert "Sources:\n[1] valves/zephyr.md" in (reply.choices[0].message.content or "")
    clean = sdk(rag_proxy, default_headers={"X-RAG-Footnote": "off"}).chat.completions.create(
        model=CHAT_MODEL, messages=question, max_tokens=8
    )
    assert "Sources:" not in (clean.choices[0].message.content or "")
    assert (clean.model_extra or {})["sources"][0]["file"] == "valves/zephyr.md"
    assert (clean.model_extra or {})["rag"] == {"found": 1, "sent": 1, "gated": 2}  # tomatoes, panda


def test_own_footnote_in_the_history_is_not_sent_back(rag_proxy: str, upstream_log: UpstreamLog) -> None:
    """Open WebUI stores the footnote with the answer and sends it in the next turn."""
    earlier = f"The code is {CANARY} [1].\n\nSources:\n[1] valves/zephyr.md > Maintenance"
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": earlier},
        {"role": "user", "content": "How often is it inspected?"},
    ]
    reply = httpx.post(
        rag_proxy + "/api/chat", json={"model": CHAT_MODEL, "messages": messages, "stream": False}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    (sent,) = upstream_log.requests("/api/chat")
    assistant = [m for m in sent["body"]["messages"] if m["role"] == "assistant"]
    assert assistant == [{"role": "assistant", "content": f"The code is {CANARY} [1]."}]
    assert "300 hours" in json.dumps(sent["body"]["messages"])  # the follow-up found the passage


def test_two_passages_of_one_section_get_two_chips() -> None:
    """Open WebUI merges sources of one id; the [2] the model cites must have a chip of its own."""
    from proxy.pipeline.passages import Passage
    from proxy.pipeline.render import source_events

    def passage(number: int) -> Passage:
        return Passage(number, "docs", "a.md", 0, 1, "Intro", None, 0.9, f"text {number}", (number,))

    names = [event["data"]["source"]["id"] for event in source_events([passage(1), passage(2)])]
    assert names == ["a.md > Intro #1", "a.md > Intro #2"]
