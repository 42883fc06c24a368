"""Who gets in and what they can read: API keys (with collection limits), the Host allow-list,
CORS, body limits, a fixed upstream, confined folders, quiet logs, link stripping and the
systemd unit."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
import openai
import orjson
import pytest

from proxy.api.security import hash_key, parse_keys
from proxy.errors import ConfigError
from proxy.index.service import IndexService
from proxy.settings import Settings
from tests.conftest import CHAT_MODEL, UpstreamLog
from tests.servers import Server, ragproxy
from tests.test_serve import log_events, serve

KEY_A, KEY_ALL = "key-for-alpha-only-1234", "key-for-everything-5678"
CANARY_A, CANARY_B = "ALPHA-CANARY-4411", "BRAVO-CANARY-9922"
QUESTION = "What is the launch code of the Orion project?"


@pytest.fixture(scope="module")
def two_collections(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Collections 'alpha' and 'bravo' answer the same question with different canaries;
    'bravo' also holds an image link to a foreign host."""
    root = tmp_path_factory.mktemp("security")
    alpha, bravo = root / "alpha", root / "bravo"
    alpha.mkdir()
    bravo.mkdir()
    (alpha / "orion.md").write_text(
        f"# Orion project\n\nThe launch code of the Orion project is {CANARY_A}. "
        "![status](https://evil.example/collect?q=launch) See [the guide](https://docs.example.org/orion).\n"
    )
    (bravo / "orion.md").write_text(
        f"# Orion project\n\nThe launch code of the Orion project is {CANARY_B}.\n"
    )
    db = root / "index.db"
    service = IndexService(Settings(db=str(db)))
    try:
        for name, folder in (("alpha", alpha), ("bravo", bravo)):
            service.indexer.scan(service.indexer.add_collection(name, folder))
        service.worker.embed_pending()
    finally:
        service.close()
    return alpha, bravo, db


@pytest.fixture(scope="module")
def guarded(ollama: Server, two_collections: tuple[Path, Path, Path]) -> Iterator[str]:
    _, _, db = two_collections
    with ragproxy(
        upstream=ollama.url,
        model=CHAT_MODEL,
        db=str(db),
        num_ctx_max=2048,
        api_keys=(f"{KEY_A}@alpha", KEY_ALL),
        cors_origins=("http://app.example",),
        link_hosts=("docs.example.org",),
    ) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_host_header_outside_the_allow_list_is_refused(guarded: str) -> None:
    for path, shape in (("/v1/models", "openai"), ("/api/tags", "ollama")):
        reply = httpx.get(guarded + path, headers={"Host": "evil.com", **bearer(KEY_ALL)})
        assert reply.status_code == 400
        body = reply.json()
        assert (
            ("evil.com" in body["error"]["message"]) if shape == "openai" else ("evil.com" in body["error"])
        )
    assert (
        httpx.get(guarded + "/v1/models", headers={"Host": "localhost:1234", **bearer(KEY_ALL)}).status_code
        == 200
    )


