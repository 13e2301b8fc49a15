#!/usr/bin/env bash
# The README's demo: compile the example pipeline with the KFP SDK, run it (every task executes),
# run it again (every task CACHED), then run it with the learning rate of the middle step `train`
# changed (make-data and preprocess CACHED; train and evaluate execute again).
#
# Sets up the project's venv (.venv, the test command's) when it is missing, and runs on a fresh
# demo store each time: demo-store/ (the store, the compiled pipeline and the tasks' outputs; or
# $MLMD_DEMO_DIR), replaced by the next demo run and left for you to look at with mlmd-lineage.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
VENV=$(realpath -m "${VENV:-.venv}")
VENV="$VENV" bash scripts/venv.sh
PATH="$VENV/bin:$PATH"

demo=$(realpath -m "${MLMD_DEMO_DIR:-$repo/demo-store}")
# Only a directory this script made (marked) or an empty one is replaced.
if [ -n "$(ls -A "$demo" 2>/dev/null)" ] && [ ! -e "$demo/.mlmd-demo" ]; then
    echo "demo: $demo exists and is not a demo store; set MLMD_DEMO_DIR to another directory" >&2
    exit 2
fi
rm -rf "$demo" && mkdir -p "$demo" && touch "$demo/.mlmd-demo"
export MLMD_DB="sqlite:///$demo/metadata.sqlite"
echo "demo store: $MLMD_DB (made anew by each demo run)"
python examples/train_pipeline.py "$demo/train_pipeline.yaml" >/dev/null
echo "compiled examples/train_pipeline.py with the KFP SDK into $demo/train_pipeline.yaml"
cd "$demo"
for args in "--run-name baseline" "--run-name rerun" "--run-name lr-0.02 --param lr=0.02"; do
    echo
    echo "\$ mlmd-cache run-pipeline train_pipeline.yaml $args"
    # shellcheck disable=SC2086 # $args is several words on purpose
    mlmd-cache run-pipeline train_pipeline.yaml $args
done
cat <<TOUR

The demo store stays for you to look at with mlmd-lineage:
  export MLMD_DB=$MLMD_DB PATH=$VENV/bin:\$PATH
  mlmd-lineage runs                  # the three runs: executed, cached, executed
  mlmd-lineage show run lr-0.02      # its tasks, inputs and outputs
  mlmd-lineage explain 14            # why train ran again in lr-0.02
TOUR
