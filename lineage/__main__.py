"""``python -m lineage``: the ``mlmd-lineage`` command, with the console script's signal handling."""
from mlmd_cache._entry import mlmd_lineage

mlmd_lineage()
