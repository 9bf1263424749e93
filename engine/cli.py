"""What every command line of the project shares: a parser whose errors are one line, status 2.

Glossary
  argv fault   an argument that is not text: bytes that are not UTF-8 (Python hands them over as
               lone surrogates U+DC80..U+DCFF, "surrogateescape"), another lone surrogate, or a
               NUL. Refused before parsing, naming the option it belongs to.
  one line     an error message with its line breaks, control characters and lone surrogates
               written as escapes, so a hostile value can neither split the message nor fail to print
  out path     a file or folder to write: not empty, no NUL, each part at most NAME_MAX_BYTES and
               the whole at most PATH_MAX_BYTES in UTF-8 (Linux's limits), its folder writable

storage keeps its own copy of the parser and its argv and one-line rules (storage.cli), because it
may not import the engine; tests/test_fuzz_cli.py checks that the two agree.
"""

from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4095


def one_line(text: str) -> str:
    """`text` with every line break, other control character and lone surrogate escaped."""
    return "".join(c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") else c for c in text)


def _fault(value: str) -> str | None:
    for i, c in enumerate(value):
        n = ord(c)
        if 0xDC80 <= n <= 0xDCFF:
            return f"is not UTF-8 text (byte 0x{n - 0xDC00:02x} at character {i + 1})"
        if 0xD800 <= n <= 0xDFFF:
            return f"holds a lone surrogate U+{n:04X} at character {i + 1}, which is not a character"
        if c == "\x00":
            return f"holds a NUL character at character {i + 1}"
    return None


def argv_fault(argv: Sequence[Any]) -> str | None:
    """The first argument that is not text (see the glossary), as 'argument NAME: why'; None if
    every argument is text."""
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            return f"argument {i + 1} is not text"
        why = _fault(arg)
        if why is None:
            continue
        option, eq, value = arg.partition("=")
        if arg.startswith("-") and eq and _fault(option) is None:
            return f"argument {option}: the value {_fault(value)}"
        if arg.startswith("-") and not arg.startswith("-" * len(arg)):
            return f"option {i + 1} (an option name) {why}"
        prev = argv[i - 1] if i else ""
        if isinstance(prev, str) and prev.startswith("-") and "=" not in prev and _fault(prev) is None:
            return f"argument {prev}: the value {why}"
        return f"argument {i + 1} {why}"
    return None


def out_path(value: str) -> Path:
    """argparse type of a file or folder to write (see the glossary); its folder need not exist
    yet when a command creates it, but if it exists it must be a writable folder."""
    if not value or not value.strip():
        raise argparse.ArgumentTypeError("the path is empty: name a file or folder")
    why = _fault(value)
    if why is not None:
        raise argparse.ArgumentTypeError(f"the path {why}")
    raw = value.encode("utf-8")
    if len(raw) > PATH_MAX_BYTES:
        raise argparse.ArgumentTypeError(f"the path is {len(raw):,} bytes long; at most {PATH_MAX_BYTES:,} are allowed")
    longest = max(len(part.encode("utf-8")) for part in value.split("/"))
    if longest > NAME_MAX_BYTES:
        raise argparse.ArgumentTypeError(f"a part of the path is {longest:,} bytes long; at most {NAME_MAX_BYTES} "
                                         "are allowed")
    path = Path(value).expanduser()
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{one_line(str(folder))!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in the folder {one_line(str(folder))!r}")
    return path


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error ("prog: error: ... (see --help)") and exit status 2, which
    refuses an argv fault before parsing."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        fault = argv_fault(argv)
        if fault is not None:
            self.error(fault)
        return super().parse_known_args(argv, namespace)
