"""Which retrieval a request asks for: the model aliases (``model+collection``, ``model+norag``),
the X-RAG headers and the body's ``rag`` field, resolved into one ``RagControl``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.settings import Settings

NORAG = "norag"
ALIAS_SEPARATOR = "+"
MAX_TOP_K = 50


@dataclass(frozen=True, slots=True)
class RagControl:
    """What retrieval does for one request, and why (for the log and the preview)."""

    enabled: bool
    collections: tuple[str, ...] | None = None
    top_k: int = 5
    footnote: bool | None = None  # None: the API's default
    reason: str = "default"


def split_alias(model: str, collections: Sequence[str]) -> tuple[str, RagControl | None]:
    """``name+norag`` and ``name+<collection>`` choose retrieval by model name; anything else
    (including a '+' that names no collection) is the upstream model as given."""
    if model.endswith(ALIAS_SEPARATOR + NORAG) and len(model) > len(NORAG) + 1:
        return model[: -len(NORAG) - 1], RagControl(False, reason="model alias")
    for name in sorted(collections, key=len, reverse=True):  # names may hold '+' themselves
        if model.endswith(ALIAS_SEPARATOR + name) and len(model) > len(name) + 1:
            return model[: -len(name) - 1], RagControl(True, (name,), reason="model alias")
    return model, None


def aliases(model: str, collections: Sequence[str]) -> list[str]:
    """``model+<collection>`` for each collection, then ``model+norag`` (a collection named
    "norag" can only be chosen by header or body field)."""
    names = [name for name in sorted(collections) if name != NORAG]
    return [f"{model}{ALIAS_SEPARATOR}{name}" for name in names] + [f"{model}{ALIAS_SEPARATOR}{NORAG}"]


_OFF = {"off", "false", "0", "no", "none", "disabled"}
_ON = {"on", "true", "1", "yes", "enabled"}


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _OFF:
        return False
    if lowered in _ON:
        return True
    raise BadRequest(f"header {name} must be on or off, got {value!r}", param=name)


def resolve_control(
    body_rag: Any,
    headers: Mapping[str, str],
    alias: RagControl | None,
    settings: Settings,
) -> RagControl:
    """The body's ``rag`` field wins over the X-RAG headers, which win over a model alias, which
    wins over the settings. Naming collections turns retrieval on unless the same source also
    turns it off."""
    enabled, reason = settings.rag, "settings"
    collections: tuple[str, ...] | None = None
    top_k = settings.top_k
    footnote: bool | None = None
    if alias is not None:
        enabled, collections, reason = alias.enabled, alias.collections, alias.reason
    if headers.get("x-rag-collections"):  # naming collections asks for retrieval from them
        collections = tuple(c.strip() for c in headers["x-rag-collections"].split(",") if c.strip()) or None
        enabled, reason = True, "header"
    if "x-rag" in headers:
        enabled, reason = _flag(headers["x-rag"], "X-RAG"), "header"
    if headers.get("x-rag-top-k"):
        top_k = _int(headers["x-rag-top-k"], "X-RAG-Top-K")
    if headers.get("x-rag-footnote"):
        footnote = _flag(headers["x-rag-footnote"], "X-RAG-Footnote")
    if body_rag is not None:
        if isinstance(body_rag, bool):
            enabled, reason = body_rag, "body"
        elif isinstance(body_rag, dict):
            unknown = set(body_rag) - {"enabled", "collections", "top_k", "footnote"}
            if unknown:
                raise BadRequest(f"unknown field in 'rag': {', '.join(sorted(unknown))}", param="rag")
            reason = "body"
            if body_rag.get("collections") is not None:
                enabled = True
            if "enabled" in body_rag:
                if not isinstance(body_rag["enabled"], bool):
                    raise BadRequest("'rag.enabled' must be true or false", param="rag.enabled")
                enabled = body_rag["enabled"]
            if body_rag.get("collections") is not None:
                names = body_rag["collections"]
                if isinstance(names, str):
                    names = [names]
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise BadRequest("'rag.collections' must be a list of names", param="rag.collections")
                collections = tuple(names) or None
            if body_rag.get("top_k") is not None:
                top_k = _int(body_rag["top_k"], "rag.top_k")
            if body_rag.get("footnote") is not None:
                if not isinstance(body_rag["footnote"], bool):
                    raise BadRequest("'rag.footnote' must be true or false", param="rag.footnote")
                footnote = body_rag["footnote"]
        else:
            raise BadRequest("'rag' must be an object or a boolean", param="rag")
    return RagControl(enabled, collections, top_k, footnote, reason)


def _int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be an integer, got {value!r}", param=name) from None
    if isinstance(value, bool) or not 1 <= number <= MAX_TOP_K:
        raise BadRequest(f"{name} must be between 1 and {MAX_TOP_K}, got {value!r}", param=name)
    return number
