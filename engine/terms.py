"""Where a phrase occurs in a draft, found by text rather than by token ids.

Glossary
  piece bytes  the UTF-8 bytes of each token (engine.tokenizer.Tokenizer.piece_bytes); their
               concatenation is the draft's text
  occurrence   a run of tokens [a, b) whose text, less leading whitespace of its first token,
               is the phrase: it starts and ends on token boundaries (a token may carry the space
               before the phrase) and is a whole phrase (no letter or digit touches either end)
  match case   exact bytes; otherwise ASCII letters match in either case, so a lower-case term
               finds "Hydraulic pump" and "HYDRAULIC PUMP" alike (the templates are upper case)

Matching by token ids alone misses every occurrence the tokenizer split differently (" Pump" is
one id, "PUMP" two); matching by text finds them all and still pins whole tokens.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def _is_word_byte(b: int) -> bool:
    return (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b >= 0x80


def find_term(pieces: Sequence[bytes], term: str, *, match_case: bool = False) -> list[tuple[int, int]]:
    """Token spans [a, b) of every non-overlapping occurrence of `term` (see the glossary), left
    to right. A term of only whitespace, or one that occurs nowhere, gives []."""
    needle = term.strip().encode("utf-8")
    if not needle:
        return []
    hay = b"".join(pieces)
    if not match_case:
        needle, hay = needle.lower(), hay.lower()  # ASCII only: byte offsets stay the same
    starts: list[int] = []  # byte offset of each token's start; starts[len] = len(hay)
    off = 0
    for p in pieces:
        starts.append(off)
        off += len(p)
    starts.append(off)
    token_at: dict[int, int] = {o: i for i, o in enumerate(starts)}  # boundary offset -> token index
    spans: list[tuple[int, int]] = []
    pos, first_token = 0, 0
    while True:
        s = hay.find(needle, pos)
        if s < 0:
            return spans
        e = s + len(needle)
        pos = s + 1
        if (s > 0 and _is_word_byte(hay[s - 1]) and _is_word_byte(needle[0])) or \
                (e < len(hay) and _is_word_byte(hay[e]) and _is_word_byte(needle[-1])):
            continue  # part of a longer word
        b = token_at.get(e)
        if b is None:
            continue  # ends inside a token
        a = token_at.get(s)
        if a is None:  # the token holding the start may begin with the whitespace before it
            a = bisect.bisect_right(starts, s) - 1
            if hay[starts[a]:s].strip():
                continue
        if a < first_token:
            continue
        spans.append((a, b))
        first_token, pos = b, e
