"""Durations as users write them: ``30m``, ``7d``, or ISO 8601 ``P7D``/``PT12H`` (KFP v1's form)."""
from __future__ import annotations

import datetime
import re
from typing import Optional

from .errors import InvalidArgumentError

__all__ = ["parse_duration", "format_duration", "rough_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# re.ASCII: \d is 0-9, not any Unicode digit
_SHORT = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+", re.ASCII)
_SHORT_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])", re.ASCII)
_ISO = re.compile(r"P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
                  r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?", re.ASCII)


def parse_duration(text: str, what: str = "duration") -> datetime.timedelta:
    """``30m``, ``2h``, ``7d``, ``1h30m`` (units s, m, h, d, w) or ISO 8601 (``PT2H``, ``P7D``,
    ``P1DT12H``, as KFP v1's ``max_cache_staleness`` was written); anything else is an
    :class:`InvalidArgumentError` naming ``what`` (e.g. the option it came from).

    >>> parse_duration("90m"), parse_duration("PT2H") == parse_duration("2h")
    (datetime.timedelta(seconds=5400), True)
    """
    value = str(text).strip()
    seconds: Optional[float] = None
    if not str(text).isascii():  # float() reads any Unicode digit (a ١d as a day), strip() any space
        seconds = None
    elif _SHORT.fullmatch(value.lower()):
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _SHORT_PART.findall(value.lower()))
    else:
        match = _ISO.fullmatch(value.upper())
        if match and any(match.groups()) and not value.upper().endswith("T"):
            weeks, days, hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
            seconds = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds is None or seconds > 1e10:  # about 300 years: beyond, timedelta and clocks overflow
        shown = text if len(str(text)) <= 40 else str(text)[:40] + "..."
        raise InvalidArgumentError(f"{what} {shown!r}: not a duration (give e.g. 30m, 2h, 7d, or ISO 8601 "
                                   "PT2H, P7D)")
    return datetime.timedelta(seconds=seconds)


def format_duration(duration: datetime.timedelta) -> str:
    """A duration in the short form :func:`parse_duration` reads, largest units first.

    >>> format_duration(parse_duration("P1DT12H")), format_duration(parse_duration("90s"))
    ('1d12h', '1m30s')
    """
    seconds = duration.total_seconds()
    if seconds < 1:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if seconds:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


def rough_duration(seconds: float) -> str:
    """A length of time to a tenth of its largest unit, for messages and tables (its sign dropped).

    >>> rough_duration(5400), rough_duration(-90), rough_duration(12)
    ('1.5h', '1.5m', '12s')
    """
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{seconds:.0f}s"
