"""``python -m mlmd_cache``: the ``mlmd-cache`` command."""
from .cli import main

main()
