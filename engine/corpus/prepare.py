"""A user's documents as a split folder: load, de-duplicate, split at random or by folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.corpus.loaders import load_documents
from engine.corpus.splits import DEFAULT_FRACTIONS, folder_of, split_by_group, split_random, write_splits
from engine.corpus.text import CorpusError, LoadResult, dedupe


def prepare(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    column: str | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_by_folder: bool = False,
) -> tuple[dict, LoadResult]:
    """Load, de-duplicate and split a user's documents into `out_dir`.

    Returns the `splits.json` summary and the load result (for its skipped list). Random split
    with `seed`, or, with `group_by_folder` (folder input only), whole folders per split.
    Raises CorpusError when nothing usable was read.
    """
    path = Path(input_path)
    if group_by_folder and not path.is_dir():
        raise CorpusError("--group-by-folder needs a folder as --input")
    loaded = load_documents(path, column)
    docs = dedupe(loaded.documents)
    if not docs:
        raise CorpusError(f"no documents read from {path} ({len(loaded.skipped)} skipped)")
    extra: dict = {
        "corpus": f"user documents from {path}",
        "split_by": "folder" if group_by_folder else f"random (seed {seed})",
        "fractions": list(fractions),
        "read": len(loaded.documents),
        "skipped": [{"source": s.source, "reason": s.reason} for s in loaded.skipped],
        "duplicates_dropped": len(loaded.documents) - len(docs),
    }
    if group_by_folder:
        splits, assignment = split_by_group(docs, folder_of, fractions)
        summary = write_splits(out_dir, splits, assignment, extra)
    else:
        summary = write_splits(out_dir, split_random(docs, fractions, seed), None, extra)
    return summary, loaded
