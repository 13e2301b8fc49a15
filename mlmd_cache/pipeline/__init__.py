"""The pipeline: a compiled KFP pipeline (its IR YAML) read, checked and described.

Owns :mod:`.compiled` (:class:`~.compiled.CompiledPipeline` and walking its tasks), :mod:`.spec`
(loading the IR file and run arguments), :mod:`.platform` (the platform spec: Kubernetes settings
checked, timeouts read), :mod:`.expressions` (KFP's CEL conditions and parameter selectors) and
:mod:`.limits` (a run's names checked against what the store can hold).

May import: :mod:`mlmd_cache.store`, :mod:`mlmd_cache.key` and the base modules; not the cache (a
pipeline is read before any store is), not the runner, the server or the CLI.
"""
