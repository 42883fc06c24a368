"""A real ragproxy under mixed load for ``RAGPROXY_SOAK_SECONDS`` (8 in the normal suite; tests/soak.sh
runs it for a minute): streaming chats whose clients leave mid-stream, searches and previews in
loops, and a writer changing the watched folder every 50 ms. No server error, no locked database,
no descriptors left behind by threads that ended, and the folder settles: once the writer stops,
the index holds exactly the folder's files and finds each one's last text."""

from __future__ import annotations

import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import structlog
import structlog.testing

from tests.conftest import CHAT_MODEL, sdk
from tests.servers import Server, ragproxy

SECONDS = float(os.environ.get("RAGPROXY_SOAK_SECONDS", "8"))
CHATTERS, SEARCHERS, WRITE_EVERY = 8, 4, 0.05
SETTLE_LIMIT = 120  # seconds: only a folder that never settles fails it
WORDS = (
    "lighthouse keeper storm harbour lantern ship rope anchor tide gull fog bell 灯塔 风暴 港口 船".split()
)
QUESTIONS = [
    "When does the keeper light the lantern?",
    "What is kept in the harbour during a storm?",
    "灯塔的守护者做什么？",
    "How is the anchor rope stored?",
]


def note_text(rng: random.Random, mark: str) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
    return f"# Soak note {mark}\n\nThe marker {mark} is here. {words}.\n"


class Tally:
    """What the load saw, from every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.search_seconds: list[float] = []

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what[:300])


class Records(logging.Handler):
    """Standard-library log records (uvicorn's, the watchdog's), warnings and up."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def every_log() -> Iterator[tuple[list[MutableMapping[str, Any]], Records]]:
    """Every structlog event at any level, and the standard library's warnings and errors."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with structlog.testing.capture_logs() as events:
            yield events, records
    finally:
        logging.getLogger().removeHandler(records)
        structlog.configure(**saved)


def index_fds(db: Path) -> int:
    """This process's descriptors on the index (the database, its WAL and shared memory)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(db))
        except OSError:
            continue
    return count


