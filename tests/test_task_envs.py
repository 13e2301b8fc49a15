"""`run-pipeline --task-env venv|host`: no task installs into, or changes, the environment mlmd-cache
runs in; each task runs in the cached uv environment of what its command asks pip for (real uv, real
PyPI or uv's cache, real MLMD); host mode never installs. (Docker mode: tests/test_docker_mode.py.)
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Output

from mlmd_cache import ExecutionCache, connect
from mlmd_cache.store import records
from mlmd_cache.environments import EnvironmentCache, requirement_set
from mlmd_cache.pipeline.spec import load_pipeline
from tests.pipelines import IMAGE, cli, cli_json, compile_to, run, states

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

ROOT = Path(__file__).resolve().parent.parent
SDK_DATA = ROOT / "tests" / "data" / "sdk"
MLMD_CACHE = str(Path(sys.executable).with_name("mlmd-cache"))


@dsl.component(base_image=IMAGE, packages_to_install=["six==1.16.0"])
def six_new() -> str:
    import six

    return six.__version__


@dsl.component(base_image=IMAGE, packages_to_install=["six==1.15.0"])
def six_old() -> str:
    import six

    return six.__version__


@dsl.component(base_image=IMAGE, packages_to_install=["protobuf==5.29.3"])
def protobuf_5() -> str:
    import google.protobuf

    return google.protobuf.__version__


@dsl.component(base_image=IMAGE, packages_to_install=["protobuf==6.31.1"])
def protobuf_6() -> str:
    import google.protobuf

    return google.protobuf.__version__


@dsl.component(base_image=IMAGE)
def where_am_i() -> str:
    """The task's own interpreter, and whether mlmd-cache's packages are within its reach."""
    import importlib.util
    import json
    import sys

    return json.dumps({"prefix": sys.prefix, "mlmd_cache": importlib.util.find_spec("mlmd_cache") is not None,
                       "ml_metadata": importlib.util.find_spec("ml_metadata") is not None,
                       "pip": importlib.util.find_spec("pip") is not None})


@dsl.container_component
def shell_python(out: Output[Dataset]):
    return dsl.ContainerSpec(image=IMAGE, command=["sh", "-c", 'python3 -c "import sys; print(sys.prefix)" > "$0"'],
                             args=[out.path])


@dsl.pipeline(name="versions")
def versions():
    six_new()
    six_old()
    protobuf_5()
    protobuf_6()


def runner_environment() -> dict:
    """What mlmd-cache's own environment holds: ``pip freeze`` and the hash of every file of its
    site-packages and bin (bytecode caches aside: the runner writes its own as it imports)."""
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                            check=True).stdout
    hashes = {}
    for top in {*(p for p in sys.path if p.endswith("site-packages")), os.path.join(sys.prefix, "bin")}:
        for directory, folders, files in os.walk(top):
            folders[:] = [folder for folder in folders if folder != "__pycache__"]
            for name in files:
                path = os.path.join(directory, name)
                if os.path.isfile(path):
                    hashes[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"freeze": frozen, "files": hashes}


def outputs(report) -> dict:
    return {name.rsplit("/", 1)[-1]: task.output_parameters.get("Output") for name, task in report.tasks.items()}


def test_tasks_that_need_other_packages_leave_the_runners_environment_byte_identical(tmp_path: Path) -> None:
    before = runner_environment()
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    path = compile_to(tmp_path / "versions.yaml", versions)
    first = run(db, path, tmp_path)
    assert set(states(first).values()) == {"COMPLETE"}, {n: t.error for n, t in first.tasks.items()}
    assert outputs(first) == {"six-new": "1.16.0", "six-old": "1.15.0", "protobuf-5": "5.29.3",
                              "protobuf-6": "6.31.1"}
    assert first.task_env == "venv"
    # A pipeline compiled by today's SDK: its preamble asks for kfp==2.17.3.
    current = str(SDK_DATA / "kfp-2.17.3" / "chain.yaml")
    assert "kfp==2.17.3" in Path(current).read_text()
    newer = run(db, current, tmp_path)
    assert set(states(newer).values()) == {"COMPLETE"}, {n: t.error for n, t in newer.tasks.items()}
    for pipeline_file in (path, current):
        again = run(db, pipeline_file, tmp_path)
        assert set(states(again).values()) == {"CACHED"}
    assert runner_environment() == before


def test_a_task_sees_its_own_environment_not_the_runners(tmp_path: Path) -> None:
    @dsl.pipeline(name="isolation")
    def isolation():
        where_am_i()
        shell_python()

    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    report = run(db, compile_to(tmp_path / "p.yaml", isolation), tmp_path)
    assert set(states(report).values()) == {"COMPLETE"}, {n: t.error for n, t in report.tasks.items()}
    seen = json.loads(report.tasks["where-am-i"].output_parameters["Output"])
    environments = Path(os.environ["MLMD_CACHE_ENV_DIR"]).resolve()
    assert Path(seen["prefix"]).resolve().parent == environments
    assert not seen["mlmd_cache"] and not seen["ml_metadata"]
    assert not seen["pip"]  # the program cannot `sys.executable -m pip install` into a shared environment
    # A container component with no pip install: the empty set's environment, not the runner's Python.
    artifact_id = report.tasks["shell-python"].output_artifact_ids["out"][0]
    [artifact] = connect(db).get_artifacts_by_id([artifact_id])
    assert Path(Path(artifact.uri).read_text().strip()).resolve().parent == environments
    assert Path(Path(artifact.uri).read_text().strip()).resolve() != Path(sys.prefix).resolve()


def test_the_mode_is_named_in_the_summary_and_the_json(tmp_path: Path) -> None:
    @dsl.pipeline(name="named")
    def named():
        where_am_i()

    path = compile_to(tmp_path / "p.yaml", named)
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    code, out, err = cli("run-pipeline", path, "--db", db, "--pipeline-root", str(tmp_path / "root"),
                         "--run-name", "text")
    assert code == 0, err
    assert f"  tasks    --task-env venv ({os.environ['MLMD_CACHE_ENV_DIR']})" in out.splitlines()
    code, document, err = cli_json("run-pipeline", path, "--db", db, "--pipeline-root", str(tmp_path / "root"),
                                   "--run-name", "json", "--task-env", "host")
    assert code == 0, err
    assert document["task_env"] == "host" and document["tasks"]["where-am-i"]["state"] == "CACHED"


def test_a_result_of_one_mode_is_a_cache_hit_in_another(tmp_path: Path) -> None:
    @dsl.pipeline(name="modes")
    def modes():
        six_new()

    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    path = compile_to(tmp_path / "p.yaml", modes)
    first = run(db, path, tmp_path, task_env="venv")
    assert states(first) == {"six-new": "COMPLETE"}
    second = run(db, path, tmp_path, task_env="host")  # the key is the container spec as compiled
    assert states(second) == {"six-new": "CACHED"}
    assert second.tasks["six-new"].cached_execution_id == first.tasks["six-new"].execution_id


@dsl.component(base_image=IMAGE, packages_to_install=["surely-not-installed-mlmd-cache-xyz==1.0"])
def needs_missing() -> str:
    return "never"


def test_host_mode_fails_a_task_whose_packages_are_missing_and_installs_nothing(tmp_path: Path) -> None:
    @dsl.pipeline(name="host")
    def host():
        needs_missing()
        where_am_i()

    before = runner_environment()
    path = compile_to(tmp_path / "p.yaml", host)
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    code, document, err = cli_json("run-pipeline", path, "--db", db, "--pipeline-root", str(tmp_path / "root"),
                                   "--task-env", "host")
    assert code == 1
    assert document["tasks"]["needs-missing"]["state"] == "FAILED"
    assert document["tasks"]["where-am-i"]["state"] == "COMPLETE"  # kfp's own preamble is satisfied here
    report = run(db, path, tmp_path, task_env="host")
    error = report.tasks["needs-missing"].error
    assert "'surely-not-installed-mlmd-cache-xyz==1.0'" in error and "--task-env venv" in error
    assert "Traceback" not in error
    seen = json.loads(report.tasks["where-am-i"].output_parameters["Output"])
    assert Path(seen["prefix"]).resolve() == Path(sys.prefix).resolve()
    assert runner_environment() == before


def test_a_requirement_that_cannot_be_had_fails_its_task_in_one_line(tmp_path: Path) -> None:
    @dsl.component(base_image=IMAGE, packages_to_install=["six==0.0.1"])
    def impossible() -> str:
        return "never"

    @dsl.pipeline(name="impossible")
    def pipeline():
        impossible()

    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    report = run(db, compile_to(tmp_path / "p.yaml", pipeline), tmp_path, env_dir=tmp_path / "envs")
    task = report.tasks["impossible"]
    assert task.state == "FAILED"
    assert "\n" not in task.error and "six==0.0.1" in task.error and "cannot build the task environment" in task.error
    assert not [p for p in (tmp_path / "envs").iterdir() if not p.name.startswith(".") and p.name != "builds.log"]


def _pipeline_needing(tmp_path: Path, package: str) -> str:
    @dsl.component(base_image=IMAGE, packages_to_install=[package])
    def needs() -> str:
        import importlib.metadata

        return importlib.metadata.version("six")

    @dsl.pipeline(name="needs")
    def pipeline():
        needs()

    return compile_to(tmp_path / "needs.yaml", pipeline)


def test_eight_racing_runs_build_a_new_environment_once(tmp_path: Path) -> None:
    path = _pipeline_needing(tmp_path, "six==1.16.0")
    envs = tmp_path / "envs"
    env = {**os.environ, "MLMD_CACHE_ENV_DIR": str(envs)}
    runs = [subprocess.Popen([MLMD_CACHE, "run-pipeline", path, "--db", f"sqlite:///{tmp_path / f'{n}.sqlite'}",
                              "--pipeline-root", str(tmp_path / "root"), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for n in range(8)]
    results = [process.communicate(timeout=240) for process in runs]
    for process, (out, err) in zip(runs, results):
        assert process.returncode == 0, err
        assert json.loads(out)["tasks"]["needs"]["state"] == "COMPLETE"
    built = (envs / "builds.log").read_text().splitlines()
    assert len(built) == 1 and "six==1.16.0" in built[0]
    [environment] = EnvironmentCache(envs).list()
    # the preamble pins the kfp that compiled the pipeline: this end's (2.13.0 or 2.17.x)
    assert set(environment.requirements) == {"six==1.16.0", f"kfp=={version('kfp')}",
                                             'typing-extensions>=3.7.4,<5; python_version<"3.9"'}


def test_threads_of_one_process_build_a_new_environment_once(tmp_path: Path) -> None:
    requirements = requirement_set(["sh", "-c", "python3 -m pip install --quiet six==1.16.0"])
    cache = EnvironmentCache(tmp_path / "envs")
    found: list = []
    threads = [threading.Thread(target=lambda: found.append(cache.ensure(requirements))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.close()
    assert len({environment.path for environment in found}) == 1 and len(found) == 4
    assert len((tmp_path / "envs" / "builds.log").read_text().splitlines()) == 1


def test_a_killed_build_leaves_nothing_that_a_later_task_uses(tmp_path: Path) -> None:
    path = _pipeline_needing(tmp_path, "six==1.16.0")
    envs = tmp_path / "envs"
    env = {**os.environ, "MLMD_CACHE_ENV_DIR": str(envs)}
    command = [MLMD_CACHE, "run-pipeline", path, "--pipeline-root", str(tmp_path / "root")]
    runner = subprocess.Popen([*command, "--db", f"sqlite:///{tmp_path / 'a.sqlite'}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(envs.glob(".build-*")) and runner.poll() is None:
        time.sleep(0.005)
    os.kill(runner.pid, signal.SIGKILL)  # amid the build (or, on a fast machine, just after it)
    runner.wait()
    time.sleep(3)  # the watchdog stops the runner's uv
    for entry in envs.iterdir():
        if not entry.name.startswith(".") and entry.is_dir():  # a key's directory is complete or absent
            assert (entry / "mlmd-cache-env.json").is_file() and (entry / "bin" / "python").exists()
    later = subprocess.run([*command, "--db", f"sqlite:///{tmp_path / 'b.sqlite'}", "--json"], env=env,
                           capture_output=True, text=True, timeout=240)
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout)["tasks"]["needs"]["state"] == "COMPLETE"
    assert not list(envs.glob(".build-*"))


def _offline() -> list:
    """A prefix that runs a command with no network (a new network namespace), or skip."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"unshare -n does not work here: {probe.stderr.strip()}")
        pytest.skip(f"unshare -n does not work here (needs root): {probe.stderr.strip()}")
    return ["unshare", "-n"]


