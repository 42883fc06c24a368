"""``ragproxy serve`` as a user runs it: a process, its settings, its JSON log lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from tests.conftest import sdk
from tests.servers import Server, free_port, wait_ready

CANARY = "canary-7f3a-prompt-text"


@contextmanager
def serve(*flags: str, env: dict[str, str]) -> Iterator[tuple[str, list[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), *flags],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: list[bytes] = []
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process, timeout=30)
        yield f"http://127.0.0.1:{port}", lines
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        lines.extend(out.splitlines())
        # uvicorn shuts down gracefully, then re-raises the signal, as systemd expects.
        assert process.returncode in (0, -signal.SIGTERM), err.decode()
        assert b"Traceback" not in err, err.decode()


def log_events(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]  # every line must be JSON


def test_serve_streams_and_logs_one_line_per_request(llama: Server) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": f"Say hello. {CANARY}"}],
        "max_tokens": 20,
        "temperature": 0,
    }
    direct = httpx.post(llama.url + "/v1/chat/completions", json=body, timeout=60).json()
    with serve("--upstream-api", "openai", env={"RAGPROXY_UPSTREAM": llama.url}) as (base, lines):
        client = sdk(base)
        raw = client.chat.completions.with_raw_response.create(
            **body, stream=True, stream_options={"include_usage": True}
        )
        request_id = raw.headers["x-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        httpx.get(base + "/v1/models")
    assert text == direct["choices"][0]["message"]["content"]

    events = log_events(lines)
    assert events[0]["event"] == "starting" and events[0]["upstream"] == llama.url
    requests = [e for e in events if e["event"] == "request"]
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        ("GET", "/healthz", 200),
        ("POST", "/v1/chat/completions", 200),
        ("GET", "/v1/models", 200),
    ]
    chat = requests[1]
    assert chat["request_id"] == request_id and chat["model"] == "smollm2" and chat["stream"] is True
    assert chat["prompt_tokens"] == direct["usage"]["prompt_tokens"]
    assert chat["completion_tokens"] == direct["usage"]["completion_tokens"]
    assert chat["finish_reason"] == direct["choices"][0]["finish_reason"]
    assert chat["duration_ms"] >= chat["first_byte_ms"] > 0
    assert all(r["level"] == "info" and r["timestamp"] for r in requests)
    assert CANARY.encode() not in b"\n".join(lines)


def test_log_content_setting_shows_the_prompt(llama: Server) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": CANARY}], "max_tokens": 2}
    with serve("--upstream-api", "openai", "--upstream", llama.url, env={"RAGPROXY_LOG_CONTENT": "true"}) as (
        base,
        lines,
    ):
        assert httpx.post(base + "/v1/chat/completions", json=body, timeout=60).status_code == 200
    assert CANARY.encode() in b"\n".join(lines)


def test_sigterm_lets_a_stream_in_flight_finish(ollama: Server) -> None:
    """systemd stops the service with SIGTERM: a reply being streamed ends normally (all its
    chunks, then [DONE]), the process exits cleanly, and new connections are refused."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream", ollama.url],
        env={**os.environ, "RAGPROXY_MODEL": "smollm2:135m"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + "/healthz", process, timeout=30)
        body = {
            "model": "smollm2:135m@delay=1.5",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 8,
            "stream": True,
        }
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as response:
            process.send_signal(signal.SIGTERM)  # while the upstream has not answered yet
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) > 2
        assert all("error" not in orjson.loads(e[6:]) for e in events[:-1])
        out, err = process.communicate(timeout=30)
        assert process.returncode in (0, -signal.SIGTERM), err.decode()
        assert b"Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
