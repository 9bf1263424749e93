"""Template-shaped training rows: fills that end where their text ends, then <eos> to the slot's end.

A template slot has a fixed number of positions, and a model trained only on windows of running
text fills every one of them: a short answer runs on into the next label's line or stops in
mid-sentence. These rows teach the end of a fill. Each is a made-up template, expanded as the
app expands one (engine.template: a label line pinned, then the slot's positions), with every
slot filled by whole sentences of one training report followed by <eos> up to the slot's end:

    ROOF PANEL CHECK\\n            (a title, sometimes)          clean
    Crack found: {{slot:12}}      "Crack found:"               clean
                                  " cracked skin at sta 540 ." then <eos> x 5   noised, learnt

The labels are a few consecutive words of another report, capitalised, so the model learns the
shape of a template rather than the five shipped ones. A fill whose first sentence does not fit
its slot is the sentence's first tokens, with no <eos>: a long answer still runs to the slot's
end. The sampler's end_of_slot rule (engine.slot_end) keeps <eos> a suffix of a slot.

Glossary (as in engine.train_data)
  row      one training sequence of seq_len tokens, with its clean mask (the pinned labels)
  share    the part of each batch drawn as template-shaped rows (the rest: plain windows)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from engine.clean_mask import random_clean_mask
from engine.config import TrainConfig
from engine.template import expand
from engine.tokenizer import EOS, Tokenizer
from engine.train_data import windows
from engine.words import words

SLOT_MIN, SLOT_MAX = 4, 48  # a fill's budget, tokens
LABEL_WORDS = 3  # at most, per label
SENTENCE_END = " ."


def sentences(text: str) -> list[str]:
    """A report's sentences, each ending with its " ." (the corpus writes "word ." with a space);
    text after the last full stop is a sentence too."""
    parts = [p.strip() for p in text.split(SENTENCE_END)]
    out = [p + SENTENCE_END for p in parts[:-1] if p]
    if parts and parts[-1]:
        out.append(parts[-1])
    return out


class SlotMix:
    """Batches that mix plain windows with template-shaped rows (see the module docstring).

    `batch` draws every random choice from the data generator and the clean masks of the plain
    rows from the noise generator, as the plain loop does, so a run is deterministic and resumes
    exactly. Template-shaped rows are clean on their labels only."""

    def __init__(self, texts: Sequence[str], tok: Tokenizer, seq_len: int, share: float,
                 tight: float = TrainConfig.slot_tight) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"the template-row share must be in (0, 1], got {share}")
        if not 0.0 <= tight <= 1.0:
            raise ValueError(f"the share of tight slots must be in [0, 1], got {tight}")
        self.tok, self.seq_len, self.share, self.tight = tok, seq_len, share, tight
        self.reports = [s for s in (sentences(t) for t in texts) if s]
        if not self.reports:
            raise ValueError("no report with a sentence to fill slots from")
        self.texts: list[str] = []  # words the lexicon must know: none beyond the corpus

    def _label(self, rnd: list[float], title: bool = False) -> str:
        """A label of 1..LABEL_WORDS consecutive words of a report, capitalised (a title: upper case)."""
        report = self.reports[_pick(rnd, len(self.reports))]
        ws = [w for w in words(" ".join(report)) if w.isalpha() and len(w) >= 3]
        if not ws:
            return "Note"
        n = 1 + _pick(rnd, LABEL_WORDS)
        i = _pick(rnd, max(1, len(ws) - n + 1))
        label = " ".join(ws[i:i + n])
        return label.upper() if title else label.capitalize()

    def _fill(self, rnd: list[float]) -> list[int]:
        """A slot's ids: whole sentences of one report from a random sentence on, within a budget
        of SLOT_MIN..SLOT_MAX tokens (a first sentence over it is cut to it: a long answer runs to
        the slot's end), then <eos>. Where the text ends early the slot is mostly sized to it
        (`tight` of the time: up to a third more positions than the text), as a template's author
        sizes slots to the usual answer; otherwise it keeps the whole budget."""
        report = self.reports[_pick(rnd, len(self.reports))]
        i = _pick(rnd, len(report))
        budget = SLOT_MIN + _pick(rnd, SLOT_MAX - SLOT_MIN + 1)
        ids: list[int] = []
        for s in report[i:]:
            more = self.tok.encode(" " + s)
            if len(ids) + len(more) > budget:
                if not ids:  # the first sentence alone is longer: it runs to the slot's end
                    return more[:budget]
                break
            ids += more
        n = budget
        if len(ids) < budget and rnd.pop() < self.tight:
            n = min(budget, len(ids) + _pick(rnd, max(2, len(ids) // 3) + 1))
        return ids + [EOS] * (n - len(ids))

    def row(self, rnd: list[float]) -> tuple[Tensor, Tensor]:
        """(ids (L,), clean (L,) bool) of one template-shaped row from the uniforms `rnd`."""
        L = self.seq_len
        ids: list[int] = []
        clean: list[bool] = []
        lines = [self._label(rnd, title=True)] if _pick(rnd, 2) else []
        while len(ids) < L:
            text = "\n".join([*lines, self._label(rnd) + ": {{slot:1}}"])
            lines = []
            layout = expand(("\n" if ids else "") + text, self.tok)
            fixed = [layout.pins[p] for p in range(layout.slots[0].start)]
            fill = self._fill(rnd)
            ids += fixed + fill
            clean += [True] * len(fixed) + [False] * len(fill)
        row, mask = torch.tensor(ids[:L]), torch.tensor(clean[:L])
        if bool(mask.all()):  # at least one position is learnt
            mask[-1] = False
        return row, mask

    def batch(self, stream: Tensor, batch: int, data_gen: torch.Generator, noise_gen: torch.Generator,
              clean_prob: float) -> tuple[Tensor, Tensor]:
        """(x0 (B, L), clean (B, L) bool): plain windows with random clean spans, except the rows
        drawn as template-shaped ones."""
        L = self.seq_len
        x0 = windows(stream, L, batch, data_gen)  # (B, L)
        clean = random_clean_mask(batch, L, noise_gen, p=clean_prob)  # (B, L)
        pick = torch.rand(batch, generator=data_gen) < self.share  # (B,)
        for b in range(batch):
            if pick[b]:
                rnd = torch.rand(4 * L, generator=data_gen, dtype=torch.float64).tolist()
                x0[b], clean[b] = self.row(rnd)
        return x0, clean


def _pick(rnd: list[float], n: int) -> int:
    """A uniform integer in 0..n-1 from the next uniform of `rnd` (consumed)."""
    return min(int(rnd.pop() * n), n - 1)
