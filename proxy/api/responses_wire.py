"""The OpenAI Responses wire, translated to the one internal chat form and back: a request body
becomes a chat body; the chat's chunks become Responses events (or one response object).

Stateless, like Ollama's own ``/v1/responses``: nothing is stored, ``previous_response_id`` is
refused, and clients such as Codex replay the whole conversation in ``input`` every turn. Tools
other than functions (hosted ones: web search, a local shell, ...) are not offered to the model;
Codex's free-form tools (``custom``) are offered as a function of one string, ``input``."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.api.schemas import check_image_url, check_positive
from proxy.errors import BadRequest
from proxy.text import estimate_tokens

FUNCTION_TYPES = ("function", "custom")
ECHOED = ("instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "temperature", "top_p")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class Wire:
    """What the reply needs to know of the request."""

    body: dict[str, Any]
    custom_tools: set[str] = field(default_factory=set)  # offered as functions of one "input"
    dropped_tools: list[str] = field(default_factory=list)


# -- request ----------------------------------------------------------------------------------------
def to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], Wire]:
    """The chat body for a Responses request (model resolution and checks follow as for chats)."""
    if body.get("previous_response_id") is not None:
        raise BadRequest(
            "previous_response_id is not supported: ragproxy keeps no responses; send the whole "
            "conversation in 'input' (store: false)",
            param="previous_response_id",
        )
    for name in ("background", "conversation"):
        if body.get(name):
            raise BadRequest(f"'{name}' is not supported", param=name)
    wire = Wire(body)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("'instructions' must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        for i, item in enumerate(items):
            _add_item(messages, item, f"input[{i}]")
    else:
        raise BadRequest("'input' must be a string or an array of items", param="input")
    chat: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tools = _tools(body.get("tools"), wire)
    if tools:
        chat["tools"] = tools
        if (choice := _tool_choice(body.get("tool_choice"))) is not None:
            chat["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    check_positive(body, "max_output_tokens")
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    # sampling fields of the chat API that Responses lacks, for clients that send them anyway
    for name in (
        "temperature",
        "top_p",
        "user",
        "seed",
        "stop",
        "logit_bias",
        "presence_penalty",
        "frequency_penalty",
    ):
        if body.get(name) is not None:
            chat[name] = body[name]
    if (response_format := _response_format(body.get("text"))) is not None:
        chat["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        effort = {"minimal": "low", "xhigh": "high"}.get(reasoning["effort"], reasoning["effort"])
        chat["reasoning_effort"] = effort
    return chat, wire


def _text_parts(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"'{param}.content' must be a string or an array", param=f"{param}.content")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            check_image_url(part["image_url"], f"{param}.content[{i}].image_url")
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        elif kind in ("input_image", "input_file"):
            raise BadRequest(
                f"'{param}.content': only images given by URL or data URL are supported (no files)",
                param=f"{param}.content",
            )
        elif kind == "refusal":
            continue
        else:
            raise BadRequest(
                f"'{param}.content' has a part of unknown type {kind!r}", param=f"{param}.content"
            )
    return parts


def _plain(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def _add_item(messages: list[dict[str, Any]], item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise BadRequest(f"'{param}' must be an object", param=param)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise BadRequest(
                f"'{param}.role' must be user, assistant, system or developer", param=f"{param}.role"
            )
        content = _text_parts(item.get("content"), param)
        last = messages[-1] if messages else None
        if role == "assistant" and last and last["role"] == "assistant" and last.get("tool_calls"):
            last["content"] = (last.get("content") or "") + _plain(content)  # text beside its calls
        else:
            messages.append({"role": role, "content": content})
    elif kind in ("function_call", "custom_tool_call"):
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise BadRequest(f"'{param}' needs 'call_id' and 'name'", param=param)
        if kind == "function_call":
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                raise BadRequest(f"'{param}.arguments' must be a string", param=f"{param}.arguments")
        else:
            arguments = orjson.dumps({"input": str(item.get("input") or "")}).decode()
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        last = messages[-1] if messages else None
        if last and last["role"] == "assistant" and not _answered(messages):
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind in ("function_call_output", "custom_tool_call_output"):
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise BadRequest(f"'{param}.call_id' must be a string", param=f"{param}.call_id")
        output = item.get("output")
        text = output if isinstance(output, str) else _plain(_text_parts(output, param))
        messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
    elif kind == "item_reference":
        raise BadRequest(
            f"'{param}': item references need stored responses, which ragproxy keeps none of", param=param
        )
    # reasoning items and the history of hosted tools ragproxy never offers are left out


def _answered(messages: list[dict[str, Any]]) -> bool:
    """Whether the last assistant message's calls already have results after it."""
    return bool(messages) and messages[-1]["role"] == "tool"


