"""What real clients put into a request that is theirs, not the user's: a chat UI's built-in tools
(which give way to passages when both cannot fit), an agent's continuation and compaction prompts
(which continue the question before them), and the requests a client makes for itself, such as a
title for the chat (which need no passages)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

SYSTEM_ROLES = ("system", "developer")  # the roles a system prompt comes in

# Open WebUI (0.12) attaches its built-in tools to every chat sent from its UI, whether or not the
# conversation will use them (tests/data/open-webui-tools.json). An agent's tools are its hands and
# never give way; a chat UI's built-ins do, when the best passage fits only without them.
OPEN_WEBUI_BUILTINS = frozenset(
    {
        "get_current_timestamp", "calculate_timestamp", "ask_user", "list_knowledge_bases",
        "search_knowledge_bases", "query_knowledge_bases", "grep_knowledge_files",
        "search_knowledge_files", "query_knowledge_files", "view_knowledge_file", "search_chats",
        "view_chat", "search_memories", "list_memory_paths", "read_memory_path", "list_memories",
        "update_memory", "add_memory", "replace_memory_content", "delete_memory", "search_notes",
        "view_note", "write_note", "replace_note_content", "create_skill", "create_tasks",
        "update_task", "create_automation", "update_automation", "list_automations",
        "toggle_automation", "delete_automation", "search_calendar_events", "create_calendar_event",
        "update_calendar_event", "delete_calendar_event", "search_web", "fetch_url",
        "generate_image", "edit_image", "execute_code", "get_current_date",
    }
)  # fmt: skip


def tool_names(tools: Any) -> list[str]:
    names = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        names.append(name if isinstance(name, str) else "")
    return names


def chat_ui_builtins(tools: Any) -> bool:
    """Whether these tools are a chat UI's built-ins (most of them Open WebUI's own)."""
    names = tool_names(tools)
    return bool(names) and sum(name in OPEN_WEBUI_BUILTINS for name in names) * 2 >= len(names)


# -- an agent's own turns ----------------------------------------------------------------------------
# Written by an agent's harness as the user's turn: after an answer hit its output limit, to ask for
# a summary of the conversation (compaction), or opening a conversation continued from a summary
# (Claude Code 2.1, Codex 0.171, opencode 1.18, Copilot CLI 1.0). Phrases long and particular
# enough that a person does not write them, or that mean the same when a person does.
_HARNESS_PROMPT = re.compile(
    r"Output token limit hit\. Resume directly"
    r"|\AYour task is to create a detailed summary of"
    r"|\AThis session is being continued from a previous conversation that ran out of context"
    r"|You are performing a CONTEXT CHECKPOINT COMPACTION"
    r"|\AAnother language model started to solve this problem and produced a summary"
    r"|Create a new anchored summary from the conversation history"
    r"|Continue if you have next steps, or stop and ask for clarification"
    r"|\APlease continue from where you left off\.?\s*\Z"
)


def harness_prompt(text: str) -> bool:
    """Whether a user turn's text was written by the agent, not the user."""
    return _HARNESS_PROMPT.search(text) is not None


# -- requests a client makes for itself ---------------------------------------------------------------
# A title for the chat, asked in the system prompt: Claude Code ("Generate a concise, sentence-case
# title (3-7 words) ..."), opencode ("You are a title generator"), and the like. Only the system
# prompt is read: a user asking for a title for their own document still gets passages.
_TITLE_TASK = re.compile(
    r"\btitle generator\b"
    r"|\b(?:generate|write|create|suggest|produce|give)\s+(?:me\s+)?(?:a|an|the)?\s*"
    r"(?:[\w-]+,?\s+){0,4}?title\b(?!s? of the (?:document|file|book|paper))",
    re.IGNORECASE,
)


def title_request(messages: Sequence[Mapping[str, Any]], text: Any) -> bool:
    """Whether this request asks only for a title of the chat (``text``: a message's text)."""
    for message in messages:
        if message.get("role") in SYSTEM_ROLES and _TITLE_TASK.search(text(message)[:600]):
            return True
    return False
