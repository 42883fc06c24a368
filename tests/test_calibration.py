"""Each collection's own cosine bar for questions in a script it holds no text in, measured with
the shipped everyday prompts and the real e5 embedder: Chinese questions about an English guide
(ragproxy's own README) reach it, Chinese small talk does not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest

from proxy.api.ui import _collections_section
from proxy.index.calibration import (
    MIN_CHUNKS,
    Calibration,
    _cache_path,
    _cached,
    _keep,
    everyday_prompts,
    note_of,
)
from proxy.index.service import IndexService
from proxy.pipeline.retrieval import retrieve
from proxy.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
ABOUT_THE_GUIDE = {  # Chinese questions whose answer is in an English section of the guide
    "怎么把 ragproxy 的索引放到 PostgreSQL 里，让几个副本共用？": "PostgreSQL",
    "ragproxy 怎么作为 systemd 服务运行？": "service",
}
SMALL_TALK = ["今天晚上吃什么好", "帮我写一首关于秋天的短诗", "周末去哪里玩比较好？", "你好呀，最近怎么样"]


ABOUT_THE_GUIDE_IN_ENGLISH = {
    "how do I point Open WebUI at ragproxy": "Pointing clients at ragproxy",
    "how do I share one index between several ragproxy replicas": "PostgreSQL",
    "how does ragproxy keep the index current when files change": "Your documents",
}
# coding chat, not among the shipped everyday prompts, that the guide's own background lets
# through: its words (files, folders, json, python) are the guide's too
CODING_CHAT = [
    "write a python script that renames all files in a folder",
    "how do I read a json file in python",
]


@pytest.fixture(scope="module")
def guide_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guide")
    folder = root / "guide"
    folder.mkdir()
    (folder / "README.md").write_text(README.read_text(encoding="utf-8"), encoding="utf-8")
    service = IndexService(Settings(db=str(root / "index.db")))
    try:
        service.indexer.scan(service.indexer.add_collection("guide", folder))
        service.worker.embed_pending()
    finally:
        service.close()
    return root / "index.db"


@pytest.fixture(scope="module")
def guide(guide_db: Path) -> Iterator[IndexService]:
    service = IndexService(Settings(db=str(guide_db)), readonly=True)
    try:
        yield service
    finally:
        service.close()


def passages(service: IndexService, question: str) -> list[str]:
    return [p.heading or "" for p in retrieve(service, question, top_k=5, collections=None).passages]


def test_the_shipped_everyday_prompts_are_read_with_their_script() -> None:
    prompts = everyday_prompts()
    assert len(prompts) >= 600
    assert 200 <= sum(not cjk for _, cjk in prompts) <= 300  # English
    assert 400 <= sum(cjk for _, cjk in prompts) <= 500  # Simplified and Traditional


def test_chinese_questions_on_an_english_guide_get_a_bar_of_its_own(guide: IndexService) -> None:
    # before the measure, the embedder's fixed threshold for Chinese questions (0.90) applies:
    # a cross-language similarity does not reach it
    assert guide.calibration.bars() == {}
    postgres = next(iter(ABOUT_THE_GUIDE))
    assert passages(guide, postgres) == []

    guide.calibration.measure(guide)
    bars = guide.calibration.bars()
    # the guide is English: English questions stand out from its own background, no bar
    assert set(bars) == {("guide", True)}
    assert 0.7 < bars[("guide", True)] < 0.9
    assert guide.calibration.described("guide")[0].startswith("Chinese questions: cosine ")

    for question, section in ABOUT_THE_GUIDE.items():
        headings = passages(guide, question)
        assert any(section.lower() in heading.lower() for heading in headings), (question, headings)
    for prompt in SMALL_TALK:  # not among the prompts the bar was measured on
        assert passages(guide, prompt) == [], prompt
    page = anyio.run(_collections_section, guide, None)  # the status page names the bar
    assert "Relevance bars measured on the collections themselves" in page
    assert "Chinese questions: cosine 0." in page
    assert f"each question is held against {len(everyday_prompts())} everyday prompts" in page


def test_everyday_chat_nearer_to_the_question_than_the_guide_gets_no_context(guide_db: Path) -> None:
    service = IndexService(Settings(db=str(guide_db)), readonly=True)  # its own calibration
    try:
        # before the everyday prompts are embedded, the guide's background alone decides
        for prompt in CODING_CHAT:
            assert passages(service, prompt), prompt
        everyday = service.calibration.prepare(service)
        assert everyday is not None and everyday.vectors.shape[0] == len(everyday_prompts())
        for prompt in CODING_CHAT:
            assert passages(service, prompt) == [], prompt
        for question, section in ABOUT_THE_GUIDE_IN_ENGLISH.items():  # about the guide: kept
            headings = passages(service, question)
            assert any(section.lower() in heading.lower() for heading in headings), (question, headings)
    finally:
        service.close()


def test_the_everyday_vectors_are_kept_for_the_next_start_and_checked(
    guide: IndexService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = guide.calibration.prepare(guide)  # embedded (or taken from this session's cache)
    assert made is not None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    prompts = everyday_prompts()
    kept = _cache_path(guide, prompts)
    assert kept.parent == tmp_path / "ragproxy" and not kept.exists()
    _keep(guide, prompts, made.vectors)  # as the first start leaves it
    marked = np.load(kept)
    assert np.allclose(marked, made.vectors)
    marked[5] = marked[6]  # a row the check does not embed again: taken from the file as it is
    np.save(kept, marked)
    service = IndexService(Settings(db=str(guide.store.path)), readonly=True)  # the next start
    try:
        loaded = service.calibration.prepare(service)
        assert loaded is not None and np.array_equal(loaded.vectors[5], marked[6])
        np.save(kept, -marked)  # vectors another model made: two embedded afresh disagree
        assert _cached(service, prompts) is None
        np.save(kept, marked[:10])  # a file cut short
        assert _cached(service, prompts) is None
    finally:
        service.close()


def test_the_server_measures_in_a_thread_of_its_own_and_stops_with_the_index(guide: IndexService) -> None:
    calibration = Calibration()
    calibration.start(guide)  # as the server does once the index is read into memory
    try:
        deadline = time.monotonic() + 60
        while not calibration.bars() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(calibration.bars()) == {("guide", True)}
    finally:
        started = time.monotonic()
        calibration.stop()
        assert time.monotonic() - started < 10


def test_ragproxy_status_shows_the_calibration_the_server_wrote(guide_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    shutil.copy(guide_db, db)  # a writable copy, as the serving process holds it
    service = IndexService(Settings(db=str(db)))
    try:
        assert note_of(service) is None
        service.calibration.measure(service)
        note = note_of(service)
        assert note is not None and note["everyday_prompts"] == len(everyday_prompts())
        assert [(b["collection"], b["cjk"]) for b in note["bars"]] == [("guide", True)]
    finally:
        service.close()
    shown = subprocess.run(
        [sys.executable, "-m", "proxy", "status", "--db", str(db)], capture_output=True, text=True, check=True
    ).stdout
    assert f"each question held against {len(everyday_prompts())} everyday prompts" in shown
    assert "guide: Chinese questions, cosine 0." in shown
    as_json = subprocess.run(
        [sys.executable, "-m", "proxy", "status", "--json", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(as_json)["calibration"]["bars"][0]["collection"] == "guide"


def test_a_small_collection_keeps_the_embedders_thresholds(docs_index: tuple[Path, Path]) -> None:
    _, db = docs_index
    service = IndexService(Settings(db=str(db)), readonly=True)
    try:
        chunks = sum(c["chunks"] for c in service.store.status()["collections"])
        assert chunks < MIN_CHUNKS
        service.calibration.measure(service)
        assert service.calibration.bars() == {}
    finally:
        service.close()
