#!/usr/bin/env bash
# CI's newcomer check: the README's demo command on a fresh clone with no venv, as a new user runs
# it, and its output checked: every task executed, then all CACHED, then the changed step (train)
# and its descendant (evaluate) executed again while make-data and preprocess are CACHED.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$PWD" "$work/mlmd-cache"
echo "check_demo: bash examples/demo.sh in a fresh clone ($work/mlmd-cache)" >&2
(cd "$work/mlmd-cache" && env -u VENV -u MLMD_DB bash examples/demo.sh) > "$work/demo.out"
cat "$work/demo.out"
python3 - "$work/demo.out" <<'PY'
import sys

text = open(sys.argv[1]).read()
runs = [[line.split()[:2] for line in block.splitlines()[1:5]] for block in text.split("$ mlmd-cache run-pipeline")[1:]]
tasks = ["make-data", "preprocess", "train", "evaluate"]
expected = [
    [[t, "EXECUTED"] for t in tasks],
    [[t, "CACHED"] for t in tasks],
    [[t, "CACHED" if t in ("make-data", "preprocess") else "EXECUTED"] for t in tasks],
]
if runs != expected or "demo store: sqlite:///" not in text:
    sys.exit(f"check_demo: unexpected demo output: {runs}")
print("check_demo: executed, all CACHED, then train and evaluate executed again: as the README says", file=sys.stderr)
PY
