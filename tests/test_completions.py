"""Legacy completions (``/v1/completions``) through the official ``openai`` SDK, over the real
llama.cpp upstream and the Ollama-behaving server: the prompt and ``suffix`` pass through
untouched (never retrieval), streamed and not, with errors in the API's shape."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import CHAT_MODEL, UpstreamLog, sdk
from tests.ragdocs import CANARY, QUESTION

ASK: dict[str, Any] = {
    "model": "default",
    "prompt": "The capital of France is",
    "max_tokens": 8,
    "temperature": 0,
}


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_a_completion_streamed_and_not(request: pytest.FixtureRequest, kind: str) -> None:
    client = sdk(str(request.getfixturevalue(f"proxy_{kind}")))
    client.completions.create(**ASK)  # the same prompt cached upstream for each request below
    whole = client.completions.create(**ASK)
    assert whole.object == "text_completion" and whole.choices[0].text.strip()
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    text, finish, usage = "", None, None
    for chunk in client.completions.create(**ASK, stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            text += choice.text
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert text == whole.choices[0].text and finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_the_prompt_and_suffix_pass_through_without_retrieval(
    rag_proxy: str, upstream_log: UpstreamLog
) -> None:
    client = sdk(rag_proxy)
    client.completions.create(model=CHAT_MODEL, prompt=QUESTION, max_tokens=4)
    client.completions.create(
        model=CHAT_MODEL, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))", max_tokens=4
    )
    plain, middle = upstream_log.requests("/api/generate")
    assert plain["body"]["prompt"] == QUESTION and CANARY not in str(plain["body"])
    assert plain["body"]["options"]["num_predict"] == 4
    assert (
        middle["body"]["prompt"] == "def add(a, b):\n    "
        and middle["body"]["suffix"] == "\n\nprint(add(1, 2))"
    )


def test_errors_arrive_in_the_api_shape(proxy_ollama: str) -> None:
    client = sdk(proxy_ollama)
    with pytest.raises(openai.BadRequestError) as many:
        client.completions.create(model="default", prompt=["one", "two"], max_tokens=4)
    assert (many.value.body or {}).get("param") == "prompt"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="default", prompt="x", max_tokens=4, n=2)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=4)


def test_every_choice_comes_back(proxy_openai: str) -> None:
    """``n`` above 1 (llama.cpp's server makes each choice): every one, by its index, whole or
    streamed."""
    client = sdk(proxy_openai)
    ask = {**ASK, "max_tokens": 4, "n": 2}
    whole = client.completions.create(**ask)
    assert [c.index for c in whole.choices] == [0, 1]
    assert all(c.text and c.finish_reason for c in whole.choices)
    finishes: dict[int, str] = {}
    for chunk in client.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert sorted(finishes) == [0, 1]


def test_every_prompt_of_a_batch_comes_back(proxy_openai: str) -> None:
    """Several prompts in one request: a choice for each, by its index."""
    prompts = ["The capital of France is", "One, two, three,"]
    whole = sdk(proxy_openai).completions.create(**{**ASK, "prompt": prompts, "max_tokens": 2})
    assert [c.index for c in whole.choices] == [0, 1]
    assert all(c.text and c.finish_reason for c in whole.choices)
