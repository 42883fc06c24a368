"""One log stream: ragproxy's events and the standard-library records of uvicorn, httpx and
watchdog come out as the same JSON lines, once each, with their logger and level."""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import orjson

from proxy.api.server import uvicorn_config
from proxy.logging import configure_logging, get_logger
from proxy.settings import Settings


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]  # every line is JSON


def test_library_records_are_json_lines_with_logger_and_level(captured: io.StringIO) -> None:
    configure_logging("info", captured)  # configuring again must not double the lines
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received: %s", "GET /x")
    logging.getLogger("watchdog.observers").error("inotify watch limit reached")
    get_logger("ragproxy.request").info("request", status=200)
    events = lines(captured)
    assert [(e["event"], e["logger"], e["level"]) for e in events] == [
        ("Invalid HTTP request received: GET /x", "uvicorn.error", "warning"),
        ("inotify watch limit reached", "watchdog.observers", "error"),
        ("request", "ragproxy.request", "info"),
    ]
    assert all("timestamp" in e for e in events)
    assert events[2]["status"] == 200


def test_levels_and_quiet_libraries(captured: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: POST http://upstream/api/chat 200 OK")
    logging.getLogger("watchdog.observers").debug("event seen")
    get_logger("ragproxy.chat").debug("below the level")
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    events = lines(captured)
    assert [e["event"] for e in events] == ["Exception in ASGI application"]
    assert "ValueError: bad" in events[0]["exception"]


def test_uvicorn_access_log_stays_off() -> None:
    uvicorn_config(lambda *_: None, Settings(host="127.0.0.1", port=1))  # type: ignore[arg-type]
    access = logging.getLogger("uvicorn.access")
    assert not access.handlers and access.propagate is False


def test_a_file_name_that_is_not_utf8_is_logged_with_its_bytes_written_out(captured: io.StringIO) -> None:
    """orjson refuses lone surrogates, which is how Python holds such a name: the line is kept."""
    name = os.fsdecode(b"\xb2\xe2\xca\xd4.txt")  # GBK bytes, as a Windows zip leaves them
    get_logger("ragproxy.index").warning("index.failed", error=f"cannot read {name}", paths=[name])
    logging.getLogger("watchdog.observers").error("lost %s", name)
    events = lines(captured)
    assert [e["event"] for e in events] == ["index.failed", "lost \\xb2\\xe2\\xca\\xd4.txt"]
    assert events[0]["error"] == "cannot read \\xb2\\xe2\\xca\\xd4.txt"
    assert events[0]["paths"] == ["\\xb2\\xe2\\xca\\xd4.txt"]
