"""``pip install`` for tasks that ``mlmd-cache run-pipeline`` runs: never installs anything.

A KFP lightweight component's command starts with ``python3 -m pip install --quiet ... 'kfp==2.13.0'
...`` (and its ``packages_to_install``). The runner puts a ``python3``/``python``/``pip`` shim first on
the task's PATH (see :mod:`mlmd_cache.runner.shims`) that hands ``pip install ARGS`` to this script,
run as ``python -I -S _pip_shim.py MEMO TARGET ARGS`` with the runner's own interpreter. TARGET is the
site-packages folder(s) of the task's environment (``--task-env venv``: the environment built for the
requirements the command names, so the preamble is satisfied by construction), or ``-`` for the
runner's own (``--task-env host``). When every requirement in ARGS is installed there (name present,
version within the specifier, environment markers honoured), it exits 0 at once. Otherwise it prints
one line naming the requirement and exits 1: the task fails, and nothing is installed into an
environment that other tasks (or mlmd-cache itself) share.

Every task of a pipeline usually has the same preamble, and finding the answer costs more than the
interpreter's start (``importlib.metadata`` and ``packaging`` take ~70 ms to import, the site
directories ~20 ms to set up): so the ARGS found satisfied are remembered in the file MEMO (one per
environment, written beforehand with the ARGS the environment was built from), and a task whose
ARGS are there exits before ``site`` is even imported (``-S``).

Standard library and ``packaging`` only: it must not import mlmd_cache (a task's start-up cost).
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

# pip install options that take a value as the next argument (``--index-url URL``); also what
# mlmd_cache.environments.requirements reads a command's pip install with.
OPTIONS_WITH_VALUE = frozenset({
    "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "-c", "--constraint",
    "-r", "--requirement", "-e", "--editable", "-t", "--target", "--prefix", "--root", "--platform", "--python-version", "--implementation", "--abi", "--progress-bar", "--cache-dir", "--src",
    "--upgrade-strategy", "--log", "--timeout", "--retries", "--proxy", "--only-binary", "--no-binary",
    "--global-option", "--config-settings", "-C", "--report", "--root-user-action", "--default-timeout",
})
# What only a real pip run can answer (a file of requirements, a folder to install into, ...).
_NEEDS_PIP = frozenset({"-r", "--requirement", "-e", "--editable", "--force-reinstall", "-t", "--target",
                        "--prefix", "--root"})


def first_missing(args: Sequence[str], paths: Optional[list[str]] = None) -> Optional[str]:
    """The first argument of ``pip install ARGS`` that ``paths`` (default: this interpreter's
    ``sys.path``) does not satisfy, or None when pip would have nothing to do."""
    try:
        from importlib import metadata

        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        return args[0] if args else None
    values = iter(args)
    for arg in values:
        if arg.startswith("-"):
            option = arg.split("=", 1)[0]
            if option in _NEEDS_PIP:
                return arg
            if option in OPTIONS_WITH_VALUE and "=" not in arg:
                next(values, None)
            continue
        try:
            requirement = Requirement(arg)
        except InvalidRequirement:
            return arg
        if requirement.url:
            return arg
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        found = next(iter(metadata.distributions(name=requirement.name, path=paths or sys.path)), None)
        if found is None or not requirement.specifier.contains(found.version, prereleases=True):
            return arg
    return None


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


def main(memo: str, target: str, args: list[str]) -> None:
    if _remembered(memo, args):
        sys.exit(0)
    import site

    site.main()  # packaging, from the runner's environment (-I still leaves out the user's)
    paths = None if target == "-" else target.split(":")
    missing = first_missing(args, paths)
    if missing is None:
        _remember(memo, args)
        sys.exit(0)
    if paths is None:
        where = ("is not installed in mlmd-cache's own Python, and --task-env host never installs "
                 "(--task-env venv or docker run tasks with their own packages)")
    else:
        where = (f"is not in the task's environment {paths[0].rsplit('/lib/', 1)[0]}, which holds what the "
                 "task's command asks pip for; a task does not install into it as it runs")
    sys.stderr.write(f"mlmd-cache: pip install: {missing!r} {where}\n")
    sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
