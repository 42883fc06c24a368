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
from proxy.errors import ConfigError
from proxy.types import Document, Embedder, Reranker

DEFAULT_PLUGINS = (
    "plugins.loaders.text",
    "plugins.loaders.markdown",
    "plugins.loaders.html",
    "plugins.loaders.pdf",
    "plugins.loaders.docx",
    "plugins.loaders.mail",
    "plugins.loaders.pptx",
    "plugins.loaders.opendocument",
    "plugins.loaders.rtf",
    "plugins.loaders.epub",
    "plugins.loaders.sheets",
    "plugins.loaders.image",
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
def _loader_table() -> tuple[dict[str, Loader], frozenset[Loader], frozenset[Loader]]:
    found: dict[str, Loader] = {}
    in_process: set[Loader] = set()
    large_files: set[Loader] = set()

    def register(
        suffixes: str | tuple[str, ...], load: Loader, *, isolated: bool = True, large: bool = False
    ) -> None:
        for suffix in (suffixes,) if isinstance(suffixes, str) else suffixes:
            found[suffix.lower()] = load
        if not isolated:
            in_process.add(load)
        if large:
            large_files.add(load)

    for impl in plugin_manager().hook.register_loaders.get_hookimpls():  # registration order
        impl.function(register=register)
    return found, frozenset(in_process), frozenset(large_files)


def loaders() -> dict[str, Loader]:
    """Loader per lower-case file suffix (``".md"``); a later plugin overrides an earlier one."""
    return _loader_table()[0]


def isolated(loader: Loader) -> bool:
    """Whether the loader runs in the reader process, with its memory and time limits: every
    loader but those registered with ``isolated=False`` (plain text and Markdown, which only
    decode and split what the file size cap already bounds)."""
    return loader not in _loader_table()[1]


def large(loader: Loader) -> bool:
    """Whether the loader reads a file of any size a part at a time (a mailbox, registered with
    ``large=True``): the file-size cap does not apply to its files, and what it extracts past the
    text or chunk limits is cut at a section, the rest of the file left unread and logged, instead
    of the whole file skipped."""
    return loader in _loader_table()[2]


def _named(hook: str) -> dict[str, Any]:
    """``name -> factory`` from every plugin's ``hook``; a later plugin overrides an earlier one."""
    found: dict[str, Any] = {}

    def register(name: str, factory: Any) -> None:
        found[name] = factory

    for impl in getattr(plugin_manager().hook, hook).get_hookimpls():
        impl.function(register=register)
    return found


@cache
def embedders() -> dict[str, EmbedderFactory]:
    return _named("register_embedders")


@cache
def rerankers() -> dict[str, RerankerFactory]:
    return _named("register_rerankers")


def factory(kind: str, name: str, factories: dict[str, Any]) -> Any:
    """The factory registered as ``name``, or a clear error naming what is installed."""
    if name not in factories:
        raise ConfigError(f"unknown {kind} {name!r}; installed: {', '.join(sorted(factories))}")
    return factories[name]


def loader_for(path: Path) -> Loader | None:
    return loaders().get(path.suffix.lower()) or (loaders().get("") if not path.suffix else None)


def describe() -> dict[str, Any]:
    return {"loaders": sorted(loaders()), "embedders": sorted(embedders()), "rerankers": sorted(rerankers())}
