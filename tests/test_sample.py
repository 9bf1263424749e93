"""`python -m engine.sample`: final text, per-step JSON lines, templates, pins, bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import checkpoint
from engine.sample import main
from engine.tiny import build_tiny

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "assets" / "templates" / "maintenance_log_entry.txt"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "tiny"
    build_tiny(out)
    return out


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_prints_text_deterministic_for_a_seed(model_dir: Path, capsys) -> None:
    args = ("--model", str(model_dir), "--length", "20", "--steps", "4", "--seed", "7")
    rc1, out1, _ = _run(capsys, *args)
    rc2, out2, _ = _run(capsys, *args)
    rc3, out3, _ = _run(capsys, *args[:-1], "8")
    assert rc1 == rc2 == rc3 == 0
    assert out1 == out2 and out1.strip()
    assert out1 != out3


def test_jsonl_one_object_per_step_and_pins_hold(model_dir: Path, capsys) -> None:
    tok = checkpoint.load(model_dir).tokenizer
    rc, out, _ = _run(capsys, "--model", str(model_dir), "--length", "24", "--steps", "5", "--pin", "3=hydraulic pump", "--jsonl")
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["step"] for r in rows] == list(range(len(rows))) and rows[-1]["step"] == 5
    pin_ids = tok.encode("hydraulic pump")
    want = list(range(3, 3 + len(pin_ids)))
    for r in rows:
        assert set(r) == {"step", "t", "tokens", "text", "pinned"}
        assert len(r["tokens"]) == 24
        assert r["pinned"] == want
        assert r["tokens"][3 : 3 + len(pin_ids)] == pin_ids
        assert r["text"] == tok.decode(r["tokens"])
    ts = [r["t"] for r in rows]
    assert ts == sorted(ts, reverse=True) and ts[0] == 1.0


def test_template_fixed_text_survives(model_dir: Path, capsys) -> None:
    rc, out, _ = _run(capsys, "--model", str(model_dir), "--template", str(TEMPLATE), "--steps", "3")
    assert rc == 0
    for heading in ("MAINTENANCE LOG ENTRY", "Equipment:", "Work performed:", "Parts used:", "Next due:"):
        assert heading in out


def test_prefix_is_kept(model_dir: Path, capsys) -> None:
    rc, out, _ = _run(capsys, "--model", str(model_dir), "--length", "16", "--steps", "2", "--prefix", "Crew reported")
    assert rc == 0 and out.startswith("Crew reported")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--length", "10", "--pin", "9=hydraulic pump"), "positions 0..9"),
        (("--length", "10", "--pin=-1=x"), "positions 0..9"),
        (("--length", "30", "--pin", "2=hydraulic pump", "--pin", "3=leak"), "overlaps"),
        (("--length", "10", "--steps", "0"), "--steps"),
        (("--length", "0",), "--length"),
        (("--length", "10", "--pin", "nonsense"), "POS=TEXT"),
        (("--length", "10", "--temperature", "0"), "--temperature"),
        (("--template", str(TEMPLATE), "--pin", "0=x"), "overlaps the template"),
        (("--length", "2", "--prefix", "a long prefix that does not fit"), "longer than"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(model_dir: Path, capsys, extra: tuple[str, ...], message: str) -> None:
    rc, out, err = _run(capsys, "--model", str(model_dir), *extra)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_bad_template_file(model_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "t.txt"
    bad.write_text("HEADING only")
    rc, _, err = _run(capsys, "--model", str(model_dir), "--template", str(bad))
    assert rc == 2 and "no {{slot:N}}" in err
    rc, _, err = _run(capsys, "--model", str(model_dir), "--template", str(tmp_path / "missing.txt"))
    assert rc == 2 and "cannot read template" in err


def test_unknown_model_folder_exits_2_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.sample", "--model", str(tmp_path / "nope"), "--length", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"python -m engine.sample: error: model folder not found: {tmp_path / 'nope'}"]


def test_sampler_spec_changes_the_models_defaults_and_bad_ones_exit_2(model_dir: Path, capsys) -> None:
    base = ("--model", str(model_dir), "--length", "16", "--steps", "4", "--jsonl")
    rc, out, _ = _run(capsys, *base, "--sampler", "commit=1")
    assert rc == 0
    steps = [json.loads(line) for line in out.splitlines()]
    plain_rc, plain, _ = _run(capsys, *base)
    assert plain_rc == 0 and plain != out, "commitment changes the run"
    # committed tokens are final: a token that survives to the end never changes after commit;
    # with 16 free positions and 4 steps, at least 4 are final after step 1
    final = steps[-1]["tokens"]
    assert sum(a == b for a, b in zip(steps[1]["tokens"], final)) >= 4
    for spec, message in [("bogus=1", "bad sampler setting"), ("no_repeat=2", "lexicon"), ("avoid_labels=1", "lexicon"), ("temperature_end=-1", "temperature_end must be")]:
        rc, _, err = _run(capsys, *base, "--sampler", spec)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (spec, err)


def test_without_model_drafts_with_the_shipped_one(capsys) -> None:
    """`--model` may be left out, as the model card's and docs/samples.md's commands do."""
    args = ("--length", "12", "--steps", "2", "--seed", "3", "--jsonl")
    rc, default_out, err = _run(capsys, *args)
    assert rc == 0, err
    rc, shipped_out, err = _run(capsys, "--model", str(ROOT / "assets" / "model"), *args)
    assert rc == 0, err
    assert default_out == shipped_out
    assert json.loads(default_out.splitlines()[-1])["text"].strip()


def test_a_free_length_draft_takes_the_models_free_steps(model_dir: Path, tmp_path: Path, capsys) -> None:
    """Without --steps a draft runs the model's default for its kind (engine.config.for_kind):
    free_steps for a free-length draft, steps for a template; --steps is one count for both."""
    import shutil

    from engine.config import SamplerConfig

    m = tmp_path / "kinds"
    shutil.copytree(model_dir, m)
    checkpoint.amend(m, sampler_cfg=SamplerConfig(steps=3, free_steps=5))

    def last_step(*argv: str) -> int:
        rc, out, err = _run(capsys, "--model", str(m), "--jsonl", *argv)
        assert rc == 0, err
        return json.loads(out.splitlines()[-1])["step"]

    assert last_step("--length", "12") == 5
    assert last_step("--length", "12", "--prefix", "Crew reported") == 5
    assert last_step("--template", str(TEMPLATE)) == 3
    assert last_step("--length", "12", "--steps", "4") == 4
    assert last_step("--template", str(TEMPLATE), "--steps", "4") == 4
    assert last_step("--length", "12", "--sampler", "steps=2") == 2  # steps alone set both kinds
