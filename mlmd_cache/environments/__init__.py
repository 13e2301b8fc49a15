"""Task environments: what a task's command asks pip for (:mod:`.requirements`) and the cache of
environments built for those sets (:mod:`.cache`). Standard library, ``packaging`` and uv only:
nothing here reads a store or a pipeline."""
from __future__ import annotations

from .cache import (ENV_DIR_VARIABLE, Environment, EnvironmentCache, EnvironmentInfo, TaskEnvironmentError,
                    default_cache_dir, parse_size)
from .requirements import RequirementSet, base_interpreter, python_identity, requirement_set

__all__ = ["Environment", "EnvironmentCache", "EnvironmentInfo", "RequirementSet", "TaskEnvironmentError",
           "ENV_DIR_VARIABLE", "base_interpreter", "default_cache_dir", "parse_size", "python_identity", "requirement_set"]
