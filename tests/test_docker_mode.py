"""``run-pipeline --task-env docker``: each task in its image, on a real Docker daemon and real MLMD.

The image is ``MLMD_PYTHON_IMAGE`` (a stand-in for python:3.11 that ``bash scripts/build_local_images.sh
python`` builds without a registry; scripts/test.sh exports it), else ``python:3.11``, pulled if
missing. Without Docker or the image the tests skip with the reason, and fail under CI (``CI=true``)
unless ``MLMD_TEST_DOCKER=0``. The lightweight components' preamble runs a real ``pip install`` in
the container, which needs the package index (PyPI) from the container: the host's network.
"""
# No `from __future__ import annotations`: kfp reads the components' annotations as types.

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
from kfp import compiler, dsl, kubernetes
from kfp.dsl import Dataset, Input, Output

from mlmd_cache import ExecutionCache, connect
from mlmd_cache.pipeline.spec import UnsupportedPipelineError, load_pipeline
from mlmd_cache.runner import CACHED, COMPLETE, FAILED, run_pipeline
from mlmd_cache.runner.docker import LABEL_RUN, cpus, memory_bytes
from tests.docker_images import docker

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

ROOT = Path(__file__).resolve().parent.parent
SDK_DATA = ROOT / "tests" / "data" / "sdk"
# Not root: the user whose files the ownership test expects (any unused ID will do).
OTHER_UID = 4321


def _containers(run: str) -> list[str]:
    """The containers of a run, running or not."""
    done = docker("ps", "--all", "--quiet", "--filter", f"label={LABEL_RUN}={run}")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.1)


def _environment_of_this_python() -> tuple[str, list[tuple[str, int, int]]]:
    """``pip freeze`` and every file of site-packages (path, size, modification time)."""
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                            check=True).stdout
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    files = []
    for folder, _, names in os.walk(site):
        if "__pycache__" in folder:  # byte code compiled on import, by any run of anything
            continue
        for name in names:
            stat = os.lstat(os.path.join(folder, name))
            files.append((os.path.join(folder, name), stat.st_size, stat.st_mtime_ns))
    return freeze, sorted(files)


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlmd_cache", "run-pipeline", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300, **kwargs)


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- the pipelines (their image is known at run time)

# cgroup v1 or v2: the CPU quota and period, and the memory limit the container runs under.
LIMITS_SCRIPT = """
mkdir -p "$(dirname "$0")"
if [ -f /sys/fs/cgroup/cpu.max ]; then
    echo "$(cat /sys/fs/cgroup/cpu.max) $(cat /sys/fs/cgroup/memory.max)" > "$0"
else
    echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us) $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)" > "$0"
fi
"""


