"""The ``mlmd-cache`` command line: one module per command group, their shared options in one place.

Owns :mod:`.commands` (the ``main`` group, which adds every command), :mod:`.options` (what the
commands share: ``--db`` and ``--timeout`` before or after the subcommand, one-line usage errors,
opening a store, record IDs, task environment options), :mod:`.output` (what list commands print:
``--table``, ``--csv``, ``--tsv``, ``--nl``, ``--json``; rich's table and tree), and the commands: :mod:`.keys`
(``fingerprint``, ``lookup``), :mod:`.serve`, :mod:`.leases`, :mod:`.runs` (``run-pipeline``, ``plan``),
:mod:`.records` (``index``, ``stats``, ``recover``, ``invalidate``) and :mod:`.envs`.

May import everything below it. A command imports what it uses when it runs: ``mlmd-cache --help``
imports click and these modules only (``tests/test_startup.py``).

``mlmd_cache.cli.main`` (what the console script and ``python -m mlmd_cache`` call, through
:mod:`mlmd_cache._entry`) is imported on first use.
"""
from __future__ import annotations

from .._lazy import lazy_exports

__all__ = ["main"]

__getattr__, __dir__ = lazy_exports(__name__, {"main": "commands"})
