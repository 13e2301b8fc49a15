"""``pip install`` for tasks that ``mlmd-cache run-pipeline`` runs: installs only what is missing.

A KFP lightweight component's command starts with ``python3 -m pip install --quiet ... 'kfp==2.13.0'
...`` (and its ``packages_to_install``). The runner puts a ``python3``/``python``/``pip`` shim first on
the task's PATH (see :mod:`mlmd_cache.runner`) that hands ``pip install ARGS`` to this script, run as
``python -I _pip_shim.py ARGS`` with the runner's own interpreter. When every requirement in ARGS is
already installed in that interpreter's environment (name present, version within the specifier,
environment markers honoured), it exits 0 at once: nothing is installed and the task pays a few tens
of milliseconds instead of a pip run. Otherwise (a requirement missing or of another version, a
URL, ``-r``/``-e``, an unparsable argument) it runs the real ``pip install ARGS`` in that
environment, as ``kfp.local.SubprocessRunner(use_venv=False)`` would.

Standard library and ``packaging`` only: it must not import mlmd_cache (a task's start-up cost).
"""
from __future__ import annotations

import os
import sys

_OPTIONS_WITH_VALUE = frozenset({
    "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "-c", "--constraint",
    "-t", "--target", "--prefix", "--root", "--platform", "--python-version", "--implementation", "--abi",
    "--progress-bar", "--cache-dir", "--src", "--upgrade-strategy", "--log", "--timeout", "--retries",
    "--proxy", "--only-binary", "--no-binary", "--global-option", "--config-settings", "-C", "--report",
})
_NEEDS_PIP = frozenset({"-r", "--requirement", "-e", "--editable", "--force-reinstall", "-t", "--target",
                        "--prefix", "--root"})


def already_satisfied(args: list[str]) -> bool:
    """Whether ``pip install ARGS`` would have nothing to do in this interpreter's environment."""
    try:
        from importlib import metadata

        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        return False
    values = iter(args)
    for arg in values:
        if arg.startswith("-"):
            option = arg.split("=", 1)[0]
            if option in _NEEDS_PIP:
                return False
            if option in _OPTIONS_WITH_VALUE and "=" not in arg:
                next(values, None)
            continue
        try:
            requirement = Requirement(arg)
        except InvalidRequirement:
            return False
        if requirement.url:
            return False
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


def main(args: list[str]) -> None:
    if already_satisfied(args):
        sys.exit(0)
    os.execv(sys.executable, [sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
