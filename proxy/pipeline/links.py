"""Links in passages reduced to their text when they point at hosts off the allow-list."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Injected instructions in a document can ask the model to write a Markdown image whose URL
# carries the conversation to another host; the client fetches it without a click.
_MD_LINK = re.compile(r"(!?)\[([^\]\n]{0,500})\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)\n]*)?\)")
_HTML_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)


def _host(url: str) -> str | None:
    match = re.match(r"(?i)^(?:[a-z][a-z0-9+.-]*:)?//([^/?#:@]*@)?([^/?#:]+)", url)
    return match.group(2).lower() if match else None


def strip_links(text: str, allowed_hosts: Sequence[str]) -> str:
    """Markdown images and links (and HTML images) pointing at hosts off the allow-list are
    reduced to their text; relative links are kept."""
    allowed = {h.lower() for h in allowed_hosts}

    def foreign(url: str) -> bool:
        host = _host(url)
        return host is not None and host not in allowed and not any(host.endswith("." + a) for a in allowed)

    def link(match: re.Match[str]) -> str:
        bang, label, url = match.groups()
        if not foreign(url):
            return match.group()
        return f"[image: {label}]" if bang else label

    text = _MD_LINK.sub(link, text)
    text = _REF_DEF.sub(lambda m: "" if foreign(m.group(1)) else m.group(), text)
    return _HTML_IMG.sub(
        lambda m: "[image]" if re.search(r"(?i)src\s*=\s*[\"']?(?:[a-z]+:)?//", m.group()) else m.group(),
        text,
    )
