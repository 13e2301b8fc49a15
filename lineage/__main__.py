"""``python -m lineage``: the ``mlmd-lineage`` command."""
from .cli import main

main()
