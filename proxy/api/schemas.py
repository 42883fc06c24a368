"""Request bodies checked before anything is sent upstream: a clear 400 naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import anyio

from proxy.client_json import loads_json
from proxy.errors import BadRequest
from proxy.settings import Settings

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
DEFAULT_MODEL_NAMES = frozenset({"", "default"})
# Far above any real conversation (agents' long sessions are a few thousand messages), low enough
# that checking and fitting one never holds the server for long.
MAX_MESSAGES = 10_000


def check_message_count(messages: list[Any], param: str = "messages") -> None:
    if len(messages) > MAX_MESSAGES:
        raise BadRequest(
            f"a chat may have at most {MAX_MESSAGES:,} messages; this one has {len(messages):,}",
            param=param,
            code="too_many_messages",
        )


def parse_json_object(raw: bytes) -> dict[str, Any]:
    body = loads_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


# A body this large is parsed and checked in a worker thread: a 5 MB chat of 10,000 messages
# takes ~100 ms of parsing and checking, which would hold every other request (even /healthz).
OFF_LOOP_BYTES = 256 * 1024
Checked = TypeVar("Checked")


class HasBody(Protocol):
    async def body(self) -> bytes: ...


async def read_checked(request: HasBody, check: Callable[[dict[str, Any]], Checked]) -> Checked:
    """The request's JSON object, as ``check`` (a validator) returns it."""
    raw = await request.body()
    if len(raw) < OFF_LOOP_BYTES:
        return check(parse_json_object(raw))
    return await anyio.to_thread.run_sync(lambda: check(parse_json_object(raw)))


async def read_json_object(request: HasBody) -> dict[str, Any]:
    return await read_checked(request, lambda body: body)


def resolve_model(model: Any, settings: Settings) -> str:
    if model is None or (isinstance(model, str) and model.strip() in DEFAULT_MODEL_NAMES):
        return settings.model
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string", param="model")
    return model


def _check_type(body: dict[str, Any], name: str, kinds: type | tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise BadRequest(f"'{name}' must be {what}", param=name)
    if not isinstance(value, kinds):
        raise BadRequest(f"'{name}' must be {what}", param=name)


def validate_chat(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The body with its model resolved; everything else left as the client sent it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    check_message_count(messages)
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"'{param}' must be an object", param=param)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a dict is unhashable: no set lookup
            raise BadRequest(
                f"'{param}.role' must be one of {', '.join(sorted(ROLES))}", param=f"{param}.role"
            )
        content = message.get("content")
        if content is None:
            if role != "assistant":
                raise BadRequest(f"'{param}.content' is required", param=f"{param}.content")
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise BadRequest(
                        f"'{param}.content' parts must be objects with a 'type'", param=f"{param}.content"
                    )
        elif not isinstance(content, str):
            raise BadRequest(f"'{param}.content' must be a string or an array", param=f"{param}.content")
    _check_type(body, "stream", bool, "a boolean")
    _check_type(body, "stream_options", dict, "an object")
    _check_type(body, "tools", list, "an array")
    _check_type(body, "n", int, "an integer")
    for name in ("max_tokens", "max_completion_tokens", "seed"):
        _check_type(body, name, int, "an integer")
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        _check_type(body, name, (int, float), "a number")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise BadRequest("'stop' must be a string or an array of strings", param="stop")
    if (body.get("n") or 1) != 1 and settings.upstream_api == "ollama":
        raise BadRequest("'n' above 1 is not supported by an Ollama upstream", param="n")
    return {**body, "model": resolve_model(body.get("model"), settings)}


def validate_embeddings(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", param="model")
    texts = body.get("input")
    if isinstance(texts, str):
        pass
    elif isinstance(texts, list) and texts:
        token_input = all(isinstance(t, int) and not isinstance(t, bool) for t in texts) or all(
            isinstance(t, list) and t and all(isinstance(x, int) for x in t) for t in texts
        )
        if token_input:
            if settings.upstream_api == "ollama":
                raise BadRequest(
                    "token-array input is not supported by an Ollama upstream; send text", param="input"
                )
        elif not all(isinstance(t, str) for t in texts):
            raise BadRequest("'input' must be a string or an array of strings", param="input")
    else:
        raise BadRequest("'input' must be a non-empty string or array", param="input")
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    _check_type(body, "dimensions", int, "an integer")
    return {**body, "model": resolve_model(model, settings)}
