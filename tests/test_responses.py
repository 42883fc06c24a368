"""The Responses API (``/v1/responses``) through the official ``openai`` SDK, over the real
llama.cpp upstream and the Ollama-behaving server: the same answer as the chat API, the
retrieved passage upstream, the event sequence the SDK's own types and stream helper accept,
reasoning as reasoning items, a tool call round trip, and errors in the API's shape."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from tests.conftest import CHAT_MODEL, UpstreamLog, sdk
from tests.ragdocs import CANARY, QUESTION

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": False,
    },
    {"type": "web_search"},  # a hosted tool: not offered to the model, never an error
]
# The tiny model needs a push to begin "<tool_call>" (token 44) and to stop after one call.
PUSH = {"logit_bias": {"44": 5}, "stop": ["</tool_call>"]}


def test_the_answer_is_the_chat_answer_and_the_passage_went_upstream(
    rag_proxy: str, upstream_log: UpstreamLog
) -> None:
    client = sdk(rag_proxy)
    ask: dict[str, Any] = {
        "model": CHAT_MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        "max_tokens": 12,
        "temperature": 0,
    }
    client.chat.completions.create(**ask)  # the same prompt cached upstream for each request below
    chat = client.chat.completions.create(**ask)
    upstream_log.clear()
    response = client.responses.create(
        model=CHAT_MODEL, input=QUESTION, max_output_tokens=12, temperature=0, instructions="Be brief."
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.status in ("completed", "incomplete") and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    (sent,) = upstream_log.requests("/api/chat")
    messages = sent["body"]["messages"]
    assert messages[0]["role"] == "system" and "Be brief." in messages[0]["content"]
    assert CANARY in orjson.dumps(messages).decode() and messages[-1]["content"] == QUESTION
    extra = response.model_extra or {}
    assert extra["sources"][0]["file"] == "valves/zephyr.md"


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_streamed_events_follow_the_sdk_types_and_end_completed(
    request: pytest.FixtureRequest, kind: str
) -> None:
    client = sdk(str(request.getfixturevalue(f"proxy_{kind}")))
    ask: dict[str, Any] = {
        "model": "default",
        "input": "Say hello.",
        "max_output_tokens": 60,
        "temperature": 0,
        "extra_body": {"stop": ["."]},  # ends on its own: the SDK's helper wants it completed
    }
    whole = client.responses.create(**ask)
    kinds, numbers, text = [], [], ""
    with client.responses.stream(**ask) as stream:
        for event in stream:  # each event parsed into the SDK's own model, indexes checked
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed" and whole.status == "completed"
    assert kinds[-2] == "response.output_item.done" and numbers == list(range(len(numbers)))
    assert text == final.output_text == whole.output_text != ""


def test_reasoning_arrives_as_a_reasoning_item_before_the_answer(proxy_ollama: str) -> None:
    client = sdk(proxy_ollama)
    response = client.responses.create(
        model="smollm2-think:135m", input="What is 2+2?", max_output_tokens=80, temperature=0
    )
    kinds = [item.type for item in response.output]
    assert kinds[0] == "reasoning" and "message" in kinds
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary and reasoning.summary[0].text.strip()
    assert "<think>" not in response.output_text
    deltas = []
    with client.responses.stream(
        model="smollm2-think:135m", input="What is 2+2?", max_output_tokens=80, temperature=0
    ) as stream:
        for event in stream:
            if event.type == "response.reasoning_summary_text.delta":
                deltas.append(event.delta)
    assert "".join(deltas) == reasoning.summary[0].text


def test_a_tool_call_round_trip(proxy_ollama: str, upstream_log: UpstreamLog) -> None:
    client = sdk(proxy_ollama)
    question = "What is the weather in Paris?"
    first = client.responses.create(
        model="default",
        input=question,
        tools=TOOLS,
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
        extra_body=PUSH,
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and "city" in orjson.loads(call.arguments)
    offered = upstream_log.requests("/api/chat")[-1]["body"]["tools"]
    assert [tool["function"]["name"] for tool in offered] == ["get_weather"]
    upstream_log.clear()
    second = client.responses.create(
        model="default",
        input=[
            {"role": "user", "content": question},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
        ],
        tools=TOOLS,
        max_output_tokens=20,
        temperature=0,
    )
    assert second.status in ("completed", "incomplete")
    messages = upstream_log.requests("/api/chat")[-1]["body"]["messages"]
    assert (
        messages[-2]["role"] == "assistant"
        and messages[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    )
    assert messages[-1] == {"role": "tool", "content": "Sunny, 21 C", "tool_name": "get_weather"} or (
        messages[-1]["role"] == "tool" and messages[-1]["content"] == "Sunny, 21 C"
    )


def test_a_streamed_tool_call_is_one_function_call_item(proxy_openai: str) -> None:
    client = sdk(proxy_openai)
    arguments, done = "", []
    with client.responses.stream(
        model="default",
        input="What is the weather in Paris?",
        tools=TOOLS,
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
        extra_body=PUSH,
    ) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                arguments += event.delta
            if event.type == "response.output_item.done":
                done.append(event.item)
        final = stream.get_final_response()
    calls = [item for item in done if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].arguments == arguments
    assert "city" in orjson.loads(arguments) and final.output[-1].type == "function_call"


def test_errors_arrive_in_the_api_shape(proxy_ollama: str) -> None:
    client = sdk(proxy_ollama)
    with pytest.raises(openai.BadRequestError) as stored:
        client.responses.create(model="default", input="hi", previous_response_id="resp_123")
    assert stored.value.status_code == 400 and "previous_response_id" in stored.value.message
    assert (stored.value.body or {}).get("param") == "previous_response_id"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="default", input=[{"type": "function_call_output", "output": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
