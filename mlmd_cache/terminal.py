"""What both CLIs print, made safe for a terminal.

Every human-readable line that both CLIs print goes through :func:`printable` (:func:`echo` prints
one line through it): stored and user text (run, task and pipeline names, URIs, property values,
reasons, error messages that quote input) may hold terminal escapes, carriage returns and newlines,
which are shown escaped (``\\x1b``, ``\\r``, ``\\n``) instead of acting on the terminal.
``--json`` and the other machine formats are written exactly (JSON escapes them itself).

>>> printable("a\\x1b[31mred\\r\\nb\\x7f\\x9b\\u2028\\u202e é 😀 \\\\ ")
'a\\\\x1b[31mred\\\\r\\\\nb\\\\x7f\\\\x9b\\\\u2028\\\\u202e é 😀 \\\\ '
"""
from __future__ import annotations

import re
import sys
import warnings
from typing import Optional, TextIO

import click

from ._messages import take_mlmd_log

__all__ = ["printable", "echo", "escape_warnings", "show_mlmd_log"]

# What a terminal acts on instead of showing: C0 controls (ESC, CR, LF, TAB, BS, ...), DEL and the C1
# controls (U+0080-U+009F: U+009B is CSI, an escape sequence by itself on some terminals), the
# Unicode line and paragraph separators, and the bidirectional overrides and isolates, which
# reorder the text shown after them ("Trojan Source"); and U+FFFE and U+FFFF, which are no text (XML
# cannot hold them: lineage drawings escape with this too). Other format characters (the joiners of
# emoji sequences) are text.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufffe\uffff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: "re.Match[str]") -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def show_mlmd_log() -> None:
    """What MLMD's C++ core logged during the command (:mod:`mlmd_cache._messages` keeps it), on
    stderr under a heading, escaped like any stored text (its SQL quotes names): for a command that failed."""
    lines = take_mlmd_log()
    if lines:
        echo(f"MLMD's C++ core logged ({len(lines)} lines):", err=True)
        for line in lines:
            echo(f"  {line.rstrip(chr(10))}", err=True)


def printable(text: object) -> str:
    """``text`` safe to print on a terminal: control characters escaped as Python writes them
    (``\\x1b``, ``\\r``, ``\\n``, ``\\u2028``), everything else as it is. A backslash is kept as it
    is: names are shown as people wrote them, and ``--json`` tells the two apart exactly."""
    return _UNPRINTABLE.sub(_escaped, str(text))


def echo(line: object = "", err: bool = False) -> None:
    """Print one human-readable line (:func:`printable`: a newline in it is shown escaped)."""
    click.echo(printable(line), err=err)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Optional[TextIO] = None, line: Optional[str] = None) -> None:
    stream = file if file is not None else sys.stderr
    if stream is None:
        return
    try:
        stream.write(warnings.formatwarning(printable(message), category, filename, lineno, line))
    except OSError:
        pass


def escape_warnings() -> None:
    """Python's warnings printed with their message escaped (:func:`printable`): the KFP SDK's quote
    stored text (an importer's URI). Called by the CLIs' commands, not on import."""
    warnings.showwarning = _show_warning


