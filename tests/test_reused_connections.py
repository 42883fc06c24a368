"""A kept-alive connection the upstream closes as it is reused: the request, never read, is sent
again on a new connection; a request that fails on a new connection is not."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import httpx
import orjson

from tests.servers import ragproxy
from tests.test_chat_wire import PROMPT
from tests.test_failures import assert_error


def _chat_events(model: str) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    deltas = [
        ({"role": "assistant", "content": "Hello"}, None),
        ({"content": " there"}, None),
        ({}, "stop"),
    ]
    events = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        for delta, finish in deltas
    ]
    events.append({**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


REPLIES: dict[str, tuple[bytes, bytes]] = {  # path: (content type, body)
    "/v1/models": (b"application/json", orjson.dumps({"object": "list", "data": [{"id": "tiny"}]})),
    "/props": (b"application/json", orjson.dumps({"default_generation_settings": {"n_ctx": 4096}})),
    "/v1/chat/completions": (b"text/event-stream", _chat_events("tiny")),
    "/v1/embeddings": (
        b"application/json",
        orjson.dumps({"data": [{"index": 0, "embedding": [0.5, 0.5]}], "usage": {"prompt_tokens": 1}}),
    ),
}


class ClosingUpstream:
    """An OpenAI-compatible server that answers ``answers`` requests on each connection, saying
    ``Connection: keep-alive``, then reads the next request and closes the socket without a
    word (as llama-server does now and then right after a streamed reply). ``paths``: every
    request it read, ``unanswered``: those it closed the connection on."""

    def __init__(self, answers: int = 1) -> None:
        self.answers = answers
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so the accepting thread sees the stop flag
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.paths: list[str] = []
        self.unanswered: list[str] = []
        self.connections = 0
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ClosingUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self._open:
            connection.close()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._open.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection, connection.makefile("rb") as reader:
            answered = 0
            while path := _read_request(reader):
                self.paths.append(path)
                if answered == self.answers:
                    self.unanswered.append(path)
                    return  # closed with the request read and nothing sent
                content_type, body = REPLIES.get(path, (b"application/json", b'{"error": "not found"}'))
                status = b"200 OK" if path in REPLIES else b"404 Not Found"
                head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                    status,
                    content_type,
                    len(body),
                )
                connection.sendall(head + b"Connection: keep-alive\r\n\r\n" + body)
                answered += 1


def _read_request(reader: Any) -> str | None:
    """The path of the next request on the connection (its body read too), None at its end."""
    line = reader.readline()
    if not line:
        return None
    length = 0
    while (header := reader.readline()) not in (b"\r\n", b""):
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    reader.read(length)
    return str(line.split()[1].decode())


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
    with ClosingUpstream() as upstream, ragproxy(upstream=upstream.url, upstream_api="openai") as base:
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
        ClosingUpstream(answers=0) as upstream,
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
