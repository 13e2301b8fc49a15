"""The README's demo: examples/chain.py on the embedded default store."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chain.py"


def _run(tmp_path: Path, *args: str) -> list[list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "MLMD_DB"}
    env["XDG_DATA_HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True, text=True,
                          check=True)
    outputs = tmp_path / "mlmd-cache" / "chain-demo-outputs"
    assert done.stdout.splitlines()[0] == f"outputs under {outputs}"  # where its files go, said first
    assert outputs.is_dir()
    return [re.split(r"\s+", line.strip()) for line in done.stdout.splitlines() if line.startswith("  ")]


def test_demo_runs_twice_and_the_second_run_hits_everywhere(tmp_path):
    lines = _run(tmp_path)
    assert (tmp_path / "mlmd-cache" / "metadata.sqlite").exists()
    first, second = lines[:3], lines[3:]
    assert [line[:3] for line in first] == [["A:", "miss", "COMPLETE"], ["B:", "miss", "COMPLETE"],
                                            ["C:", "miss", "COMPLETE"]]
    assert [line[:3] for line in second] == [["A:", "hit", "CACHED"], ["B:", "hit", "CACHED"],
                                             ["C:", "hit", "CACHED"]]
    assert [line[-1] for line in second] == [line[-1] for line in first]  # the same artifact IDs


def test_demo_writes_its_outputs_where_told(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLMD_DB"}
    env["XDG_DATA_HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, str(EXAMPLE), "--runs", "1", "--outputs", str(tmp_path / "here")],
                          env=env, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[0] == f"outputs under {tmp_path / 'here'}"
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "here").iterdir()) == ["A", "B", "C"]


def test_demo_with_another_learning_rate_reruns_b_and_c(tmp_path):
    _run(tmp_path, "--runs", "1")
    lines = _run(tmp_path, "--runs", "1", "--lr", "0.5")
    assert [line[:2] for line in lines] == [["A:", "hit"], ["B:", "miss"], ["C:", "miss"]]


def test_pipeline_demo_runs_executes_then_caches_then_reruns_the_changed_step(tmp_path):
    demo_dir, scratch = tmp_path / "demo", tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "MLMD_DEMO_DIR": str(demo_dir), "TMPDIR": str(scratch), "MLMD_DB": "sqlite:///elsewhere"}
    for _ in range(2):  # each demo starts on a fresh store: the second is the same as the first
        done = subprocess.run(["bash", str(EXAMPLE.parent / "demo.sh")], env=env, capture_output=True, text=True,
                              check=True)
        runs = [[line.split()[:2] for line in block.splitlines()[1:5]]
                for block in done.stdout.split("$ mlmd-cache run-pipeline")[1:]]
        assert runs == [
            [["make-data", "EXECUTED"], ["preprocess", "EXECUTED"], ["train", "EXECUTED"], ["evaluate", "EXECUTED"]],
            [["make-data", "CACHED"], ["preprocess", "CACHED"], ["train", "CACHED"], ["evaluate", "CACHED"]],
            [["make-data", "CACHED"], ["preprocess", "CACHED"], ["train", "EXECUTED"], ["evaluate", "EXECUTED"]],
        ]
    store_url = f"sqlite:///{demo_dir}/metadata.sqlite"
    assert f"demo store: {store_url}" in done.stdout
    assert list(scratch.iterdir()) == []  # no temp files: not the compiled pipeline, not KFP's mktemp -d
    explained = subprocess.run([str(Path(sys.executable).parent / "mlmd-lineage"), "explain", "14", "--db", store_url], capture_output=True, text=True,
                               check=True)
    assert "task train, run lr-0.02" in explained.stdout and "parameter lr: 0.05 → 0.02" in explained.stdout


def test_demo_does_not_replace_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    done = subprocess.run(["bash", str(EXAMPLE.parent / "demo.sh")], env={**os.environ, "MLMD_DEMO_DIR": str(tmp_path)},
                          capture_output=True, text=True)
    assert done.returncode == 2 and "is not a demo store" in done.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
