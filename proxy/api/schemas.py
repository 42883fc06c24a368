"""Request bodies checked before anything is sent upstream: a clear 400 naming the field."""

from __future__ import annotations

import base64
import binascii
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
MAX_PARTS = 10_000  # content parts (text, images) of all the messages together
# OpenAI's own limit is 128 tools; agents with many MCP servers send a few hundred.
MAX_TOOLS = 1_024
MAX_STOP = 64  # OpenAI's own limit is 4; llama.cpp checks every one against every token
MAX_CHOICES = 128  # OpenAI's own limit on ``n``; each choice is a whole generation upstream


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
    """The body with its model resolved and a tool call's missing ``type`` filled in; everything
    else left as the client sent it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    check_message_count(messages)
    parts = 0
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"'{param}' must be an object", param=param)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a dict is unhashable: no set lookup
            raise BadRequest(
                f"'{param}.role' must be one of {', '.join(sorted(ROLES))}", param=f"{param}.role"
            )
        if message.get("tool_calls") is not None:
            _check_tool_calls(message["tool_calls"], f"{param}.tool_calls")
        if message.get("tool_call_id") is not None and not isinstance(message["tool_call_id"], str):
            raise BadRequest(f"'{param}.tool_call_id' must be a string", param=f"{param}.tool_call_id")
        content = message.get("content")
        if content is None:
            if role != "assistant":
                raise BadRequest(f"'{param}.content' is required", param=f"{param}.content")
        elif isinstance(content, list):
            parts += len(content)
            if parts > MAX_PARTS:
                raise BadRequest(
                    f"a chat may have at most {MAX_PARTS:,} content parts in all", param=f"{param}.content"
                )
            for j, part in enumerate(content):
                _check_part(part, f"{param}.content[{j}]")
        elif not isinstance(content, str):
            raise BadRequest(f"'{param}.content' must be a string or an array", param=f"{param}.content")
    _check_type(body, "stream", bool, "a boolean")
    _check_type(body, "stream_options", dict, "an object")
    check_tools(body.get("tools"))
    _check_tool_choice(body.get("tool_choice"))
    check_sampling(body)
    _check_type(body, "response_format", dict, "an object")
    for name in ("logprobs", "parallel_tool_calls"):
        _check_type(body, name, bool, "a boolean")
    return {**body, "model": resolve_model(body.get("model"), settings)}


def check_sampling(body: dict[str, Any]) -> None:
    """The sampling fields chats and completions share: numbers where numbers are meant, and
    lengths and counts positive (a llama.cpp server reads -1 as "no limit", and makes every
    choice asked for)."""
    for name in ("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs"):
        _check_type(body, name, int, "an integer")
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) == -1 and not isinstance(body[name], bool):
            del body[name]  # llama.cpp's and LM Studio's "no limit", which some clients send
        check_positive(body, name)
    n = body.get("n")
    if n is not None and not 1 <= n <= MAX_CHOICES:
        raise BadRequest(f"'n' must be between 1 and {MAX_CHOICES}", param="n")
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        _check_type(body, name, (int, float), "a number")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise BadRequest("'stop' must be a string or an array of strings", param="stop")
    if isinstance(stop, list) and len(stop) > MAX_STOP:
        raise BadRequest(f"'stop' may hold at most {MAX_STOP} sequences", param="stop")


MAX_TOKENS_ASKED = 2**31 - 1  # llama.cpp reads a larger count as a negative 32-bit one


def check_positive(body: dict[str, Any], name: str) -> None:
    """``body[name]``, if given, a positive integer (within what servers can hold)."""
    value = body.get(name)
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOKENS_ASKED
    ):
        raise BadRequest(f"'{name}' must be an integer from 1 to {MAX_TOKENS_ASKED}", param=name)


def _check_part(part: Any, param: str) -> None:
    """A content part: text is a string, an image's ``image_url`` an object with a ``url``."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise BadRequest(f"'{param}' must be an object with a 'type'", param=param)
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise BadRequest(f"'{param}.text' must be a string", param=f"{param}.text")
    if part["type"] == "image_url":
        image = part.get("image_url")
        if not isinstance(image, dict):
            raise BadRequest(
                f"'{param}.image_url' must be an object with a 'url'", param=f"{param}.image_url"
            )
        if not isinstance(image.get("url"), str) or not image["url"]:
            raise BadRequest(f"'{param}.image_url.url' must be a string", param=f"{param}.image_url.url")
        check_image_url(image["url"], f"{param}.image_url.url")


