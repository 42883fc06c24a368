"""Who may talk to ragproxy: API keys (optionally limited to collections), the Host header
allow-list against DNS rebinding, and CORS only for configured origins. Rejections have the
error shape of the API asked (OpenAI's, or Ollama's under /api/ and /)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass

import orjson
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.apis import api_of
from proxy.errors import ConfigError, ErrorShape, error_reply
from proxy.settings import Settings

SCOPE_KEY = "ragproxy_collections"  # in scope["state"]: the collections a key may read, or None
HASH_PREFIX = "sha256:"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = ("/healthz",)  # liveness probes need no key
LOOPBACK_OPEN_PATHS = ("/metrics",)  # scrapers on the same machine need no key either
UI_PATHS = ("/ui", "/ui/")  # the status page: a browser's own login prompt (HTTP Basic) carries the key
TARGET_AUTHORITY = "ragproxy.target_authority"  # in scope["extensions"], set by server.py


@dataclass(frozen=True, slots=True)
class ApiKey:
    digest: bytes  # sha256 of the key: keys are compared by hash, in constant time
    collections: tuple[str, ...] | None  # None: every collection


def key_collections(scope: Scope) -> tuple[str, ...] | None:
    """The collections the request's API key may read; None: all (or no keys configured)."""
    state = scope.get("state") or {}
    collections: tuple[str, ...] | None = state.get(SCOPE_KEY)
    return collections


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


# A key as written in an entry. '@' and ':' separate the collections, so a key holding them
# (or anything else outside this set) is refused rather than cut: such a key is given by its
# hash, which ``ragproxy hash-key`` prints from the whole key.
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")


def parse_keys(entries: tuple[str, ...]) -> list[ApiKey]:
    """``KEY``, ``KEY@A:B`` (limited to collections A and B), or the same with ``sha256:HEX``
    in place of the key."""
    return [_parse_key(entry) for entry in entries]


def _parse_key(entry: str) -> ApiKey:
    if entry.count("@") > 1:
        raise ConfigError(
            f"API key entry {_redacted(entry)} has more than one '@' (KEY@COLLECTION:...): "
            "give a key holding '@' by its hash ('ragproxy hash-key')"
        )
    secret, sep, names = _split_entry(entry)
    if not secret:
        raise ConfigError("an API key is empty")
    collections = tuple(n.strip() for n in names.split(":")) if sep else None
    if collections is not None and not all(collections):
        raise ConfigError(f"API key entry {_redacted(entry)} names an empty collection after '@' or ':'")
    if secret.startswith(HASH_PREFIX):
        try:
            digest = bytes.fromhex(secret[len(HASH_PREFIX) :])
        except ValueError:
            raise ConfigError("an sha256: API key hash is not hexadecimal") from None
        if len(digest) != 32:
            raise ConfigError("an sha256: API key hash must have 64 hex digits")
    elif not KEY_CHARACTERS.fullmatch(secret):
        raise ConfigError(
            f"API key entry {_redacted(entry)}: a key may hold letters, digits and . _ ~ + / = - only; "
            "give any other key by its hash ('ragproxy hash-key')"
        )
    else:
        digest = hashlib.sha256(secret.encode()).digest()
    return ApiKey(digest, collections)


def _split_entry(entry: str) -> tuple[str, str, str]:
    """``KEY@A:B`` -> (``KEY``, ``@``, ``A:B``); a key alone -> (``KEY``, "", "")."""
    return entry.partition("@")