def _tools(tools: Any, wire: Wire) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    chat: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"'tools[{i}]' must be an object", param=f"tools[{i}]")
        kind = tool.get("type")
        if kind == "namespace" and isinstance(tool.get("tools"), list):
            members = [
                {**t, "name": f"{tool.get('name')}.{t.get('name')}"}
                for t in tool["tools"]
                if isinstance(t, dict)
            ]
            chat += _tools(members, wire)
            continue
        if kind not in FUNCTION_TYPES:
            wire.dropped_tools.append(str(kind))
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"'tools[{i}].name' must be a string", param=f"tools[{i}].name")
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise BadRequest(f"'tools[{i}].description' must be a string", param=f"tools[{i}].description")
        if kind == "custom":
            wire.custom_tools.add(name)
            parameters: Any = {
                "type": "object",
                "properties": {"input": {"type": "string"}},
                "required": ["input"],
            }
            description = (description + "\n\nPass the whole text as `input`.").strip()
        else:
            parameters = tool.get("parameters") or {"type": "object", "properties": {}}
            if not isinstance(parameters, dict):
                raise BadRequest(
                    f"'tools[{i}].parameters' must be a JSON schema object", param=f"tools[{i}].parameters"
                )
        chat.append(
            {
                "type": "function",
                "function": {"name": name, "description": description, "parameters": parameters},
            }
        )
    return chat


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if (
        isinstance(choice, dict)
        and choice.get("type") in FUNCTION_TYPES
        and isinstance(choice.get("name"), str)
    ):
        return {"type": "function", "function": {"name": choice["name"]}}
    return None


def _response_format(text: Any) -> dict[str, Any] | None:
    form = text.get("format") if isinstance(text, dict) else None
    if not isinstance(form, dict):
        return None
    if form.get("type") == "json_object":
        return {"type": "json_object"}
    if form.get("type") == "json_schema":
        schema = {key: form[key] for key in ("name", "schema", "strict", "description") if key in form}
        return {"type": "json_schema", "json_schema": schema}
    return None


