"""Property-based fuzz of every command line: hostile values (lone surrogates, bytes that are not
UTF-8 decoded as Python decodes argv, NUL, control and invisible characters, huge numbers and
over-long paths) for each option, through the command's own main(argv) in this process. Every run
must end with status 0, or status 2 and exactly one line on stderr, never a traceback. A few real
subprocess runs with raw bytes in argv prove the same at the real entry points.

Examples are derandomized (the same inputs on every run) and few per command: run
`pytest tests/test_fuzz_cli.py` to repeat them; docs/reliability/input.md has the counts.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import storage_fixtures as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import cli as engine_cli
from storage import cli as storage_cli

ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=20, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# values a person, a script or an attacker might pass; each is also mixed into generated text
HOSTILE = [
    "", " ", "   ", "\t", "\u200b", "\u200b\u200b", "\u202e", "\ufeff", "\x00", "a\x00b", "\x01\x1b[31m", "\n",
    "a\nb", "\r\n", "\u2028", "\udcff", "\udc80abc", "\ud800", "x\udfff", "-1", "0", "-0", "1e9", "nan", "inf",
    "99999999999999999999999", "-99999999999999999999999", "²", "١٢", "0x10", "--", "-", "=", "1=", "=x",
    "a" * 300, "a" * 5000, "/" * 10, "../" * 40, "/dev/null", "/proc/self/mem", "/", ".", "..", "~", "%s%n",
    "'; DROP TABLE users; --", "=1+1", "\\", "é" * 200, "\U0001f600" * 100,
]


def surrogate_escaped(data: bytes) -> str:
    """A byte string as Python hands it to a program in sys.argv."""
    return data.decode("utf-8", "surrogateescape")


TEXT = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=40),
    st.binary(max_size=24).map(surrogate_escaped),
    st.tuples(st.text(max_size=8), st.integers(0xD800, 0xDFFF)).map(lambda t: t[0] + chr(t[1])),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.tuples(st.sampled_from(HOSTILE), st.sampled_from(HOSTILE)).map("".join),
)


def confine(value: str) -> str:
    """A path value kept inside the working folder (no leading / or ~, no ..), for options whose
    path a command creates or writes: the fuzz must not write into the machine's own folders."""
    return "./" + value.replace("..", "__").lstrip("/~") if value.startswith(("/", "~")) or ".." in value else value


