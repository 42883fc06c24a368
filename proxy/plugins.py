"""The plugin manager: built-in plugins load exactly like third-party ones, which register under
the ``ragproxy`` entry-point group."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pluggy

from proxy import hookspecs
from proxy.types import Document, Embedder, Reranker

DEFAULT_PLUGINS = (
    "plugins.loaders.text",
    "plugins.loaders.markdown",
    "plugins.loaders.html",
    "plugins.loaders.pdf",
    "plugins.loaders.docx",
    "plugins.embedders.e5",
    "plugins.embedders.ollama",
    "plugins.rerankers.http",
)

Loader = Callable[[Path], Document]
EmbedderFactory = Callable[..., Embedder]
RerankerFactory = Callable[..., Reranker]


@cache
def plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("ragproxy")
    manager.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        manager.register(importlib.import_module(name), name)
    manager.load_setuptools_entrypoints("ragproxy")
    return manager


@cache
def loaders() -> dict[str, Loader]:
    """Loader per lower-case file suffix (``".md"``); a later plugin overrides an earlier one."""
    found: dict[str, Loader] = {}

    def register(suffixes: str | tuple[str, ...], load: Loader) -> None:
        for suffix in (suffixes,) if isinstance(suffixes, str) else suffixes:
            found[suffix.lower()] = load

    for impl in plugin_manager().hook.register_loaders.get_hookimpls():  # registration order
        impl.function(register=register)
    return found


@cache
def embedders() -> dict[str, EmbedderFactory]:
    found: dict[str, EmbedderFactory] = {}

    def register(name: str, factory: EmbedderFactory) -> None:
        found[name] = factory

    for impl in plugin_manager().hook.register_embedders.get_hookimpls():
        impl.function(register=register)
    return found


@cache
def rerankers() -> dict[str, RerankerFactory]:
    found: dict[str, RerankerFactory] = {}

    def register(name: str, factory: RerankerFactory) -> None:
        found[name] = factory

    for impl in plugin_manager().hook.register_rerankers.get_hookimpls():
        impl.function(register=register)
    return found


def loader_for(path: Path) -> Loader | None:
    return loaders().get(path.suffix.lower()) or (loaders().get("") if not path.suffix else None)


def describe() -> dict[str, Any]:
    return {"loaders": sorted(loaders()), "embedders": sorted(embedders()), "rerankers": sorted(rerankers())}
