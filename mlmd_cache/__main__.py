"""``python -m mlmd_cache``: the ``mlmd-cache`` command, with the console script's signal handling."""
from ._entry import mlmd_cache

mlmd_cache()
