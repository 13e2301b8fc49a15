"""Packages whose public names are imported on first use (PEP 562 ``__getattr__``/``__dir__``).

``mlmd_cache`` and ``lineage`` export classes from modules that import ml_metadata, grpc, networkx
and protobuf, a few hundred milliseconds that ``mlmd-cache --help``, ``mlmd_cache.errors`` or a cache
key need not pay: ``from mlmd_cache import ExecutionCache`` imports :mod:`mlmd_cache.cache` then.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` whose ``exports`` map each public name to the
    submodule that defines it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # looked up once
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
