"""The one check of every JSON value a user gives (run parameters, cache key files, pipeline
constants, library arguments): only values that KFP and MLMD can hold exactly get through.

KFP keeps a parameter value as a ``google.protobuf.Value``, where every number is a float64, and
MLMD stores it inside an execution's ``inputs`` struct. So, before anything is written:

* ``NaN``, ``Infinity`` and ``-Infinity`` are refused: JSON has no such numbers, and protojson
  (KFP's Go and Python's protobuf alike) refuses to write them. Python's ``json`` would accept them.
* A number whose literal overflows a float64 (``1e400``) is refused, not turned into infinity, and
  so is one that underflows it (``1e-400``), not turned into 0: its fingerprint would be 0's.
* An integer that a float64 would change is refused, not rounded: every integer up to 2**53 in
  magnitude passes, a larger one only if it is exactly a float64 or is the shortest decimal form of
  one, as Go writes them (``2**60`` and ``1152921504606847000`` pass, ``2**53 + 1`` and ``10**400`` do
  not). Rounding would run a task on a number the user did not give: pass such a value as a string.
  A cache key KFP made is the exception (``kfp_numbers=True``, :meth:`CacheKey.from_json`): KFP's
  Go code (protojson, then ``encoding/json`` into ``interface{}``) reads every JSON number as the
  nearest float64, so such an integer is read as that float64 and hashed as KFP hashes it
  (``12345678901234567890`` as ``12345678901234567000``); only a number beyond a float64's range is
  refused there.
* ``-0`` keeps its sign: it is parsed as the float ``-0.0``, as Go's protojson parses it (KFP's
  fingerprint then holds ``-0``), not as the integer 0.
* Strings must be Unicode text: a lone surrogate (``"\\ud800"``, or undecodable bytes of a command
  line) is refused, as protobuf refuses to encode it; file contents must be UTF-8.
* Lists and objects nest at most :data:`MAX_DEPTH` levels: MLMD's protobuf parser stops at 100
  message levels, which a value 30 levels deep reaches inside the stored cache key.
  (Python's own parser would raise ``RecursionError`` near 1,000 levels.)

>>> parse('{"x": [-0, 1.5, 7]}')
{'x': [-0.0, 1.5, 7]}
>>> check({"l": [float("nan")]}, "parameter 'p'")
Traceback (most recent call last):
...
mlmd_cache.errors.InvalidArgumentError: parameter 'p', at l[0]: NaN is not a valid parameter value (JSON has no NaN; KFP refuses it)
"""
from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any, Optional, Union

from ..errors import InvalidArgumentError, MlmdCacheError

__all__ = ["MAX_DEPTH", "JSONValueError", "parse", "parse_number", "validate", "loads", "check", "message",
           "to_kfp_numbers"]

# Measured on ml-metadata 1.17.1: 29 nested objects is the deepest parameter value whose execution
# (its stored cache key: cacheKey.inputParameterValues.NAME.<value>) protobuf still parses. Lower, so
# that what the runner wraps around a value (dsl.Collected lists of nested loops) fits too.
MAX_DEPTH = 25

