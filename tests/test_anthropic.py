"""The Anthropic Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) through the official
``anthropic`` SDK, over the real llama.cpp upstream and the Ollama-behaving server: the same
answer as the chat API, the retrieved passage upstream, the stream the SDK's accumulator
accepts, thinking blocks, a tool round trip, keys as ``x-api-key``, and Anthropic's errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import CHAT_MODEL, UpstreamLog, claude_client, sdk
from tests.ragdocs import CANARY, QUESTION
from tests.servers import Server, ragproxy

TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {"type": "web_search_20250305", "name": "web_search"},  # a server tool: not offered, never an error
]
# the tiny model needs a push to begin "<tool_call>" (token 44); temperature is no longer a
# parameter of the SDK's create(), though the API takes it
PUSH = {"logit_bias": {"44": 5}, "temperature": 0}
GREEDY = {"temperature": 0}


def test_the_answer_is_the_chat_answer_and_the_passage_went_upstream(
    rag_proxy: str, upstream_log: UpstreamLog
) -> None:
    ask: dict[str, Any] = {
        "model": CHAT_MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        "max_tokens": 12,
        "temperature": 0,
    }
    openai_client = sdk(rag_proxy)
    openai_client.chat.completions.create(**ask)  # the same prompt cached upstream for each request below
    chat = openai_client.chat.completions.create(**ask)
    upstream_log.clear()
    message = claude_client(rag_proxy).messages.create(
        model=CHAT_MODEL,
        system="Be brief.",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=12,
        extra_body=GREEDY,
    )
    (block,) = message.content
    assert block.type == "text" and block.text == chat.choices[0].message.content
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens > 0
    (sent,) = upstream_log.requests("/api/chat")
    messages = sent["body"]["messages"]
    assert CANARY in orjson.dumps(messages).decode() and messages[-1]["content"] == QUESTION
    assert (message.model_extra or {})["sources"][0]["file"] == "valves/zephyr.md"


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_the_stream_builds_the_same_message_in_the_sdk(request: pytest.FixtureRequest, kind: str) -> None:
    claude = claude_client(str(request.getfixturevalue(f"proxy_{kind}")))
    ask: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 40,
        "extra_body": GREEDY,
        "stop_sequences": ["."],
    }
    whole = claude.messages.create(**ask)
    names = []
    with claude.messages.stream(**ask) as stream:  # the SDK's accumulator checks the event order
        for event in stream:
            names.append(event.type)
        final = stream.get_final_message()
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_start" in names and "message_delta" in names
    assert final.content[0].type == "text" and final.content[0].text == whole.content[0].text != ""
    assert final.stop_reason == whole.stop_reason == "end_turn"


def test_thinking_blocks_when_asked_and_none_otherwise(proxy_ollama: str) -> None:
    claude = claude_client(proxy_ollama)
    ask: dict[str, Any] = {
        "model": "smollm2-think:135m",
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "max_tokens": 80,
        "extra_body": GREEDY,
    }
    thought = claude.messages.create(**ask, thinking={"type": "enabled", "budget_tokens": 1024})
    kinds = [block.type for block in thought.content]
    assert kinds[0] == "thinking" and "text" in kinds
    assert thought.content[0].type == "thinking" and thought.content[0].thinking.strip()
    with claude.messages.stream(**ask, thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == thought.content[0].thinking
    plain = claude.messages.create(**ask)
    assert [block.type for block in plain.content] == ["text"] and "<think>" not in plain.content[0].text


def test_a_tool_round_trip(proxy_ollama: str, upstream_log: UpstreamLog) -> None:
    claude = claude_client(proxy_ollama)
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = claude.messages.create(
        model="default",
        messages=[question],
        tools=TOOLS,
        tool_choice={"type": "any"},
        max_tokens=60,
        stop_sequences=["</tool_call>"],
        extra_body=PUSH,
    )
    uses = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use" and len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather" and "city" in use.input
    offered = upstream_log.requests("/api/chat")[-1]["body"]["tools"]
    assert [tool["function"]["name"] for tool in offered] == ["get_weather"]
    upstream_log.clear()
    claude.messages.create(
        model="default",
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"},
                    {"type": "text", "text": "Thanks. Should I take an umbrella?"},
                ],
            },
        ],
        tools=TOOLS,
        max_tokens=20,
        extra_body=GREEDY,
    )
    messages = upstream_log.requests("/api/chat")[-1]["body"]["messages"]
    roles = [message["role"] for message in messages]
    assert roles[-3:] == ["assistant", "tool", "user"]  # the result answers the call, then the user speaks
    assert messages[-3]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[-2]["content"] == "Sunny, 21 C" and "umbrella" in messages[-1]["content"]


def test_count_tokens_counts_without_calling_the_model(proxy_ollama: str, upstream_log: UpstreamLog) -> None:
    claude = claude_client(proxy_ollama)
    short = claude.messages.count_tokens(model="default", messages=[{"role": "user", "content": "Hi"}])
    longer = claude.messages.count_tokens(
        model="default", messages=[{"role": "user", "content": "Hi " * 400}], tools=TOOLS
    )
    assert 0 < short.input_tokens < longer.input_tokens
    assert upstream_log.requests("/api/chat") == []


@pytest.fixture(scope="module")
def keyed(ollama: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = Path(tmp_path_factory.mktemp("keyed")) / "index.db"
    with ragproxy(
        upstream=ollama.url, model=CHAT_MODEL, db=str(db), api_keys=("sk-claude-0123456789",)
    ) as url:
        yield url


def test_keys_as_x_api_key_and_errors_in_anthropic_shape(keyed: str, proxy_ollama: str) -> None:
    ask: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
    }
    assert claude_client(keyed, api_key="sk-claude-0123456789").messages.create(**ask).content
    with pytest.raises(anthropic.AuthenticationError) as denied:
        claude_client(keyed, api_key="sk-wrong").messages.create(**ask)
    assert denied.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude_client(proxy_ollama).messages.create(model="default", messages=[], max_tokens=4)
    assert (bad.value.body or {})["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude_client(proxy_ollama).messages.create(**{**ask, "model": "no-such-model"})
    assert (missing.value.body or {})["error"]["type"] == "not_found_error"
    # a Claude model name (what Claude Code sends unless told otherwise) means the default model
    named = claude_client(proxy_ollama).messages.create(**{**ask, "model": "claude-sonnet-4-5"})
    assert named.model == "claude-sonnet-4-5" and named.content
    raw = httpx.post(
        proxy_ollama + "/v1/messages", content=b"{", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400 and raw.json()["type"] == "error"


# -- Claude Code's own request shapes (recorded from Claude Code 2.1 in print mode) -----------------
CLAUDE_CODE_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "mid-conversation-system-2026-04-07,effort-2025-11-24,structured-outputs-2025-12-15",
    "anthropic-dangerous-direct-browser-access": "true",
    "x-app": "cli",
    "user-agent": "claude-cli/2.1.197 (external, sdk-cli)",
    "authorization": "Bearer unused",
}
CLAUDE_CODE_SYSTEM = [
    {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.d55; cc_entrypoint=sdk-cli;"},
    {
        "type": "text",
        "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
        "cache_control": {"type": "ephemeral"},
    },
]
REMINDER = (
    "<system-reminder>\nAs you answer the user's questions, you can use the following context:\n"
    "# currentDate\nToday's date is 2026-12-02.\n</system-reminder>\n\n"
)
# Claude Code puts the project's CLAUDE.md into the first user message, in such a block
PROJECT_REMINDER = (
    "<system-reminder>\nAs you answer the user's questions, you can use the following context:\n"
    "# claudeMd\nCodebase and user instructions are shown below. Be sure to adhere to these "
    "instructions.\n\nContents of /home/me/project/CLAUDE.md (project instructions, checked into "
    "the codebase):\n\n# Project notes\n\n"
    "- Run the unit tests with `make test` before every commit; keep the linters clean.\n"
    "- Write commit messages in the imperative mood and keep each commit small.\n"
    "- Prefer small functions whose names say what they return.\n"
    "- Never log secrets or personal data; read settings in one place.\n"
    "# currentDate\nToday's date is 2026-12-02.\n</system-reminder>\n"
)
TITLE_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}


def test_claude_codes_session_title_request_sends_its_schema_upstream(
    proxy_ollama: str, upstream_log: UpstreamLog
) -> None:
    """Claude Code asks for its session title as structured output (``output_config.format``):
    the schema constrains the upstream (Ollama's ``format``), so the reply is the JSON it parses."""
    body = {
        "model": CHAT_MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<session>\nWhat is 2+2?\n</session>\n\nWrite the title."}
                ],
            }
        ],
        "system": [*CLAUDE_CODE_SYSTEM, {"type": "text", "text": 'Return JSON with a single "title" field.'}],
        "tools": [],
        "metadata": {"user_id": '{"device_id":"0","account_uuid":"","session_id":"0"}'},
        "max_tokens": 16,
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": TITLE_SCHEMA}},
        "temperature": 0,
    }
    reply = httpx.post(
        proxy_ollama + "/v1/messages?beta=true", json=body, headers=CLAUDE_CODE_HEADERS, timeout=120
    )
    assert reply.status_code == 200, reply.text
    assert upstream_log.requests("/api/chat")[-1]["body"]["format"] == TITLE_SCHEMA
    assert reply.json()["content"][0]["text"].lstrip().startswith("{")


