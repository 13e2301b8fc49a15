#!/usr/bin/env bash
# The README's demo: compile the example pipeline with the KFP SDK, run it (every task executes),
# run it again (every task CACHED), then run it with the learning rate of the middle step `train`
# changed (make-data and preprocess CACHED; train and evaluate execute again). On $MLMD_DB, else
# the embedded default store. Uses .venv (scripts/test.sh makes it) when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/mlmd-cache ] && PATH="$PWD/.venv/bin:$PATH"
pipeline=$(mktemp -d)/train_pipeline.yaml
python examples/train_pipeline.py "$pipeline"
for args in "" "" "--param lr=0.02"; do
    echo
    echo "\$ mlmd-cache run-pipeline train_pipeline.yaml $args"
    # shellcheck disable=SC2086 # $args is one or two words on purpose
    mlmd-cache run-pipeline "$pipeline" $args
done
