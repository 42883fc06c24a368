"""What the OpenAPI description (``/schema/openapi.json``) cannot learn from the handlers'
signatures: they read raw JSON bodies (checked by ``schemas.py``, which stays the authority),
so their request bodies are declared here, loosely, with the errors each route can answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from proxy.api.schemas import ROLES

STRING = Schema(type=OpenAPIType.STRING)
BOOLEAN = Schema(type=OpenAPIType.BOOLEAN)
INTEGER = Schema(type=OpenAPIType.INTEGER)
NUMBER = Schema(type=OpenAPIType.NUMBER)
OBJECT = Schema(type=OpenAPIType.OBJECT)


def _object(properties: Mapping[str, Schema], required: Sequence[str] = ()) -> Schema:
    """An object with these properties (others allowed: clients send more than is listed)."""
    return Schema(type=OpenAPIType.OBJECT, properties=dict(properties), required=list(required) or None)


def _array(items: Schema, min_items: int | None = None) -> Schema:
    return Schema(type=OpenAPIType.ARRAY, items=items, min_items=min_items)


def _one_of(*schemas: Schema) -> Schema:
    return Schema(any_of=list(schemas))


TEXTS = _one_of(STRING, _array(STRING))
TOKENS = _array(INTEGER, min_items=1)
# OpenAI's (and Ollama's) function tool
TOOL = _object(
    {
        "type": Schema(type=OpenAPIType.STRING, enum=["function"]),
        "function": _object({"name": STRING, "description": STRING, "parameters": OBJECT}, ["name"]),
    },
    ["type", "function"],
)

OPENAI_MESSAGE = _object(
    {
        "role": Schema(type=OpenAPIType.STRING, enum=sorted(ROLES)),
        "content": _one_of(STRING, _array(_object({"type": STRING, "text": STRING}, ["type"]))),
        "name": STRING,
    },
    ["role"],
)
OPENAI_CHAT = _object(
    {
        "model": STRING,
        "messages": _array(OPENAI_MESSAGE, min_items=1),
        "stream": BOOLEAN,
        "stream_options": OBJECT,
        "max_tokens": INTEGER,
        "temperature": NUMBER,
        "top_p": NUMBER,
        "stop": TEXTS,
        "tools": _array(TOOL),
        "tool_choice": _one_of(Schema(type=OpenAPIType.STRING, enum=["none", "auto", "required"]), OBJECT),
        "n": INTEGER,
        "rag": BOOLEAN,
    },
    ["messages"],
)
OPENAI_RESPONSES = _object(
    {
        "model": STRING,
        "input": _one_of(STRING, _array(OBJECT)),
        "instructions": STRING,
        "tools": _array(OBJECT),
        "stream": BOOLEAN,
        "max_output_tokens": INTEGER,
        "temperature": NUMBER,
        "top_p": NUMBER,
    },
    ["input"],
)
ANTHROPIC_MESSAGES = _object(
    {
        "model": STRING,
        "messages": _array(_object({"role": STRING, "content": _one_of(STRING, _array(OBJECT))}, ["role"])),
        "system": _one_of(STRING, _array(OBJECT)),
        "max_tokens": INTEGER,
        "tools": _array(OBJECT),
        "stream": BOOLEAN,
    },
    ["model", "messages"],
)
OPENAI_COMPLETIONS = _object(
    {
        "model": STRING,
        "prompt": _one_of(STRING, _array(STRING, min_items=1), TOKENS, _array(TOKENS, min_items=1)),
        "suffix": STRING,
        "max_tokens": INTEGER,
        "stream": BOOLEAN,
        "temperature": NUMBER,
        "stop": TEXTS,
    },
    ["prompt"],
)
OPENAI_EMBEDDINGS = _object(
    {
        "model": STRING,
        "input": TEXTS,
        "encoding_format": Schema(type=OpenAPIType.STRING, enum=["float", "base64"]),
        "dimensions": INTEGER,
        "input_type": STRING,
    },
    ["model", "input"],
)
RAG_SEARCH = _object(
    {
        "query": STRING,
        "k": INTEGER,
        "mode": Schema(type=OpenAPIType.STRING, enum=["hybrid", "keyword", "vector"]),
        "collections": _array(STRING),
    },
    ["query"],
)
OLLAMA_MESSAGE = _object({"role": STRING, "content": STRING, "images": _array(STRING)}, ["role"])
OLLAMA_COMMON = {
    "model": STRING,
    "stream": BOOLEAN,
    "options": OBJECT,
    "think": BOOLEAN,
    "keep_alive": _one_of(STRING, NUMBER),
    "format": _one_of(STRING, OBJECT),
}
OLLAMA_CHAT = _object({**OLLAMA_COMMON, "messages": _array(OLLAMA_MESSAGE), "tools": _array(TOOL)}, ["model"])
OLLAMA_GENERATE = _object(
    {**OLLAMA_COMMON, "prompt": STRING, "system": STRING, "raw": BOOLEAN, "suffix": STRING}, ["model"]
)
OLLAMA_SHOW = _object({"model": STRING}, ["model"])
OLLAMA_EMBED = _object({"model": STRING, "input": TEXTS, "truncate": BOOLEAN}, ["model"])
OLLAMA_EMBEDDINGS = _object({"model": STRING, "prompt": STRING}, ["model"])

BAD_REQUEST = {400: "The request is malformed; the error names the field."}
UPSTREAM_ERRORS = {
    502: "The upstream cannot be reached or failed.",
    503: "The upstream is overloaded.",
    504: "The upstream did not answer in time.",
}


def documented(
    body: Schema | None = None, *, upstream: bool = True, errors: Mapping[int, str] | None = None
) -> type[Operation]:
    """An ``operation_class`` for a route handler: its JSON request body, if it reads one, and
    the errors it can answer with (``upstream``: those of a route that calls the upstream)."""
    responses: dict[int, str] = {**(BAD_REQUEST if body is not None else {}), **(errors or {})}
    if upstream:
        responses.update(UPSTREAM_ERRORS)

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                media = OpenAPIMediaType(schema=body)
                self.request_body = RequestBody(content={"application/json": media}, required=True)
            self.responses = dict(self.responses or {})
            for status, description in responses.items():
                self.responses.setdefault(str(status), OpenAPIResponse(description=description))

    return DocumentedOperation
