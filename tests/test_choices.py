"""``n`` above 1 through the OpenAI chat wire: every choice the upstream sends comes back, by its
index, streamed or not; an Ollama upstream (one reply per request) refuses it clearly."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import CHAT_MODEL, sdk
from tests.servers import ragproxy
from tests.stub_upstream import StubUpstream
from tests.test_chat_wire import PROMPT


def test_llama_cpp_choices_all_come_back(proxy_openai: str) -> None:
    """llama.cpp's server makes ``n`` choices (up to its slots, two here)."""
    client = sdk(proxy_openai)
    reply = client.chat.completions.create(model="smollm2", messages=PROMPT, n=2, max_tokens=4)
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.message.content and c.finish_reason for c in reply.choices)
    stream = client.chat.completions.create(model="smollm2", messages=PROMPT, n=2, max_tokens=4, stream=True)
    finishes: dict[int, str] = {}
    roles: dict[int, str | None] = {}
    for chunk in stream:
        for choice in chunk.choices:
            roles.setdefault(choice.index, choice.delta.role)
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert roles == {0: "assistant", 1: "assistant"}
    assert sorted(finishes) == [0, 1]


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[StubUpstream, str]]:
    """An OpenAI-compatible upstream that sends several choices in one chunk (as a server may;
    llama.cpp's sends one a chunk)."""
    with StubUpstream() as upstream, ragproxy(upstream=upstream.url, upstream_api="openai") as base:
        yield upstream, base


def test_every_choice_comes_back_whole(stub: tuple[StubUpstream, str]) -> None:
    upstream, base = stub
    reply = sdk(base).chat.completions.create(model="tiny", messages=PROMPT, n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert [c.message.content for c in reply.choices] == ["Answer 0.", "Answer 1."]
    assert [c.finish_reason for c in reply.choices] == ["stop", "stop"]
    assert upstream.bodies[-1]["n"] == 2


def test_every_choice_streams_by_its_index(stub: tuple[StubUpstream, str]) -> None:
    _, base = stub
    stream = sdk(base).chat.completions.create(model="tiny", messages=PROMPT, n=2, stream=True)
    texts: dict[int, str] = {}
    roles: dict[int, str | None] = {}
    finishes: dict[int, str | None] = {}
    for chunk in stream:
        for choice in chunk.choices:
            roles.setdefault(choice.index, choice.delta.role)  # the first delta of each choice
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                assert choice.delta.content is None  # the finish in a chunk of its own
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "Answer 0.", 1: "Answer 1."}
    assert roles == {0: "assistant", 1: "assistant"}
    assert finishes == {0: "stop", 1: "stop"}


def test_one_choice_is_as_before(stub: tuple[StubUpstream, str]) -> None:
    _, base = stub
    reply = sdk(base).chat.completions.create(model="tiny", messages=PROMPT)
    assert [c.message.content for c in reply.choices] == ["Hello there"]


def test_an_ollama_upstream_refuses_more_than_one(proxy_ollama: str) -> None:
    client = sdk(proxy_ollama, max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=CHAT_MODEL, messages=PROMPT, n=2, stream=stream)
        assert refused.value.body["param"] == "n"  # type: ignore[index]