def raw_get(base: str, target: str, *headers: str) -> tuple[int, Any]:
    """A request written byte by byte on a socket: HTTP clients normalise away absolute-form
    targets and repeated Host headers."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        head = [f"GET {target} HTTP/1.1", *headers, "Connection: close"]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, orjson.loads(response.read())


def test_absolute_form_target_must_name_an_allowed_host(proxy_ollama: str) -> None:
    port = urlsplit(proxy_ollama).port
    status, body = raw_get(proxy_ollama, "http://evil.com/v1/models", "Host: localhost")
    assert status == 400 and body["error"]["message"] == "Host 'evil.com' is not allowed"
    assert body["error"]["type"] == "invalid_request_error"
    status, body = raw_get(proxy_ollama, "http://evil.com:80/api/tags", "Host: localhost")
    assert (status, body) == (400, {"error": "Host 'evil.com' is not allowed"})
    status, body = raw_get(proxy_ollama, "http://localhost@evil.com/v1/models", "Host: localhost")
    assert status == 400
    # The target's authority is the request's host; the Host header is ignored (RFC 9112 3.2.2).
    status, body = raw_get(proxy_ollama, f"http://localhost:{port}/v1/models", "Host: evil.com")
    assert status == 200 and body["object"] == "list"
    assert raw_get(proxy_ollama, f"http://127.0.0.1:{port}/api/tags", "Host: 127.0.0.1")[0] == 200
    assert raw_get(proxy_ollama, "/v1/models", f"Host: 127.0.0.1:{port}")[0] == 200


def test_more_than_one_host_header_is_400(proxy_ollama: str) -> None:
    for hosts in (("evil.com", "localhost"), ("localhost", "evil.com"), ("localhost", "localhost")):
        lines = [f"Host: {host}" for host in hosts]
        status, body = raw_get(proxy_ollama, "/v1/models", *lines)
        assert status == 400 and body["error"]["message"] == "more than one Host header", hosts
        assert raw_get(proxy_ollama, "/api/tags", *lines) == (400, {"error": "more than one Host header"})
    assert raw_get(proxy_ollama, "/v1/models", "Host: localhost")[0] == 200


def test_cors_only_for_configured_origins(guarded: str) -> None:
    foreign = httpx.get(guarded + "/v1/models", headers={"Origin": "http://evil.com", **bearer(KEY_ALL)})
    assert foreign.status_code == 200 and "access-control-allow-origin" not in foreign.headers
    friendly = httpx.get(guarded + "/v1/models", headers={"Origin": "http://app.example", **bearer(KEY_ALL)})
    assert friendly.headers["access-control-allow-origin"] == "http://app.example"
    preflight = httpx.options(
        guarded + "/v1/chat/completions",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert (
        preflight.status_code == 204 and "authorization" in preflight.headers["access-control-allow-headers"]
    )
    foreign_preflight = httpx.options(
        guarded + "/v1/chat/completions",
        headers={"Origin": "http://evil.com", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in foreign_preflight.headers


def test_missing_or_wrong_key_is_401_on_both_apis(guarded: str) -> None:
    for headers in ({}, bearer("wrong-key"), {"x-api-key": "wrong-key"}):
        models = httpx.get(guarded + "/v1/models", headers=headers)
        assert models.status_code == 401 and models.json()["error"]["type"] == "authentication_error"
        tags = httpx.get(guarded + "/api/tags", headers=headers)
        assert tags.status_code == 401 and set(tags.json()) == {"error"}
    with openai.OpenAI(base_url=guarded + "/v1", api_key="wrong-key") as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    with ollama.Client(host=guarded, headers=bearer("wrong")) as ollama_client:
        with pytest.raises(ollama.ResponseError) as raised:
            ollama_client.list()
    assert raised.value.status_code == 401
    with openai.OpenAI(base_url=guarded + "/v1", api_key=KEY_ALL) as client:
        assert client.models.list().data  # the official client sends the key as a bearer token
    assert httpx.get(guarded + "/api/tags", headers={"x-api-key": KEY_ALL}).status_code == 200
    assert httpx.get(guarded + "/healthz").status_code == 200  # liveness needs no key


def test_key_limited_to_a_collection_never_sees_another(guarded: str, upstream_log: UpstreamLog) -> None:
    chat = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}
    # chat, OpenAI API
    reply = httpx.post(guarded + "/v1/chat/completions", json=chat, headers=bearer(KEY_A), timeout=60)
    assert reply.status_code == 200 and [s["collection"] for s in reply.json()["sources"]] == ["alpha"]
    # chat, Ollama API
    ollama_chat = {
        "model": CHAT_MODEL,
        "messages": chat["messages"],
        "stream": False,
        "options": {"num_predict": 4},
    }
    assert (
        httpx.post(guarded + "/api/chat", json=ollama_chat, headers=bearer(KEY_A), timeout=60).status_code
        == 200
    )
    sent = "\n".join(str(r["body"]) for r in upstream_log.requests("/api/chat"))
    assert CANARY_A in sent and CANARY_B not in sent
    # asking for the other collection, every way there is
    for extra in (
        {"json": {**chat, "rag": {"collections": ["bravo"]}}},
        {"json": chat, "headers": {"X-RAG-Collections": "bravo"}},
    ):
        headers = {**bearer(KEY_A), **extra.get("headers", {})}
        refused = httpx.post(
            guarded + "/v1/chat/completions", json=extra["json"], headers=headers, timeout=60
        )
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    alias = httpx.post(
        guarded + "/v1/chat/completions", json={**chat, "model": f"{CHAT_MODEL}+bravo"}, headers=bearer(KEY_A)
    )
    assert CANARY_B not in alias.text  # an alias the key cannot see is just an unknown model
    # search and preview
    found = httpx.post(guarded + "/v1/rag/search", json={"query": QUESTION, "k": 10}, headers=bearer(KEY_A))
    assert found.status_code == 200 and CANARY_B not in found.text and CANARY_A in found.text
    assert (
        httpx.post(
            guarded + "/v1/rag/search",
            json={"query": QUESTION, "collections": ["bravo"]},
            headers=bearer(KEY_A),
        ).status_code
        == 403
    )
    preview = httpx.post(guarded + "/v1/rag/preview", json=chat, headers=bearer(KEY_A), timeout=60)
    assert CANARY_A in preview.text and CANARY_B not in preview.text
    # model lists and embeddings
    models = httpx.get(guarded + "/v1/models", headers=bearer(KEY_A)).json()["data"]
    ids = [m["id"] for m in models]
    assert f"{CHAT_MODEL}+alpha" in ids and f"{CHAT_MODEL}+bravo" not in ids
    tags = httpx.get(guarded + "/api/tags", headers=bearer(KEY_A)).json()["models"]
    assert not any(m["name"].endswith("+bravo") for m in tags)
    embedded = httpx.post(
        guarded + "/v1/embeddings", json={"model": "e5", "input": QUESTION}, headers=bearer(KEY_A)
    )
    assert embedded.status_code == 200 and CANARY_B not in embedded.text
    # the unrestricted key sees both
    both = httpx.post(guarded + "/v1/rag/search", json={"query": QUESTION, "k": 10}, headers=bearer(KEY_ALL))
    assert CANARY_A in both.text and CANARY_B in both.text


def test_foreign_links_are_stripped_from_context(guarded: str, upstream_log: UpstreamLog) -> None:
    chat = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}
    httpx.post(guarded + "/v1/chat/completions", json=chat, headers=bearer(KEY_A), timeout=60)
    (sent,) = upstream_log.requests("/api/chat")
    context = sent["body"]["messages"][0]["content"]
    assert CANARY_A in context and "evil.example" not in context and "[image: status]" in context
    assert "[the guide](https://docs.example.org/orion)" in context  # an allowed host keeps its link


def test_body_cannot_change_the_upstream_or_exceed_the_size_limit(
    guarded: str, upstream_log: UpstreamLog
) -> None:
    chat = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "api_base": "http://127.0.0.1:9",
        "base_url": "http://127.0.0.1:9",
        "upstream": "http://127.0.0.1:9",
        "rag": False,
    }
    reply = httpx.post(guarded + "/v1/chat/completions", json=chat, headers=bearer(KEY_ALL), timeout=60)
    assert reply.status_code == 200 and len(upstream_log.requests("/api/chat")) == 1
    big = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (11 * 1024 * 1024) + b'"}]}'
    for path in ("/v1/chat/completions", "/api/chat"):
        too_big = httpx.post(
            guarded + path, content=big, headers={**bearer(KEY_ALL), "content-type": "application/json"}
        )
        assert too_big.status_code == 413, path


def test_non_loopback_bind_without_keys_refuses_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "refusing to listen on 0.0.0.0 without API keys" in result.stderr


def test_symlinks_out_and_sibling_prefix_folders_are_not_indexed(tmp_path: Path) -> None:
    docs, docs2 = tmp_path / "docs", tmp_path / "docs2"
    docs.mkdir()
    docs2.mkdir()
    (docs / "inside.md").write_text("inside text\n")
    (docs2 / "sibling.md").write_text("sibling secret text\n")
    os.symlink("/etc/passwd", docs / "x.md")
    os.symlink(docs2, docs / "linked-dir")
    os.symlink(docs2 / "sibling.md", docs / "y.md")
    service = IndexService(Settings(db=str(tmp_path / "i.db")))
    try:
        collection = service.indexer.add_collection("docs", docs)
        service.indexer.scan(collection)
        paths = {d for d in service.store.document_states(collection.id)}
        assert paths == {"inside.md"}
        assert service.indexer.collection_for(docs2 / "sibling.md") is None
        assert service.indexer.index_file(collection, docs / ".." / "docs2" / "sibling.md") == "ignored"
    finally:
        service.close()


def test_secrets_prompts_and_documents_stay_out_of_the_logs(
    ollama: Server, two_collections: tuple[Path, Path, Path]
) -> None:
    _, _, db = two_collections
    prompt_canary = "PROMPT-CANARY-3141"
    env = {"RAGPROXY_API_KEYS": f"{KEY_ALL},{KEY_A}@alpha", "RAGPROXY_DB": str(db)}
    with serve("--upstream", ollama.url, "--model", CHAT_MODEL, "--num-ctx-max", "2048", env=env) as (
        base,
        lines,
    ):
        chat = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": f"{QUESTION} {prompt_canary}"}]}
        # generous timeouts: a loaded machine's first chat waits for the model server's queue
        reply = httpx.post(
            base + "/v1/chat/completions",
            json={**chat, "max_tokens": 4},
            headers=bearer(KEY_ALL),
            timeout=300,
        )
        assert reply.status_code == 200 and reply.json()["sources"]
        httpx.post(
            base + "/api/chat",
            json={**chat, "stream": False, "options": {"num_predict": 4}},
            headers={"x-api-key": KEY_A},
            timeout=300,
        )
        httpx.get(base + "/v1/models", headers=bearer("wrong-key-" + KEY_ALL))
    text = b"\n".join(lines).decode()
    events = log_events(lines)
    assert [e["status"] for e in events if e["event"] == "request"][-3:] == [200, 200, 401]
    for secret in (prompt_canary, KEY_ALL, KEY_A, CANARY_A, CANARY_B):
        assert secret not in text, secret


def test_system_unit_verifies_and_scores_at_most_2(
    tmp_path: Path, two_collections: tuple[Path, Path, Path]
) -> None:
    alpha, _, _ = two_collections
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "service",
            "install",
            "--dest",
            str(tmp_path),
            "--docs",
            f"alpha={alpha}",
            "--api-key",
            KEY_A,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "ragproxy.service"
    text = unit.read_text()
    assert f"BindReadOnlyPaths={alpha}" in text and "ExecStart=" in text
    config, secrets = (tmp_path / "config.toml").read_text(), (tmp_path / "ragproxy.env").read_text()
    assert KEY_A not in config + secrets and "sha256:" in secrets  # keys are stored hashed, apart
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True
    )
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout).group(1))  # type: ignore[union-attr]
    assert score <= 2.0, security.stdout
    # the checked-in reference unit is what the command writes for default settings
    reference = (Path(__file__).parent.parent / "systemd" / "ragproxy.service").read_text()
    assert re.sub(r"(?m)^(ExecStart|EnvironmentFile|BindReadOnlyPaths)=.*\n", "", reference) == re.sub(
        r"(?m)^(ExecStart|EnvironmentFile|BindReadOnlyPaths)=.*\n", "", text
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("pass@word-1234@notes", "more than one '@'"),
        ("pass!word-1234", r"a key may hold letters, digits and \. _ ~ \+ / = - only"),
        ("pass:word-1234@notes", "a key may hold"),
        ("password-1234@notes:", "names an empty collection"),
        ("password-1234@", "names an empty collection"),
        ("@notes", "an API key is empty"),
    ],
)
def test_an_ambiguous_key_entry_is_refused_naming_it_redacted(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        parse_keys((entry,))
    assert "word-1234" not in str(refused.value)  # the entry is named, the key not shown


def test_a_key_holding_any_character_is_given_by_its_hash() -> None:
    key = "p@ss:w0rd!-1234"
    (parsed,) = parse_keys((hash_key(key) + "@notes",))
    assert parsed.digest == hashlib.sha256(key.encode()).digest() and parsed.collections == ("notes",)
    plain, limited = parse_keys(("sk-A1b2_c3.d4~e5+f6/g7=", "sk-A1b2@notes:manuals"))
    assert plain.collections is None and limited.collections == ("notes", "manuals")


def test_serve_refuses_an_ambiguous_key_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--upstream", "http://127.0.0.1:9", "--api-key", "a@b@c"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "more than one '@'" in result.stderr, result.stderr