def main_pipeline(image: str, outside: str):
    """Lightweight components (one with an env variable, two with two versions of one package, one
    with limits set by pipeline parameters), a container component under limits, and an imported
    file outside the pipeline root read by both kinds of component."""

    @dsl.component(base_image=image)
    def make(n: int, data: Output[Dataset]) -> str:
        import json
        import os
        import sys

        with open(data.path, "w") as f:
            f.write("x" * n)
        return json.dumps({"uid": os.getuid(), "env": sorted(os.environ), "greeting": os.environ.get("GREETING"),
                           "executable": sys.executable, "cwd": os.getcwd(), "tmp": os.environ.get("TMPDIR")})

    @dsl.component(base_image=image)
    def count(data: Input[Dataset], outside: Input[Dataset]) -> int:
        return len(open(data.path).read()) + len(open(outside.path).read())

    @dsl.component(base_image=image, packages_to_install=["six==1.16.0"])
    def six_new() -> str:
        import six

        return six.__version__

    @dsl.component(base_image=image, packages_to_install=["six==1.15.0"])
    def six_old() -> str:
        import six

        return six.__version__

    @dsl.container_component
    def limits(report: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=image, command=["sh", "-c", LIMITS_SCRIPT], args=[report])

    @dsl.component(base_image=image)
    def limited() -> str:
        import os

        if os.path.exists("/sys/fs/cgroup/cpu.max"):  # cgroup v2
            quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
            memory = open("/sys/fs/cgroup/memory.max").read().strip()
        else:
            quota = open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read().strip()
            period = open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read().strip()
            memory = open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read().strip()
        return f"{quota} {period} {memory}"

    @dsl.container_component
    def cat(source: Input[Dataset], text: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=image, command=["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat "$0" > "$1"'],
                                 args=[source.path, text])

    @dsl.pipeline(name="docker-mode")
    def pipeline(n: int = 3, cpu: str = "250m", memory: str = "300Mi"):
        made = make(n=n).set_env_variable("GREETING", "hello")
        imported = dsl.importer(artifact_uri=outside, artifact_class=Dataset, reimport=False)
        count(data=made.outputs["data"], outside=imported.output)
        six_new()
        six_old()
        limits().set_cpu_limit("500m").set_memory_limit("256Mi")
        limited().set_cpu_limit(cpu).set_memory_limit(memory)  # resolved from the executor input
        cat(source=imported.output)

    return pipeline


class Ran(NamedTuple):
    db: str
    root: Path
    path: str
    first: object
    second: object
    before: tuple
    after: tuple


@pytest.fixture(scope="module")
def ran(image: str, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """The main pipeline run twice in docker mode (the second run all cached)."""
    tmp = tmp_path_factory.mktemp("docker-mode")
    outside = tmp / "outside" / "data.txt"
    outside.parent.mkdir()
    outside.write_text("outside")
    path = str(tmp / "pipeline.yaml")
    compiler.Compiler().compile(main_pipeline(image, str(outside)), path)
    db, root = f"sqlite:///{tmp / 'store' / 'mlmd.sqlite'}", tmp / "root"
    before = _environment_of_this_python()
    os.environ["MLMD_TEST_HOST_ONLY"] = "1"  # the host's environment is not the task's
    try:
        cache = ExecutionCache(connect(db))
        first = run_pipeline(cache, load_pipeline(path), pipeline_root=root, task_env="docker")
        second = run_pipeline(cache, load_pipeline(path), pipeline_root=root, task_env="docker")
    finally:
        del os.environ["MLMD_TEST_HOST_ONLY"]
    return Ran(db, root, path, first, second, before, _environment_of_this_python())


CONTAINER_TASKS = ["cat", "count", "limited", "limits", "make", "six-new", "six-old"]


def test_every_task_runs_in_its_image_then_every_task_is_cached(ran: Ran) -> None:
    first = {name: task.state for name, task in ran.first.tasks.items() if task.kind == "container"}
    assert first == dict.fromkeys(CONTAINER_TASKS, COMPLETE), {n: t.error for n, t in ran.first.tasks.items()}
    assert ran.first.task_env == "docker"
    second = {name: task.state for name, task in ran.second.tasks.items() if task.kind == "container"}
    assert second == dict.fromkeys(CONTAINER_TASKS, CACHED)
    assert _containers(ran.first.run) == [] and _containers(ran.second.run) == []


def test_two_versions_of_one_package_in_one_pipeline(ran: Ran) -> None:
    tasks = ran.first.tasks
    assert tasks["six-new"].output_parameters == {"Output": "1.16.0"}
    assert tasks["six-old"].output_parameters == {"Output": "1.15.0"}


def test_the_runners_environment_is_unchanged(ran: Ran) -> None:
    assert ran.after[0] == ran.before[0]
    assert ran.after[1] == ran.before[1]


def test_the_task_sees_its_containers_environment_not_the_hosts(ran: Ran) -> None:
    seen = json.loads(ran.first.tasks["make"].output_parameters["Output"])
    assert seen["greeting"] == "hello"
    assert "MLMD_TEST_HOST_ONLY" not in seen["env"] and "VIRTUAL_ENV" not in seen["env"]
    assert seen["executable"] == "/usr/bin/python3"  # the image's, not the runner's
    task_dir = ran.first.tasks["make"].task_dir
    assert seen["cwd"] == task_dir
    assert Path(seen["tmp"]).parent == Path(task_dir) and not Path(seen["tmp"]).exists()  # removed after
    assert seen["uid"] == os.getuid()


def test_limits_become_docker_limits(ran: Ran) -> None:
    quota, period, memory = ran.first.tasks["limits"].output_parameters["report"].split()
    assert int(quota) / int(period) == 0.5
    assert int(memory) == 256 * 2**20
    quota, period, memory = ran.first.tasks["limited"].output_parameters["Output"].split()
    assert int(quota) / int(period) == 0.25
    assert int(memory) == 300 * 2**20


def test_input_artifacts_outside_the_pipeline_root_are_mounted(ran: Ran) -> None:
    assert ran.first.tasks["count"].output_parameters == {"Output": 3 + len("outside")}
    assert ran.first.tasks["cat"].output_parameters == {"text": "outside"}


def test_a_docker_result_is_a_cache_hit_in_venv_mode(ran: Ran) -> None:
    report = run_pipeline(ExecutionCache(connect(ran.db)), load_pipeline(ran.path), pipeline_root=ran.root,
                          task_env="venv")
    assert {n: t.state for n, t in report.tasks.items() if t.kind == "container"} == dict.fromkeys(CONTAINER_TASKS,
                                                                                                    CACHED)


def test_a_venv_result_is_a_cache_hit_in_docker_mode(image: str, tmp_path: Path) -> None:
    """The cache key is the container spec as compiled, whatever the mode runs it in."""

    @dsl.component(base_image=image)
    def add(a: int, b: int) -> int:
        return a + b

    @dsl.pipeline(name="venv-then-docker")
    def pipeline(a: int = 1):
        add(a=add(a=a, b=2).output, b=3)

    path = str(tmp_path / "p.yaml")
    compiler.Compiler().compile(pipeline, path)
    cache = ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))
    venv = run_pipeline(cache, load_pipeline(path), pipeline_root=tmp_path / "root", task_env="venv")
    assert [t.state for t in venv.tasks.values()] == [COMPLETE, COMPLETE], {n: t.error for n, t in venv.tasks.items()}
    docker = run_pipeline(cache, load_pipeline(path), pipeline_root=tmp_path / "root", task_env="docker")
    assert [t.state for t in docker.tasks.values()] == [CACHED, CACHED]
    assert docker.output_parameters == venv.output_parameters


