"""MLMD's limit on a lineage query, in a module that imports nothing heavy: ``mlmd-lineage`` builds its
``--depth`` options from it before any store is opened (:mod:`lineage.load` imports ml_metadata)."""

__all__ = ["MAX_HOPS"]

# MLMD refuses more hops than this in one get_lineage_subgraph call.
MAX_HOPS = 100
