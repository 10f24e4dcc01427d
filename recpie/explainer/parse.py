"""The contrastive explanation format and its parser, with a defined outcome for unparseable output."""
from __future__ import annotations

import re
from dataclasses import dataclass

LIKE, DISLIKE = "may like:", "may not like:"
PREFIX = LIKE  # forced start of every response: generation continues after it
CHOICE_END = ","  # what follows a chosen candidate's name in a part ("may like: <name>, <reasons>")
_PATTERN = re.compile(r"^\s*may like:\s*(?P<like>.*?)\s*/\s*may not like:\s*(?P<dislike>.*?)\s*$", re.I)
_MIN_PART = 3  # a part needs this many letters to count as saying something


@dataclass(frozen=True)
class Parsed:
    """ok=False means unparseable: like/dislike are then empty and `reason` says what was wrong."""

    ok: bool
    like: str
    dislike: str
    reason: str = ""


def format_explanation(like: str, dislike: str) -> str:
    return f"{LIKE} {like} / {DISLIKE} {dislike}"


def parse(text: str) -> Parsed:
    """Parse the first line of `text` as 'may like: A / may not like: B' (case-insensitive)."""
    line = text.strip().split("\n", 1)[0]
    m = _PATTERN.match(line)
    if m is None:
        reason = "no 'may not like:' part" if LIKE in line.lower() else "does not start with 'may like:'"
        return Parsed(False, "", "", reason)
    like, dislike = m["like"], m["dislike"]
    for name, part in (("may like", like), ("may not like", dislike)):
        if sum(c.isalpha() for c in part) < _MIN_PART:
            return Parsed(False, "", "", f"empty '{name}' part")
    return Parsed(True, like, dislike)
