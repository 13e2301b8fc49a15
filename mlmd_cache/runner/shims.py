"""The ``PATH`` of a task's process: a shim directory first, whose ``python3``/``python``/``pip`` are
the task environment's and whose ``pip install`` installs nothing (:mod:`mlmd_cache.environments._pip_shim`): a
lightweight component's ``pip install ... kfp==X`` preamble costs milliseconds when its environment
already holds what it asks for, and fails the task in one line when it does not.

- ``--task-env venv``: one shim directory per environment (:mod:`mlmd_cache.environments`), its
  ``bin`` next on ``PATH``, and the runner's own venv (its ``bin``, ``PYTHONPATH``) out of sight;
- ``--task-env host``: the runner's own interpreter, which tasks may use but never install into.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Mapping, Optional

from ..environments import Environment

__all__ = ["Shims", "runner_bin"]

_PIP_SHIM = Path(__file__).resolve().parent.parent / "environments" / "_pip_shim.py"
_MEMO = "pip-satisfied.txt"
# What a task must not inherit from the runner's own Python when it runs in an environment of its own.
_RUNNER_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "CONDA_PREFIX",
                     "__PYVENV_LAUNCHER__")


def runner_bin() -> Optional[str]:
    """The ``bin`` of the venv mlmd-cache runs in (None outside a venv)."""
    if sys.prefix == sys.base_prefix:
        return None
    return os.path.join(sys.prefix, "bin")


def _write_shims(directory: Path, python: str, target: str) -> None:
    """``python3``/``python``/``pip``/``pip3`` for a task: ``pip install`` asks the shim, other pip
    commands (``pip list``, ``python3 -m pip freeze``) run the runner's pip on the task's Python."""
    quoted = shlex.quote(python)
    # -S: the shim sets up the site directories only when it has no remembered answer (see _pip_shim)
    check = (f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(_PIP_SHIM))} "
             f"{shlex.quote(str(directory / _MEMO))} {shlex.quote(target)}")
    pip = f"{shlex.quote(sys.executable)} -m pip"
    if python != sys.executable:  # an environment without pip of its own (built without --seed)
        pip += f" --python {quoted}"
    pip_commands = f'if [ "$1" = "install" ]; then\n    shift\n    exec {check} "$@"\nfi\nexec {pip} "$@"\n'
    scripts = {
        "python3": 'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then\n    shift 2\n'
                   + "".join(f"    {line}\n" for line in pip_commands.splitlines()) + f'fi\nexec {quoted} "$@"\n',
        "pip": pip_commands,
    }
    scripts["python"] = scripts["python3"]
    scripts["pip3"] = scripts["pip"]
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/bin/sh\n# mlmd-cache run-pipeline: the task environment's Python; pip installs nothing.\n"
                        + body)
        path.chmod(0o755)


class Shims:
    """A run's shim directories (removed by :meth:`close`) and the task environments they make."""

    def __init__(self) -> None:
        self._root: Optional[Path] = None  # made for the first task that runs: a run of cached tasks makes none
        self._lock = threading.Lock()
        self._made: set[str] = set()

    @property
    def _directory(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="mlmd-cache-shims-"))
            return self._root

    def host(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with the runner's own interpreter first on ``PATH`` (``--task-env host``)."""
        directory = self._directory / "host"
        with self._lock:
            if "host" not in self._made:
                _write_shims(directory, sys.executable, "-")
                self._made.add("host")
        env = dict(base)
        env["PATH"] = str(directory) + os.pathsep + env.get("PATH", os.defpath)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        return env

    def environment(self, base: Mapping[str, str], environment: Environment) -> dict[str, str]:
        """``base`` with ``environment``'s Python first on ``PATH`` and the runner's own out of it."""
        directory = self._directory / environment.requirements.key
        with self._lock:
            if environment.requirements.key not in self._made:
                _write_shims(directory, str(environment.python), os.pathsep.join(environment.site_packages()))
                # The preamble asks for what the environment was built from: known satisfied.
                (directory / _MEMO).write_text("".join(repr(list(args)) + "\n"
                                                       for args in environment.requirements.installs))
                self._made.add(environment.requirements.key)
        hidden = runner_bin()
        path = [entry for entry in base.get("PATH", os.defpath).split(os.pathsep) if entry and entry != hidden]
        env = {name: value for name, value in base.items() if name not in _RUNNER_VARIABLES}
        env["PATH"] = os.pathsep.join([str(directory), str(environment.bin), *path])
        env["VIRTUAL_ENV"] = str(environment.path)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        return env

    def close(self) -> None:
        with self._lock:
            root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
