"""Data files that ship with the package.

everyday_prompts.jsonl: everyday chat prompts (English, Simplified and Traditional Chinese), one JSON
object a line: {"lang": "en" | "zh-Hans" | "zh-Hant", "kind": ..., "text": ...}. They are the unrelated
side a relevance gate can be calibrated on, for each collection; none of them is in, or reworded
from, the evaluation set bench/data/unrelated_prompts.jsonl.
"""