def test_offline_a_set_in_uvs_cache_builds_and_one_that_is_not_fails_naming_it(tmp_path: Path) -> None:
    offline = _offline()
    path = _pipeline_needing(tmp_path, "six==1.16.0")
    EnvironmentCache(tmp_path / "online").ensure(requirement_set(
        load_pipeline(path).executors["exec-needs"].container.command))  # its packages are now in uv's cache
    env = {**os.environ, "MLMD_CACHE_ENV_DIR": str(tmp_path / "offline")}
    done = subprocess.run([*offline, MLMD_CACHE, "run-pipeline", path, "--db", f"sqlite:///{tmp_path / 'a.sqlite'}",
                           "--pipeline-root", str(tmp_path / "root"), "--json"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"]["needs"]["state"] == "COMPLETE"
    missing = _pipeline_needing(tmp_path, "six==0.0.2")
    failed = subprocess.run([*offline, MLMD_CACHE, "run-pipeline", missing, "--db",
                             f"sqlite:///{tmp_path / 'b.sqlite'}", "--pipeline-root", str(tmp_path / "root")],
                            env=env, capture_output=True, text=True, timeout=240)
    assert failed.returncode == 1
    [line] = [line for line in failed.stdout.splitlines() + failed.stderr.splitlines() if "six==0.0.2" in line
              and "cannot build" in line]
    assert "Traceback" not in failed.stdout + failed.stderr


def test_offline_a_find_links_folder_is_enough(tmp_path: Path) -> None:
    offline = _offline()
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d",
                    str(wheels), "six==1.14.0"], check=True, capture_output=True)

    @dsl.container_component
    def from_folder(out: Output[Dataset]):
        return dsl.ContainerSpec(
            image=IMAGE, command=["sh", "-c", f"pip install --no-index --find-links {wheels} six==1.14.0 && "
                                              'python3 -c "import six; print(six.__version__)" > "$0"'],
            args=[out.path])

    @dsl.pipeline(name="folder")
    def folder():
        from_folder()

    path = compile_to(tmp_path / "p.yaml", folder)
    db = f"sqlite:///{tmp_path / 'a.sqlite'}"
    done = subprocess.run([*offline, MLMD_CACHE, "run-pipeline", path, "--db", db, "--pipeline-root",
                           str(tmp_path / "root"), "--json", "--env-dir", str(tmp_path / "envs")],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr + done.stdout
    artifact_id = json.loads(done.stdout)["tasks"]["from-folder"]["execution_id"]
    [event] = [e for e in connect(db).get_events_by_execution_ids([artifact_id]) if e.type == e.OUTPUT]
    [artifact] = connect(db).get_artifacts_by_id([event.artifact_id])
    assert Path(artifact.uri).read_text().strip() == "1.14.0"


def test_envs_lists_and_prunes_but_never_an_environment_in_use(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    cache = EnvironmentCache(envs)
    used = cache.ensure(requirement_set(["pip", "install", "six==1.16.0"]))
    cache.close()
    in_use = EnvironmentCache(envs)
    busy = in_use.ensure(requirement_set(["pip", "install", "six==1.15.0"]))
    try:
        code, out, err = cli("envs", "--env-dir", str(envs))
        assert code == 0, err
        assert out.splitlines()[0].split() == ["KEY", "PYTHON", "SIZE", "LAST", "USED", "IN", "USE", "REQUIREMENTS"]
        assert any(line.startswith(busy.requirements.key) and "yes" in line.split() for line in out.splitlines())
        code, out, err = cli("envs", "--env-dir", str(envs), "--json")
        listed = {item["key"]: item for item in json.loads(out)["environments"]}
        assert listed[used.requirements.key]["requirements"] == ["six==1.16.0"] and listed[used.requirements.key]["size"] > 0
        code, out, err = cli("envs", "--env-dir", str(envs), "--prune", "--older-than", "0s", "--dry-run")
        assert code == 0 and f"would remove {used.requirements.key}" in out and used.path.exists()
        code, out, err = cli("envs", "--env-dir", str(envs), "--prune", "--older-than", "0s")
        assert code == 0 and f"removed {used.requirements.key}" in out
        assert not used.path.exists() and busy.path.exists()  # the one in use stays
    finally:
        in_use.close()
    code, out, err = cli("envs", "--env-dir", str(envs), "--prune", "--max-size", "0")
    assert code == 0 and not busy.path.exists()
    code, out, err = cli("envs", "--env-dir", str(envs))
    assert code == 0 and out.startswith("no environments in ")


@pytest.mark.parametrize("args, message", [
    (["--older-than", "1d"], "go with --prune"),
    (["--prune", "--max-size", "lots"], "is not a size"),
    (["--prune", "--older-than", "soon"], "--older-than"),
])
def test_envs_refuses_bad_options_in_one_line(tmp_path: Path, args: list, message: str) -> None:
    code, out, err = cli("envs", "--env-dir", str(tmp_path), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_an_unknown_task_env_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    @dsl.pipeline(name="refused")
    def refused():
        where_am_i()

    path = compile_to(tmp_path / "p.yaml", refused)
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    code, out, err = cli("run-pipeline", path, "--db", db, "--task-env", "conda")
    assert code == 2 and "'conda' is not one of 'venv', 'docker', 'host'" in err
    cache = ExecutionCache(connect(db))
    with pytest.raises(Exception, match="task environment must be one of"):
        run(db, path, tmp_path, task_env="conda")
    assert not cache.store.get_contexts_by_type(records.RUN_CONTEXT_TYPE)


def test_where_uv_cannot_run_venv_and_pip_build_the_environment(tmp_path: Path) -> None:
    requirements = requirement_set(["sh", "-c", "python3 -m pip install --quiet --no-warn-script-location six==1.16.0"])
    with EnvironmentCache(tmp_path / "envs", use_uv=False) as cache:
        environment = cache.ensure(requirements)
        version = subprocess.run([str(environment.python), "-c", "import six; print(six.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert version == "1.16.0"
        assert not list(environment.path.glob("lib/python*/site-packages/pip"))  # nothing to install with at run time
    assert [info.requirements for info in EnvironmentCache(tmp_path / "envs").list()] == [("six==1.16.0",)]


def test_an_env_dir_that_cannot_be_one_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    @dsl.pipeline(name="env-dir")
    def env_dir():
        where_am_i()

    path = compile_to(tmp_path / "p.yaml", env_dir)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    for env_dir_arg, shown in ((a_file, f"environment cache {a_file} is not a directory"),
                               (a_file / "envs", f"({a_file} is a file)")):
        code, out, err = cli("run-pipeline", path, "--db", db, "--env-dir", str(env_dir_arg))
        assert code == 2 and shown in err and len(err.strip().splitlines()) == 1, err
        code, out, err = cli("envs", "--env-dir", str(env_dir_arg))
        assert code == 2 and shown in err and len(err.strip().splitlines()) == 1, err
    store = connect(db)
    assert store.get_contexts() == [] and store.get_executions() == []
    assert a_file.read_text() == "not a folder"