def test_outputs_belong_to_the_invoking_user(image: str, tmp_path: Path) -> None:
    """As root, the runner runs as another user (with the docker group and CAP_DAC_READ_SEARCH, so it
    can reach the docker socket and this interpreter); the files its tasks write are that user's, and
    pip in the container installs for that user (HOME=/tmp)."""

    @dsl.component(base_image=image, packages_to_install=["six==1.16.0"])
    def write(data: Output[Dataset]) -> str:
        import six

        with open(data.path, "w") as f:
            f.write(six.__version__)
        return six.__version__

    @dsl.container_component
    def touch(out: Output[Dataset]):
        return dsl.ContainerSpec(image=image, command=["sh", "-c", 'mkdir -p "$(dirname "$0")" && echo x > "$0"'],
                                 args=[out.path])

    @dsl.pipeline(name="owner")
    def pipeline():
        write()
        touch()

    path = str(tmp_path / "p.yaml")
    compiler.Compiler().compile(pipeline, path)
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(tmp_path, 0o755)
    command = [sys.executable, "-m", "mlmd_cache", "run-pipeline", path, "--db", f"sqlite:///{home / 'mlmd.sqlite'}",
               "--pipeline-root", str(home / "root"), "--task-env", "docker", "--json"]
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_CACHE_HOME", None)
    env.pop("MLMD_CACHE_PIP_DIR", None)
    uid = os.getuid()
    if uid == 0:
        uid = OTHER_UID
        os.chown(home, uid, uid)
        docker_gid = os.stat("/var/run/docker.sock").st_gid
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={docker_gid}",
                   "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", *command]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=env,
                          cwd=home)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {name: task["state"] for name, task in report["tasks"].items()} == {"write": COMPLETE, "touch": COMPLETE}
    written = [p for p in (home / "root").rglob("*")]
    assert written and {p.stat().st_uid for p in written} == {uid}
    assert (home / ".cache" / "mlmd-cache" / "pip").stat().st_uid == uid  # the user's pip cache, not root's
    data = next(p for p in written if p.name == "data")
    assert data.read_text() == "1.16.0"


def test_a_missing_image_refuses_the_run_with_nothing_written(image: str, tmp_path: Path) -> None:
    @dsl.container_component
    def nowhere():
        return dsl.ContainerSpec(image="mlmd-cache-test/no-such-image:1", command=["true"])

    @dsl.pipeline(name="missing-image")
    def pipeline():
        nowhere()

    path = str(tmp_path / "p.yaml")
    compiler.Compiler().compile(pipeline, path)
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    done = _cli(path, "--db", db, "--pipeline-root", str(tmp_path / "root"), "--task-env", "docker")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "mlmd-cache-test/no-such-image:1" in lines[0] and "'nowhere'" in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    store = connect(db)
    assert store.get_contexts() == [] and store.get_executions() == []
    assert not (tmp_path / "root").exists()


