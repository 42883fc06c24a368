"""Data files that ship with the package.

everyday_prompts.jsonl: everyday chat prompts (English, Simplified and Traditional Chinese), one JSON
object a line: {"lang": "en" | "zh-Hans" | "zh-Hant", "kind": ..., "text": ...}. They are the unrelated
side a relevance gate can be calibrated on, for each collection; none of them is in, or reworded
from, the evaluation set bench/data/unrelated_prompts.jsonl.

english_words.txt.gz: English words of six letters or more, one a line, lower case: the union of
SCOWL's American and British "large" lists (as Debian's wamerican-large and wbritish-large ship
them; copyright and permission in english_words_license.txt). A word in it is not taken for a
typo when a question's words are mended against the index's vocabulary (index/store/terms.py).

hanzi_fold.txt: Traditional Chinese characters, each with the Simplified one the keyword index
holds it as (index/textsearch.py), one pair a line, tab-separated: OpenCC's character table
(Apache License 2.0; notice and licence in hanzi_fold_license.txt), made by bench/hanzi_fold.py.
"""
