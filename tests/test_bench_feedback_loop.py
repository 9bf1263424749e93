"""bench.feedback_loop end to end on the tiny model: reviews go through storage, the feedback is
exported and fine-tuned on, and the table has a row per N with the forgetting check's figures."""

from __future__ import annotations

import json

import pytest

from bench.feedback_loop import main
from engine.tiny import SENTENCES


@pytest.mark.slow
def test_the_loop_runs_and_prints_its_table(tiny_model_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = " ".join(SENTENCES).split()
    for split, n in (("train", 20), ("validation", 8), ("test", 4)):
        rows = [" ".join(words[(i * 7) % len(words):][:20]) for i in range(n)]
        (corpus / f"{split}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    out = tmp_path / "out"
    assert main(["--model", str(tiny_model_dir), "--corpus", str(corpus), "--n", "2,3", "--fresh", "2", "--steps", "2",
                 "--length", "24", "--sampler-steps", "4", "--seq-len", "32", "--batch-size", "2", "--term", "the",
                 "--fix", "a", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| N | edits |" in table and "\n| 2 |" in table and "\n| 3 |" in table
    results = json.loads((out / "results.json").read_text())
    assert [r["n"] for r in results] == [2, 3] and all(r["drafts"] == r["n"] for r in results)
    assert all("change" in r["gate"] for r in results)
    assert (out / "n3" / "feedback" / "manifest.json").is_file()
