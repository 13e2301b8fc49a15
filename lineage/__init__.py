"""Lineage graphs over MLMD as networkx graphs.

- :mod:`lineage.load` is the one module that reads a store: a bounded neighbourhood traced by MLMD
  (``load_subgraph``), a whole run (``load_run``), the whole store (``load_store``), the runs
  (``load_runs``) or what explaining one execution needs (``load_task_history``);
- :mod:`lineage.graph`: pure functions over the graph (upstream/downstream closures, paths, the
  executions of a run, cache provenance, trees);
- :mod:`lineage.explain`: why an execution was cached or executed;
- :mod:`lineage.export`: node-link JSON, GraphML, DOT, SVG/PNG;
- :mod:`lineage.cli`: the ``mlmd-lineage`` command.

May import (``tests/test_architecture.py``): :mod:`mlmd_cache.cache`, :mod:`mlmd_cache.store`,
:mod:`mlmd_cache.key` and mlmd-cache's base modules; :mod:`lineage.cli` also the shared options of
:mod:`mlmd_cache.cli.options`. Never the runner or the server.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mlmd_cache._lazy import lazy_exports

# The API, by the module that defines it, imported on first use (PEP 562): networkx and ml_metadata
# take a few hundred milliseconds to import, which `mlmd-lineage --help` need not pay.
_EXPORTS = {
    **dict.fromkeys(["all_paths", "cache_provenance", "cache_source", "consumers", "downstream", "path", "producer",
                     "run_executions", "run_summaries", "upstream"], "graph"),
    **dict.fromkeys(["load_run", "load_runs", "load_store", "load_subgraph", "load_task_history"], "load"),
}

__all__ = [
    "all_paths",
    "cache_provenance",
    "cache_source",
    "consumers",
    "downstream",
    "load_run",
    "load_runs",
    "load_store",
    "load_subgraph",
    "load_task_history",
    "path",
    "producer",
    "run_executions",
    "run_summaries",
    "upstream",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .graph import (all_paths, cache_provenance, cache_source, consumers, downstream, path, producer,
                        run_executions, run_summaries, upstream)
    from .load import load_run, load_runs, load_store, load_subgraph, load_task_history
