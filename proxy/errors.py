"""One error shape for every failure: OpenAI's ``{"error": {message, type, param, code}}``,
with the HTTP status carried by the exception class."""

from __future__ import annotations

from typing import Any, Literal


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and why."""


class ProxyError(Exception):
    status = 500
    type = "api_error"
    code: str | None = None
    upstream_status: int | None = None  # the HTTP status of the upstream's answer it stands for

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, param=self.param, code=self.code)


class BadRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(ProxyError):
    status = 401
    type = "authentication_error"


class Forbidden(ProxyError):
    status = 403
    type = "permission_error"


class NotFound(ProxyError):
    status = 404
    type = "not_found_error"


class BodyTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamError(ProxyError):
    """The upstream failed or answered with an error of its own."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamFailed(UpstreamError):
    """The upstream failed (HTTP 5xx, or it closed the connection): before the first byte of a
    reply, another upstream of the pool may be asked instead."""


class UpstreamUnavailable(UpstreamError):
    status = 502
    code = "upstream_unreachable"


class UpstreamOverloaded(UpstreamError):
    status = 503
    code = "upstream_overloaded"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


def error_body(
    message: str, type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """(status, body) in the Anthropic Messages API's shape. An overloaded upstream is 529 there
    (its clients retry that one)."""
    status = 529 if status == 503 else status
    kind = ANTHROPIC_TYPES.get(status, "api_error")
    return status, {"type": "error", "error": {"type": kind, "message": message}}


ErrorShape = Literal["openai", "ollama", "anthropic"]


def error_reply(
    shape: ErrorShape,
    status: int,
    message: str,
    kind: str,
    *,
    param: str | None = None,
    code: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """(status, body) of an error in that API's shape (``kind``, ``param`` and ``code`` are
    OpenAI's fields)."""
    if shape == "anthropic":
        return anthropic_error(status, message)
    if shape == "ollama":
        return status, {"error": message}
    return status, error_body(message, kind, param=param, code=code)
