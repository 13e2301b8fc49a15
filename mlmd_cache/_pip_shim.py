"""``pip install`` for tasks that ``mlmd-cache run-pipeline`` runs: installs only what is missing.

A KFP lightweight component's command starts with ``python3 -m pip install --quiet ... 'kfp==2.13.0'
...`` (and its ``packages_to_install``). The runner puts a ``python3``/``python``/``pip`` shim first on
the task's PATH (see :mod:`mlmd_cache.runner.shims`) that hands ``pip install ARGS`` to this script,
run as ``python -I -S _pip_shim.py MEMO ARGS`` with the runner's own interpreter. When every
requirement in ARGS is already installed in that interpreter's environment (name present, version
within the specifier, environment markers honoured), it exits 0 at once: nothing is installed and
the task pays milliseconds instead of a pip run. Otherwise (a requirement missing or of another
version, a URL, ``-r``/``-e``, an unparsable argument) it runs the real ``pip install ARGS`` in that
environment, as ``kfp.local.SubprocessRunner(use_venv=False)`` would.

Every task of a pipeline usually has the same preamble, and finding the answer costs more than the
interpreter's start (``importlib.metadata`` and ``packaging`` take ~70 ms to import, the site
directories ~20 ms to set up): so the ARGS found satisfied are remembered in the file MEMO (the run's
shim directory), and a task whose ARGS are there exits before ``site`` is even imported (``-S``).
A real pip run may change the environment: the memo is removed before it starts.

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


def _remembered(memo: str, args: list[str]) -> bool:
    # One line per ARGS, their repr (which escapes newlines): no json, whose import costs as much as -S saves.
    try:
        with open(memo, encoding="utf-8") as file:
            return repr(args) in file.read().splitlines()
    except (OSError, UnicodeError):
        return False


def _remember(memo: str, args: list[str]) -> None:
    try:  # one short append: tasks that end at once do not mix their lines
        with open(memo, "a", encoding="utf-8") as file:
            file.write(repr(args) + "\n")
    except (OSError, UnicodeError):
        pass


def main(memo: str, args: list[str]) -> None:
    if _remembered(memo, args):
        sys.exit(0)
    import site

    site.main()  # the environment's packages, as without -S (-I still leaves out the user's)
    if already_satisfied(args):
        _remember(memo, args)
        sys.exit(0)
    try:
        os.remove(memo)
    except OSError:
        pass
    os.execv(sys.executable, [sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