# A v1 component that gives only its args (KFP's pipeline_with_resource_spec, _ontology, ...): its
# image's ENTRYPOINT runs them, as in a pod. The image is built here from the test image.
ENTRYPOINT_SCRIPT = ('while [ $# -gt 0 ]; do case "$1" in --text) t="$2";; --out) o="$2";; esac; shift 2; done; '
                     'mkdir -p "$(dirname "$o")" && printf "entry point saw %s" "$t" > "$o"')
ARGS_ONLY_COMPONENT = """
name: args only
inputs:
- {name: text, type: String}
outputs:
- {name: out, type: String}
implementation:
  container:
    image: IMAGE
    args: [--text, {inputValue: text}, --out, {outputPath: out}]
"""


@pytest.fixture(scope="module")
def entrypoint_image(image: str) -> Iterator[str]:
    name = "mlmd-cache-test/entrypoint:1"
    dockerfile = f"FROM {image}\nENTRYPOINT {json.dumps(['sh', '-c', ENTRYPOINT_SCRIPT, 'entry'])}\n"
    built = subprocess.run(["docker", "build", "--quiet", "--tag", name, "-"], input=dockerfile,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    try:
        yield name
    finally:
        docker("rmi", "--force", name)


def _args_only_pipeline(image: str, path: Path) -> Path:
    from kfp import components
    args_only = components.load_component_from_text(ARGS_ONLY_COMPONENT.replace("IMAGE", image))

    @dsl.pipeline(name="args-only")
    def pipeline(text: str = "hello"):
        args_only(text=text)

    compiler.Compiler().compile(pipeline, str(path))
    return path


def test_a_component_with_args_only_runs_its_images_entry_point(entrypoint_image: str, tmp_path: Path) -> None:
    pipeline = _args_only_pipeline(entrypoint_image, tmp_path / "args-only.yaml")
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    done = _cli(str(pipeline), "--db", db, "--pipeline-root", str(tmp_path / "root"), "--task-env", "docker",
                "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tasks"]["args-only"]["state"] == COMPLETE
    store = connect(db)
    [execution] = [e for e in store.get_executions() if e.custom_properties["task_name"].string_value == "args-only"]
    assert execution.custom_properties["outputs"].struct_value["out"] == "entry point saw hello"


@pytest.mark.parametrize("mode", ["host", "venv"])
def test_a_component_with_args_only_is_refused_outside_docker(mode: str, tmp_path: Path) -> None:
    pipeline = _args_only_pipeline("mlmd-cache-test/entrypoint:1", tmp_path / "args-only.yaml")
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    done = _cli(str(pipeline), "--db", db, "--pipeline-root", str(tmp_path / "root"), "--task-env", mode)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: pipeline 'args-only', task 'args-only': its container has args but no command, so the entry "
        f"point of image 'mlmd-cache-test/entrypoint:1' runs them, which --task-env {mode} cannot (it runs "
        "commands on the host); --task-env docker runs it in its image"], done.stderr
    assert not (tmp_path / "root").exists()
    store = connect(db)
    assert store.get_contexts() == [] and store.get_executions() == []


@pytest.mark.parametrize("breakage, expected", [
    ({"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "--task-env docker: no Docker daemon answers ("),
    ({"PATH": "/nonexistent"}, "--task-env docker: docker is not installed"),
], ids=["daemon-down", "no-docker"])
def test_without_docker_the_run_is_refused_in_one_line(tmp_path: Path, breakage: dict, expected: str) -> None:
    if "DOCKER_HOST" in breakage and shutil.which("docker") is None:
        pytest.skip("no docker command here: a daemon that is down cannot be told from a missing docker")
    @dsl.container_component
    def hello():
        return dsl.ContainerSpec(image="alpine:3.19", command=["echo", "hello"])

    @dsl.pipeline(name="no-docker")
    def pipeline():
        hello()

    path = str(tmp_path / "p.yaml")
    compiler.Compiler().compile(pipeline, path)
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    done = _cli(path, "--db", db, "--pipeline-root", str(tmp_path / "root"), "--task-env", "docker",
                env={**os.environ, **breakage})
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and expected in done.stderr, done.stderr
    assert connect(db).get_contexts() == []


def test_accelerators_without_a_gpu_runtime_are_refused_before_anything_is_written(image: str, tmp_path: Path) -> None:
    if "nvidia" in docker("info", "--format", "{{json .Runtimes}}").stdout.lower():
        pytest.skip("this Docker has a GPU runtime")

    @dsl.component(base_image=image)
    def train() -> int:
        return 1

    @dsl.pipeline(name="gpu")
    def pipeline():
        train().set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)

    path = str(tmp_path / "p.yaml")
    compiler.Compiler().compile(pipeline, path)
    cache = ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))
    with pytest.raises(UnsupportedPipelineError, match=r"task 'train' asks for accelerators \(1 x nvidia.com/gpu\)"):
        run_pipeline(cache, load_pipeline(path), pipeline_root=tmp_path / "root", task_env="docker")
    assert cache.store.get_contexts() == []


