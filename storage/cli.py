"""What storage's command lines share: a parser whose errors are one line and exit status 2, and
the one-line report of a StorageError. The rules for the values themselves are storage.validate's,
applied by the storage functions the commands call, so the app gets the same refusals.

The parser's rules (argv faults refused before parsing, one-line messages) are engine.cli's: storage
keeps its own copy because it may not import the engine, and tests/test_fuzz_cli.py checks that the
two agree on hostile arguments.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any, NoReturn


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
    """The first argument that is not text (bytes that are not UTF-8, a lone surrogate, a NUL), as
    'argument NAME: why'; None if every argument is text."""
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


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error ("prog: error: ... (see --help)") and exit status 2, which
    refuses an argument that is not text before parsing."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        fault = argv_fault(argv)
        if fault is not None:
            self.error(fault)
        return super().parse_known_args(argv, namespace)


def fail(message: str, prog: str | None = None) -> int:
    """Print one line 'error: ...' on stderr and return exit status 2."""
    print(f"{prog + ': ' if prog else ''}error: {one_line(message)}", file=sys.stderr)
    return 2
