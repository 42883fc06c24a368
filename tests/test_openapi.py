"""The OpenAPI description lists every route, and a schema fuzzer (schemathesis) finds no
server error: whatever a client sends, bad input gets a 4xx in the API's error shape. The
upstream refuses connections, so every route that reaches it answers a documented 502."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from proxy.app import create_app
from proxy.settings import Settings
from tests.servers import free_port, ragproxy

KEY = "fuzz-key"
SCHEMA = "/schema/openapi.json"
# 5xx statuses the API documents: the upstream refused (502), overloaded (503) or slow (504),
# or not Ollama (501). A 500 is always a bug.
EXPECTED = ["2XX", "3XX", "4XX", "501", "502", "503", "504"]

BAD_BODIES = [
    ("/v1/chat/completions", {"messages": [{"role": {}, "content": "hi"}]}),
    ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi", "images": 5}]}),
    ("/api/chat", {"model": "m", "messages": [{"role": ["user"], "content": "hi"}]}),
    ("/api/generate", {"model": "m", "prompt": "hi", "images": [1]}),
    ("/api/generate", {"model": "m", "prompt": "hi", "system": 3.0e16, "stream": None}),
]


def test_the_schema_lists_every_route_with_its_methods(tmp_path: Path) -> None:
    app = create_app(Settings(db=str(tmp_path / "none.db")))
    paths = app.openapi_schema.to_schema()["paths"]
    for route in app.routes:
        # MCP lists its own tools; the status page is HTML for a person, not an API
        if route.path.startswith("/schema") or route.path in ("/mcp", "/ui"):
            continue
        path = route.path.replace("{model:path}", "{model}").replace("{rest:path}", "{rest}")
        methods = {m.lower() for m in getattr(route, "methods", ())} - {"options"}
        assert methods <= set(paths[path]), (route.path, methods)
    assert "/" in paths and "/schema/openapi.json" not in paths


def test_no_server_errors_under_schemathesis(tmp_path: Path) -> None:
    docs = tmp_path / "notes"
    docs.mkdir()
    (docs / "kayaks.md").write_text("# Kayaks\n\nA kayak is a small boat moved with a double paddle.\n")
    refused = f"http://127.0.0.1:{free_port()}"
    with ragproxy(
        upstream=refused, docs=(f"notes={docs}",), db=str(tmp_path / "index.db"), api_keys=(KEY,)
    ) as url:
        key = {"Authorization": f"Bearer {KEY}"}
        assert httpx.get(url + "/", headers=key).text == "Ollama is running"
        assert httpx.get(url + SCHEMA).status_code == 401  # keys apply to the schema too
        # a path forwarded to Ollama as the client encoded it: the refused upstream's 502, not a 500
        assert httpx.get(url + "/api/%09%F2%A2%AC%AB1", headers=key).status_code == 502
        # embeddings for the refused upstream: its 502, not a 500 (the fuzzer found it)
        for path in ("/v1/embeddings", "/api/embed", "/api/embeddings"):
            body = {"model": "other", "input": "hi", "prompt": "hi"}
            assert httpx.post(url + path, json=body, headers=key).status_code == 502, path
        for path, body in BAD_BODIES:  # what the fuzzer found: each once a 500
            reply = httpx.post(url + path, json=body, headers=key)
            assert reply.status_code == 400 and "error" in reply.json(), (path, reply.text)
        schema = httpx.get(url + SCHEMA, headers=key)
        assert schema.status_code == 200
        (tmp_path / "openapi.json").write_bytes(schema.content)
        (tmp_path / "schemathesis.toml").write_bytes(
            b"[checks.not_a_server_error]\nexpected-statuses = " + orjson.dumps(EXPECTED) + b"\n"
        )
        command = [
            *(sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()"),
            *("--config-file", str(tmp_path / "schemathesis.toml"), "run", str(tmp_path / "openapi.json")),
            *("--url", url, "--header", f"Authorization: Bearer {KEY}"),
            *("--checks", "not_a_server_error", "--max-examples", "15", "--workers", "1"),
            *("--phases", "coverage,fuzzing", "--request-timeout", "20", "--no-color"),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and "ST101" not in result.stdout, result.stdout[-6000:] + result.stderr
