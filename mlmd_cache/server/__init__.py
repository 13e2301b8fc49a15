"""The server: ``mlmd-cache serve``, MLMD's gRPC service over a database, with the cache service.

Owns :mod:`.mlmd_service` (:class:`~.mlmd_service.MetadataStoreServer`: MLMD's
``MetadataStoreService`` and health checking on one port), :mod:`.cache_service` (the server's half
of ``mlmd_cache.v1.CacheService``: a lookup or a reservation read in one round trip),
:mod:`.processes` (``serve --processes``: a group of server processes on one port) and
:mod:`.common` (what they share: the start error, addresses, the log line).

May import: :mod:`mlmd_cache.cache`, :mod:`mlmd_cache.store`, :mod:`mlmd_cache.key` and the base
modules. Never the runner or the CLI.
"""
