"""Terminal-safe output (issue 23, item 11): control characters in run and task names, artifact URIs,
property values, invalidation reasons, a task's own error output and error messages that quote
input are shown escaped (``\\x1b``, ``\\r``, ``\\n``) by every human-readable output of both CLIs and
by run-pipeline's plain lines, summary and live table; ``--json`` keeps them exact. Everything runs
through the CLIs on the real MLMD core (SQLite), the live table on a pseudo-terminal.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
from tests.pipelines import IMAGE
from tests.test_hostile import cli, run
from tests.test_terminal import Terminal

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

# ESC (a colour, an OSC that sets the window title ended by BEL), CR and LF (a forged line), BS, DEL,
# a C1 CSI, the Unicode line separator and a right-to-left override
PAYLOAD = "a\x1b[31mred\x1b]2;PWNED\x07\r\nforged\x08\x7f\x9b2J\u2028\u202eb"
# ... as the terminal must show it, written out by hand
SHOWN = r"a\x1b[31mred\x1b]2;PWNED\x07\r\nforged\x08\x7f\x9b2J\u2028\u202eb"
RUN = "run-" + PAYLOAD
TASK = "make-" + PAYLOAD
REASON = "bad data " + PAYLOAD
PIPELINE = "controls-" + PAYLOAD
# What a terminal acts on: every C0 control but the line feed that ends each line, DEL, C1, the
# Unicode separators and the bidirectional controls.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dsl.component(base_image=IMAGE)
def make(x: str, data: Output[Dataset]) -> str:
    with open(data.path, "w") as file:
        file.write(x)
    return x


@dsl.component(base_image=IMAGE)
def complain(x: str):
    import sys

    sys.stderr.write("refused " + x + "\n")
    sys.exit(3)


@dsl.pipeline(name="controls")
def controls(x: str):
    made = make(x=x)
    complain(x=made.outputs["Output"])


def hostile_pipeline(directory: Path) -> Path:
    """The pipeline named PIPELINE, its first task TASK (as a hand-edited IR could name them)."""
    path = directory / "controls.yaml"
    compiler.Compiler().compile(controls, str(path))
    documents = list(yaml.safe_load_all(path.read_text()))

    def rename(node):
        if isinstance(node, dict):
            return {(TASK if k == "make" else k): (TASK if k == "producerTask" and v == "make" else rename(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [TASK if v == "make" else rename(v) for v in node]
        return node

    spec = documents[0]
    spec["root"]["dag"]["tasks"] = rename(spec["root"]["dag"]["tasks"])
    spec["root"]["dag"]["tasks"][TASK]["taskInfo"]["name"] = TASK
    spec["pipelineInfo"]["name"] = PIPELINE
    path.write_text(yaml.safe_dump_all(documents, allow_unicode=True))
    return path


def assert_terminal_safe(text: str, *, shown: int = 1) -> None:
    """Nothing in ``text`` acts on a terminal, and the payload is there, escaped, ``shown`` times or more."""
    assert not RAW.search(text), f"raw control character: {text!r}"
    assert text.count(SHOWN) >= shown, text


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One failed run of the hostile pipeline: hostile run and task names, parameter value, artifact
    URIs (under a pipeline root named with the payload) and error output; the run's human output."""
    directory = tmp_path_factory.mktemp("controls")
    pipeline = hostile_pipeline(directory)
    db = f"sqlite:///{directory / 'mlmd.sqlite'}"
    root = directory / ("root-" + PAYLOAD)
    common = [str(pipeline), "--db", db, "--pipeline-root", str(root), "--param", f"x={PAYLOAD}"]
    code, out, err = run("mlmd-cache", "run-pipeline", *common, "--run-name", RUN)
    assert code == 1, err  # complain fails, by design
    code, as_json, err_json = run("mlmd-cache", "run-pipeline", *common, "--run-name", RUN + "-2", "--json")
    report = json.loads(as_json)
    return {"db": db, "pipeline": pipeline, "root": root, "common": common, "out": out, "err": err,
            "report": report, "json_err": err_json}


def test_run_pipeline_plain_lines_and_summary(store):
    assert_terminal_safe(store["out"], shown=2)  # the task's line, the summary
    assert f"run run-{SHOWN} of pipeline controls-{SHOWN}: 1 executed, 1 failed" in store["out"]
    # the task's own stderr, a line each (it is text of many lines), what is in a line escaped
    assert "    | refused a\\x1b[31mred\\x1b]2;PWNED\\x07\n    | forged\\x08\\x7f\\x9b2J\n" in store["out"]
    assert_terminal_safe(store["err"] + store["json_err"], shown=0)
    report = store["report"]  # --json: exact
    assert report["run"] == RUN + "-2" and TASK in report["tasks"]


