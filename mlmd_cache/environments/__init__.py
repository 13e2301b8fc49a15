"""Task environments: what a task's command asks pip for (:mod:`.requirements`) and the cache of
environments built for those sets (:mod:`.cache`), and the ``pip`` a task runs, which installs
nothing (``_pip_shim.py``, run as a script by :mod:`mlmd_cache.runner.shims`). Standard library,
``packaging`` and uv only: nothing here reads a store or a pipeline.

May import: the base modules (:mod:`mlmd_cache.errors`, :mod:`mlmd_cache.defaults`) only. It is not
inside :mod:`mlmd_cache.runner`, whose ``__init__`` imports ml_metadata: ``mlmd-cache envs`` and
``from mlmd_cache import EnvironmentCache`` need none of it."""
from __future__ import annotations

from .cache import (ENV_DIR_VARIABLE, Environment, EnvironmentCache, EnvironmentInfo, TaskEnvironmentError,
                    default_cache_dir, parse_size)
from .requirements import RequirementSet, base_interpreter, python_identity, requirement_set

__all__ = ["Environment", "EnvironmentCache", "EnvironmentInfo", "RequirementSet", "TaskEnvironmentError",
           "ENV_DIR_VARIABLE", "base_interpreter", "default_cache_dir", "parse_size", "python_identity", "requirement_set"]