def test_claude_codes_turn_after_a_tool_call(proxy_ollama: str, upstream_log: UpstreamLog) -> None:
    """The second request of a turn in which the model called Read: the reminder block, a
    mid-conversation system message, ragproxy's own thinking block (with its signature) echoed
    back, and the tool result, each with Claude Code's cache markers."""
    body = {
        "model": CHAT_MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": REMINDER},
                    {"type": "text", "text": "What is in notes.txt?"},
                ],
            },
            {"role": "system", "content": "Available agent types for the Agent tool: none."},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should read it.", "signature": "ragproxy"},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Read",
                        "input": {"file_path": "/w/notes.txt"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "tool_use_id": "toolu_1",
                        "type": "tool_result",
                        "content": "1\tZephyr notes here\n2\t",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
        "system": CLAUDE_CODE_SYSTEM,
        "tools": [
            {
                "name": "Read",
                "description": "Reads a file from the local filesystem.",
                "input_schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {"file_path": {"type": "string"}},
                    "required": ["file_path"],
                    "additionalProperties": False,
                },
            }
        ],
        "metadata": {"user_id": '{"device_id":"0","account_uuid":"","session_id":"0"}'},
        "max_tokens": 8,
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "stream": True,
        "temperature": 0,
    }
    reply = httpx.post(
        proxy_ollama + "/v1/messages?beta=true", json=body, headers=CLAUDE_CODE_HEADERS, timeout=120
    )
    assert reply.status_code == 200, reply.text
    events = [line[7:] for line in reply.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop" and "error" not in events
    messages = upstream_log.requests("/api/chat")[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "system", "assistant", "tool"]
    assert messages[3]["tool_calls"][0]["function"]["name"] == "Read"
    assert messages[4]["content"] == "1\tZephyr notes here\n2\t"
    assert "I should read it." not in orjson.dumps(messages).decode()


def test_claude_codes_reminder_blocks_are_not_searched(rag_proxy: str, upstream_log: UpstreamLog) -> None:
    """The question is searched without the harness's reminder (the project's CLAUDE.md and the
    date), which stays in the prompt: searched with it, the question found nothing."""
    upstream_log.clear()
    body = {
        "model": CHAT_MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROJECT_REMINDER},
                    {"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
        "system": CLAUDE_CODE_SYSTEM,
        "max_tokens": 4,
        "thinking": {"type": "adaptive"},
        "stream": True,
        "temperature": 0,
    }
    reply = httpx.post(
        rag_proxy + "/v1/messages?beta=true", json=body, headers=CLAUDE_CODE_HEADERS, timeout=120
    )
    assert reply.status_code == 200, reply.text
    sent = orjson.dumps(upstream_log.requests("/api/chat")[-1]["body"]["messages"]).decode()
    assert CANARY in sent and "make test" in sent
