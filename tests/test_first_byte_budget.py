"""One first-byte budget per request: the window probe and the wait for the reply share
``--first-byte-timeout``, and a probe that failed is not waited on again by the next chats."""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing

from tests.conftest import CHAT_MODEL, UpstreamLog
from tests.servers import Server
from tests.stub_upstream import SilentUpstream
from tests.test_chat_wire import PROMPT
from tests.test_failures import assert_error, chat

BUDGET = 2.0  # --first-byte-timeout of the silent-upstream tests, in seconds


@contextmanager
def logged_events() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every event logged meanwhile, at any level (the tests otherwise keep warnings only)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    try:
        with structlog.testing.capture_logs() as events:
            yield events
    finally:
        structlog.configure(**saved)


@pytest.mark.parametrize(
    ("api", "probe", "chat_path"),
    [
        ("ollama", "/api/show", "/api/chat"),
        ("openai", "/props", "/v1/chat/completions"),
    ],
)
def test_silent_upstream_fails_within_one_budget(
    make_proxy: Any, api: str, probe: str, chat_path: str
) -> None:
    with (
        SilentUpstream() as silent,
        make_proxy(upstream=silent.url, upstream_api=api, first_byte_timeout=BUDGET) as base,
    ):
        started = time.monotonic()
        response = chat(base, {"model": CHAT_MODEL, "messages": PROMPT})
        waited = time.monotonic() - started
        assert_error(response, 504, "api_error", code="upstream_timeout")
        assert "first_byte_timeout" in response.json()["error"]["message"]
        # The probe took a part of the budget and the chat was still sent, with the rest.
        assert silent.paths == [probe, chat_path]
        assert 0.9 * BUDGET < waited < 1.8 * BUDGET

        # The next chat, on the Ollama API and streamed, finds the failed probe remembered.
        started = time.monotonic()
        response = httpx.post(base + "/api/chat", json={"model": CHAT_MODEL, "messages": PROMPT}, timeout=30)
        waited = time.monotonic() - started
        assert response.status_code == 504 and set(response.json()) == {"error"}, response.text
        assert 0.9 * BUDGET < waited < 1.8 * BUDGET
    assert silent.paths.count(probe) == 1


def test_chat_goes_on_with_the_fallback_window_when_the_probe_is_silent(
    make_proxy: Any, ollama: Server, upstream_log: UpstreamLog
) -> None:
    model = CHAT_MODEL + "@show-delay=30"  # /api/show stays silent; the chat works
    with logged_events() as events, make_proxy(upstream=ollama.url, first_byte_timeout=4) as base:
        for _ in range(2):
            response = chat(base, {"model": model, "messages": PROMPT, "max_tokens": 5})
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"]
    assert len(upstream_log.requests("/api/show")) == 1  # the second chat did not ask again
    assert len(upstream_log.requests("/api/chat")) == 2
    (failed,) = [e for e in events if e["event"] == "context.window_probe_failed"]
    assert failed["model"] == model and failed["window"] == 4096
    assert "/api/show" in failed["error"]
    chats = [e for e in events if e["event"] == "request" and e["path"] == "/v1/chat/completions"]
    assert [e["context_window"] for e in chats] == [4096, 4096]  # fake Ollama's own would be 8192