def test_lineage_runs_and_show_run(store):
    db = store["db"]
    code, out, err = run("mlmd-lineage", "runs", "--db", db)
    assert code == 0, err
    assert_terminal_safe(out, shown=4)  # two runs, each of the pipeline
    assert len(out.splitlines()) == 3  # the header and two runs: no line forged by a name
    code, out, err = run("mlmd-lineage", "runs", "--db", db, "--json")
    assert {r["run"] for r in json.loads(out)["runs"]} == {RUN, RUN + "-2"}

    code, out, err = run("mlmd-lineage", "show", "run", RUN, "--db", db)
    assert code == 0, err
    assert_terminal_safe(out, shown=3)  # the run, its pipeline, its task
    code, out, err = run("mlmd-lineage", "show", "run", RUN, "--db", db, "--json")
    shown = json.loads(out)
    assert shown["run"] == RUN and shown["pipeline"] == PIPELINE and TASK in {e["task"] for e in shown["executions"]}
    assert any(PAYLOAD in a["uri"] for a in shown["artifacts"])


def test_lineage_show_explain_upstream_downstream(store):
    db = store["db"]
    execution = store["report"]["tasks"][TASK]["execution_id"]
    code, out, err = run("mlmd-lineage", "show", "execution", str(execution), "--db", db)
    assert code == 0, err
    assert_terminal_safe(out, shown=3)  # task, run, parameter x, the artifacts' runs and URIs
    code, out, err = run("mlmd-lineage", "show", "execution", str(execution), "--db", db, "--json")
    data = json.loads(out)
    assert data["task_name"] == TASK and data["run"] == RUN + "-2"
    assert data["properties"]["inputs"]["x"] == PAYLOAD
    artifact = next(o for o in data["out"] if o["kind"] == "artifact" and o.get("uri"))
    assert PAYLOAD in artifact["uri"]
    for command in (["show", "artifact", str(artifact["id"])], ["explain", str(execution)],
                    ["upstream", f"a:{artifact['id']}"], ["downstream", f"a:{artifact['id']}"]):
        code, out, err = run("mlmd-lineage", *command, "--db", db)
        assert code == 0, (command, err)
        assert_terminal_safe(out + err, shown=1)


def test_invalidate_and_its_list(store):
    db = store["db"]
    code, out, err = run("mlmd-cache", "invalidate", "--run", RUN, "--reason", REASON, "--db", db)
    assert code == 0, err
    assert_terminal_safe(out + err, shown=2)  # the run, the reason (and the task)
    code, out, err = run("mlmd-cache", "invalidate", "--list", "--db", db)
    assert code == 0, err
    assert_terminal_safe(out, shown=1)
    assert len(out.splitlines()) == 2  # the header and the invalidation
    code, out, err = run("mlmd-cache", "invalidate", "--list", "--db", db, "--json")
    [found] = json.loads(out)["invalidations"]
    assert found["reason"] == REASON and RUN in found["target"]


def test_plan_and_stats(store):
    code, out, err = run("mlmd-cache", "plan", *store["common"])
    assert code == 0, err
    assert_terminal_safe(out + err, shown=1)
    code, out, err = run("mlmd-cache", "plan", *store["common"], "--json")
    assert TASK in {t["name"] if isinstance(t, dict) else t for t in json.loads(out)["tasks"]}
    code, out, err = run("mlmd-cache", "stats", "--db", store["db"])
    assert code == 0, err
    assert not RAW.search(out + err)
    code, out, err = run("mlmd-cache", "stats", "--pipeline", PIPELINE, "--db", store["db"])
    assert code == 0, err
    assert_terminal_safe(out + err, shown=1)
    code, out, err = run("mlmd-cache", "index", "--dry-run", "--db", store["db"])
    assert code == 0, err
    assert_terminal_safe(out + err, shown=1)
    assert len(out.splitlines()) == 1
    code, out, err = run("mlmd-cache", "index", "--dry-run", "--db", store["db"], "--json")
    assert [p["pipeline"] for p in json.loads(out)["pipelines"]] == [PIPELINE]