def key_limits(entries: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(the entry redacted, its collections) for each key limited to collections."""
    return [
        (_redacted(entry), key.collections)
        for entry, key in zip(entries, parse_keys(entries), strict=True)
        if key.collections is not None
    ]


def stored_form(entry: str) -> str:
    """The entry as a config file keeps it: the key replaced by its hash, the limits kept."""
    secret, sep, names = _split_entry(entry)
    return entry if secret.startswith(HASH_PREFIX) else f"{hash_key(secret)}{sep}{names}"


def _redacted(entry: str) -> str:
    return entry[:3] + "..." if len(entry) > 6 else "..."


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def key_required(path: str, host: str, has_keys: bool) -> bool:
    """Whether a request for ``path`` must present a key, on a server listening on ``host``:
    keys apply everywhere but liveness, and but the metrics while only this machine can connect
    (a scraper beyond it sends a key like any client)."""
    if not has_keys or path in OPEN_PATHS:
        return False
    return not (path in LOOPBACK_OPEN_PATHS and is_loopback(host))


def check_bind(settings: Settings) -> None:
    """Listening beyond this machine without keys would hand the documents to the network."""
    if not is_loopback(settings.host) and not settings.api_keys:
        raise ConfigError(
            f"refusing to listen on {settings.host} without API keys: anyone who can reach it could "
            "read the indexed documents; set --api-key (or RAGPROXY_API_KEYS), or listen on 127.0.0.1"
        )


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = parse_keys(settings.api_keys)
        self.bound = settings.host
        hosts = {*LOOPBACK_NAMES, *(h.lower() for h in settings.allowed_hosts)}
        if settings.host not in ("0.0.0.0", "::"):
            hosts.add(settings.host.lower())
        self.any_host = "*" in hosts
        self.hosts = hosts
        self.origins = set(settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        path = scope["path"]
        shape = api_of(path).errors
        if sum(name.lower() == b"host" for name, _ in scope["headers"]) > 1:  # RFC 9112 section 3.2
            await _reject(send, 400, "more than one Host header", "invalid_request_error", shape)
            return
        host = _host_name(_requested_host(scope, headers))
        if not self.any_host and host not in self.hosts:
            await _reject(send, 400, f"Host {host!r} is not allowed", "invalid_request_error", shape)
            return
        origin = headers.get(b"origin", b"").decode("latin-1")
        allowed_origin = origin if origin and origin in self.origins else None
        if (
            scope.get("method") == "OPTIONS"
            and allowed_origin
            and headers.get(b"access-control-request-method")
        ):
            await _preflight(send, allowed_origin)
            return
        if key_required(path, self.bound, bool(self.keys)):
            page = path in UI_PATHS
            key = _presented_key(headers, basic=page)
            if key is None:
                await _reject(
                    send, 401, "missing API key", "authentication_error", shape, "missing_api_key", page
                )
                return
            found = self._match(key)
            if found is None:
                await _reject(
                    send, 401, "invalid API key", "authentication_error", shape, "invalid_api_key", page
                )
                return
            if found.collections is not None and path.rstrip("/") in LOOPBACK_OPEN_PATHS:  # /metrics/ too
                # the metrics name every collection, with its documents and chunks
                await _reject(
                    send,
                    403,
                    "this API key is limited to collections; the metrics cover them all",
                    "permission_error",
                    shape,
                )
                return
            scope.setdefault("state", {})[SCOPE_KEY] = found.collections
        if allowed_origin is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", allowed_origin.encode()),
                    (b"vary", b"Origin"),
                    (b"access-control-expose-headers", b"x-request-id, x-ragproxy-sources"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _match(self, key: str) -> ApiKey | None:
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for candidate in self.keys:  # every key compared, in constant time
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate
        return found


def _requested_host(scope: Scope, headers: dict[bytes, bytes]) -> str:
    """The authority of an absolute-form target (``GET http://host/path``), which overrides the
    Host header (RFC 9112 section 3.2.2), or else the Host header."""
    target = (scope.get("extensions") or {}).get(TARGET_AUTHORITY)
    if target is not None:
        return str(target["authority"])
    return headers.get(b"host", b"").decode("latin-1")


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _presented_key(headers: dict[bytes, bytes], *, basic: bool = False) -> str | None:
    """The bearer token or ``x-api-key``; with ``basic`` (the status page) also the password
    of HTTP Basic credentials, the user name being ignored."""
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    if basic and auth[:6].lower() == "basic ":
        try:
            password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key or None


async def _reject(
    send: Send,
    status: int,
    message: str,
    kind: str,
    shape: ErrorShape,
    code: str | None = None,
    page: bool = False,
) -> None:
    """The error in the shape of the request's API. ``page``: the status page, whose 401 asks
    the browser for the key."""
    status, body = error_reply(shape, status, message, kind, code=code)
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        challenge = b'Basic realm="ragproxy", charset="UTF-8"' if page else b'Bearer realm="ragproxy"'
        headers.append((b"www-authenticate", challenge))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(body), "more_body": False})


async def _preflight(send: Send, origin: str) -> None:
    headers = [
        (b"access-control-allow-origin", origin.encode()),
        (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
        (
            b"access-control-allow-headers",
            b"authorization, content-type, x-api-key, x-request-id, "
            b"x-rag, x-rag-collections, x-rag-top-k, x-rag-footnote, "
            b"mcp-protocol-version, mcp-method, mcp-name",
        ),
        (b"access-control-max-age", b"600"),
        (b"vary", b"Origin"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