# -- reply ------------------------------------------------------------------------------------------
class Encoder:
    """Chat chunks in, Responses events out, in the order the SDK and Codex expect: the
    response created, then each output item opened, filled and closed (reasoning, message,
    function calls), then the response completed (or incomplete, or failed)."""

    def __init__(self, wire: Wire, model: str) -> None:
        self.wire = wire
        self.model = model
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item being filled
        self._calls: dict[int, dict[str, Any]] = {}  # tool-call index -> its item
        self.finish: str | None = None
        self.usage: dict[str, int] | None = None
        self.extra: dict[str, Any] = {}

    # events
    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        response = self.response("in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            usage = chunk["usage"]
            self.usage = {
                "input": int(usage.get("prompt_tokens") or 0),
                "output": int(usage.get("completion_tokens") or 0),
            }
        for key in ("sources", "rag"):
            if key in chunk:
                self.extra[key] = chunk[key]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if reasoning := delta.get("reasoning_content"):
                events += self._reasoning(reasoning)
            if text := delta.get("content"):
                events += self._text(text)
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def end(self) -> list[dict[str, Any]]:
        events = self._close()
        if self.finish == "length":
            response = self.response("incomplete")
            return [*events, self._event("response.incomplete", response=response)]
        return [*events, self._event("response.completed", response=self.response("completed"))]

    def fail(self, code: str, message: str) -> list[dict[str, Any]]:
        events = self._close()
        response = self.response("failed", error={"code": code, "message": message})
        return [*events, self._event("response.failed", response=response)]

    # items
    def _reasoning(self, text: str) -> list[dict[str, Any]]:
        events = []
        item = self._open
        if item is None or item["type"] != "reasoning":
            events += self._close()
            item, added = self._opened({"id": new_id("rs"), "type": "reasoning", "summary": []})
            part = {"type": "summary_text", "text": ""}
            events += [
                added,
                self._of("response.reasoning_summary_part.added", item, summary_index=0, part=part),
            ]
        item["_text"].append(text)
        events.append(self._of("response.reasoning_summary_text.delta", item, summary_index=0, delta=text))
        return events

    def _text(self, text: str) -> list[dict[str, Any]]:
        events = []
        item = self._open
        if item is None or item["type"] != "message":
            events += self._close()
            item, added = self._opened(
                {"id": new_id("msg"), "type": "message", "role": "assistant", "content": []}
            )
            part = _output_text("")
            events += [added, self._of("response.content_part.added", item, content_index=0, part=part)]
        item["_text"].append(text)
        events.append(self._of("response.output_text.delta", item, content_index=0, delta=text, logprobs=[]))
        return events

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        index = int(call.get("index") or 0)
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            events += self._close()
            name = function.get("name") or ""
            custom = name in self.wire.custom_tools
            item, added = self._opened(
                {
                    "id": new_id("ctc" if custom else "fc"),
                    "type": "custom_tool_call" if custom else "function_call",
                    "call_id": call.get("id") or new_id("call"),
                    "name": name,
                    **({"input": ""} if custom else {"arguments": ""}),
                }
            )
            self._calls[index] = item
            events.append(added)
        pieces = function.get("arguments") or ""
        if pieces and item["status"] != "completed":
            item["_text"].append(pieces)
            if item["type"] == "function_call":
                events.append(self._of("response.function_call_arguments.delta", item, delta=pieces))
        return events

    def _opened(self, item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The item, now the open one, and the event that adds it to the output."""
        item.update(status="in_progress", _index=len(self.output), _text=[])
        self.output.append(item)
        self._open = item
        return item, self._event(
            "response.output_item.added", output_index=item["_index"], item=_public(item)
        )

    def _of(self, kind: str, item: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """An event about one output item."""
        return self._event(kind, item_id=item["id"], output_index=item["_index"], **fields)

    def _close(self) -> list[dict[str, Any]]:
        item, self._open = self._open, None
        if item is None:
            return []
        text = "".join(item.pop("_text", []))
        events = []
        if item["type"] == "reasoning":
            part = {"type": "summary_text", "text": text}
            item["summary"] = [part]
            events.append(self._of("response.reasoning_summary_text.done", item, summary_index=0, text=text))
            events.append(self._of("response.reasoning_summary_part.done", item, summary_index=0, part=part))
        elif item["type"] == "message":
            item["content"] = [_output_text(text)]
            events.append(
                self._of("response.output_text.done", item, content_index=0, text=text, logprobs=[])
            )
            events.append(
                self._of("response.content_part.done", item, content_index=0, part=_output_text(text))
            )
        elif item["type"] == "function_call":
            item["arguments"] = text
            events.append(
                self._of("response.function_call_arguments.done", item, name=item["name"], arguments=text)
            )
        else:  # a free-form tool: its text is the "input" argument of the function it was offered as
            item["input"] = _custom_input(text)
            events.append(self._of("response.custom_tool_call_input.delta", item, delta=item["input"]))
            events.append(self._of("response.custom_tool_call_input.done", item, input=item["input"]))
        item["status"] = "completed"
        events.append(
            self._event("response.output_item.done", output_index=item["_index"], item=_public(item))
        )
        return events

    # the response object
    def response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self.wire.body
        final = status in ("completed", "incomplete", "failed")
        asked = body.get("reasoning")
        reasoning: dict[str, Any] = asked if isinstance(asked, dict) else {}
        response: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": self.model,
            "output": [_public(item) for item in self.output] if final else [],
            "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "store": False,
            "text": body.get("text") or {"format": {"type": "text"}},
            "truncation": "disabled",
            "usage": self._usage() if final else None,
            **{name: body.get(name) for name in ECHOED},
        }
        if response["metadata"] is None:
            response["metadata"] = {}
        if final:
            response.update(self.extra)
        return response

    def _usage(self) -> dict[str, Any]:
        if self.usage is None:  # the upstream said nothing: estimated
            written = sum(estimate_tokens(orjson.dumps(_public(item)).decode()) for item in self.output)
            self.usage = {"input": 0, "output": written}
        tokens_in, tokens_out = self.usage["input"], self.usage["output"]
        return {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if not key.startswith("_")}


def _custom_input(arguments: str) -> str:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments
    return str(value.get("input", "")) if isinstance(value, dict) else arguments
