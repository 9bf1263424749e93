"""A fixed word-level judge of draft text: a Kneser-Ney trigram fitted on the training split.

Glossary
  word      a maximal run of Unicode letters and digits, lower-cased (`words`): "51-72-11" is the
            three words 51, 72, 11; punctuation is not scored
  fill      the words one draft wrote into one place (a template slot, or a free draft after its
            prefix); every measure is over fills, never over a template's fixed text
  OOV       a word that never occurs in the training split
  judge ppl exp(mean negative log-likelihood per word) under the trigram; each fill is scored
            from the start-of-text context (<s> <s>), no end token is scored

The model is interpolated Kneser-Ney (Chen & Goodman 1998) with one absolute discount D = 0.75
per order, continuation counts at the two lower orders, and a uniform floor over the vocabulary
plus <unk> so that an OOV word has a finite, small probability. It is fitted deterministically
from the training split's text: `Judge.version` names the algorithm and the SHA-256 of that text,
so two figures are comparable only when their versions match.

Measures per set of fills (`score`): judge ppl, OOV rate, distinct-2 (distinct word bigrams over
all bigrams, per draft, averaged), repeat rate (share of words equal to one of the three words
before them in the same fill) and unigram entropy (bits, of each draft's words, averaged). The
last three are the diversity checks MDLM and DUO report beside generative perplexity.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.words import words  # the judge's words are the word rule's: lower-cased letter and digit runs

ALGORITHM = "kn3-d0.75-v1"
DISCOUNT = 0.75
BOS, UNK = "<s>", "<unk>"
@dataclass(frozen=True)
class Scores:
    drafts: int
    words: int
    ppl: float
    oov: float
    distinct2: float
    repeat: float
    entropy: float

    def as_dict(self) -> dict[str, float | int]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


class Judge:
    """Interpolated Kneser-Ney trigram over words; see the module docstring."""

    def __init__(self, docs: Iterable[str], source: str = "") -> None:
        h = hashlib.sha256()
        c3: Counter[tuple[str, str, str]] = Counter()
        vocab: Counter[str] = Counter()
        for doc in docs:
            h.update(doc.encode("utf-8", "surrogatepass") + b"\n")
            ws = words(doc)
            vocab.update(ws)
            seq = [BOS, BOS, *ws]
            for i in range(2, len(seq)):
                c3[(seq[i - 2], seq[i - 1], seq[i])] += 1
        if not vocab:
            raise ValueError("the judge needs at least one word of training text")
        self.vocab: frozenset[str] = frozenset(vocab)
        self.version = f"{ALGORITHM}:{h.hexdigest()[:12]}"
        self.source = source
        # trigram level: c(uvw), c(uv.), N1+(uv.)
        self._c3 = c3
        self._c2ctx: Counter[tuple[str, str]] = Counter()
        self._n2ctx: Counter[tuple[str, str]] = Counter()
        # bigram level (continuation counts): N1+(.vw), sum_w N1+(.vw), N1+ distinct w after v
        self._cc2: Counter[tuple[str, str]] = Counter()
        for (u, v, w), n in c3.items():
            self._c2ctx[(u, v)] += n
            self._n2ctx[(u, v)] += 1
            self._cc2[(v, w)] += 1
        self._cc2ctx: Counter[str] = Counter()
        self._n1ctx: Counter[str] = Counter()
        # unigram level: N1+(.w) = distinct v before w
        self._cc1: Counter[str] = Counter()
        for (v, w), n in self._cc2.items():
            self._cc2ctx[v] += n
            self._n1ctx[v] += 1
            self._cc1[w] += 1
        self._cc1_total = sum(self._cc1.values())
        self._uniform = 1.0 / (len(self.vocab) + 1)  # + <unk>

    @classmethod
    def from_split(cls, path: str | Path) -> Judge:
        """Fit on a prepared corpus split (JSONL with a "text" field per line)."""
        path = Path(path)
        with path.open(encoding="utf-8") as f:
            docs = [json.loads(line)["text"] for line in f if line.strip()]
        return cls(docs, source=str(path))

    # -- probabilities ------------------------------------------------------------------------
    def _p1(self, w: str) -> float:
        d = DISCOUNT
        n = self._cc1.get(w, 0)
        backoff = d * len(self._cc1) / self._cc1_total
        return max(n - d, 0.0) / self._cc1_total + backoff * self._uniform

    def _p2(self, v: str, w: str) -> float:
        total = self._cc2ctx.get(v, 0)
        if total == 0:
            return self._p1(w)
        d = DISCOUNT
        return max(self._cc2.get((v, w), 0) - d, 0.0) / total + d * self._n1ctx[v] / total * self._p1(w)

    def prob(self, u: str, v: str, w: str) -> float:
        """P(w | u v); an OOV w is scored as <unk>."""
        if w not in self.vocab:
            w = UNK
        total = self._c2ctx.get((u, v), 0)
        if total == 0:
            return self._p2(v, w)
        d = DISCOUNT
        return max(self._c3.get((u, v, w), 0) - d, 0.0) / total + d * self._n2ctx[(u, v)] / total * self._p2(v, w)

    def nll(self, fill: Sequence[str]) -> float:
        """Negative log-likelihood (nats) of a fill's words from the start context."""
        seq = [BOS, BOS, *fill]
        return -sum(math.log(self.prob(seq[i - 2], seq[i - 1], seq[i])) for i in range(2, len(seq)))

    # -- measures -----------------------------------------------------------------------------
    def score(self, drafts: Sequence[Sequence[str]]) -> Scores:
        """Score drafts, each a list of fill texts. Fills with no words are skipped for ppl."""
        nll = 0.0
        n_words = oov = repeats = 0
        d2: list[float] = []
        ent: list[float] = []
        for draft in drafts:
            fills = [words(f) for f in draft]
            bigrams: list[tuple[str, str]] = []
            counts: Counter[str] = Counter()
            for ws in fills:
                if not ws:
                    continue
                nll += self.nll(ws)
                n_words += len(ws)
                oov += sum(w not in self.vocab for w in ws)
                repeats += sum(ws[i] in ws[max(0, i - 3) : i] for i in range(len(ws)))
                bigrams.extend(zip(ws, ws[1:]))
                counts.update(ws)
            if bigrams:
                d2.append(len(set(bigrams)) / len(bigrams))
            total = sum(counts.values())
            if total:
                ent.append(-sum(c / total * math.log2(c / total) for c in counts.values()))
        if n_words == 0:
            return Scores(len(drafts), 0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        return Scores(len(drafts), n_words, math.exp(nll / n_words), oov / n_words, mean(d2), repeats / n_words, mean(ent))


def cut_like(reference: Sequence[str], sizes: Sequence[int], start: int = 0) -> list[str]:
    """Consecutive windows of `sizes` words from the words of `reference` documents (taken in
    order from document `start`, wrapping), joined by spaces: real text cut to a draft's shape."""
    need = sum(sizes)
    pool: list[str] = []
    i = start
    while len(pool) < need:
        pool.extend(words(reference[i % len(reference)]))
        i += 1
        if i - start > len(reference) and not pool:
            raise ValueError("the reference documents have no words")
    out, at = [], 0
    for n in sizes:
        out.append(" ".join(pool[at : at + n]))
        at += n
    return out

