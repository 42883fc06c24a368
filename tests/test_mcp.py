"""MCP over the index, through the official ``mcp`` SDK's own client: ``ragproxy mcp`` over
stdio, and the streamable HTTP endpoint ``/mcp`` of a running ragproxy, where API keys and their
collections apply as on the HTTP APIs."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import orjson
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from proxy import version
from tests.ragdocs import CANARY, DOCS, QUESTION
from tests.servers import ragproxy
from tests.test_security import CANARY_A, CANARY_B, KEY_A, KEY_ALL, two_collections

__all__ = ["two_collections"]  # the fixture, shared with the security tests

ROOT = Path(__file__).parent.parent
TOOLS = {"search", "fetch", "list_collections"}
Session = Callable[[Client], Awaitable[None]]


def run_stdio(db: Path, session: Session) -> None:
    """``ragproxy mcp --db DB`` started as an editor starts it, and ``session`` run against it."""
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "proxy", "mcp", "--db", str(db)], env=dict(os.environ), cwd=ROOT
    )

    async def main() -> None:
        async with Client(server, read_timeout_seconds=60) as client:
            await session(client)

    anyio.run(main)


def run_http(base: str, session: Session, key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def main() -> None:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(base + "/mcp", http_client=http)) as client,
        ):
            await session(client)

    anyio.run(main)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    """The error text of a call that must fail."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return " ".join(getattr(block, "text", "") for block in result.content)


