"""Words that stay words: a decoding rule that never lets sampled sub-word pieces form a non-word.

Glossary
  word        a maximal run of letters and digits in the decoded text, lower-cased; it may span
              several tokens ("corro" + "sion")
  lexicon     the words of the training split; a model folder carries it as `lexicon.txt`
  glue        token j's text starts with a letter or digit and token j-1's ends with one: their
              characters join into one word
  opener      a token whose text does not start with a letter or digit (" cabin", ",", " 51")
              and whose own words are all in the lexicon: it starts a word of its own
  broken word a word that is not in the lexicon; the tokens that make it up are its span

Uniform-noise diffusion samples every position from its own x̂0, so two neighbours can each be
plausible and still join into a word nobody writes ("CABIN" + "B"). `WordRule.repair` runs after
each reverse step: for every broken word that has free (not held) tokens, each of those tokens is
replaced by the opener with the largest x̂0 weight at its position. An opener cannot glue to the
token before it, and after repair no free token of that span glues to the next, so the span
becomes a run of lexicon words. A broken word made only of held tokens (a pin, an edit, the
template) is left as the person wrote it. The rule is a pure function of the tokens and x̂0, so
steps stay reproducible from their seed.

One more rule keeps a reviewer's or a template's text readable: a free position right after held
text that ends a clause or a label (": , ; . ! ?") draws only tokens that start with a space.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import groupby
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from engine.tokenizer import EOS, Tokenizer

_WORD = re.compile(r"[^\W_]+")
LEXICON_FILE = "lexicon.txt"
CLAUSE_ENDS = tuple(":;,.!?")
SENTENCE_ENDS = tuple(".!?")  # text ending with one of these ends a sentence (WordRule.stops, the benches)
_PASSES = 4
PHRASE_WINDOW = 12  # final tokens on either side read for a label phrase
PHRASE_TRIES = 8  # choices of a position before it keeps one that writes a label out


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (also the words `bench.judge` scores)."""
    return _WORD.findall(text.lower())


def build_lexicon(texts: Iterable[str]) -> list[str]:
    """Sorted distinct words of `texts`."""
    out: set[str] = set()
    for t in texts:
        out.update(words(t))
    return sorted(out)


def save_lexicon(words_: Iterable[str], path: str | Path) -> None:
    Path(path).write_text("\n".join(words_) + "\n", encoding="utf-8")


def load_lexicon(path: str | Path) -> frozenset[str]:
    return frozenset(w for w in Path(path).read_text(encoding="utf-8").split("\n") if w)


def _alnum(ch: str) -> bool:
    return ch.isalnum()


