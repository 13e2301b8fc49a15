"""Artifact and execution IDs as users write them, in both command lines.

MLMD numbers artifacts and executions separately, so ``6`` may name both. ``a:6`` and ``#6`` (how
``mlmd-lineage`` and ``lookup`` print artifacts) name the artifact, ``e:6`` the execution
(``artifact:6`` and ``execution:6`` too); a plain ``6`` leaves the kind to the command. An
option that takes one kind only refuses the other's prefix.

>>> parse_id("#6"), parse_id("e:6"), parse_id("6")
(RecordId(id=6, kind='artifact'), RecordId(id=6, kind='execution'), RecordId(id=6, kind=None))
>>> parse_id("6", only=ARTIFACT).node
'a:6'
>>> parse_id("e:6", only=ARTIFACT, label="--artifact")
Traceback (most recent call last):
...
mlmd_cache.errors.InvalidArgumentError: --artifact e:6 is an execution ID: expected an artifact ID (6, a:6 or #6)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ..errors import InvalidArgumentError

__all__ = ["ARTIFACT", "EXECUTION", "RecordId", "parse_id", "looks_like_id"]

ARTIFACT, EXECUTION = "artifact", "execution"
# MLMD's IDs are int64 and start at 1: a larger number names no record, and protobuf refuses it.
MAX_ID = 2**63 - 1

_PREFIXES = {"a:": ARTIFACT, "artifact:": ARTIFACT, "#": ARTIFACT, "e:": EXECUTION, "execution:": EXECUTION, "": None}
_FORM = re.compile(r"(a:|artifact:|#|e:|execution:|)([0-9]+)", re.IGNORECASE)
_SHORT = {ARTIFACT: "a", EXECUTION: "e"}


@dataclass(frozen=True)
class RecordId:
    """An MLMD ID with its kind (``artifact``, ``execution``, or None for a plain number)."""

    id: int
    kind: Optional[str]

    @property
    def node(self) -> str:
        """The lineage graph's node key, ``a:ID`` or ``e:ID`` (the kind must be known)."""
        if self.kind is None:
            raise ValueError(f"{self.id}: a plain number names no kind of record")
        return f"{_SHORT[self.kind]}:{self.id}"

    def of(self, kind: str) -> "RecordId":
        return RecordId(self.id, kind)


def forms(kind: Optional[str], number: object = "N") -> str:
    """How an ID of ``kind`` may be written: ``6, a:6 or #6``."""
    if kind == ARTIFACT:
        return f"{number}, a:{number} or #{number}"
    if kind == EXECUTION:
        return f"{number} or e:{number}"
    return f"{number}, a:{number}, #{number} or e:{number}"


def looks_like_id(text: str) -> bool:
    """Whether ``text`` is written as an ID (``6``, ``a:6``, ``#6``, ``e:6``), not e.g. a URI."""
    return _FORM.fullmatch(str(text).strip()) is not None


def parse_id(text: object, *, only: Optional[str] = None, label: Optional[str] = None) -> RecordId:
    """``a:6``, ``#6``, ``e:6`` or ``6`` as a :class:`RecordId`. With ``only``, the ID must be of that
    kind (a plain number is taken as one); ``label`` (an option's name) starts the error message.
    Anything else is an :class:`InvalidArgumentError` (exit 2)."""
    shown = str(text).strip()
    match = _FORM.fullmatch(shown)
    if match is None:
        shown = repr(shown)  # whatever it holds (a newline, ...) stays on one line
    where = (label + ("" if label.endswith("=") else " ") + shown) if label else shown
    if match is None:
        raise InvalidArgumentError(f"{where}: not an MLMD ID (expected {forms(only, 6)})")
    kind, number = _PREFIXES[match[1].lower()], int(match[2])
    if only is not None and kind not in (None, only):
        raise InvalidArgumentError(f"{where} is an {kind} ID: expected an {only} ID ({forms(only, number)})")
    if not 0 < number <= MAX_ID:
        raise InvalidArgumentError(f"{where}: an MLMD ID is a positive integer, at most {MAX_ID}")
    return RecordId(number, only if kind is None else kind)