def indexed_paths(db: Path) -> set[str]:
    """The documents the index holds, read in another process: a connection opened and closed
    here would leave descriptors that the count must not see."""
    script = (
        "import sys\nfrom proxy.index.store.sqlite import connect\n"
        "db = connect(sys.argv[1], readonly=True)\n"
        "print('\\n'.join(r[0] for r in db.execute('SELECT path FROM documents')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(db)], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


def keyword_hits(client: httpx.Client, query: str) -> list[str]:
    reply = client.post("/v1/rag/search", json={"query": query, "k": 5, "mode": "keyword"})
    assert reply.status_code == 200, reply.text
    return [hit["file"] for hit in reply.json()["data"]]


def chat_loop(base: str, stop: threading.Event, tally: Tally, seed: int, ends: float) -> None:
    """Streaming chats through the official SDK; most are left after a few chunks. Once the load
    ends, a chat still waiting for its first byte gives up two seconds later (the model server
    works through a queue on one core): a client leaving before the first byte."""
    rng = random.Random(seed)
    client = sdk(base, max_retries=0)
    while not stop.is_set():
        leave_after = rng.choice([0, 1, 2, 3, 5, None])  # None: read to the end
        try:
            stream = client.chat.completions.create(
                timeout=max(ends - time.monotonic(), 0) + 2,
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": rng.choice(QUESTIONS)}],
                stream=True,
                max_tokens=rng.randint(4, 16),
                extra_body={"rag": {"top_k": 1}},  # a short prompt: llama.cpp reads it on one core
            )
            read = "chats read whole"
            for seen, _ in enumerate(stream):
                if (leave_after is not None and seen >= leave_after) or stop.is_set():
                    read = "chats left mid-stream"
                    break
            stream.close()  # early: the deliberate disconnect
            tally.count("chats")
            tally.count(read)
        except openai.APITimeoutError:
            if time.monotonic() < ends:
                tally.error("chat: timed out during the load")
            tally.count("chats left before the first byte")
        except openai.APIStatusError as exc:
            tally.error(f"chat: {exc.status_code} {exc.message}")
        except Exception as exc:
            tally.error(f"chat: {type(exc).__name__}: {exc}")


def search_loop(base: str, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=120) as client:
        while not stop.is_set():
            question = rng.choice(QUESTIONS)
            try:
                if rng.random() < 0.7:
                    started = time.perf_counter()
                    reply = client.post("/v1/rag/search", json={"query": question, "k": 5})
                    elapsed = time.perf_counter() - started
                    with tally.lock:
                        tally.search_seconds.append(elapsed)
                    kind = "searches"
                else:
                    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": question}]}
                    reply = client.post("/v1/rag/preview", json=body)
                    kind = "previews"
                if reply.status_code != 200:
                    tally.error(f"{kind}: {reply.status_code} {reply.text}")
                tally.count(kind)
            except Exception as exc:
                tally.error(f"search: {type(exc).__name__}: {exc}")


def write_loop(folder: Path, stop: threading.Event, tally: Tally, latest: dict[str, str]) -> None:
    """Every 50 ms a note is created, rewritten or deleted; ``latest`` holds each file's marker."""
    rng = random.Random(3)
    made = len(latest)
    while not stop.is_set():
        names = sorted(latest)
        choice = rng.random()
        try:
            if choice < 0.25 or len(names) < 10:
                name, kind = f"new{made:05d}.md", "created"
            elif choice < 0.45:
                name, kind = rng.choice(names), "deleted"
            else:
                name, kind = rng.choice(names), "rewritten"
            if kind == "deleted":
                (folder / name).unlink()
                del latest[name]
            else:
                made += 1
                latest[name] = f"mark{made:06d}"
                (folder / name).write_text(note_text(rng, latest[name]), encoding="utf-8")
            tally.count(f"files {kind}")
        except Exception as exc:
            tally.error(f"writer: {type(exc).__name__}: {exc}")
        stop.wait(WRITE_EVERY)


def settled(client: httpx.Client, db: Path, latest: dict[str, str]) -> Callable[[], bool]:
    def check() -> bool:
        if indexed_paths(db) != set(latest):
            return False
        return all(keyword_hits(client, mark) == [name] for name, mark in latest.items())

    return check


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_mixed_load_leaves_no_error_no_lock_no_leak_and_the_folder_settles(
    ollama: Server, tmp_path: Path
) -> None:
    folder, db = tmp_path / "notes", tmp_path / "index.db"
    folder.mkdir()
    rng = random.Random(1)
    latest = {f"note{i:02d}.md": f"mark{i:06d}" for i in range(36)}
    for name, mark in latest.items():
        (folder / name).write_text(note_text(rng, mark), encoding="utf-8")
    tally = Tally()
    with (
        every_log() as (events, records),
        ragproxy(
            upstream=ollama.url,
            upstream_api="ollama",
            model=CHAT_MODEL,
            docs=(f"notes={folder}",),
            db=str(db),
            num_ctx_max=2048,
            embed_threads=1,  # a core left for the model server, on a small machine
        ) as base,
        httpx.Client(base_url=base, timeout=120) as client,
    ):
        deadline = time.monotonic() + SETTLE_LIMIT
        while not settled(client, db, latest)():
            assert time.monotonic() < deadline, "the first scan never finished"
            time.sleep(0.2)
        fds_before = index_fds(db)
        stop = threading.Event()
        ends = time.monotonic() + SECONDS
        threads = [
            *(threading.Thread(target=chat_loop, args=(base, stop, tally, i, ends)) for i in range(CHATTERS)),
            *(threading.Thread(target=search_loop, args=(base, stop, tally, i)) for i in range(SEARCHERS)),
            threading.Thread(target=write_loop, args=(folder, stop, tally, latest)),
        ]
        seen_threads: set[int] = set()
        for thread in threads:
            thread.start()
        while time.monotonic() < ends:
            seen_threads.update(t.ident or 0 for t in threading.enumerate())
            time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join(180)
            assert not thread.is_alive(), "a client hung"
        writer_stopped = time.monotonic()
        while not settled(client, db, latest)():
            assert time.monotonic() - writer_stopped < SETTLE_LIMIT, "the folder never settled"
            time.sleep(0.2)
        settle_seconds = time.monotonic() - writer_stopped
        time.sleep(1)
        fds_after = index_fds(db)
        live_threads = threading.active_count()

    statuses = Counter(e.get("status") for e in events if e["event"] == "request")
    problems = [e for e in events if e.get("log_level") in ("error", "critical", "exception")]
    problems += [
        {"event": r.getMessage(), "logger": r.name} for r in records.records if r.levelno >= logging.ERROR
    ]
    locked = [e for e in events if "locked" in str(e)] + [
        r for r in records.records if "locked" in r.getMessage()
    ]
    searches = sorted(tally.search_seconds)
    print(
        f"\nsoak {SECONDS:g} s: {dict(sorted(tally.counts.items()))}\n"
        f"  requests logged by the server: {sum(statuses.values())}, by status {dict(statuses)}\n"
        f"  client errors: {len(tally.errors)}, server errors logged: {len(problems)}, "
        f"'database is locked': {len(locked)}\n"
        f"  index descriptors: {fds_before} before, {fds_after} after "
        f"({live_threads} threads alive, {len(seen_threads)} seen during the load)\n"
        f"  search latency: p50 {statistics.median(searches) * 1000:.0f} ms, "
        f"p99 {searches[min(len(searches) - 1, round(0.99 * (len(searches) - 1)))] * 1000:.0f} ms "
        f"over {len(searches)}\n"
        f"  settled {settle_seconds:.1f} s after the writer stopped ({len(latest)} files)"
    )
    assert tally.errors == [], tally.errors[:10]
    assert not any(status >= 500 for status in statuses), statuses
    assert problems == [], problems[:5]
    assert locked == [], locked[:5]
    assert tally.counts["chats left mid-stream"] > 0 and tally.counts["searches"] > 0
    # A live thread may hold one read connection (the database and its WAL); SQLite keeps a few
    # closed descriptors while other connections hold locks. Connections kept by threads that
    # ended would add two descriptors for each of them.
    assert fds_after <= fds_before + 2 * live_threads + 6, (fds_before, fds_after, live_threads)