async def check_the_manuals(client: Client) -> None:
    """Tools listed with their schemas; the Zephyr-9 passage found, fetched by chunk id and as
    its whole document; the collection listed."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    search_schema = tools["search"].input_schema
    assert set(search_schema["properties"]) == {"query", "collections", "k", "mode"}  # no context
    assert search_schema["required"] == ["query"]
    assert search_schema["properties"]["k"]["maximum"] == 50
    assert all(tools[name].description for name in TOOLS)

    found = await call(client, "search", query=QUESTION, k=3)
    best = found["passages"][0]
    assert CANARY in best["text"]
    assert best["ref"] == "manuals:valves/zephyr.md" and best["heading"] == "Zephyr valve > Maintenance"
    assert best["page"] is None and 0 < best["score"] <= 1 and isinstance(best["chunk_id"], int)
    keyword = await call(client, "search", query=CANARY, mode="keyword", k=1)
    assert CANARY in keyword["passages"][0]["text"]

    chunk = await call(client, "fetch", id_or_path=best["chunk_id"])
    assert chunk["text"] == best["text"] and chunk["chunk_id"] == best["chunk_id"]
    assert chunk["ref"] == best["ref"] and chunk["next_offset"] is None
    as_text = await call(client, "fetch", id_or_path=str(best["chunk_id"]))
    assert as_text["text"] == best["text"]
    document = await call(client, "fetch", id_or_path="manuals:valves/zephyr.md")
    # the text as indexed: a heading with no text under it makes no chunk
    assert document["text"] == DOCS["valves/zephyr.md"].removeprefix("# Zephyr valve\n\n").strip()
    assert document["chunk_id"] is None
    assert document["total_chars"] == len(document["text"])
    later = await call(client, "fetch", id_or_path="manuals:valves/zephyr.md", offset=20)
    assert later["text"] == document["text"][20:] and later["offset"] == 20

    assert "no document" in await refused(client, "fetch", id_or_path="manuals:valves/missing.md")
    assert "no chunk" in await refused(client, "fetch", id_or_path=10**9)
    assert "unknown collection" in await refused(client, "fetch", id_or_path="nope:valves/zephyr.md")
    assert "unknown collection" in await refused(client, "search", query="valve", collections=["nope"])
    await refused(client, "search", query="valve", k=0)  # the schema's bounds are enforced

    (collection,) = (await call(client, "list_collections"))["collections"]
    assert collection["name"] == "manuals" and collection["documents"] == len(DOCS)
    assert collection["chunks"] >= len(DOCS) and collection["pending_vectors"] == 0
    assert collection["skipped_files"] == 0 and collection["folder"].endswith("manuals")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", collection["last_update"])


def test_stdio_serves_the_index(docs_index: tuple[Path, Path]) -> None:
    _, db = docs_index
    run_stdio(db, check_the_manuals)


def test_stdio_without_an_index_says_how_to_build_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "mcp", "--db", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "ragproxy index" in result.stderr and result.stdout == ""
    assert not (tmp_path / "none.db").exists()


def test_http_serves_the_index_beside_the_other_routes(docs_index: tuple[Path, Path]) -> None:
    _, db = docs_index
    with ragproxy(db=str(db)) as base:
        run_http(base, check_the_manuals)
        assert httpx.get(base + "/").text == "Ollama is running"
        reply = httpx.post(base + "/v1/rag/search", json={"query": QUESTION, "k": 1})
        assert CANARY in reply.json()["data"][0]["text"]
        stream = httpx.get(base + "/mcp", headers={"Accept": "text/event-stream"})
        assert stream.status_code == 405 and stream.headers["allow"] == "POST"
        for path in ("/mcpx", "/mcp/x", "/mcp%2Fx"):  # the mount sees these too: not MCP
            assert httpx.post(base + path, json={}).status_code == 404, path


def test_http_without_an_index_answers_with_a_tool_error(tmp_path: Path) -> None:
    async def session(client: Client) -> None:
        assert "no index" in await refused(client, "search", query="anything")
        assert "no index" in await refused(client, "list_collections")

    with ragproxy(db=str(tmp_path / "none.db")) as base:
        run_http(base, session)


@pytest.fixture(scope="module")
def guarded_index(two_collections: tuple[Path, Path, Path]) -> Any:
    _, _, db = two_collections
    with ragproxy(db=str(db), api_keys=(f"{KEY_A}@alpha", KEY_ALL)) as base:
        yield base


LAUNCH = "What is the launch code of the Orion project?"


def test_a_key_scoped_to_alpha_reads_nothing_of_bravo(guarded_index: str) -> None:
    base = guarded_index
    seen: dict[str, Any] = {}

    async def everything(client: Client) -> None:
        found = await call(client, "search", query=LAUNCH, k=5)
        seen["bravo"] = next(p for p in found["passages"] if CANARY_B in p["text"])
        assert any(CANARY_A in p["text"] for p in found["passages"])
        names = [c["name"] for c in (await call(client, "list_collections"))["collections"]]
        assert names == ["alpha", "bravo"]

    async def alpha_only(client: Client) -> None:
        for mode in ("hybrid", "keyword", "vector"):
            found = await call(client, "search", query=f"{LAUNCH} {CANARY_B}", k=10, mode=mode)
            assert found["passages"] and all(p["collection"] == "alpha" for p in found["passages"])
            assert not any(CANARY_B in p["text"] for p in found["passages"])
        assert "may not read" in await refused(client, "search", query=LAUNCH, collections=["bravo"])
        assert "may not read" in await refused(client, "fetch", id_or_path="bravo:orion.md")
        assert "no chunk" in await refused(client, "fetch", id_or_path=seen["bravo"]["chunk_id"])
        assert CANARY_A in (await call(client, "fetch", id_or_path="alpha:orion.md"))["text"]
        names = [c["name"] for c in (await call(client, "list_collections"))["collections"]]
        assert names == ["alpha"]

    run_http(base, everything, KEY_ALL)
    run_http(base, alpha_only, KEY_A)


def test_mcp_needs_a_valid_key(guarded_index: str) -> None:
    base = guarded_index
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        reply = httpx.post(base + "/mcp", json=body, headers=headers)
        assert reply.status_code == 401 and reply.headers["www-authenticate"].startswith("Bearer")
        assert CANARY_A not in reply.text and CANARY_B not in reply.text
    with pytest.raises(Exception):  # the SDK's client gets the 401 too  # noqa: B017
        run_http(base, check_the_manuals)


def test_mcp_requests_are_logged_with_their_own_path_and_the_server_names_its_version(
    tmp_path: Path, captured: io.StringIO
) -> None:
    with ragproxy(db=str(tmp_path / "none.db")) as base:

        async def session(client: Client) -> None:
            await client.list_tools()
            info = client.server_info
            assert info is not None and (info.name, info.version) == ("ragproxy", version())

        run_http(base, session)
        httpx.get(base + "/mcp")
        httpx.post(base + "/mcp/x", json={})
    requests = [orjson.loads(line) for line in captured.getvalue().splitlines()]
    paths = {(r["method"], r["path"], r["status"]) for r in requests if r.get("event") == "request"}
    assert {("POST", "/mcp", 200), ("GET", "/mcp", 405), ("POST", "/mcp/x", 404)} <= paths, paths
    assert not [p for p in paths if p[1] == "/"], paths
