from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama as ollama_sdk
import openai
import pytest
import structlog

from proxy.logging import configure_logging
from tests.postgres import fresh_database, postgres_server
from tests.ragdocs import build_docs_index
from tests.servers import HERE, Server, fake_ollama, llama_server, ragproxy

CHAT_MODEL = "smollm2:135m"

# The default index file lives in a temporary data directory, never the user's.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="ragproxy-test-data-")
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ragproxy-test-cache-")

# In-process servers log as the real one does (JSON), to stderr, warnings and up: quiet test output.
configure_logging("warning", sys.stderr)


_clients: list[openai.OpenAI | ollama_sdk.Client | anthropic.Anthropic] = []


def sdk(base: str, **options: Any) -> openai.OpenAI:
    """The official client pointed at ``base``/v1, closed when the test ends."""
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", **options)
    _clients.append(client)
    return client


def claude_client(base: str, api_key: str = "unused", **options: Any) -> anthropic.Anthropic:
    """The official ``anthropic`` client pointed at ``base``, closed when the test ends."""
    client = anthropic.Anthropic(base_url=base, api_key=api_key, max_retries=0, **options)
    _clients.append(client)
    return client


def ollama_client(base: str, **options: Any) -> ollama_sdk.Client:
    """The official ``ollama`` client pointed at ``base``, closed when the test ends."""
    client = ollama_sdk.Client(host=base, **options)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


@pytest.fixture(scope="session")
def llama() -> Iterator[Server]:
    """Real llama.cpp server, embeddings on, with a ChatML template that declares tools
    (Qwen2.5's form), so llama.cpp parses ``<tool_call>`` output into real tool calls."""
    template = HERE / "upstream" / "chatml-tools.jinja"
    with llama_server(
        "--embedding", "--pooling", "mean", "--jinja", "--chat-template-file", str(template)
    ) as server:
        yield server


@pytest.fixture(scope="session")
def ollama(llama: Server) -> Iterator[Server]:
    """The Ollama-behaving server, generating with the real llama.cpp server."""
    with fake_ollama(llama.url) as server:
        yield server


@pytest.fixture(scope="session")
def docs_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, index file) of tests/ragdocs.py's documents, embedded with e5."""
    return build_docs_index(tmp_path_factory.mktemp("ragdocs"))


@pytest.fixture(scope="session")
def rag_proxy(ollama: Server, docs_index: tuple[Path, Path]) -> Iterator[str]:
    """ragproxy over the documents' index, in front of the Ollama-behaving server, its window
    that of one llama.cpp slot in the tests."""
    folder, db = docs_index
    with ragproxy(
        upstream=ollama.url,
        upstream_api="ollama",
        model=CHAT_MODEL,
        docs=(f"manuals={folder}",),
        db=str(db),
        num_ctx_max=2048,
    ) as url:
        yield url


@pytest.fixture(scope="session")
def proxy_ollama(ollama: Server) -> Iterator[str]:
    with ragproxy(upstream=ollama.url, upstream_api="ollama", model=CHAT_MODEL) as url:
        yield url


@pytest.fixture(scope="session")
def proxy_openai(llama: Server) -> Iterator[str]:
    with ragproxy(upstream=llama.url, upstream_api="openai", model="smollm2") as url:
        yield url


@pytest.fixture(params=["ollama", "openai"])
def proxy_any(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per upstream mode."""
    return str(request.getfixturevalue(f"proxy_{request.param}"))


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """ragproxy's log lines (JSON, from info up) while the test runs."""
    root = logging.getLogger()
    handlers, level, config = list(root.handlers), root.level, structlog.get_config()
    out = io.StringIO()
    configure_logging("info", out)
    try:
        yield out
    finally:  # the configuration of the other tests, as it was
        root.handlers[:], root.level = handlers, level
        structlog.configure(**config)


@pytest.fixture
def make_proxy() -> Callable[..., AbstractContextManager[str]]:
    return ragproxy


class UpstreamLog:
    """What the Ollama-behaving server received."""

    def __init__(self, url: str) -> None:
        self.url = url

    def clear(self) -> None:
        httpx.delete(self.url + "/_test/requests")

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(self.url + "/_test/requests").json()
        return [r for r in records if path is None or r["path"] == path]


@pytest.fixture
def upstream_log(ollama: Server) -> UpstreamLog:
    log = UpstreamLog(ollama.url)
    log.clear()
    return log


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server with pgvector, for the session: its URL."""
    with postgres_server(tmp_path_factory.mktemp("postgres") / "data") as url:
        yield url


@pytest.fixture
def pg_url(postgres: str) -> str:
    """A fresh database on the test server."""
    return fresh_database(postgres)
