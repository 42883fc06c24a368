"""The plugin hooks. A plugin module implements any of them with ``@hookimpl`` and calls
``register`` for each thing it provides; built-in plugins use the same hooks."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("ragproxy")
hookimpl = pluggy.HookimplMarker("ragproxy")


@hookspec
def register_loaders(register: Callable[..., None]) -> None:
    """``register(suffixes, load)``: ``load(path) -> Document`` for files with those suffixes.
    ``load`` runs in a separate reader process with memory and time limits (it must be a
    module-level function); ``register(..., isolated=False)`` runs it in the server's process,
    for formats that cannot expand beyond the file size. ``register(..., large=True)`` says ``load``
    reads a file of any size a part at a time (a mailbox): the file-size cap does not apply, and
    text past the limits is cut at a section (``Document.cut``) rather than the file skipped."""


@hookspec
def register_embedders(register: Callable[..., None]) -> None:
    """``register(name, factory)``: ``factory(upstream=..., model=..., threads=..., engine=..., **more)
    -> Embedder``; a factory takes what it needs and ignores the rest."""


@hookspec
def register_rerankers(register: Callable[..., None]) -> None:
    """``register(name, factory)``: ``factory(url=..., model=...) -> Reranker``."""