_EXACT_INTEGERS = 2 ** 53
_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Numbers as JSON and Go's strconv (KFP's backend) write them: ASCII digits only ([0-9], not \d,
# which is any Unicode digit), no underscores, no spaces; an optional sign, fraction and exponent.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NONZERO_DIGIT = re.compile(r"[1-9]")


class JSONValueError(ValueError):
    """Why a text or a value is not a JSON value KFP can hold (``syntax``: the text is not JSON at all)."""

    def __init__(self, problem: str, path: str = "", syntax: bool = False) -> None:
        super().__init__(f"at {path}: {problem}" if path else problem)
        self.problem, self.path, self.syntax = problem, path, syntax


class _Bad:
    """What the parser found in place of a number (NaN, 1e400, ...): reported with its path by :func:`validate`."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}...{text[-4:]} ({len(text)} characters)"


def _constant(name: str) -> _Bad:
    return _Bad(f"{name} is not a valid parameter value (JSON has no {name.lstrip('-')}; KFP refuses it)")


def _float(text: str) -> Union[float, _Bad]:
    number = float(text)
    if math.isinf(number):
        return _Bad(f"{_short(text)} is beyond the range of a float64, in which KFP keeps every number")
    if number == 0 and _NONZERO_DIGIT.search(re.split("[eE]", text)[0]):
        return _Bad(f"{_short(text)} is too small for a float64, in which KFP keeps every number (it would be "
                    "read as 0)")
    return number


def _integer_problem(number: int, text: Optional[str] = None) -> Optional[str]:
    if -_EXACT_INTEGERS <= number <= _EXACT_INTEGERS:
        return None
    try:
        nearest = float(number)
    except OverflowError:
        return f"{_short(text or str(number))} is beyond the range of a float64, in which KFP keeps every number"
    # Exact, or the shortest digits of its float64, which is how Go writes one: 2**60 as 1152921504606847000.
    if nearest == number or int(Decimal(repr(nearest))) == number:
        return None
    return (f"{_short(text or str(number))} is an integer a float64 cannot hold exactly (KFP keeps every number "
            f"as a float64, which would make it {int(nearest)}): pass it as a string")


def _int(text: str) -> Union[int, float, _Bad]:
    if text == "-0":
        return -0.0  # Go's protojson keeps the sign of -0 (a float64), and KFP's fingerprint holds it
    try:
        number = int(text)
    except ValueError:  # more digits than Python converts (sys.int_info.default_max_str_digits)
        return _Bad(f"{_short(text)} is beyond the range of a float64, in which KFP keeps every number")
    problem = _integer_problem(number, text)
    return _Bad(problem) if problem else number


def _kfp_int(text: str) -> Union[int, float, _Bad]:
    """An integer as KFP's Go code reads one: the nearest float64 (ties to even, as strconv.ParseFloat
    rounds and Python's int-to-float conversion does) when a float64 cannot hold it exactly."""
    value = _int(text)
    if not isinstance(value, _Bad):
        return value
    try:
        return float(int(text))
    except (ValueError, OverflowError):  # beyond a float64's range, or too many digits: Go refuses it too
        return value


def to_kfp_numbers(value: Any, _depth: int = 0) -> Any:
    """``value`` with every integer a float64 cannot hold exactly replaced by its nearest float64,
    as KFP's Go code reads a number (an integer beyond a float64's range is left for :func:`validate`,
    and so is what nests too deep)."""
    if _depth > 2 * MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {key: to_kfp_numbers(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_kfp_numbers(item, _depth + 1) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -_EXACT_INTEGERS <= value <= _EXACT_INTEGERS:
        try:
            return float(value)
        except OverflowError:
            return value
    return value


def parse_number(text: str, integer: bool = False) -> Union[int, float]:
    """A number given as text (a ``--param`` of type NUMBER_INTEGER, ``integer=True``, or
    NUMBER_DOUBLE) in the syntax JSON and Go's ``strconv`` share: an optional sign, ASCII digits and,
    unless ``integer``, an optional fraction and exponent. Underscores, spaces, other digits than
    0-9, hexadecimal, ``Infinity`` and ``NaN`` are not numbers there, nor a value a float64 cannot
    hold. Raises :class:`JSONValueError` (``syntax``: the text is no number at all).

    >>> parse_number("-12", integer=True), parse_number("1.5e3"), parse_number(".5")
    (-12, 1500.0, 0.5)
    >>> parse_number("1_000", integer=True)
    Traceback (most recent call last):
    ...
    mlmd_cache.key.json_values.JSONValueError: '1_000' is not a number as JSON and KFP write one
    """
    if not isinstance(text, str) or not (_INTEGER if integer else _DECIMAL).fullmatch(text):
        raise JSONValueError(f"{_short(str(text))!r} is not a number as JSON and KFP write one", syntax=True)
    value = _float(text) if not integer else (int(text) if len(text) < 4000 else _Bad(
        f"{_short(text)} is beyond the range of a float64, in which KFP keeps every number"))
    if isinstance(value, int) and not isinstance(value, bool):
        problem = _integer_problem(value, text)
        value = _Bad(problem) if problem else value
    if isinstance(value, _Bad):
        raise JSONValueError(value.problem)
    return value


def parse(text: Union[str, bytes], max_depth: int = MAX_DEPTH, kfp_numbers: bool = False) -> Any:
    """Parse JSON text (bytes must be UTF-8) into a value :func:`validate` accepts, ``-0`` as ``-0.0``;
    with ``kfp_numbers``, an integer a float64 cannot hold is read as KFP reads it (the nearest float64).
    Raises :class:`JSONValueError`."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise JSONValueError(f"invalid JSON: not UTF-8 text (byte 0x{text[error.start]:02x} at offset "
                                 f"{error.start})", syntax=True) from None
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float,
                           parse_int=_kfp_int if kfp_numbers else _int)
    except RecursionError:
        raise JSONValueError(_too_deep(max_depth)) from None
    except json.JSONDecodeError as error:
        raise JSONValueError(f"invalid JSON: {error}", syntax=True) from None
    validate(value, max_depth)
    return value


def _too_deep(max_depth: int) -> str:
    return f"lists and objects nest deeper than {max_depth} levels (MLMD cannot store such a value)"


def _path_text(path: tuple) -> str:
    parts = []
    while path:
        path, key = path
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _IDENTIFIER.match(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key, ensure_ascii=True)}]")
    text = "".join(reversed(parts))
    return text[1:] if text.startswith(".") else text


def _string_problem(text: str, what: str) -> Optional[str]:
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return (f"{what} holds \\u{ord(match.group()):04x}, a lone surrogate, which is not Unicode text "
            "(undecodable bytes? protobuf refuses it)")


def _problem(value: Any) -> Optional[str]:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, _Bad):
        return value.problem
    if isinstance(value, str):
        return _string_problem(value, "the string")
    if isinstance(value, int):
        return _integer_problem(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN is not a valid parameter value (JSON has no NaN; KFP refuses it)"
        if math.isinf(value):
            return (f"{'-' if value < 0 else ''}Infinity is not a valid parameter value "
                    "(JSON has no Infinity; KFP refuses it)")
        return None
    if isinstance(value, (dict, list, tuple)):
        return None
    return (f"a value of type {type(value).__name__} is not a JSON value "
            "(null, true/false, number, string, list, object)")


def validate(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JSONValueError` naming where ``value`` (Python: None, bool, int, float, str,
    list/tuple, dict with str keys) is not something KFP can hold; see the module's rules."""
    stack: list[tuple[Any, int, tuple]] = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        problem = _problem(item)
        if problem:
            raise JSONValueError(problem, _path_text(path))
        if isinstance(item, (dict, list, tuple)):
            if depth >= max_depth:
                raise JSONValueError(_too_deep(max_depth))
            if isinstance(item, dict):
                for key in reversed(list(item)):  # reversed: the first problem in document order is reported
                    if not isinstance(key, str):
                        raise JSONValueError(f"the object key {key!r:.30} is not a string", _path_text(path))
                    problem = _string_problem(key, "an object key")
                    if problem:
                        raise JSONValueError(problem, _path_text(path))
                    stack.append((item[key], depth + 1, (path, key)))
            else:
                stack.extend((child, depth + 1, (path, index)) for index, child in reversed(list(enumerate(item))))


def message(what: str, error: JSONValueError) -> str:
    """The one-line message of ``error`` about ``what``: ``"parameter 'l', at [0]: NaN is ..."``."""
    return f"{what}, {error}" if error.path else f"{what}: {error}"


def loads(text: Union[str, bytes], what: str, *, error: type[MlmdCacheError] = InvalidArgumentError,
          max_depth: int = MAX_DEPTH, kfp_numbers: bool = False) -> Any:
    """:func:`parse`, raising ``error`` (a user-input error: exit code 2 in the CLI) with a one-line
    message that starts with ``what`` (e.g. ``"parameter 'l'"``)."""
    try:
        return parse(text, max_depth, kfp_numbers)
    except JSONValueError as problem:
        raise error(message(what, problem)) from None


def check(value: Any, what: str, *, error: type[MlmdCacheError] = InvalidArgumentError,
          max_depth: int = MAX_DEPTH) -> None:
    """:func:`validate`, raising ``error`` with a one-line message that starts with ``what``."""
    try:
        validate(value, max_depth)
    except JSONValueError as problem:
        raise error(message(what, problem)) from None