def check_image_url(url: str, param: str) -> None:
    """An http(s) URL, as it is, or a data URL whose payload is base64 (the server decodes it, and
    a llama.cpp server fails with 500 on one that is not)."""
    scheme = url[:8].lower()
    if scheme.startswith("data:"):
        head, comma, payload = url.partition(",")
        if not comma or not head.lower().endswith(";base64") or not is_base64(payload):
            raise BadRequest(f"'{param}' must be a data URL of base64 data", param=param)
    elif not scheme.startswith(("http://", "https://")):
        raise BadRequest(f"'{param}' must be an http(s) or data URL", param=param)


def is_base64(data: str) -> bool:
    try:  # line breaks allowed, as MIME base64 has them and Ollama's decoder takes them
        base64.b64decode(data.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _check_tool_calls(calls: Any, param: str) -> None:
    """An assistant turn's calls as OpenAI defines them: ``{"id", "type": "function", "function":
    {"name", "arguments"}}``; a llama.cpp server fails with 500 on any other shape. A call
    without a ``type`` is taken as a function's (the one kind a chat tool makes, and clients
    replaying Ollama's calls leave it out); ``arguments`` may be an object, as Ollama's are, but
    a string must hold JSON (a blank one is taken as ``{}``)."""
    if not isinstance(calls, list):
        raise BadRequest(f"'{param}' must be an array", param=param)
    for i, call in enumerate(calls):
        where = f"{param}[{i}]"
        if not isinstance(call, dict):
            raise BadRequest(f"'{where}' must be an object", param=where)
        if call.get("type") is None:
            call["type"] = "function"
        elif call["type"] != "function":
            raise BadRequest(f"'{where}.type' must be 'function'", param=f"{where}.type")
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise BadRequest(f"'{where}.id' must be a string", param=f"{where}.id")
        function = _named_function(call, where)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and not arguments.strip():
            function["arguments"] = arguments = "{}"  # a call without arguments, as the Ollama path takes it
        if isinstance(arguments, str):
            loads_json(arguments, f"'{where}.function.arguments'", param=f"{where}.function.arguments")
        elif not isinstance(arguments, dict):
            raise BadRequest(
                f"'{where}.function.arguments' must be a string of JSON", param=f"{where}.function.arguments"
            )


def check_tools(tools: Any, param: str = "tools") -> None:
    """Function tools as OpenAI and Ollama define them: ``{"type": "function", "function":
    {"name", "description"?, "parameters"?}}`` (anything else makes some servers fail with 500)."""
    if tools is None:
        return
    if not isinstance(tools, list):
        raise BadRequest(f"'{param}' must be an array", param=param)
    if len(tools) > MAX_TOOLS:
        raise BadRequest(f"at most {MAX_TOOLS:,} tools a request; this one has {len(tools):,}", param=param)
    for i, tool in enumerate(tools):
        where = f"{param}[{i}]"
        if not isinstance(tool, dict):
            raise BadRequest(f"'{where}' must be an object", param=where)
        if tool.get("type") != "function":
            raise BadRequest(f"'{where}.type' must be 'function'", param=f"{where}.type")
        function = _named_function(tool, where)
        if function.get("description") is not None and not isinstance(function["description"], str):
            raise BadRequest(
                f"'{where}.function.description' must be a string", param=f"{where}.function.description"
            )
        if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            raise BadRequest(
                f"'{where}.function.parameters' must be a JSON schema object",
                param=f"{where}.function.parameters",
            )


def _named_function(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A tool's or a call's ``function``: an object with a name."""
    function = item.get("function")
    if not isinstance(function, dict):
        raise BadRequest(f"'{where}.function' must be an object", param=f"{where}.function")
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise BadRequest(f"'{where}.function.name' must be a string", param=f"{where}.function.name")
    return function


def _check_tool_choice(choice: Any) -> None:
    """``none``, ``auto``, ``required``, or an object naming its type (a function by name)."""
    if choice is None or choice in ("none", "auto", "required"):
        return
    if isinstance(choice, dict) and isinstance(choice.get("type"), str):
        function = choice.get("function")
        if choice["type"] != "function" or (
            isinstance(function, dict) and isinstance(function.get("name"), str)
        ):
            return
    raise BadRequest(
        "'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", "
        '"function": {"name": ...}}',
        param="tool_choice",
    )


def check_images(images: Any, param: str = "images") -> None:
    """Ollama's images: an array of base64 strings."""
    if images is None:
        return
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise BadRequest(f"{param} must be an array of base64 strings", param=param)
    if not all(map(is_base64, images)):
        raise BadRequest(f"{param} must be an array of base64 strings", param=param)


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
        if not token_input and not all(isinstance(t, str) for t in texts):
            raise BadRequest("'input' must be a string or an array of strings", param="input")
    else:
        raise BadRequest("'input' must be a non-empty string or array", param="input")
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    _check_type(body, "dimensions", int, "an integer")
    return {**body, "model": resolve_model(model, settings)}
