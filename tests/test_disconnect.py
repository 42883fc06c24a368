"""A client that leaves stops the generation: observed at the upstream, not in the proxy's logs.
Three windows: before the first token, mid-stream, and while waiting for a non-streamed reply."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from tests.conftest import UpstreamLog
from tests.servers import Server

LONG = {
    "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
    "max_tokens": 1500,
    "temperature": 0.8,
}


def open_request(base: str, body: dict[str, Any]) -> socket.socket:
    url = urlsplit(base)
    payload = orjson.dumps(body)
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (url.netloc.encode(), len(payload), payload)
    )
    return sock


def read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    data = b""
    sock.settimeout(30)
    while data.count(marker) < count:
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    return data


def busy_slots(llama: Server) -> int:
    return sum(1 for slot in httpx.get(llama.url + "/slots").json() if slot["is_processing"])


def wait_until(predicate: Any, timeout: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition never held"
        time.sleep(0.02)
    return time.monotonic() - started


def test_mid_stream_disconnect_stops_llama(proxy_openai: str, llama: Server) -> None:
    wait_until(lambda: busy_slots(llama) == 0, 30)
    sock = open_request(proxy_openai, {**LONG, "stream": True})
    read_until(sock, b"data: {", 5)
    assert busy_slots(llama) == 1
    sock.close()
    assert wait_until(lambda: busy_slots(llama) == 0, 5) < 1.0


def test_non_stream_disconnect_stops_llama(proxy_openai: str, llama: Server) -> None:
    wait_until(lambda: busy_slots(llama) == 0, 30)
    sock = open_request(proxy_openai, LONG)
    wait_until(lambda: busy_slots(llama) == 1, 10)
    time.sleep(0.3)
    sock.close()
    assert wait_until(lambda: busy_slots(llama) == 0, 5) < 1.0


def test_disconnect_before_first_token(proxy_ollama: str, upstream_log: UpstreamLog) -> None:
    sock = open_request(proxy_ollama, {**LONG, "model": "smollm2:135m@delay=5", "stream": True})
    wait_until(lambda: len(upstream_log.requests("/api/chat")) == 1, 5)
    time.sleep(0.2)
    closed = time.time()
    sock.close()
    wait_until(lambda: upstream_log.requests("/api/chat")[0]["disconnected_at"] is not None, 5)
    (record,) = upstream_log.requests("/api/chat")
    assert record["disconnected_at"] - closed < 1.0


def test_ollama_mode_mid_stream_disconnect(
    proxy_ollama: str, upstream_log: UpstreamLog, llama: Server
) -> None:
    wait_until(lambda: busy_slots(llama) == 0, 30)
    sock = open_request(proxy_ollama, {**LONG, "stream": True})
    read_until(sock, b"data: {", 5)
    closed = time.time()
    sock.close()
    wait_until(lambda: upstream_log.requests("/api/chat")[0]["disconnected_at"] is not None, 5)
    (record,) = upstream_log.requests("/api/chat")
    assert record["disconnected_at"] - closed < 1.0
    assert wait_until(lambda: busy_slots(llama) == 0, 5) < 1.0
