from datetime import datetime
from pathlib import Path

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect

work = Path("quickstart").resolve()                        # the store and the tasks' files
cache = ExecutionCache(connect(f"sqlite:///{work}/mlmd.sqlite"))
run = cache.pipeline_run("training", datetime.now().strftime("run-%Y%m%d-%H%M%S-%f"))


def make_data(started):                                    # runs only on a miss
    path = work / "data" / str(started.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x,y\n0,1\n1,3\n")
    return Outputs(artifacts={"dataset": str(path)})


data = cache.execute(run, Task("make-data", CacheKey.build(
    image="python:3.11", command=["python", "-m", "make_data"],
    output_artifacts={"dataset": "system.Dataset"})), make_data)

key = CacheKey.build(
    image="python:3.11",
    command=["python", "-m", "train"], args=["--epochs", "{{$.inputs.parameters['epochs']}}"],
    input_artifacts={"dataset": data.output_artifact_ids["dataset"]},   # MLMD artifact IDs
    input_parameters={"epochs": 5, "lr": 0.1},
    output_artifacts={"model": "system.Model"},           # schema titles
    output_parameters={"accuracy": "NUMBER_DOUBLE"},
)


def train(started):
    path = work / "models" / str(started.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("weights")                             # the model
    return Outputs(artifacts={"model": str(path)}, parameters={"accuracy": 0.93})


result = cache.execute(run, Task("train", key), train)
for done in (data, result):
    print(f"{done.task.name}: {done.state} execution {done.id}, cached from {done.cached_execution_id},",
          f"outputs {done.output_artifact_ids} {done.output_parameters}")
if result.miss_reason:
    print("train ran again:", result.miss_reason)
