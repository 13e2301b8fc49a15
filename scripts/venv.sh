#!/usr/bin/env bash
# Makes the project's venv (default .venv, or $VENV) when it is missing, and installs the package
# with its test tools into it when setup.cfg/pyproject.toml changed since the last install. Shared
# by the test command (scripts/test.sh) and the demo (examples/demo.sh), so both use one venv.
# Progress goes to standard error; $PYTHON picks the interpreter (default python3.11, else python3).
# pip picks the stack: ml-metadata 1.21 (protobuf 6, kfp 2.17) where its wheels install (glibc >=
# 2.39), else 1.17.1 (protobuf 4, kfp 2.13; Python 3.11 only).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=$(realpath -m "${VENV:-.venv}")
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

say() { echo "venv: $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; then
        found=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
        say "mlmd-cache needs Python 3.11 to 3.13 (ml-metadata has wheels for those); $PYTHON is $found." \
            "Install one (Debian 12: apt-get install python3.11-venv) or set PYTHON=/path/to/python3"
        exit 2
    fi
    say "creating $VENV with $("$PYTHON" --version) (once)"
    "$PYTHON" -m venv "$VENV" || { say "could not create $VENV (Debian: apt-get install python3-venv)"; exit 1; }
fi
stamp="$VENV/.installed-$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    say "installing mlmd-cache and its dependencies into $VENV (about a minute the first time)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # One line per package as pip gets it: progress without pip's full log.
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -e '.[test]' 2>&1 |
        { grep --line-buffered -E '^(Collecting|ERROR)' || true; } |
        sed -u -e 's/^Collecting /  getting /' -e 's/ (from .*//' >&2 ||
        ! "$VENV/bin/python" -c 'import mlmd_cache' 2>/dev/null; then
        say "installing into $VENV failed (run: $VENV/bin/python -m pip install -e '.[test]' to see why;" \
            "ml-metadata has Linux wheels for Python 3.11 on any glibc, 3.12 and 3.13 on glibc >= 2.39 only:" \
            "README, Compatibility)"
        exit 1
    fi
    rm -f "$VENV"/.installed-* && touch "$stamp"
    say "ready"
fi
