"""kill -9 of an indexing process at random moments never leaves a damaged or half-written index.
``RAGPROXY_KILLS`` kills (6 in the normal suite; tests/soak.sh makes 200)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from proxy.index.store import content_hash
from proxy.index.store.sqlite import connect

KILLS = int(os.environ.get("RAGPROXY_KILLS", "6"))
WORDS = "lighthouse keeper storm harbour lantern 灯塔 守护者 风暴 港口 灯笼 ship rope anchor 船 锚".split()


def write_corpus(root: Path, count: int, seed: int, share: float = 1.0) -> None:
    """``count`` notes; with ``share`` below 1, about that share of them rewritten."""
    rng = random.Random(seed)
    root.mkdir(exist_ok=True)
    for i in range(count):
        if share < 1.0 and rng.random() >= share and (root / f"note{i:04d}.md").exists():
            continue
        paragraphs = [f"# Note {i}\n"] + [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40))) + "."
            for _ in range(rng.randint(1, 3))
        ]
        (root / f"note{i:04d}.md").write_text("\n\n".join(paragraphs), encoding="utf-8")


def check_consistent(db_path: Path) -> dict[str, int]:
    db = connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
        assert one("SELECT COUNT(*) FROM chunks WHERE document_id NOT IN (SELECT id FROM documents)") == 0
        assert one("SELECT COUNT(*) FROM chunks_fts_docsize WHERE id NOT IN (SELECT id FROM chunks)") == 0
        assert one("SELECT COUNT(*) FROM chunks WHERE id NOT IN (SELECT id FROM chunks_fts_docsize)") == 0
        has_vectors = one("SELECT COUNT(*) FROM sqlite_master WHERE name = 'chunks_vec'")
        if has_vectors:
            assert one("SELECT COUNT(*) FROM chunks_vec WHERE chunk_id NOT IN (SELECT id FROM chunks)") == 0
            assert (
                one(
                    "SELECT COUNT(*) FROM chunks WHERE embedded = 1 AND id NOT IN "
                    "(SELECT chunk_id FROM chunks_vec)"
                )
                == 0
            )
            assert (
                one(
                    "SELECT COUNT(*) FROM chunks WHERE embedded = 0 AND id IN "
                    "(SELECT chunk_id FROM chunks_vec)"
                )
                == 0
            )
        return {
            "documents": one("SELECT COUNT(*) FROM documents"),
            "chunks": one("SELECT COUNT(*) FROM chunks"),
            "pending": one("SELECT COUNT(*) FROM chunks WHERE embedded = 0"),
        }
    finally:
        db.close()


def has_tables(db_path: Path) -> bool:
    """False for a file made before its first migration committed (killed in that moment): sound,
    and empty; the next run migrates it."""
    db = connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks'").fetchone() is not None
    finally:
        db.close()


def stale_documents(root: Path, db_path: Path) -> int:
    """Files whose content the index does not hold yet (a scan that was cut short)."""
    db = connect(db_path, readonly=True)
    try:
        held = dict(db.execute("SELECT path, content_hash FROM documents").fetchall())
    finally:
        db.close()
    return sum(held.get(p.name) != content_hash(p.read_bytes()) for p in root.iterdir())


def index(root: Path, db: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "proxy", "index", str(root), "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_minus_nine_at_random_moments(tmp_path: Path) -> None:
    root, db = tmp_path / "corpus", tmp_path / "index.db"
    write_corpus(root, 150, seed=1)
    rng = random.Random(7)
    kills = rounds = 0
    left = dict.fromkeys(["no index yet", "files not yet read", "vectors pending", "complete"], 0)
    while kills < KILLS:
        rounds += 1
        assert rounds <= 3 * KILLS + 10, f"only {kills} kills in {rounds} rounds"
        process = index(root, db)
        # the process starts and scans in about a second, then embeds for tens of seconds
        time.sleep(rng.uniform(0.2, 1.0) if rng.random() < 0.4 else rng.uniform(1.0, 2.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        if not db.exists() or not has_tables(db):
            left["no index yet"] += 1
        else:
            state = check_consistent(db)
            if process.returncode == -signal.SIGKILL:
                stale = stale_documents(root, db)
                left[
                    "files not yet read" if stale else "vectors pending" if state["pending"] else "complete"
                ] += 1
        # every file changes, or a few, or none: replacements and embeddings are interrupted
        write_corpus(root, 150, seed=100 + rounds, share=rng.choice([1.0, 0.1, 0.0]))
    print(f"\n{kills} kills in {rounds} rounds, the index consistent after each; killed with {left}")
    final = index(root, db)
    assert final.wait(600) == 0
    state = check_consistent(db)
    assert state["documents"] == 150 and state["pending"] == 0 and state["chunks"] >= 150
