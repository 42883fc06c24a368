"""A real ragproxy, in its own process, under a hostile mixed load for ``RAGPROXY_SOAK_SECONDS``
(8 in the normal suite; tests/soak.sh runs it for a minute), while ordinary chats go on: histories
of the most messages, huge embeddings requests abandoned mid-way, headers dribbled or oversized,
malformed tools, files with names that are not UTF-8 created, rewritten and deleted in the
watched folder, and the model server restarted twice.

Nothing is lost: every ordinary chat is answered, but those that overlapped the model server's
own downtime, and those fail with the upstream's error only; /healthz answers within 100 ms at the
99th percentile throughout; no 5xx but the upstream's own; and once the writer stops, the index
holds exactly the folder's files."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from proxy.api.schemas import MAX_MESSAGES
from tests.servers import HealthProbe, Server, free_port, llama_server, ragproxy_process
from tests.test_soak import Tally

SECONDS = float(os.environ.get("RAGPROXY_SOAK_SECONDS", "8"))
SETTLE_LIMIT = 120  # seconds
MODEL = "smollm2"
# Names as Windows zips unpack them on Linux: GBK (测试, 笔记) and cp1252 (café, résumé) bytes.
ODD_STEMS = (b"\xb2\xe2\xca\xd4", b"\xb1\xca\xbc\xc7", b"caf\xe9", b"r\xe9sum\xe9")
WORDS = "lighthouse keeper storm harbour lantern ship rope anchor tide gull fog bell".split()


@dataclass
class Outcome:
    started: float
    ended: float
    ok: bool
    what: str


class Load(Tally):
    """What every thread saw, and when the model server was away."""

    def __init__(self) -> None:
        super().__init__()
        self.ordinary: list[Outcome] = []  # chats that must not be lost
        self.downtime: list[tuple[float, float]] = []  # (stopped, ready again)

    def lost(self) -> list[Outcome]:
        """Failed ordinary chats that did not overlap a downtime of the model server."""
        return [
            o
            for o in self.ordinary
            if not o.ok and not any(o.started < ready and o.ended > down for down, ready in self.downtime)
        ]


def upstream_failure(status: int) -> bool:
    """ragproxy's answers when its model server is away or answered an error itself."""
    return status in (502, 503, 504)


def chat_loop(base: str, halt: threading.Event, load: Load, seed: int) -> None:
    """Ordinary streamed chats, read to the end: each must be answered."""
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=120) as client:
        while not halt.is_set():
            body = {
                "model": MODEL,
                "stream": True,
                "max_tokens": rng.randint(4, 12),
                "messages": [
                    {"role": "user", "content": f"When does the keeper light the {rng.choice(WORDS)}?"}
                ],
                "rag": {"top_k": 1},
            }
            started, ok, what = time.monotonic(), False, ""
            try:
                with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                    text = b"".join(reply.iter_bytes())
                ok = reply.status_code == 200 and b'"error"' not in text and b"[DONE]" in text
                what = f"{reply.status_code} {text[-200:]!r}"
                if not ok and not upstream_failure(reply.status_code) and reply.status_code != 200:
                    load.error(f"chat: {what}")
            except httpx.HTTPError as exc:
                what = f"{type(exc).__name__}: {exc}"
            with load.lock:
                load.ordinary.append(Outcome(started, time.monotonic(), ok, what))
            load.count("ordinary chats")
            if not ok:
                halt.wait(0.2)  # as a person would before asking again


def long_history_loop(base: str, halt: threading.Event, load: Load) -> None:
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: nothing much"}
        for i in range(MAX_MESSAGES - 1)
    ]
    body = orjson.dumps(
        {"model": MODEL, "max_tokens": 4, "messages": [*history, {"role": "user", "content": "ok?"}]}
    )
    with httpx.Client(base_url=base, timeout=120) as client:
        while not halt.is_set():
            reply = client.post(
                "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
            )
            if reply.status_code != 200 and not upstream_failure(reply.status_code):
                load.error(f"long history: {reply.status_code} {reply.text[:200]}")
            load.count(f"long histories {reply.status_code}")
            halt.wait(0.5)


