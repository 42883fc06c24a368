"""A small folder of documents, indexed with the real e5 embedder once per test session."""

from __future__ import annotations

from pathlib import Path

from proxy.index.service import IndexService
from proxy.settings import Settings

CANARY = "QX-5521"
QUESTION = "What is the maintenance code of the Zephyr-9 valve?"
DOCS = {
    "valves/zephyr.md": (
        "# Zephyr valve\n\n## Maintenance\n\nThe Zephyr-9 valve must be torqued to 47 newton-metres. "
        f"Its maintenance code is {CANARY} and it is inspected every 300 hours.\n"
    ),
    "garden/tomatoes.md": (
        "# Tomatoes\n\nTomatoes need six hours of sun and deep watering twice a week. Pinch out the "
        "side shoots so the plant puts its strength into the fruit.\n"
    ),
    "zoo/panda.md": "# 大熊猫\n\n大熊猫主要以竹子为食，每天要吃十二到三十八公斤竹子。\n",
}


def build_docs_index(root: Path) -> tuple[Path, Path]:
    """The folder, indexed and embedded before the proxy starts (its start-up scan then finds
    nothing to do), so every test sees the vectors."""
    folder = root / "manuals"
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    db = root / "index.db"
    service = IndexService(Settings(db=str(db)))
    try:
        service.indexer.scan(service.indexer.add_collection("manuals", folder))
        service.worker.embed_pending()
    finally:
        service.close()
    return folder, db
