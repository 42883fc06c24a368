"""What a request is served with (``Services``: built once when the app starts, the same for
every request) and who asks (``Caller``: one per request)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.index.service import IndexService
from proxy.index.watcher import FolderWatcher
from proxy.pipeline.context import WindowCache
from proxy.settings import Settings
from proxy.types import Reranker
from proxy.upstream.pool import UpstreamPool


@dataclass(frozen=True, slots=True)
class Services:
    """The app's parts, built in its lifespan: the settings, the upstream pool, each model's
    window, the reranker, and the index with its folder watcher (None without an index)."""

    settings: Settings
    pool: UpstreamPool
    windows: WindowCache
    reranker: Reranker | None = None
    index: IndexService | None = None
    watcher: FolderWatcher | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a chat, as far as retrieval and fitting need to know: the API it came in on
    (``openai``, ``ollama``, ``responses``, ``anthropic``), the client (``open-webui`` or
    ``other``), its ``X-RAG-*`` headers, and the collections its key may read (None: all)."""

    api: str
    client: str = "other"
    headers: Mapping[str, str] | None = None
    allowed: tuple[str, ...] | None = None

    @property
    def chat_ui(self) -> bool:
        """Open WebUI's OpenAI connection: it shows sources as its own chips (source events)."""
        return self.api == "openai" and self.client == "open-webui"

    def footnote_default(self, settings: Settings) -> bool:
        """``auto``: the answer text gets the footnote wherever nothing else shows the sources to
        a person: everywhere but Open WebUI's OpenAI connection, which gets them as source events
        (its chips). Agents and CLIs built on the official SDKs (aider, Copilot CLI, llm) show
        nothing but the text; a script that reads the ``sources`` field can turn the footnote off
        (``X-RAG-Footnote: off``, ``"rag": {"footnote": false}``)."""
        if settings.sources_footnote != "auto":
            return settings.sources_footnote == "on"
        return not self.chat_ui