def embeddings_loop(base: str, halt: threading.Event, load: Load) -> None:
    """2,000 inputs for the index's own embedder, the client gone after half a second."""
    texts = [f"the keeper's log, page {i}: the {WORDS[i % len(WORDS)]} was seen at dawn" for i in range(2000)]
    while not halt.is_set():
        try:
            reply = httpx.post(f"{base}/v1/embeddings", json={"model": "e5", "input": texts}, timeout=0.5)
            if reply.status_code >= 500:
                load.error(f"embeddings: {reply.status_code} {reply.text[:200]}")
            load.count(f"embeddings answered {reply.status_code}")
        except httpx.TimeoutException:
            load.count("embeddings abandoned")
        halt.wait(0.5)


def bad_tools_loop(base: str, halt: threading.Event, load: Load) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [1], "max_tokens": 4}
    with httpx.Client(base_url=base, timeout=60) as client:
        while not halt.is_set():
            reply = client.post("/v1/chat/completions", json=body)
            if reply.status_code != 400:
                load.error(f"bad tools: {reply.status_code} {reply.text[:200]}")
            load.count("bad tools refused")
            halt.wait(0.3)


def header_loop(port: int, halt: threading.Event, load: Load) -> None:
    """Connections that dribble a header line every half second, and now and then a request
    with a megabyte of headers."""
    open_ones: list[socket.socket] = []
    rounds = 0
    try:
        while not halt.is_set():
            rounds += 1
            if len(open_ones) < 16:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                open_ones.append(sock)
            for sock in list(open_ones):
                try:
                    sock.sendall(b"X-Slow: x\r\n")
                except OSError:  # the server closed it: the header timeout
                    open_ones.remove(sock)
                    sock.close()
                    load.count("slow headers cut off")
            if rounds % 6 == 0:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    try:
                        sock.sendall(
                            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1 << 20)
                        )
                        sock.sendall(b"\r\n\r\n")
                        answer = sock.recv(64)
                    except OSError:
                        answer = b"(closed)"
                if answer.startswith(b"HTTP/1.1 2"):
                    load.error(f"a megabyte of headers was accepted: {answer!r}")
                load.count("huge headers refused")
            halt.wait(0.5)
    finally:
        for sock in open_ones:
            sock.close()


def write_loop(folder: Path, halt: threading.Event, load: Load, latest: dict[bytes, str]) -> None:
    """A note created, rewritten or deleted every 100 ms; a third of the new names not UTF-8."""
    rng = random.Random(5)
    made = len(latest)
    root = os.fsencode(folder)
    while not halt.is_set():
        names = sorted(latest)
        choice = rng.random()
        try:
            if choice < 0.3 or len(names) < 8:
                made += 1
                stem = rng.choice(ODD_STEMS) if rng.random() < 0.34 else b"note"
                name, kind = stem + f"-{made:05d}.md".encode(), "created"
            elif choice < 0.5:
                name, kind = rng.choice(names), "deleted"
            else:
                name, kind = rng.choice(names), "rewritten"
            path = os.path.join(root, name)
            if kind == "deleted":
                os.unlink(path)
                del latest[name]
            else:
                made += 1
                latest[name] = f"mark{made:06d}"
                words = " ".join(rng.choice(WORDS) for _ in range(30))
                with open(path, "wb") as out:
                    out.write(
                        f"# Log {latest[name]}\n\nThe marker {latest[name]} is here. {words}.\n".encode()
                    )
            load.count(f"files {kind}")
        except OSError as exc:
            load.error(f"writer: {exc}")
        halt.wait(0.1)


class Restartable:
    """llama-server, stopped and started again on the same port."""

    def __init__(self, *flags: str) -> None:
        self.flags, self.port = flags, free_port()
        self._running: AbstractContextManager[Server] | None = None

    def start(self) -> Server:
        self._running = llama_server(*self.flags, port=self.port)
        return self._running.__enter__()

    def stop(self) -> None:
        if self._running is not None:
            self._running.__exit__(None, None, None)
            self._running = None


def document_count(db: Path) -> int:
    script = (
        "import sys\nfrom proxy.index.store.sqlite import connect\n"
        "print(connect(sys.argv[1], readonly=True).execute('SELECT count(*) FROM documents').fetchone()[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(db)], capture_output=True, text=True, check=True
    )
    return int(result.stdout)


