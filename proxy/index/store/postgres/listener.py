"""How a replica hears of the other replicas' changes to the vectors: a thread that holds a
connection listening on the vector log's channel (``LISTEN``), and calls back at each
``NOTIFY``. When the server goes away it connects again, and calls back once it listens, for
what changed meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

from proxy.index.store.postgres.schema import CHANNEL
from proxy.logging import get_logger

log = get_logger("ragproxy.index")


class ChangeListener:
    """Calls ``on_change`` once it listens and at each notification, from its own thread (started
    once, by ``start``, and ended by ``stop``)."""

    def __init__(
        self, connect: Callable[[], psycopg.Connection[Any]], on_change: Callable[[], object]
    ) -> None:
        self._connect = connect
        self._on_change = on_change
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._listen, name="ragproxy-vector-log", daemon=True)
            self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._connect()
                try:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._on_change()  # what changed before LISTEN took effect
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._on_change()
                finally:
                    conn.close()
            except Exception as exc:  # the server restarted, or the store closed: try again
                if self._stop.is_set():
                    return
                log.warning("index.vector_log_failed", error=str(exc)[:200])
                self._stop.wait(2)
