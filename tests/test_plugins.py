"""Plugins: the built-in ones and a third-party one installed the usual way (an entry point in the
``ragproxy`` group), registering through the same hooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from proxy.plugins import describe
from tests.docs import installed_plugin

PLUGIN = """
from proxy.hookspecs import hookimpl
from proxy.types import Document


def load_recipe(path):
    text = path.read_text(encoding="utf-8").replace("INGREDIENT:", "Ingredient:")
    return Document(text).with_whole_section()


@hookimpl
def register_loaders(register):
    register(".recipe", load_recipe)
"""


def test_builtin_plugins() -> None:
    found = describe()
    for suffix in (".md", ".html", ".pdf", ".docx", ".txt", ".py", ""):
        assert suffix in found["loaders"]
    assert {"e5", "ollama"} <= set(found["embedders"])


def test_third_party_plugin_from_an_entry_point(tmp_path: Path) -> None:
    env = installed_plugin(tmp_path / "site", "recipe_loader", PLUGIN)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "soup.recipe").write_text("Pumpkin soup. INGREDIENT: nutmeg\n")
    db = str(tmp_path / "i.db")
    run = [sys.executable, "-m", "proxy"]
    subprocess.run([*run, "index", str(docs), "--db", db], env=env, check=True, capture_output=True)
    hits = json.loads(
        subprocess.run(
            [*run, "search", "nutmeg", "--json", "--mode", "keyword", "--db", db],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert hits[0]["path"] == "soup.recipe" and "Ingredient: nutmeg" in hits[0]["text"]
    # Without the plugin the same file is skipped with a reason.
    plain = subprocess.run(
        [*run, "index", str(docs), "--db", str(tmp_path / "j.db")], capture_output=True, text=True
    )
    assert "1 skipped" in plain.stderr


def test_markdown_sections_skip_fences_and_follow_every_line_break() -> None:
    from plugins.loaders.markdown import parse_markdown
    from proxy.types import Section

    text = "# Title { #t }\nintro\n```\n# not a heading\n```\n## Part\n\n## Empty\n###\tDeep #\ntext\n"
    assert parse_markdown(text).sections == [Section(0, 45, "Title"), Section(63, 79, "Title > Empty > Deep")]
    crlf = "before\r\n# One\r\nbody\r\n  ~~~\r\n# fenced\r\n~~~\r\n"
    assert parse_markdown(crlf).sections == [Section(0, 8), Section(8, 43, "One")]
    # a line separator other than "\n" starts a line too (as str.splitlines says)
    assert parse_markdown("x\u2028# Two\nbody").sections == [Section(0, 2), Section(2, 12, "Two")]
    assert parse_markdown("#NoSpace\n").sections == [Section(0, 9)]
