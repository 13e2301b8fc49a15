"""Errors a newcomer meets first, each saying what to do next: a pipeline that is not a compiled KFP
v2 pipeline, the wrong Python for the venv, a command waiting for a cache key on a terminal."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MLMD_CACHE = [sys.executable, "-m", "mlmd_cache"]

ARGO_WORKFLOW = """\
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: my-pipeline-}
spec: {entrypoint: my-pipeline, templates: []}
"""
V1_COMPONENT = """\
name: Train
inputs: [{name: data}]
implementation: {container: {image: "python:3.11", command: [python, train.py]}}
"""


@pytest.mark.parametrize("name, text, expected", [
    ("pipeline.py", "from kfp import dsl\n", "is Python source, not a compiled pipeline: compile it with the KFP SDK "
                                            "first (kfp dsl compile --py {path} --output {stem}.yaml)"),
    ("workflow.yaml", ARGO_WORKFLOW, "a KFP v1 pipeline (an Argo Workflow), which is not supported"),
    ("component.yaml", V1_COMPONENT, "a KFP v1 component (component.yaml), not a compiled pipeline"),
    ("other.yaml", "a: 1\n", "not a compiled KFP v2 pipeline (it has no root and deploymentSpec); compile one with "
                             "the KFP SDK: kfp dsl compile --py PIPELINE.py --output PIPELINE.yaml"),
])
@pytest.mark.parametrize("command", ["run-pipeline", "plan"])
def test_what_is_not_a_compiled_pipeline_says_what_to_do(tmp_path, command, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    store = tmp_path / "store.sqlite"
    done = subprocess.run([*MLMD_CACHE, command, str(path), "--db", f"sqlite:///{store}"], capture_output=True,
                          text=True)
    message = expected.format(path=path, stem=str(path)[:-3])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"Error: {path}") and message in done.stderr and done.stderr.count("\n") == 1
    assert not store.exists()  # refused before anything was written


def test_the_venv_script_names_the_python_it_needs(tmp_path):
    python312 = tmp_path / "python3.12"  # answers the version questions as Python 3.12 would
    python312.write_text('#!/bin/sh\ncase "$*" in *print*) echo 3.12;; *) exit 1;; esac\n')
    python312.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(["bash", str(REPO / "scripts" / "venv.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(python312), "VENV": str(venv)})
    assert done.returncode == 2 and not venv.exists()
    assert "mlmd-cache needs Python 3.11" in done.stderr and f"{python312} is 3.12" in done.stderr


def _read_until(fd: int, marker: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise AssertionError(f"no {marker!r} within {timeout} s; got {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.mark.parametrize("args", [["fingerprint"], ["lookup", "--pipeline", "p"]])
def test_a_key_read_from_a_terminal_says_it_waits_for_json(tmp_path, args):
    primary, secondary = pty.openpty()
    process = subprocess.Popen([*MLMD_CACHE, *args], stdin=secondary, stdout=secondary, stderr=secondary,
                               close_fds=True, env={**os.environ, "MLMD_DB": f"sqlite:///{tmp_path}/s.sqlite"})
    os.close(secondary)
    try:
        shown = _read_until(primary, b"Ctrl-D")
        assert b"reading a cache key (KFP's JSON) from standard input" in shown
        os.write(primary, b'{"containerSpec": {"image": "python:3.11"}}\n\x04')
        shown += _read_until(primary, b"\n" * 99)  # everything, until the command ends
        process.wait(timeout=60)
        assert b"Traceback" not in shown
        if args[0] == "fingerprint":
            assert process.returncode == 0 and shown.split()[-1].isalnum() and len(shown.split()[-1]) == 64
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)


def test_a_key_from_a_pipe_gets_no_prompt():
    done = subprocess.run([*MLMD_CACHE, "fingerprint"], input='{"containerSpec": {"image": "python:3.11"}}',
                          capture_output=True, text=True, check=True)
    assert done.stderr == "" and len(done.stdout.strip()) == 64
