"""Lineage graphs over MLMD as networkx graphs (filled in by a later issue)."""

__all__: list[str] = []
