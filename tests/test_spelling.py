"""A misspelt word in a question is mended against the index's own vocabulary, so the keyword
search still finds the passage the word names; real English words and names are left alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.index.service import IndexService
from proxy.index.store.terms import english_words
from proxy.settings import Settings

PAPERS = {
    "homocysteine.md": "# Vitamin B12\n\nA deficiency of vitamin B12 raises plasma homocysteine, "
    "and folate supplements lower it again within weeks.\n",
    "methylation.md": "# Ageing clocks\n\nDNA methylation at a few hundred sites tracks age; the "
    "methyltransferase DNMT3A sets new marks during development.\n",
    "turbines.md": "# Turbines\n\nWind turbines' blades turn; the gearbox runs hot in summer.\n",
}


@pytest.fixture(scope="module")
def papers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexService]:
    root = tmp_path_factory.mktemp("papers")
    folder = root / "papers"
    folder.mkdir()
    for name, text in PAPERS.items():
        (folder / name).write_text(text, encoding="utf-8")
    service = IndexService(Settings(db=str(root / "index.db")))
    try:
        service.indexer.scan(service.indexer.add_collection("papers", folder))
        service.worker.embed_pending()
        yield service
    finally:
        service.close()


def test_a_misspelt_word_is_mended_to_the_word_the_index_holds(papers: IndexService) -> None:
    spelled = papers.store.spelled
    assert spelled("Does B12 lower hmoocysteine?") == "Does B12 lower homocysteine?"  # swapped
    assert spelled("what does the methyltrasnferase do") == "what does the methyltransferase do"
    assert spelled("Metylation and age") == "Methylation and age"  # a letter dropped, capital kept
    assert spelled("gearbox of wind turbiness") == "gearbox of wind turbines"  # a letter doubled


def test_real_words_and_names_are_not_typos(papers: IndexService) -> None:
    spelled = papers.store.spelled
    assert "country" in english_words()
    # one letter from "county"? the index holds neither; a word of the language is never mended
    for question in ("Which country grows the most coffee?", "the ComYMV genome", "ok thanks"):
        assert spelled(question) == question
    assert spelled("how do I bake sourdough bread") == "how do I bake sourdough bread"  # nothing near
    # the Latin letters of a word with others ("turbiness" inside "turbinessé") are not a word
    assert spelled("the turbinessé gearbox") == "the turbinessé gearbox"
    assert spelled("the turbiness gearbox") == "the turbines gearbox"


def test_the_mended_question_finds_what_the_misspelt_one_could_not(papers: IndexService) -> None:
    misspelt = "hmoocysteine"
    assert papers.store.search_keyword(misspelt, 5) == []  # the word as typed matches nothing
    ranking = papers.rank(f"what raises {misspelt}", 5)
    best = max(ranking.strength, key=lambda chunk: ranking.strength[chunk])
    assert Path(next(h.path for h in ranking.hits if h.chunk_id == best)).name == "homocysteine.md"
    assert ranking.strength[best] > 0.5  # the rare word's weight counts again
