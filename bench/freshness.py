"""Save → searchable latency of the live index.

Runs the real watcher (watchdog) and embedding worker over a temporary folder, like
`ragproxy serve --docs`. Each round, a file is saved, either new or modified, with a unique word
in it. The script measures how long until that word is found by keyword search (FTS5). It then
measures how long until the chunk has its vector, so that vector search can find it. The
embedding time for the same text, measured directly, is reported beside it: the target is
"keyword ≤ 0.3 s p50" and "vector ≤ embedding time + 0.3 s".

    .venv/bin/python bench/freshness.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.index.service import IndexService  # noqa: E402
from proxy.index.watcher import FolderWatcher  # noqa: E402
from proxy.logging import configure_logging  # noqa: E402
from proxy.settings import Settings  # noqa: E402

TEXT = (
    "# Field notes {i}\n\nThe {word} was seen near the old lighthouse at dawn, walking along the "
    "harbour wall while the keeper polished the lens. 观察记录：{word} 在灯塔附近出现。\n"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    configure_logging("warning", sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        service = IndexService(Settings(db=str(Path(tmp) / "index.db")))
        service.add_folders([("docs", folder)])
        service.worker.start()
        watcher = FolderWatcher(service.indexer)
        watcher.start()
        time.sleep(0.5)
        keyword: dict[str, list[float]] = {"new": [], "modified": []}
        vector: list[float] = []
        embed_alone: list[float] = []
        try:
            for i in range(args.rounds):
                kind = "new" if i % 2 == 0 else "modified"
                word = f"zq{i:04d}xk"
                path = folder / (f"note{i}.md" if kind == "new" else f"note{i - 1}.md")
                text = TEXT.format(i=i, word=word)
                saved = time.perf_counter()
                path.write_text(text, encoding="utf-8")
                while not service.store.search_keyword(word, 1):
                    time.sleep(0.002)
                keyword[kind].append(time.perf_counter() - saved)
                while service.store.pending_chunks(1):
                    time.sleep(0.002)
                vector.append(time.perf_counter() - saved)
                started = time.perf_counter()
                service.embedder.embed_documents([text])
                embed_alone.append(time.perf_counter() - started)
                time.sleep(0.2)
        finally:
            watcher.stop()
            service.close()
    ms = 1000
    print(f"rounds={args.rounds} (half new files, half modified), times in ms")
    print(f"{'':34} {'p50':>8} {'p95':>8}")
    for kind, values in keyword.items():
        print(
            f"{'save -> keyword-searchable, ' + kind:34} {statistics.median(values) * ms:8.1f} "
            f"{percentile(values, 0.95) * ms:8.1f}"
        )
    v50, v95 = statistics.median(vector) * ms, percentile(vector, 0.95) * ms
    print(f"{'save -> vector-searchable':34} {v50:8.1f} {v95:8.1f}")
    print(
        f"{'embedding the file alone (e5)':34} {statistics.median(embed_alone) * ms:8.1f} "
        f"{percentile(embed_alone, 0.95) * ms:8.1f}"
    )
    extra = [v - e for v, e in zip(vector, embed_alone, strict=True)]
    print(
        f"{'vector-searchable minus embedding':34} {statistics.median(extra) * ms:8.1f} "
        f"{percentile(extra, 0.95) * ms:8.1f}"
    )


if __name__ == "__main__":
    main()