def settled(client: httpx.Client, db: Path, latest: dict[bytes, str]) -> Callable[[], bool]:
    def check() -> bool:
        if document_count(db) != len(latest):
            return False
        for mark in latest.values():
            reply = client.post("/v1/rag/search", json={"query": mark, "k": 3, "mode": "keyword"})
            if reply.status_code != 200 or len(reply.json()["data"]) != 1:
                return False
        return True

    return check


def test_a_hostile_mixed_load_loses_nothing_and_health_holds(tmp_path: Path) -> None:
    folder, db = tmp_path / "notes", tmp_path / "index.db"
    folder.mkdir()
    latest: dict[bytes, str] = {}
    for i, stem in enumerate((b"note", *ODD_STEMS)):
        name, latest_mark = stem + f"-start{i}.md".encode(), f"mark{i:06d}"
        with open(os.path.join(os.fsencode(folder), name), "wb") as out:
            out.write(f"# Log {latest_mark}\n\nThe marker {latest_mark} is here.\n".encode())
        latest[name] = latest_mark
    load = Load()
    upstream = Restartable("--embedding", "--pooling", "mean")
    llama = upstream.start()
    try:
        flags = (
            "--upstream",
            llama.url,
            "--upstream-api",
            "openai",
            "--model",
            MODEL,
            "--embed-threads",
            "1",
        )
        with (
            ragproxy_process(*flags, "--db", str(db), "--docs", f"notes={folder}") as proxy,
            httpx.Client(base_url=proxy.url, timeout=120) as client,
        ):
            deadline = time.monotonic() + SETTLE_LIMIT
            while not settled(client, db, latest)():
                assert time.monotonic() < deadline, "the first scan never finished"
                time.sleep(0.2)
            port = int(proxy.url.rsplit(":", 1)[1])
            halt = threading.Event()
            threads = [
                *(threading.Thread(target=chat_loop, args=(proxy.url, halt, load, i)) for i in range(3)),
                threading.Thread(target=long_history_loop, args=(proxy.url, halt, load)),
                threading.Thread(target=embeddings_loop, args=(proxy.url, halt, load)),
                threading.Thread(target=bad_tools_loop, args=(proxy.url, halt, load)),
                threading.Thread(target=header_loop, args=(port, halt, load)),
                threading.Thread(target=write_loop, args=(folder, halt, load, latest)),
            ]
            with HealthProbe(proxy.url) as probe:
                for thread in threads:
                    thread.start()
                for restart in (1, 2):
                    time.sleep(SECONDS / 3)
                    down = time.monotonic()
                    upstream.stop()  # SIGTERM, as a service manager would
                    upstream.start()
                    load.downtime.append((down, time.monotonic()))
                    load.count(f"upstream restarts ({restart})")
                time.sleep(SECONDS / 3)
                halt.set()
                for thread in threads:
                    thread.join(180)
                    assert not thread.is_alive(), f"a client hung: {thread.name}"
            writer_stopped = time.monotonic()
            while not settled(client, db, latest)():
                assert time.monotonic() - writer_stopped < SETTLE_LIMIT, "the folder never settled"
                time.sleep(0.2)
            settle_seconds = time.monotonic() - writer_stopped
    finally:
        upstream.stop()

    lost = load.lost()
    excused = [o for o in load.ordinary if not o.ok and o not in lost]
    print(
        f"\nhostile soak {SECONDS:g} s: {dict(sorted(load.counts.items()))}\n"
        f"  ordinary chats: {len(load.ordinary)}, failed while the model server was away: {len(excused)}, "
        f"lost: {len(lost)}; the model server away {sum(up - down for down, up in load.downtime):.1f} s "
        f"in all\n"
        f"  /healthz: {len(probe.seconds)} answers, p99 {probe.p99() * 1000:.0f} ms, "
        f"max {max(probe.seconds) * 1000:.0f} ms, failures {probe.failures}\n"
        f"  settled {settle_seconds:.1f} s after the writer stopped ({len(latest)} files)"
    )
    assert load.errors == [], load.errors[:10]
    assert lost == [], [o.what for o in lost[:5]]
    assert probe.failures == 0
    assert probe.p99() <= 0.1, sorted(probe.seconds)[-10:]
    assert load.counts["ordinary chats"] > 0 and load.counts["embeddings abandoned"] > 0
