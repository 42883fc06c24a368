"""kill -9 of an indexing process at random moments never leaves a damaged or half-written index."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from proxy.index.db import connect

WORDS = "lighthouse keeper storm harbour lantern 灯塔 守护者 风暴 港口 灯笼 ship rope anchor 船 锚".split()


def write_corpus(root: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(exist_ok=True)
    for i in range(count):
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
    kills = 0
    for round_ in range(6):
        process = index(root, db)
        time.sleep(rng.uniform(0.8, 3.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        if db.exists():
            check_consistent(db)
        write_corpus(root, 150, seed=100 + round_)  # every file changes: replacements are interrupted too
    assert kills >= 3
    final = index(root, db)
    assert final.wait(600) == 0
    state = check_consistent(db)
    assert state["documents"] == 150 and state["pending"] == 0 and state["chunks"] >= 150
