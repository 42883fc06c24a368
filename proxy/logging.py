"""structlog configured once: JSON lines rendered by orjson, context bound per request.

ragproxy's own events and the standard-library records of the libraries under it (uvicorn,
httpx, watchdog, the MCP SDK) go through one handler and one renderer, so the stream holds
one kind of line, each with its ``logger`` and ``level``."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import Processor

from proxy.printable import storable

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Libraries that log every request at info: their lines would repeat ragproxy's request log.
_CHATTY = ("httpx", "httpcore")


def _dumps(obj: Any, default: Any = None) -> str:
    try:
        return orjson.dumps(obj, default=default).decode()
    except TypeError:  # a lone surrogate: a file name that is not UTF-8, quoted in a message
        return orjson.dumps(_printable(obj), default=default).decode()


def _printable(obj: Any) -> Any:
    """``obj`` with each lone surrogate written out: the byte a file name held as ``\\xNN``
    (as the index shows such names), any other as ``\\uNNNN``."""
    if isinstance(obj, str):
        return storable(obj)
    if isinstance(obj, dict):
        return {_printable(key): _printable(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_printable(value) for value in obj]
    return obj


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON to stdout (journald keeps it as is); one call at start-up (a later call replaces it)."""
    threshold = _LEVELS[level]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        ProcessorFormatter(
            foreign_pre_chain=shared,  # records from the standard library's logging
            processors=[
                structlog.stdlib.add_logger_name,
                ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, ProcessorFormatter)]:
        root.removeHandler(old)  # configured before: one handler, so no line twice
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
