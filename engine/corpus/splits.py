"""Splits: fractions, random and group splits, and the split folder on disk.

Glossary (engine.corpus)
  split     `train`, `validation` or `test`; written as `<split>.jsonl` plus `splits.json`
  group     documents a split keeps together: an SDR category file, or one folder of files
  fractions the wanted share of documents per split, e.g. (0.8, 0.1, 0.1)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from engine.corpus.text import CorpusError, Document, word_count

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def parse_fractions(raw: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); three non-negative numbers summing to 1, train > 0."""
    parts = raw.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"split {raw!r}: expected three numbers like 0.8,0.1,0.1") from None
    if len(values) != 3 or any(not v >= 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise ValueError(f"split {raw!r}: expected three non-negative numbers summing to 1")
    if values[0] <= 0:
        raise ValueError(f"split {raw!r}: the train share must be above 0")
    return values  # type: ignore[return-value]


def split_random(
    docs: Sequence[Document], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, list[Document]]:
    """Shuffle with `random.Random(seed)`, cut at round(f * n); each split keeps reading order.

    The same documents, fractions and seed always give the same splits.
    """
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_train = round(fractions[0] * len(docs))
    n_val = min(round(fractions[1] * len(docs)), len(docs) - n_train)
    cuts = {"train": order[:n_train], "validation": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {name: [docs[i] for i in sorted(idx)] for name, idx in cuts.items()}


def assign_groups(
    sizes: Mapping[str, int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Group -> split, each group whole in one split, split totals near fractions * total.

    Groups in `fixed` go to the split it names first. The rest are greedy and deterministic:
    largest first (ties by name), each to the split furthest below its target (ties in the
    order train, validation, test). No randomness.
    """
    fixed = {g: s for g, s in (fixed or {}).items() if g in sizes}
    if any(s not in SPLITS for s in fixed.values()):
        raise ValueError(f"fixed splits must be among {SPLITS}")
    total = sum(sizes.values())
    targets = [f * total for f in fractions]
    filled = [0] * len(SPLITS)
    assignment: dict[str, str] = {}
    for group, split in sorted(fixed.items()):
        assignment[group] = split
        filled[SPLITS.index(split)] += sizes[group]
    for group in sorted((g for g in sizes if g not in fixed), key=lambda g: (-sizes[g], g)):
        deficits = [targets[i] - filled[i] for i in range(len(SPLITS))]
        best = max(range(len(SPLITS)), key=lambda i: (deficits[i], -i))
        assignment[group] = SPLITS[best]
        filled[best] += sizes[group]
    return assignment


def split_by_group(
    docs: Sequence[Document],
    group_of: Callable[[Document], str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    fixed: Mapping[str, str] | None = None,
) -> tuple[dict[str, list[Document]], dict[str, str]]:
    """Split so that all documents of a group land in the same split (see assign_groups).

    Returns the splits (each in reading order) and the group -> split assignment.
    """
    sizes: dict[str, int] = {}
    for doc in docs:
        g = group_of(doc)
        sizes[g] = sizes.get(g, 0) + 1
    assignment = assign_groups(sizes, fractions, fixed)
    splits: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for doc in docs:
        splits[assignment[group_of(doc)]].append(doc)
    return splits, assignment


def folder_of(doc: Document) -> str:
    """The folder part of a folder-relative source ('.' for the top level)."""
    parent = doc.source.rpartition("/")[0]
    return parent or "."


def file_of(doc: Document) -> str:
    """The file part of a `file:line` source."""
    return doc.source.rpartition(":")[0] or doc.source


def split_sizes(docs: Sequence[Document]) -> dict[str, int]:
    """documents, words and characters of a list of documents."""
    return {
        "documents": len(docs),
        "words": sum(word_count(d.text) for d in docs),
        "characters": sum(len(d.text) for d in docs),
    }


def write_splits(
    out_dir: str | Path,
    splits: Mapping[str, Sequence[Document]],
    groups: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> dict:
    """Write `<split>.jsonl` ({"text", "source"} per line) and `splits.json`; return the latter.

    `splits.json` holds, per split, documents / words / characters and (when `groups` maps
    group -> split) the sorted groups it holds, plus whatever `extra` adds at the top level.
    Each file is written beside its final name first and then renamed into place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = dict(extra or {})
    summary["splits"] = {}
    for name in SPLITS:
        docs = splits.get(name, [])
        tmp = out / f".{name}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            for d in docs:
                fh.write(json.dumps({"text": d.text, "source": d.source}, ensure_ascii=False) + "\n")
        tmp.replace(out / f"{name}.jsonl")
        entry: dict = split_sizes(docs)
        if groups is not None:
            entry["groups"] = sorted(g for g, s in groups.items() if s == name)
        summary["splits"][name] = entry
    summary["total"] = split_sizes([d for name in SPLITS for d in splits.get(name, [])])
    tmp = out / ".splits.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out / "splits.json")
    return summary


def read_split(folder: str | Path, name: str) -> list[str]:
    """The texts of `<folder>/<name>.jsonl`, in file order. `name` is train, validation or test."""
    if name not in SPLITS:
        raise CorpusError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    path = Path(folder) / f"{name}.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path} not found; run `python -m engine.corpus fetch` or `... prepare` first")
    texts: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    texts.append(json.loads(line)["text"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise CorpusError(f"{path}:{number}: not a {{\"text\", ...}} JSON line") from None
    return texts


def format_table(summary: Mapping) -> str:
    """The sizes table of a `splits.json` summary, one row per split and a total."""
    rows = [(name, summary["splits"][name]) for name in SPLITS] + [("total", summary["total"])]
    lines = [f"{'split':<11}{'documents':>11}{'words':>12}{'characters':>13}{'share':>8}"]
    total_docs = max(1, summary["total"]["documents"])
    for name, s in rows:
        share = f"{100 * s['documents'] / total_docs:.1f}%"
        lines.append(f"{name:<11}{s['documents']:>11,}{s['words']:>12,}{s['characters']:>13,}{share:>8}")
    return "\n".join(lines)