def sleeping_pipeline(image: str, timeout: int = 0):
    @dsl.container_component
    def sleep(seconds: int):
        return dsl.ContainerSpec(image=image, command=["sleep"], args=[seconds])

    @dsl.pipeline(name="sleeping")
    def pipeline():
        for _ in range(2):
            task = sleep(seconds=600).set_caching_options(False)
            if timeout:
                kubernetes.set_timeout(task, timeout)

    return pipeline


def test_a_timeout_leaves_no_container(image: str, tmp_path: Path) -> None:
    path = str(tmp_path / "p.yaml")
    compiler.Compiler().compile(sleeping_pipeline(image, timeout=2), path)
    cache = ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))
    began = time.monotonic()
    report = run_pipeline(cache, load_pipeline(path), pipeline_root=tmp_path / "root", task_env="docker")
    assert time.monotonic() - began < 30
    assert [t.state for t in report.tasks.values()] == [FAILED, FAILED]
    assert all("stopped after 2 s" in t.error for t in report.tasks.values())
    assert _containers(report.run) == []


def _start_sleeping(image: str, tmp_path: Path, run: str) -> subprocess.Popen:
    path = str(tmp_path / "p.yaml")
    compiler.Compiler().compile(sleeping_pipeline(image), path)
    process = _popen(path, "--db", f"sqlite:///{tmp_path / 'mlmd.sqlite'}", "--pipeline-root", str(tmp_path / "root"),
                     "--task-env", "docker", "--run-name", run)
    _wait_for(lambda: len(_containers(run)) == 2 or process.poll() is not None, 60, "two containers started")
    assert process.poll() is None, process.communicate()
    return process


def test_ctrl_c_leaves_no_container(image: str, tmp_path: Path) -> None:
    run = f"ctrl-c-{os.getpid()}-{time.time_ns()}"
    process = _start_sleeping(image, tmp_path, run)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert _containers(run) == []


def test_kill_9_of_the_runner_leaves_no_container(image: str, tmp_path: Path) -> None:
    run = f"kill-9-{os.getpid()}-{time.time_ns()}"
    process = _start_sleeping(image, tmp_path, run)
    process.kill()
    process.communicate(timeout=30)
    _wait_for(lambda: _containers(run) == [], 10, "the watchdog removed the containers")


def test_a_pipeline_of_todays_sdk_runs_unchanged(python_3_11: str, tmp_path: Path) -> None:
    """kfp 2.17.3's chain, whose preamble installs kfp 2.17.3 in the container, beside kfp 2.13 here."""
    path = str(SDK_DATA / "kfp-2.17.3" / "chain.yaml")
    cache = ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))
    report = run_pipeline(cache, load_pipeline(path), pipeline_root=tmp_path / "root", task_env="docker")
    assert report.succeeded, {n: t.error for n, t in report.tasks.items()}
    assert {t.state for t in report.tasks.values() if t.kind == "container"} == {COMPLETE}


@pytest.mark.parametrize("quantity, expected", [("2", 2.0), ("0.5", 0.5), ("500m", 0.5), ("1500m", 1.5)])
def test_cpu_quantities(quantity: str, expected: float) -> None:
    assert cpus(quantity) == expected


@pytest.mark.parametrize("quantity, expected", [("256Mi", 256 * 2**20), ("1G", 10**9), ("2Gi", 2 * 2**30),
                                                ("1000000", 10**6), ("1.5G", 1.5 * 10**9), ("512k", 512000)])
def test_memory_quantities(quantity: str, expected: int) -> None:
    assert memory_bytes(quantity) == expected


@pytest.mark.parametrize("bad", ["", "two", "1x", "-1"])
def test_bad_quantities_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        cpus(bad)
    with pytest.raises(ValueError):
        memory_bytes(bad)
