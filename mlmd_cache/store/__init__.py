"""The store: opening an MLMD store and reading and writing its records, as every layer above uses it.

Owns :mod:`.connection` (``connect``: store URLs, first use of a database, gRPC), :mod:`.client`
(:class:`~.client.Store`: MLMD's client with faults retried or told in one line), :mod:`.schema`
(a database's MLMD schema, checked before MLMD opens it), :mod:`.records` (KFP's record names and
the property values both write), :mod:`.ids` (MLMD IDs as users type them), :mod:`.limits` (what each
backend can hold), :mod:`.mlmd_compat` (the calls that differ between ml-metadata releases), the
records of the cache's own contexts read as plain MLMD reads (:mod:`.source_records`,
:mod:`.lease_records`), the removal of finished reservations with the database's own client
(:mod:`.lease_pruning`), the cache service's protocol and client (:mod:`.cache_service`) and a
private helper (:mod:`._server_checks`).

May import: :mod:`mlmd_cache.key` and the base modules. Never the cache, the pipeline, the runner,
the server or the CLI.
"""
