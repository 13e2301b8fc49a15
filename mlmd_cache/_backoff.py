"""The one retry policy of mlmd-cache: exponential backoff with jitter under a deadline.

Every loop that waits for something to change (a store locked by other writers, a lost database
connection, a server coming back, a schema another process is creating, a cache key another runner
holds) waits the same way: from a first pause, doubling, at most a ceiling, each pause jittered to
±50 % so that processes that collided do not collide again, until a deadline. The loops themselves
stay where they are: each decides, by the error it got, whether to wait again, and ends in its own
one-line error that names what it waited for (why not ``tenacity``: those two things are most of
each loop, and would be the same lines again as predicates and callbacks around a re-raise).

>>> backoff = Backoff(10.0, first=0.05, ceiling=0.2, jitter=False)
>>> [backoff.next_pause() for _ in range(4)]
[0.05, 0.1, 0.2, 0.2]
>>> backoff.expired()
False
"""
from __future__ import annotations

import random
import time
from typing import Optional

__all__ = ["Backoff"]


class Backoff:
    """Pauses for one wait of at most ``seconds`` (None: no deadline), from ``first`` doubling to
    ``ceiling``; :meth:`pause` sleeps the next one."""

    def __init__(self, seconds: Optional[float], *, first: float = 0.02, ceiling: float = 1.0,
                 jitter: bool = True) -> None:
        self.started = time.monotonic()
        self.seconds = seconds
        self._next, self._ceiling, self._jitter = first, max(first, ceiling), jitter

    @property
    def elapsed(self) -> float:
        """Seconds since the wait began."""
        return time.monotonic() - self.started

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.seconds is not None and self.elapsed > self.seconds

    def next_pause(self) -> float:
        """The next pause in seconds (the sequence moves on)."""
        pause = self._next
        self._next = min(self._ceiling, self._next * 2)
        return pause * (0.5 + random.random()) if self._jitter else pause

    def pause(self) -> None:
        """Sleep the next pause."""
        time.sleep(self.next_pause())
