"""A kept-alive connection the upstream closes as it is reused: the request, never read, is sent
again on a new connection; a request that fails on a new connection is not."""

from __future__ import annotations

import httpx

from tests.servers import ragproxy
from tests.stub_upstream import StubUpstream
from tests.test_chat_wire import PROMPT
from tests.test_failures import assert_error


def _asks(base: str) -> list[httpx.Response]:
    """One of each kind of request ragproxy sends upstream."""
    chat = {"model": "tiny", "messages": PROMPT, "max_tokens": 3}
    return [
        httpx.get(base + "/v1/models", timeout=30),
        httpx.post(base + "/v1/chat/completions", json=chat, timeout=30),
        httpx.post(base + "/v1/chat/completions", json={**chat, "stream": True}, timeout=30),
        httpx.post(base + "/v1/embeddings", json={"model": "tiny", "input": "hi"}, timeout=30),
        httpx.get(base + "/readyz", timeout=30),  # the probe
    ]


def test_a_request_on_a_connection_the_upstream_closed_is_sent_again() -> None:
    with StubUpstream(answers=1) as upstream, ragproxy(upstream=upstream.url, upstream_api="openai") as base:
        replies = _asks(base) + _asks(base)
        assert [r.status_code for r in replies] == [200] * len(replies), [r.text for r in replies]
        assert replies[1].json()["choices"][0]["message"]["content"] == "Hello there"
        assert b"Hello" in replies[2].content and replies[2].content.endswith(b"data: [DONE]\n\n")
        # every request after the first met a closed connection first, and was answered on a new one
        assert len(upstream.unanswered) >= len(replies) - 1
        assert set(upstream.unanswered) >= {"/v1/models", "/v1/chat/completions", "/v1/embeddings"}
        assert upstream.connections == len(upstream.paths) - len(upstream.unanswered)


def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    """A server that closes every connection unanswered: one attempt each, and the clear error."""
    with (
        StubUpstream(answers=0) as upstream,
        ragproxy(upstream=upstream.url, upstream_api="openai") as base,
    ):
        models = httpx.get(base + "/v1/models", timeout=30)
        error = assert_error(models, 502, "api_error", code="upstream_error")
        assert "closed the connection" in error["message"]
        chat = {"model": "tiny", "messages": PROMPT, "max_tokens": 3}
        for stream in (False, True):
            reply = httpx.post(base + "/v1/chat/completions", json={**chat, "stream": stream}, timeout=30)
            assert_error(reply, 502, "api_error", code="upstream_error")
        assert upstream.paths.count("/v1/models") == 1
        assert upstream.paths.count("/v1/chat/completions") == 2
        assert upstream.connections == len(upstream.paths)
