"""Go ``encoding/json`` output, byte for byte.

KFP fingerprints a cache key by re-marshalling protojson output with Go's ``json.Marshal`` of a
generic value (``interface{}``), so the bytes hashed depend on Go's rules, not Python's:

* object keys sorted by their UTF-8 bytes, no whitespace;
* ``<``, ``>`` and ``&`` escaped as ``\\u003c``, ``\\u003e``, ``\\u0026`` (HTML-safe escaping), U+2028 and
  U+2029 escaped, other non-ASCII left as UTF-8, control characters as ``\\n``, ``\\r``, ``\\t``, ``\\b``,
  ``\\f`` (Go 1.22 and later, which KFP's backend is built with) or ``\\u00XX``;
* every number is a float64, printed as Go prints one: shortest round-trip digits, plain decimal
  notation for magnitudes in [1e-6, 1e21) and exponent notation outside it (``1e-7``, ``1e+21``).

>>> go_marshal({"b": [1.0, 1e21, 1e-7], "a": "<x>"})
b'{"a":"\\\\u003cx\\\\u003e","b":[1,1e+21,1e-7]}'
"""
from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

__all__ = ["go_marshal", "go_float"]

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_HTML_AND_LINE_SEPARATORS = {"<", ">", "&", "\u2028", "\u2029"}


def _escape_char(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    if char < " " or char in _HTML_AND_LINE_SEPARATORS:
        return f"\\u{ord(char):04x}"
    return char


# Only these characters change; a key's strings (component sources) are long and mostly plain, so
# one regex pass instead of a Python call per character keeps fingerprinting off a re-run's profile.
_ESCAPED = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029]')


def _go_string(text: str) -> str:
    return '"' + _ESCAPED.sub(lambda match: _escape_char(match.group()), text) + '"'


def go_float(number: float) -> str:
    """Format a float64 exactly as Go's ``encoding/json`` does.

    >>> [go_float(x) for x in (5.0, -0.0, 0.1, 1e-7, 1e21, 123456789.0, 1e20, 1.5e-6)]
    ['5', '-0', '0.1', '1e-7', '1e+21', '123456789', '100000000000000000000', '0.0000015']
    """
    number = float(number)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"json: unsupported value: {number!r} (Go's encoding/json rejects NaN and Inf)")
    # repr() gives the shortest digits that round-trip, which is what Go's precision -1 gives.
    shortest = Decimal(repr(number))
    magnitude = abs(number)
    if magnitude == 0 or 1e-6 <= magnitude < 1e21:
        return format(shortest.normalize(), "f")
    sign, digits, exponent = shortest.normalize().as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    power = exponent + len(digits) - 1
    # Go writes at least two exponent digits, then encoding/json trims "e-07" to "e-7" (not "e+21").
    exponent_text = f"+{power:02d}" if power >= 0 else f"-{-power}"
    return ("-" if sign else "") + f"{mantissa}e{exponent_text}"


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif isinstance(value, (int, float)):
        out.append(go_float(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value, key=lambda k: k.encode("utf-8"))):
            if index:
                out.append(",")
            out.append(_go_string(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot marshal {type(value).__name__} as JSON")


def go_marshal(value: Any) -> bytes:
    """Marshal a JSON-shaped Python value (dict, list, str, number, bool, None) as Go's
    ``json.Marshal`` marshals the same value decoded into ``interface{}``."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")
