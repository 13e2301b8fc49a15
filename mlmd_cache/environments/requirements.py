"""What a task's command asks pip for: its *requirement set*.

A KFP lightweight component's command is ``sh -c PREAMBLE sh -ec PROGRAM SOURCE ARGS...`` whose
preamble runs ``python3 -m pip install --quiet ... 'kfp==2.17.3' '--no-deps' ...`` (after its
``packages_to_install``, each with the component's ``pip_index_urls``); a container component may
``pip install`` in its own ``sh -c`` script. Every ``pip install`` of every shell script in the
command is found here, in order, with its arguments as the shell will pass them; together with
the Python that runs the task they are the set, and the set's :attr:`~RequirementSet.key` names
the one environment built for it (:mod:`.cache`). A command without any is the empty set: an
environment with Python alone.

>>> script = "python3 -m pip install --quiet 'kfp==2.13.0' '--no-deps' && \\"$0\\" \\"$@\\""
>>> found = requirement_set(["sh", "-c", script, "sh", "-ec", "python3 -m x"], python="cpython-3.11.7")
>>> found.installs
(('--quiet', 'kfp==2.13.0', '--no-deps'),)
>>> found.requirements
('kfp==2.13.0',)
>>> requirement_set(["echo", "hi"], python="cpython-3.11.7").installs
()
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from ._pip_shim import OPTIONS_WITH_VALUE

__all__ = ["RequirementSet", "requirement_set", "python_identity", "base_interpreter", "uv_arguments",
           "OPTIONS_WITH_VALUE"]

_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh"})
# How an environment is built (with or without pip of its own, ...): part of the key, so that an
# environment an older mlmd-cache built is not taken for one of today's.
_LAYOUT = 2
_PUNCTUATION = frozenset("();<>|&\n")
# Options that change only pip's output or its own bookkeeping: no meaning for an environment built by uv.
_DROPPED = frozenset({
    "-q", "--quiet", "-qq", "-qqq", "-v", "--verbose", "--no-warn-script-location", "--user",
    "--no-cache-dir", "--disable-pip-version-check", "--progress-bar", "--root-user-action",
    "--break-system-packages", "--upgrade-strategy", "--timeout", "--default-timeout", "--retries",
    "--no-warn-conflicts", "--prefer-binary", "-U", "--upgrade", "--force-reinstall", "--ignore-installed",
    "-I", "--no-color", "--log", "--cache-dir", "--proxy", "--no-compile", "--compile", "--use-pep517",
    "--no-build-isolation", "--exists-action", "--isolated",
})
_RENAMED = {"--trusted-host": "--allow-insecure-host", "-i": "--index-url", "-f": "--find-links",
            "-c": "--constraint"}


@dataclass(frozen=True)
class RequirementSet:
    """The ``pip install`` argument lists of a task's command, in order, and the Python that runs it."""

    python: str
    installs: tuple[tuple[str, ...], ...] = ()

    @property
    def key(self) -> str:
        """The name of the set's environment: a hash of everything that decides what it holds."""
        text = json.dumps([_LAYOUT, self.python, [list(args) for args in self.installs]], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def requirements(self) -> tuple[str, ...]:
        """The requirement specifiers alone (``kfp==2.13.0``), in order, without options."""
        found: list[str] = []
        for args in self.installs:
            values = iter(args)
            for arg in values:
                if arg.startswith("-"):
                    if arg in OPTIONS_WITH_VALUE:
                        next(values, None)
                    continue
                found.append(arg)
        return tuple(found)

    def describe(self) -> str:
        """One line: ``kfp==2.13.0, six`` (or ``(no packages)``) and the Python."""
        return f"{', '.join(self.requirements) or '(no packages)'} on {self.python}"


def python_identity(version: Optional[Sequence[int]] = None) -> str:
    """``cpython-3.11.7``: the implementation and version of the Python that runs tasks."""
    parts = version or sys.version_info[:3]
    return f"{sys.implementation.name}-{'.'.join(str(part) for part in parts)}"


def base_interpreter() -> str:
    """The interpreter mlmd-cache's own venv was made from (the one task environments are made
    from too): never the venv's own ``python``, whose packages a task must not see."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (os.path.join(sys.base_exec_prefix, "bin", version),
                      os.path.join(sys.base_exec_prefix, "bin", "python3"),
                      getattr(sys, "_base_executable", "")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def requirement_set(command: Sequence[str], python: Optional[str] = None) -> RequirementSet:
    """The requirement set of ``command`` (the task's command and args as compiled)."""
    installs = tuple(tuple(args) for args in _pip_installs(list(command)))
    return RequirementSet(python or python_identity(), installs)


def _pip_installs(command: list[str]) -> Iterator[list[str]]:
    direct = _install_arguments(command)
    if direct is not None:
        yield direct
    for index, word in enumerate(command[:-1]):
        if os.path.basename(word) in _SHELLS:
            script = _script_of(command[index + 1:])
            if script is not None:
                yield from _script_installs(script)


def _script_of(arguments: list[str]) -> Optional[str]:
    """The script of ``sh [-options] -c SCRIPT ...`` (options like ``-ec`` included)."""
    for position, word in enumerate(arguments):
        if not word.startswith("-") or word == "-":
            return None
        if not word.startswith("--") and "c" in word[1:]:
            return arguments[position + 1] if position + 1 < len(arguments) else None
    return None


def _script_installs(script: str) -> Iterator[list[str]]:
    # Newlines end commands as ';' does: a punctuation character, not whitespace. whitespace_split:
    # a word runs to the next space or operator (URLs, ':' and '@' included), as in the shell.
    lexer = shlex.shlex(script.replace("\\\n", ""), posix=True, punctuation_chars="();<>|&\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: not a script we can read
        return
    words: list[str] = []
    redirect = False
    for token in tokens + ["\n"]:
        if token and set(token) <= _PUNCTUATION:
            if "<" in token or ">" in token:  # a redirection (2>&1, > file): not the command's words
                if words and words[-1].isdigit():
                    words.pop()
                redirect = True  # its target is the next word
                continue
            arguments = _install_arguments(words)
            if arguments is not None:
                yield arguments
            words = []
        elif redirect:
            redirect = False
        else:
            words.append(token)


def _install_arguments(words: list[str]) -> Optional[list[str]]:
    """The arguments of ``[VAR=x ...] python3 -m pip install ARGS`` or ``pip install ARGS``, else None."""
    position = 0
    while position < len(words) and "=" in words[position] and not words[position].startswith("-") \
            and words[position].split("=", 1)[0].isidentifier():
        position += 1
    words = words[position:]
    if not words:
        return None
    program = os.path.basename(words[0])
    if program.startswith("python") and words[1:3] == ["-m", "pip"]:
        rest = words[3:]
    elif program in ("pip", "pip3") or (program.startswith("pip3.") and program[5:].isdigit()):
        rest = words[1:]
    else:
        return None
    return rest[1:] if rest[:1] == ["install"] else None


def uv_arguments(args: Sequence[str]) -> list[str]:
    """``pip install ARGS`` as ``uv pip install`` arguments: output and bookkeeping options dropped,
    ``--trusted-host`` as ``--allow-insecure-host``, the rest as they are.

    >>> uv_arguments(["--quiet", "--no-warn-script-location", "--trusted-host", "h", "six", "-i", "u"])
    ['--allow-insecure-host', 'h', 'six', '--index-url', 'u']
    """
    converted: list[str] = []
    values = iter(args)
    for arg in values:
        option, has_value, inline = arg.partition("=")
        if not arg.startswith("-"):
            converted.append(arg)
            continue
        value: Optional[str] = inline if has_value else None
        if option in OPTIONS_WITH_VALUE and not has_value:
            value = next(values, None)
        if option in _DROPPED:
            continue
        if option.startswith("-q") and set(option[1:]) == {"q"}:
            continue
        converted.append(_RENAMED.get(option, option))
        if value is not None:
            converted.append(value)
    return converted
