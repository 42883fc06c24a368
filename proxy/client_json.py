"""JSON from clients, parsed within a nesting limit. A body nested deeper than any real request
is refused with a 400 before anything recursive touches it: validation, translation, and
orjson's encoder, which gives up at 255 levels (its decoder allows 1024)."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import BadRequest

MAX_DEPTH = 100  # JSON schemas of tools and response formats stay far below this


def loads_json(raw: bytes | str, what: str = "request body", param: str | None = None) -> Any:
    """``raw`` parsed; a 400 naming ``what`` when it is not JSON or is nested too deep."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}", param=param) from None
    if nested_deeper_than(value, MAX_DEPTH):
        raise BadRequest(f"{what} is nested deeper than {MAX_DEPTH} levels", param=param)
    return value


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels; walked with a stack of its
    own, so depth costs no recursion."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False
