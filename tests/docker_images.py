"""The Python image that --task-env docker tests run their tasks in (fixtures, a pytest plugin of
tests/conftest.py): ``MLMD_PYTHON_IMAGE`` (a stand-in for python:3.11 that ``bash
scripts/build_local_images.sh python`` builds without a registry; scripts/test.sh exports it), else
``python:3.11``, pulled if missing. Without Docker or the image the tests skip with the reason, and
fail under CI (``CI=true``) unless ``MLMD_TEST_DOCKER=0``."""
import os
import subprocess
from typing import Iterator

import pytest

from tests.compose import docker_unavailable

BUILD_HINT = 'build a stand-in without a registry: eval "$(bash scripts/build_local_images.sh python)"'


def docker(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def last_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


@pytest.fixture(scope="module")
def image() -> str:
    """The Python image of the test pipelines, here (pulled if it must be); else skip, or fail under CI."""
    if os.environ.get("MLMD_TEST_DOCKER") == "0":
        pytest.skip("MLMD_TEST_DOCKER=0: the docker tests are switched off")
    try:
        done = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except FileNotFoundError:
        docker_unavailable("docker is not installed (bash scripts/docker.sh start installs and starts it)")
    except subprocess.TimeoutExpired:
        docker_unavailable("the Docker daemon does not answer within 30 s")
    if done.returncode != 0:
        docker_unavailable(f"no Docker daemon answers ({last_line(done)}); bash scripts/docker.sh start starts one")
    name = os.environ.get("MLMD_PYTHON_IMAGE") or "python:3.11"
    if docker("image", "inspect", name).returncode != 0:
        pulled = docker("pull", name, timeout=600)
        if pulled.returncode != 0:
            docker_unavailable(f"image {name} is not here and cannot be pulled ({last_line(pulled)}); {BUILD_HINT}")
    return name


@pytest.fixture
def python_3_11(image: str) -> Iterator[str]:
    """python:3.11 here, as the committed SDK pipelines name it: the image under test, tagged so for
    the test if no python:3.11 is here (one that is, official or not, is used as it is)."""
    if docker("image", "inspect", "python:3.11").returncode == 0:
        yield "python:3.11"
        return
    assert docker("tag", image, "python:3.11").returncode == 0
    try:
        yield "python:3.11"
    finally:
        docker("rmi", "python:3.11")
