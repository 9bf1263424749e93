"""engine.feedback and `engine.train --feedback`: feedback folders are checked, rejected drafts are
never positives, an edit example is trained only at the corrected span with its context clean, a
fine-tune records its parent, version and forgetting check, resumes exactly, and the promotion
rule refuses a fine-tune that forgets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from engine import checkpoint
from engine.feedback import FeedbackError, FeedbackMix, edit_example, load_feedback
from engine.promotion import TOLERANCE, refusal
from engine.tiny import SENTENCES, build_tiny, build_tiny_tokenizer
from engine.tokenizer import EOS
from engine.train import main
from engine.words import LEXICON_FILE, load_lexicon


def write_feedback(folder: Path, *, approved=(), edits=(), rejected=(), terms=()) -> Path:
    """A feedback folder as storage.export training writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {"approved.jsonl": approved, "edits.jsonl": edits, "terms.jsonl": terms, "rejected.jsonl": rejected}
    files = {}
    for name, rows in blobs.items():
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        (folder / name).write_bytes(data)
        files[name] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "kind": "training", "files": files}))
    return folder


def _edit(before, new, after, status="approved"):
    return {"document_status": status, "before": before, "new_text": new, "after": after, "old_text": "x"}


def test_load_keeps_only_positives_and_checks_the_files(tmp_path):
    folder = write_feedback(tmp_path / "fb", approved=[{"text": "good text"}, {"text": "bad text"}],
                            rejected=[{"text": "bad text", "reasons": ["wrong"]}],
                            edits=[_edit("a ", "per", " b"), _edit("a ", "per", " b", status="rejected"),
                                   _edit("a ", "", " b"), _edit(None, "per", None)])
    fb = load_feedback(folder)
    assert fb.approved == ["good text"] and fb.edits == [("a ", "per", " b")]
    assert fb.skipped == {"approved equal to a rejected draft": 1, "edits of rejected drafts": 1, "deletions": 1,
                          "edits without context": 1}
    (folder / "edits.jsonl").write_text("")
    with pytest.raises(FeedbackError, match="altered"):
        load_feedback(folder)
    with pytest.raises(FeedbackError, match="no manifest"):
        load_feedback(tmp_path)


def test_an_edit_example_trains_only_the_correction_with_its_context_clean(tmp_path):
    tok = build_tiny_tokenizer()
    before, new, after = "Found corrosion on the panel, repaired ", "per the manual", " and closed."
    ids, start, end = edit_example(tok, before, new, after, 64)
    assert ids[start:end] == tok.encode(new)
    assert tok.decode([i for i in ids if i >= 0]) == before + new + after + tok.decode([EOS])
    fb = load_feedback(write_feedback(tmp_path / "fb", edits=[_edit(before, new, after)]))
    mix = FeedbackMix(fb, tok, 64, share=1.0)
    stream = torch.tensor(tok.encode(" ".join(SENTENCES)), dtype=torch.long)
    x0, clean = mix.batch(stream, 3, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), 0.5)
    for b in range(3):  # every row is the edit example: only the corrected span is left to the loss
        assert x0[b, start:end].tolist() == tok.encode(new)
        assert (~clean[b]).nonzero().flatten().tolist() == list(range(start, end))
    assert edit_example(tok, "a", "x " * 80, "b", 16) is None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for split, texts in (("train", SENTENCES[:8]), ("validation", SENTENCES[8:10]), ("test", SENTENCES[10:])):
        (d / f"{split}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return d


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "tiny"
    build_tiny(folder)
    return folder


def _fine_tune(corpus, base, fb, out, *extra):
    return main(["--data", str(corpus), "--out", str(out), "--init-from", str(base), "--feedback", str(fb),
                 "--seq-len", "32", "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "2", "--log-every", "1",
                 "--version", "fb-1", *extra])


def test_fine_tune_records_lineage_feedback_and_the_forgetting_check(corpus, base, tmp_path, capsys):
    fb = write_feedback(tmp_path / "fb", approved=[{"text": "Replaced the pump per the manual."}],
                        edits=[_edit("Removed the panel ", "per the zorblax", ".")])
    assert _fine_tune(corpus, base, fb, tmp_path / "ft", "--max-steps", "3") == 0
    err = capsys.readouterr().err
    assert "1 approved documents, 1 edit examples" in err and "test-split bound" in err
    parent, ft = checkpoint.load(base), checkpoint.load(tmp_path / "ft" / "model")
    assert (ft.version, ft.parent, ft.name) == ("fb-1", parent.model_id, parent.name)  # a version of its parent
    assert ft.meta["feedback"]["sha256"] == load_feedback(fb).sha256
    gate = ft.meta["test_gate"]
    assert gate["parent"] == parent.model_id and gate["passed"] == (gate["change"] <= TOLERANCE)
    assert "zorblax" in load_lexicon(tmp_path / "ft" / "model" / LEXICON_FILE)  # the feedback's words join it


def test_fine_tune_on_feedback_resumes_exactly(corpus, base, tmp_path):
    fb = write_feedback(tmp_path / "fb", approved=[{"text": "Replaced the pump per the manual."}],
                        edits=[_edit("Removed the panel ", "per the manual", ".")])
    assert _fine_tune(corpus, base, fb, tmp_path / "straight", "--max-steps", "4") == 0
    assert _fine_tune(corpus, base, fb, tmp_path / "split", "--max-steps", "2") == 0
    assert main(["--data", str(corpus), "--out", str(tmp_path / "split"), "--resume", "--feedback", str(fb),
                 "--max-steps", "4"]) == 0
    a, b = (torch.load(tmp_path / r / "train_state.pt", weights_only=True)["model"] for r in ("straight", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = write_feedback(tmp_path / "other", approved=[{"text": "Something else."}])
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(corpus), "--out", str(tmp_path / "split"), "--resume", "--feedback", str(other),
              "--max-steps", "5"])
    assert exc.value.code == 2


def test_feedback_needs_a_model_to_start_from(corpus, tmp_path, capsys):
    fb = write_feedback(tmp_path / "fb", approved=[{"text": "x"}])
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(corpus), "--out", str(tmp_path / "o"), "--feedback", str(fb)])
    assert exc.value.code == 2 and "--init-from" in capsys.readouterr().err


def test_promotion_refuses_a_fine_tune_that_forgets():
    ok = {"test_gate": {"change": 0.01, "tolerance": 0.02, "parent_bits_per_token": 8.0, "bits_per_token": 8.08}}
    bad = {"test_gate": {"change": 0.05, "tolerance": 0.02, "parent_bits_per_token": 8.0, "bits_per_token": 8.4}}
    assert refusal("v2", "m@1", ok) is None
    assert "worsens the test-split bound by 5.0 %" in refusal("v2", "m@1", bad)
    assert "without a test-split check" in refusal("v2", "m@1", {})
    assert refusal("shipped", None, {}) is None
