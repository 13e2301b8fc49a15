"""What ``mlmd-lineage`` builds its options from, in a module that imports nothing heavy (no networkx,
no ml_metadata): MLMD's limit on a lineage query (:mod:`lineage.load`) and the export formats
(:mod:`lineage.export`), which those modules export as before."""

__all__ = ["FORMATS", "MAX_HOPS"]

# MLMD refuses more hops than this in one get_lineage_subgraph call.
MAX_HOPS = 100

FORMATS = ("json", "graphml", "dot", "svg", "png", "html")
