"""Reading the conversation: whether a request is the client's housekeeping rather than a user's
question, what to search for, and what ragproxy itself added to earlier turns."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.pipeline import clients
from proxy.pipeline.render import CONTEXT_INTRO, FENCE_CLOSE, FENCE_OPEN, FOOTNOTE_HEADING, NOTE_MARK

# -- housekeeping -----------------------------------------------------------------------------------
# Requests a client makes for itself, not for the user: Open WebUI's title, tag, follow-up,
# query, emoji and autocompletion tasks (all its task prompts start "### Task:"), tool-selection
# prompts, and editor fill-in-the-middle completions.
_TASK_PROMPT = re.compile(r"^\s*###\s*Task:", re.IGNORECASE)
_FIM_MARKERS = (
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "[SUFFIX]",
    "[PREFIX]",
)
_TOOL_SELECTION = "Available Tools:"


def housekeeping(messages: Sequence[dict[str, Any]], body: Mapping[str, Any]) -> str | None:
    """The kind of housekeeping request this is, or None for a user's question."""
    if body.get("suffix"):
        return "fill-in-the-middle"
    last = last_user_text(messages)
    if last is None:
        return "no user message"
    if _TASK_PROMPT.match(last):
        return "client task prompt"
    if any(marker in last for marker in _FIM_MARKERS):
        return "fill-in-the-middle"
    system = " ".join(message_text(m) for m in messages if m.get("role") == "system")
    if _TOOL_SELECTION in system and "Your task is to choose and return the correct tool" in system:
        return "tool selection"
    if clients.title_request(messages, message_text):
        return "title request"
    return None


def message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return None


# -- query ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Query:
    text: str
    weight: float  # a chunk's score from this query counts this much


# What an agent's harness writes into the user's message for the model, not the user's words:
# Claude Code's <system-reminder> blocks (the date, the project's CLAUDE.md, open files), Codex's
# <environment_context> (the folder, the shell, the sandbox). A question searched together with a
# whole CLAUDE.md finds nothing.
_HARNESS_BLOCK = re.compile(
    r"<system-reminder>.*?</system-reminder>|<environment_context>.*?</environment_context>", re.DOTALL
)


def search_queries(messages: Sequence[Mapping[str, Any]]) -> list[Query]:
    """What to search for: the last user message; in a conversation also the previous user
    message with it, and the previous one alone, a little lower, so a follow-up of any length
    ("and how long does that last?", "能详细说说吗？") finds what the conversation is about.
    Each is searched and gated on its own and the rankings merged. No extra LLM call. An agent's
    continuation and compaction turns are not the user's: the question they continue is searched
    (they themselves only if the conversation holds nothing else)."""
    users: list[str] = []  # the last two user messages with text of their own, oldest first
    written: list[str] = []  # the agent's own turns, in case there is nothing else
    for message in reversed(messages):
        if message.get("role") == "user" and (text := _HARNESS_BLOCK.sub("", message_text(message)).strip()):
            if clients.harness_prompt(text):
                written.insert(0, text)
                continue
            users.insert(0, text)
            if len(users) == 2:
                break
    users = users or written[-1:]
    if not users:
        return []
    queries = [Query(users[-1], 1.0)]
    if len(users) > 1:
        queries += [Query(f"{users[-2]}\n{users[-1]}", 0.95), Query(users[-2], 0.85)]
    return queries


def search_query(messages: Sequence[Mapping[str, Any]]) -> str:
    """The queries as one text, for the log and the dry run."""
    return "\n---\n".join(query.text for query in search_queries(messages))


# -- ragproxy's own text ----------------------------------------------------------------------------
def told_no_room(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether an earlier reply in this conversation already carried the no-room note
    (``render.no_room_note``)."""
    return any(
        message.get("role") == "assistant" and f"\n{NOTE_MARK} " in f"\n{message_text(message)}"
        for message in messages
    )


# What ragproxy itself added to a reply or a prompt, as clients echo it back in later turns (Open
# WebUI keeps the footnote in the chat and quotes it in its title and follow-up prompts): the
# footnote's numbers would clash with the next turn's, and the old context would be read twice.
_OWN_FOOTNOTE = re.compile(rf"\n*^{FOOTNOTE_HEADING}[ \t]*\n(?:\[\d+\][^\n]*(?:\n|\Z))+", re.MULTILINE)
_OWN_NOTE = re.compile(rf"\n*^{re.escape(NOTE_MARK)} [^\n]*from your documents matched[^\n]*$", re.MULTILINE)
_OWN_CONTEXT = re.compile(
    re.escape(CONTEXT_INTRO) + r"\s*" + re.escape(FENCE_OPEN) + r".*?" + re.escape(FENCE_CLOSE) + r"\n*",
    re.DOTALL,
)


def strip_own_text(text: str, *, footnotes: bool = True) -> str:
    """The text without ragproxy's context blocks and (``footnotes``) its footnotes."""
    if footnotes and FOOTNOTE_HEADING in text and _OWN_FOOTNOTE.search(text):
        text = _OWN_FOOTNOTE.sub("\n", text).rstrip("\n")
    if footnotes and NOTE_MARK in text:
        text = _OWN_NOTE.sub("", text)
    if FENCE_OPEN in text:
        text = _OWN_CONTEXT.sub("", text)
    return text


def strip_own_additions(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages without ragproxy's context blocks, and without its footnotes where a client
    echoes them: in assistant turns and in a client's task prompts quoting the chat. A user's own
    text that happens to look like a footnote is left alone."""
    out = []
    for message in messages:
        content = message.get("content")
        footnotes = message.get("role") == "assistant" or (
            isinstance(content, str) and _TASK_PROMPT.match(content) is not None
        )
        if isinstance(content, str):
            cleaned: Any = strip_own_text(content, footnotes=footnotes)
        elif isinstance(content, list):
            cleaned = [
                {**part, "text": strip_own_text(part["text"], footnotes=footnotes)}
                if isinstance(part, dict) and isinstance(part.get("text"), str)
                else part
                for part in content
            ]
        else:
            cleaned = content
        out.append(message if cleaned == content else {**message, "content": cleaned})
    return out