def call(main: Callable[..., int | None], argv: Sequence[str], **kw) -> tuple[int, str, str]:
    """(status, stdout, stderr) of main(argv), whether it returns or exits."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv), **kw)
        except SystemExit as exc:
            code = exc.code
    return (0 if code is None else code), out.getvalue(), err.getvalue()


def assert_clean(argv: Sequence[str], code: object, err: str, ok: frozenset[int] = frozenset({0, 2})) -> None:
    assert code in ok, f"{argv!r} -> status {code!r}: {err}"
    assert "Traceback" not in err, f"{argv!r}: {err}"
    if code != 0:
        lines = err.strip("\n").split("\n")
        assert len(lines) == 1 and lines[0].strip(), f"{argv!r} gave {len(lines)} lines on stderr: {err!r}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder of its own, so that whatever a command writes (relative paths) lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFDRAFT_PASSWORD", sf.PASSWORD)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DIFFDRAFT_ACTOR", raising=False)
    return tmp_path


@pytest.fixture
def seeded_url(sqlite_url, cheap_argon2):
    from storage.db import make_engine, make_session_factory

    engine = make_engine(sqlite_url)
    sf.seed_users(make_session_factory(engine))
    engine.dispose()
    return sqlite_url


# ---------------------------------------------------------------- the argv rules, in both copies


@FUZZ
@given(st.lists(TEXT, max_size=6))
def test_engine_and_storage_parsers_agree_on_argv(argv):
    assert engine_cli.argv_fault(argv) == storage_cli.argv_fault(argv)
    for a in argv:
        line = engine_cli.one_line(a)
        assert line == storage_cli.one_line(a)
        assert "\n" not in line and "\r" not in line and "\x00" not in line
        line.encode("utf-8")  # prints without an encoding error


@FUZZ
@given(TEXT)
def test_a_fault_names_the_option_it_belongs_to(value):
    fault = engine_cli.argv_fault(["--reason", value])
    bad = any(0xD800 <= ord(c) <= 0xDFFF or c == "\x00" for c in value)
    assert (fault is not None) == bad
    if bad:
        assert fault.startswith("argument --reason: the value ")


# ---------------------------------------------------------------- storage's command lines


@pytest.mark.parametrize("command", ["add", "set-role", "disable", "enable", "passwd"])
def test_storage_users(command, workdir, seeded_url):
    from storage.users import main

    base = {"add": ["add", "newbie", "--role", "operator", "--reason", "new hire"],
            "set-role": ["set-role", "olga", "reviewer", "--reason", "trained"],
            "disable": ["disable", "bob", "--reason", "left"], "enable": ["enable", "bob", "--reason", "back"],
            "passwd": ["passwd", "bob"]}[command]
    options = ["--reason", "--actor", "--role", "--password-env", "--data-dir", "name"]

    @FUZZ
    @given(st.sampled_from(options), TEXT)
    def run(option, value):
        argv = [*base, "--db-url", seeded_url]
        if option == "name":
            argv[1] = value
        else:
            argv += [option, confine(value) if option == "--data-dir" else value]
        code, _, err = call(main, argv, prompt=lambda _: sf.PASSWORD)
        assert_clean(argv, code, err)

    run()


def test_storage_export(workdir, seeded_url):
    from storage.export import main

    options = ["--out", "--user", "--role", "--action", "--document", "--template", "--since", "--until", "--format",
               "--actor"]

    @FUZZ
    @given(st.lists(st.tuples(st.sampled_from(options), TEXT), min_size=1, max_size=3))
    def run(pairs):
        argv = ["--db-url", seeded_url, "--actor", "maya", "--out", str(workdir / "trail.csv")]
        for option, value in pairs:
            argv += [option, confine(value) if option == "--out" else value]
        code, _, err = call(main, argv)
        assert_clean(argv, code, err)
        assert not [n for n in os.listdir(workdir) if n.endswith(".tmp")]  # no temporary file left behind

    run()


def test_export_of_no_document_is_refused_and_writes_nothing(workdir, seeded_url):
    from storage.export import main

    for bad in ("-1", "0", str(2**63)):
        out = workdir / f"doc{bad}.csv"
        code, _, err = call(main, ["--db-url", seeded_url, "--actor", "maya", "--out", str(out), "--document", bad])
        assert code == 2 and "document id must be between 1 and" in err and not out.exists()
    for out, words in (("", "empty"), ("a" * 300 + ".csv", "at most 255"), (str(workdir / "no" / "x.csv"),
                                                                               "does not exist"), (".", "folder")):
        code, _, err = call(main, ["--db-url", seeded_url, "--actor", "maya", "--out", out])
        assert code == 2 and words in err, err
    for user in ("  ", "\u200b", "\x01"):
        code, _, err = call(main, ["--db-url", seeded_url, "--actor", "maya", "--out", "t.csv", "--user", user])
        assert code == 2 and "user name" in err and not (workdir / "t.csv").exists()


def test_storage_migrate_current_and_verify(workdir, seeded_url):
    from storage.__main__ import main as storage_main
    from storage.audit import main as audit_main

    @FUZZ
    @given(st.sampled_from(["migrate", "current", "verify"]), st.sampled_from(["--db-url", "--data-dir",
                                                                               "--revision"]), TEXT)
    def run(command, option, value):
        if option == "--revision" and command != "migrate":
            option = "--data-dir"
        argv = [command, option, confine(value) if option == "--data-dir" else value]
        code, _, err = call(audit_main if command == "verify" else storage_main, argv)
        assert_clean(argv, code, err)

    run()


# ---------------------------------------------------------------- the engine's and the app's


def test_engine_sample(workdir, tiny_model_dir):
    from engine.sample import main

    options = ["--pin", "--prefix", "--length", "--steps", "--seed", "--temperature", "--top-p", "--sampler",
               "--template", "--model"]

    @FUZZ
    @given(st.sampled_from(options), TEXT)
    def run(option, value):
        argv = ["--model", str(tiny_model_dir), "--steps", "1", "--length", "8", option, value]
        code, _, err = call(main, argv)
        assert_clean(argv, code, err)

    run()


def test_engine_train_evaluate_checkpoint_corpus(workdir):
    from engine.checkpoint import main as checkpoint_main
    from engine.corpus.__main__ import main as corpus_main
    from engine.evaluate import main as evaluate_main
    from engine.train import main as train_main

    missing = str(workdir / "missing")
    # each starts from arguments that fail early (no data, no model), so no run trains or writes
    commands = {
        "train": (train_main, ["--data", missing, "--out", "run"],
                  ["--out", "--config", "--name", "--device", "--tokenizer", "--init-from", "--seq-len", "--lr",
                   "--max-minutes", "--column"]),
        "evaluate": (evaluate_main, ["--model", missing, "--data", missing],
                     ["--model", "--data", "--split", "--column", "--seq-len", "--steps", "--mc", "--seed"]),
        "checkpoint": (checkpoint_main, ["amend", "--model", missing], ["--model", "--sampler", "--lexicon-from"]),
        "corpus": (corpus_main, ["prepare", "--input", missing, "--out", "corpus"],
                   ["--input", "--out", "--column", "--split", "--seed"]),
    }

    @FUZZ
    @given(st.sampled_from(sorted(commands)), st.data())
    def run(name, data):
        main, base, options = commands[name]
        option, value = data.draw(st.sampled_from(options)), data.draw(TEXT)
        argv = [*base, option, confine(value) if option in ("--out", "--input") else value]
        code, _, err = call(main, argv)
        # engine.corpus answers a corpus it cannot read with status 1 and one line, as documented
        assert_clean(argv, code, err, frozenset({1, 2}) if name == "corpus" else frozenset({2}))

    run()


def test_engine_tiny_and_app_refuse_bad_paths_and_ports(workdir):
    from app.__main__ import main as app_main
    from engine.tiny import main as tiny_main

    for argv in (["--out", ""], ["--out", "a" * 300], ["--out", "x\udcff"], ["--out", "/proc/nope/x"],
                 ["--seed", "nan"]):
        code, _, err = call(tiny_main, argv)
        assert_clean(argv, code, err, frozenset({2}))
    missing = str(workdir / "no-model")

    # --data-dir only from a fixed list: the app makes the folder and narrows its mode
    for value in ("", " ", "a" * 300, "x\udcff", "x\x00", str(workdir / "file")):
        (workdir / "file").write_text("not a folder")
        argv = ["--model", missing, "--data-dir", value]
        code, _, err = call(app_main, argv)
        assert_clean(argv, code, err, frozenset({2}))

    @FUZZ
    @given(st.sampled_from(["--port", "--threads", "--step-delay", "--host", "--db-url"]), TEXT)
    def run(option, value):
        argv = ["--model", missing, "--data-dir", "data", option, value]  # no model: it stops before serving
        code, _, err = call(app_main, argv)
        assert_clean(argv, code, err, frozenset({2}))

    run()


# ---------------------------------------------------------------- the real entry points, raw bytes


@pytest.mark.parametrize("argv", [
    [b"storage.users", b"add", b"kim", b"--role", b"operator", b"--reason", b"\xff\xfe bad"],
    [b"storage.export", b"--actor", b"maya", b"--out", b"x\xff.csv", b"--user", b"\xc3("],
    [b"storage.export", b"--actor", b"maya", b"--out", b"t.csv", b"--action", b"\x80"],
    [b"engine.sample", b"--model", b"assets/tiny", b"--pin", b"3=\xff", b"--prefix", b"\xfe"],
    [b"storage.audit", b"verify", b"--data-dir", b"\xed\xa0\x80"],
])
def test_raw_bytes_in_argv_exit_2_with_one_line(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIFFDRAFT_DATA_DIR": str(tmp_path), "DIFFDRAFT_PASSWORD": "x" * 16}
    env.pop("DATABASE_URL", None)
    run = subprocess.run([os.fsencode(sys.executable), b"-m", *argv], cwd=tmp_path, env=env, capture_output=True,
                         timeout=120)
    err = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "not UTF-8" in err
