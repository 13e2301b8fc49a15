"""What commands name in their ``--help``: the store used when no URL is given, the deadline of a call
to a ``grpc://`` store, the stores ``serve`` can hold.

In a module of their own, which imports no ml_metadata or grpc, so that building ``mlmd-cache`` and
``mlmd-lineage``'s options costs nothing; :mod:`mlmd_cache.connection` and :mod:`mlmd_cache.store.client`
export them as before.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CALL_TIMEOUT_SECONDS", "DATABASE_URLS", "TASK_ENV_MODES", "DEFAULT_TASK_ENV", "default_store_path",
           "default_store_url", "user_cache_dir"]

CALL_TIMEOUT_SECONDS = 30.0
"""The deadline of one gRPC call (``--timeout``), and how long an unreachable server is retried."""

# The stores a server (`mlmd-cache serve`) can hold: a database, not another server.
DATABASE_URLS = ("sqlite:///PATH, mysql://user:password@host:port/database (or mariadb://), "
                 "postgresql://user:password@host:port/database (or postgres://)")


TASK_ENV_MODES = ("venv", "docker", "host")
"""Where ``run-pipeline`` runs a task (``--task-env``, :mod:`mlmd_cache.runner.launchers`)."""
DEFAULT_TASK_ENV = "venv"


def user_cache_dir(variable: str, name: str) -> Path:
    """``$VARIABLE`` when set, else ``$XDG_CACHE_HOME/mlmd-cache/NAME`` (``~/.cache/mlmd-cache/NAME``):
    where mlmd-cache keeps what it can build again (task environments, the containers' pip cache)."""
    if os.environ.get(variable):
        return Path(os.environ[variable])
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache_home) / "mlmd-cache" / name


def default_store_path() -> Path:
    """``$XDG_DATA_HOME/mlmd-cache/metadata.sqlite`` (``~/.local/share/mlmd-cache/metadata.sqlite``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data_home) / "mlmd-cache" / "metadata.sqlite"


def default_store_url() -> str:
    """``$MLMD_DB`` when set, else the embedded default SQLite file."""
    return os.environ.get("MLMD_DB") or f"sqlite:///{default_store_path()}"
