"""The environment of a task's process: a shim directory first on ``PATH`` whose ``python3``/``python``
is the runner's own interpreter and whose ``pip install`` installs only what that interpreter lacks
(:mod:`mlmd_cache._pip_shim`), so a lightweight component's ``pip install ... kfp==2.13.0``
preamble costs milliseconds and its command runs unchanged."""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["task_environment"]

_PIP_SHIM = Path(__file__).resolve().parent.parent / "_pip_shim.py"


def _write_shims(directory: Path) -> None:
    python = shlex.quote(sys.executable)
    # -S: the shim sets up the site directories only when it has no remembered answer (see _pip_shim)
    check = f"{python} -I -S {shlex.quote(str(_PIP_SHIM))} {shlex.quote(str(directory / 'pip-satisfied.json'))}"
    scripts = {
        "python3": f'if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "install" ]; then\n'
                   f'    shift 3\n    exec {check} "$@"\nfi\nexec {python} "$@"\n',
        "pip": f'if [ "$1" = "install" ]; then\n    shift\n    exec {check} "$@"\nfi\nexec {python} -m pip "$@"\n',
    }
    scripts["python"] = scripts["python3"]
    scripts["pip3"] = scripts["pip"]
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/bin/sh\n# mlmd-cache run-pipeline: the runner's Python; pip installs only what is missing.\n"
                        + body)
        path.chmod(0o755)


@contextlib.contextmanager
def task_environment() -> Iterator[dict[str, str]]:
    """The base environment of every task of a run (the shims exist while the block runs)."""
    with tempfile.TemporaryDirectory(prefix="mlmd-cache-shims-") as shims:
        _write_shims(Path(shims))
        env = dict(os.environ)
        env["PATH"] = shims + os.pathsep + env.get("PATH", os.defpath)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        yield env