class WordRule:
    """The lexicon and, per token id, its text and whether it glues / can open a word."""

    def __init__(self, tokenizer: Tokenizer, lexicon: Iterable[str]) -> None:
        self.lexicon = frozenset(lexicon)
        if not self.lexicon:
            raise ValueError("the word rule needs a non-empty lexicon")
        V = tokenizer.vocab_size
        self.text: list[str] = []
        opener = torch.zeros(V, dtype=torch.bool)  # (V,)
        for i in range(V):
            piece = "" if i in tokenizer.special_ids else tokenizer.decode([i])
            if "\ufffd" in piece:  # part of a multi-byte character: never an opener
                piece = ""
            self.text.append(piece)
            if piece and not _alnum(piece[0]) and all(w in self.lexicon for w in words(piece)):
                opener[i] = True
        self.opener = opener
        # per token id, its text as runs of (is letter or digit, characters): broken_spans reads runs
        self._runs = [tuple((alnum, "".join(g)) for alnum, g in groupby(piece, key=_alnum)) for piece in self.text]
        # the one word a token spells, as an index into a table of words (-1: none, or several)
        index: dict[str, int] = {}
        self._words = [words(piece) for piece in self.text]  # per token id, the words its text holds
        self.word_of = torch.tensor([index.setdefault(ws[0], len(index)) if len(ws) == 1 else -1
                                     for ws in self._words], dtype=torch.long)  # (V,)
        # the token ids of each word, grouped: ids_by_word[word_start[w]:word_start[w + 1]] spell word w
        has_word = (self.word_of >= 0).nonzero().flatten()
        order = torch.argsort(self.word_of[has_word], stable=True)
        self.ids_by_word = has_word[order]  # (k,)
        counts = torch.bincount(self.word_of[has_word], minlength=len(index))  # (W,)
        self.word_start = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])  # (W + 1,)
        self.spaced = torch.tensor([piece[:1] == " " for piece in self.text], dtype=torch.bool)  # (V,)
        if EOS < len(self.text):  # ending a fill right after "." glues nothing on: <eos> is allowed there
            self.spaced[EOS] = True
        self.clause_end = torch.tensor([piece[-1:] in CLAUSE_ENDS for piece in self.text], dtype=torch.bool)  # (V,)
        self.stops = torch.tensor([piece[-1:] in SENTENCE_ENDS for piece in self.text], dtype=torch.bool)  # (V,)
        self.line_start = torch.tensor([piece.lstrip(" ")[:1] == "\n" for piece in self.text], dtype=torch.bool)  # (V,)

    def label_ids(self, ids: Iterable[int]) -> list[int]:
        """Tokens that would echo a template's labels: every token (of the whole vocabulary) whose
        one word is a word of the fixed text `ids` (token ids in text order; their joined text is
        read, since a label may be split into pieces) and that is written with a capital letter
        (" Part", "PART", " Name" for "Part name:"). Lower-case forms stay allowed: "part" is
        also a word a report uses."""
        label_words = set(words("".join(self.text[int(i)] for i in ids if 0 <= int(i) < len(self.text))))
        return [i for i, ws in enumerate(self._words)
                if len(ws) == 1 and ws[0] in label_words and any(c.isupper() for c in self.text[i])]

    def label_phrases(self, ids: Iterable[int]) -> list[tuple[str, ...]]:
        """The labels of two words or more in a template's fixed text `ids` (the text of a line
        up to a ":", "Part name:" -> ("part", "name"); a title line counts too). Free text must
        not write them out in full, in any case ("... part name : slide ..." inside a slot)."""
        text = "".join(self.text[int(i)] for i in ids if 0 <= int(i) < len(self.text))
        out: list[tuple[str, ...]] = []
        for line in text.splitlines():
            for part in line.split(":"):
                ws = tuple(words(part))
                if len(ws) >= 2 and ws not in out:
                    out.append(ws)
        return out

    @staticmethod
    def neighbours(tokens: list[int], final: list[bool], p: int) -> tuple[list[int], list[int]]:
        """The final tokens right before and after position p, up to PHRASE_WINDOW each side
        (tokens and final as lists of the L positions)."""
        L = len(tokens)
        a, b = p, p + 1
        while a > 0 and p - a < PHRASE_WINDOW and final[a - 1]:
            a -= 1
        while b < L and b - p <= PHRASE_WINDOW and final[b]:
            b += 1
        return tokens[a:p], tokens[p + 1:b]

    def completes_phrase(self, left: list[int], token: int, right: list[int], phrases: list[tuple[str, ...]]) -> bool:
        """Whether `token`, between the final tokens `left` and `right` (its contiguous final
        neighbours), makes one of `phrases` appear as consecutive words with a word of its own."""
        before = "".join(self.text[t] for t in left)
        mine = self.text[token]
        spans = [(m.start(), m.end(), m.group()) for m in _WORD.finditer((before + mine + "".join(
            self.text[t] for t in right)).lower())]
        lo, hi = len(before), len(before) + len(mine)
        ws = [w for _, _, w in spans]
        for ph in phrases:
            n = len(ph)
            for i in range(len(ws) - n + 1):
                if tuple(ws[i:i + n]) == ph and spans[i][0] < hi and spans[i + n - 1][1] > lo:
                    return True
        return False

    def space_after_held_clause(self, weights: Tensor, tokens: Tensor, held: Tensor, free_idx: Tensor,
                                also: Tensor | None = None) -> None:
        """In place: rows of weights (n, V) for free positions right after a held token that ends a
        clause or a label (": , ; . ! ?") keep only tokens that start with a space, so that
        "Part name:" is followed by " word", never by a glued piece ("Part name:ed"). `also`
        (n, V), if given, loses the same tokens in the same rows (the rows are chosen on weights)."""
        left = free_idx - 1  # (n,)
        ok = left >= 0
        left = left.clamp(min=0)
        rows = (ok & held[left] & self.clause_end[tokens[left]]).nonzero().flatten()
        if rows.numel():
            masked = weights[rows] * self.spaced  # (r, V)
            keep = masked.sum(-1) > 0  # a row with no spaced token left keeps its x̂0
            weights[rows[keep]] = masked[keep]
            if also is not None:
                also[rows[keep]] = also[rows[keep]] * self.spaced

    def broken_spans(self, ids: list[int]) -> list[list[int]]:
        """Token positions of each word of `ids` that is not in the lexicon. An id < 0 is a
        position that is still noise: no word crosses it, and a word that starts right after
        it with a glued piece ("ing" after noise) is broken too, since whatever comes to stand
        before it will join it."""
        spans: list[list[int]] = []
        word, span, blind = "", [], False  # the word being read, its positions, starts after noise

        def close() -> None:
            if word and (blind or word.lower() not in self.lexicon):
                spans.append(list(span))

        prev_noise = False
        for pos, tid in enumerate(ids):
            if tid < 0:
                close()
                word, span, blind, prev_noise = "", [], False, True
                continue
            runs = self._runs[tid] if tid < len(self._runs) else ()
            for i, (alnum, chars) in enumerate(runs):
                if alnum:
                    if not word:
                        blind = prev_noise and i == 0
                    word += chars
                    if not span or span[-1] != pos:
                        span.append(pos)
                else:
                    close()
                    word, span, blind = "", [], False
            prev_noise = False
        close()
        return spans

    def repair(self, tokens: Tensor, held: Tensor, weights: Tensor, free_idx: Tensor, fixable: Tensor | None = None,
               phrases: list[tuple[str, ...]] | None = None) -> Tensor:
        """tokens (L,) with every fixable token of a broken word replaced by its best opener.

        weights (n, V) are x̂0 up to a factor per row, for the positions free_idx (n,).
        fixable (n,) bool picks the rows whose tokens are final now (default: all); the other
        free positions are still noise, so they end a word rather than belong to one. An opener
        that would write out one of `phrases` (a template's labels) gives way to the next best."""
        if fixable is None:
            fixable = torch.ones(free_idx.numel(), dtype=torch.bool)
        row_of = torch.full((tokens.shape[0],), -1, dtype=torch.long)  # (L,)
        row_of[free_idx] = torch.arange(free_idx.numel())
        can_fix = torch.zeros(tokens.shape[0], dtype=torch.bool)  # (L,)
        can_fix[free_idx[fixable]] = True
        noise = torch.zeros(tokens.shape[0], dtype=torch.bool)  # (L,)
        noise[free_idx[~fixable]] = True
        out = tokens
        # An opener may end in a letter and so glue to the token after it: a second pass mends
        # that word too. Openers never glue to the left, so the passes settle quickly.
        for _ in range(_PASSES):
            ids = torch.where(noise, torch.full_like(out, -1), out).tolist()
            spans = self.broken_spans(ids)
            ok = (can_fix & ~held).tolist()
            fix = sorted({p for span in spans for p in span if ok[p]})
            pos = torch.tensor(fix, dtype=torch.long)  # (m,)
            if fix:
                w = weights[row_of[pos]]  # (m, V)
                best = torch.where(self.opener, w, torch.full_like(w, -1.0)).argmax(-1)  # (m,)
                if phrases:
                    best = self._phrase_free(out, ~noise, pos, best, w, phrases)
            if not fix or torch.equal(out[pos], best):
                break
            out = out.clone()
            out[pos] = best
        return out

    def _phrase_free(self, tokens: Tensor, final: Tensor, pos: Tensor, best: Tensor, w: Tensor,
                     phrases: list[tuple[str, ...]]) -> Tensor:
        """best (m,) openers for positions pos (m,), each that writes out a phrase with its final
        neighbours (the other repaired positions at their choices) replaced by the next best."""
        cur, best = tokens.clone(), best.clone()
        cur[pos] = best
        cur_l, final_l = cur.tolist(), final.tolist()
        for j, p in enumerate(pos.tolist()):
            left, right = self.neighbours(cur_l, final_l, p)
            if not self.completes_phrase(left, int(best[j]), right, phrases):
                continue
            ranked = torch.where(self.opener, w[j], torch.full_like(w[j], -1.0)).argsort(descending=True)
            for t in ranked[1:PHRASE_TRIES + 1].tolist():
                if float(w[j, t]) >= 0 and bool(self.opener[t]) and not self.completes_phrase(left, t, right, phrases):
                    best[j] = t
                    break
            cur_l[p] = int(best[j])
        return best


@dataclass(frozen=True)
class LabelRule:
    """What a template's labels keep out of free text (the sampler's avoid_labels): token ids
    never drawn (`WordRule.label_ids`) and word phrases never completed (`label_phrases`)."""

    ids: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (m,)
    phrases: list[tuple[str, ...]] = field(default_factory=list)

    @classmethod
    def of(cls, rule: WordRule | None, labels: Iterable[int] | None) -> LabelRule:
        """The rule for a template's fixed-text ids `labels`; empty without labels or word rule."""
        labels = list(labels or [])
        if rule is None or not labels:
            return cls()
        return cls(torch.tensor(rule.label_ids(labels), dtype=torch.long), rule.label_phrases(labels))