@pytest.mark.parametrize("command", [
    ["mlmd-cache", "run-pipeline", "{tmp}/" + PAYLOAD + ".yaml"],
    ["mlmd-cache", "lookup", "{tmp}/" + PAYLOAD, "--pipeline", "p"],
    ["mlmd-cache", "fingerprint", "{tmp}/" + PAYLOAD],
], ids=["run-pipeline", "lookup", "fingerprint"])
def test_errors_that_quote_input_are_one_escaped_line(store, command, tmp_path):
    """A path given on the command line, quoted by the error (click's own, or the project's)."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code, out, err = run(*args, *(["--db", store["db"]] if args[1] != "fingerprint" else []))
    assert code in (1, 2) and len(err.splitlines()) == 1 and err.startswith("Error"), err
    assert not RAW.search(err), err
    assert "PWNED" in err and "forged" in err  # the path is quoted, escaped


def test_envs_shows_its_directory_escaped(tmp_path):
    code, out, err = run("mlmd-cache", "envs", "--env-dir", str(tmp_path / PAYLOAD))
    assert code == 0, err
    assert_terminal_safe(out, shown=1)
    assert len(out.splitlines()) == 1


def test_lookup_of_a_hit(tmp_path):
    """A cache source written through the library: its task's name and its output's URI are quoted
    by lookup's answer."""
    db = f"sqlite:///{tmp_path / 'm.sqlite'}"
    cache = ExecutionCache(connect(db))
    key = CacheKey.build(image="python:3.11", command=["echo", "x"], output_artifacts={"data": "system.Dataset"},
                         output_parameters={"p": "STRING"})
    cache.execute(cache.pipeline_run(PIPELINE, RUN), Task(TASK, key),
                  lambda started: Outputs(artifacts={"data": f"gs://bucket/{PAYLOAD}"}, parameters={"p": PAYLOAD}))
    (tmp_path / "key.json").write_text(key.to_json())
    code, out, err = run("mlmd-cache", "lookup", str(tmp_path / "key.json"), "--pipeline", PIPELINE, "--db", db)
    assert code == 0 and "hit: execution" in out, err
    assert_terminal_safe(out + err, shown=2)  # the task, the output's URI (the parameter is JSON)
    code, out, err = run("mlmd-cache", "lookup", str(tmp_path / "key.json"), "--pipeline", PIPELINE, "--db", db,
                         "--json")
    answer = json.loads(out)
    assert answer["source_task"] == TASK and answer["output_parameters"]["p"] == PAYLOAD
    assert answer["output_artifacts"]["data"][0]["uri"] == f"gs://bucket/{PAYLOAD}"


def test_drawings_show_control_characters_escaped(store, tmp_path):
    """Graphviz copied a control character into the SVG, which XML cannot hold: the drawing (and the
    HTML page made from it) could not be read. Drawn escaped, as the terminal shows it."""
    from tests.browser import require_dot

    require_dot()
    code, out, err = run("mlmd-lineage", "export", "--run", RUN, "--format", "svg", "-o", str(tmp_path / "run.svg"),
                         "--db", store["db"])
    assert code == 0, err
    svg = ElementTree.parse(tmp_path / "run.svg").getroot()
    texts = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    # the run's name: its line feed starts a new line of the label, the rest is escaped
    first, rest = SHOWN.split("\\n")  # the payload's line feed
    assert [f"run run-{first}", f"{rest} · pipeline controls-{first}", rest] == texts[:3], texts
    assert not RAW.search("".join(texts))
    code, out, err = run("mlmd-lineage", "export", "--run", RUN, "--format", "html", "-o", str(tmp_path / "run.html"),
                         "--db", store["db"])
    assert code == 0, err
    code, out, err = run("mlmd-lineage", "export", "--run", RUN, "--format", "json", "-o", "-", "--db", store["db"])
    assert RUN in {n.get("run") for n in json.loads(out[out.index("{"):])["nodes"]}  # exact in data formats


@dsl.component(base_image=IMAGE)
def use(data: Input[Dataset]) -> str:
    return "used"


@dsl.pipeline(name="remote-input")
def remote_input(uri: str):
    imported = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=True)
    use(data=imported.output)


def test_the_warning_of_a_remote_input_without_digest(tmp_path):
    """--key-by-content: an imported gs:// artifact has no digest; mlmd-cache's warning and the KFP
    SDK's (a Python warning) quote its URI. A process of its own: Python prints warnings there."""
    path = tmp_path / "remote.yaml"
    compiler.Compiler().compile(remote_input, str(path))
    code, out, err = cli("mlmd-cache", "run-pipeline", str(path), "--db", f"sqlite:///{tmp_path / 'm.sqlite'}",
                         "--pipeline-root", str(tmp_path / "root"), "--key-by-content",
                         "--param", f"uri=gs://bucket/{PAYLOAD}")
    assert code == 0, err
    assert "has no digest and is not local" in err and "UserWarning: It looks like you're using the remote" in err
    assert_terminal_safe(out + err, shown=2)


def test_the_live_table_on_a_terminal(store):
    """run-pipeline on a pseudo-terminal: rich's live table and the task lines above it."""
    terminal = Terminal(["run-pipeline", *store["common"], "--run-name", RUN + "-tty"])
    code = terminal.finish()
    assert code == 1, terminal.drawn[-2000:]
    drawn = terminal.drawn
    # rich draws its own escapes (colours, cursor moves); none of the payload's may get through
    for raw in ("\x1b[31mred", "\x1b]2;PWNED\x07", "\x9b2J", "\u202e", "\r\nforged", "\x08"):
        assert raw not in drawn, (raw, drawn[-2000:])
    assert "PWNED" in drawn and "forged" in drawn  # the names are shown, escaped
