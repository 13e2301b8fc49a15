"""`mlmd-lineage export` of pipelines that pass parameters (issue 26): the parameters that flow from
task to task are edges (producer → consumer, labelled with the input's name) in every format, the
runs of a whole store are laid out in rows, newest first, readable at 1,200 px wide, and the metrics
that a task logged are in its Metrics artifact's label.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import json
import xml.etree.ElementTree as ElementTree

import pytest
from click.testing import CliRunner
from kfp import dsl
from kfp.dsl import Metrics, Output

from lineage import graph as lg
from lineage import load
from lineage.cli import main
from mlmd_cache import connect
from tests import pipelines as p
from tests.browser import require_dot
from tests.test_lineage_export import SVG, box, classes, group, lines, size_px

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

RUNS = 10
SHOWN_WIDTH = 1200  # px: a laptop's browser window


@dsl.component(base_image=p.IMAGE)
def score(total: int, metrics: Output[Metrics]):
    metrics.log_metric("accuracy", total / 1000 + 0.0000012345)  # more digits than MLMD keeps
    metrics.log_metric("total", total)


@dsl.pipeline(name="params-only")
def params_only(x: int = 3):
    first = p.square(x=x)
    second = p.square(x=first.output)
    both = p.add(a=first.output, b=second.output)
    p.repeat(label="ab", n=both.output)
    score(total=both.output)
    with dsl.ParallelFor([5, 6]) as item:
        inner = p.square(x=item)
        p.add(a=inner.output, b=inner.output)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """Ten runs of a pipeline whose tasks pass only parameters (and one Metrics artifact)."""
    root = tmp_path_factory.mktemp("params")
    db = f"sqlite:///{root / 'mlmd.sqlite'}"
    pipeline = p.compile_to(root / "params.yaml", params_only)
    reports = [p.run(db, pipeline, root, params={"x": 2 + run % 3}, run_name=f"run-{run}") for run in range(RUNS)]
    return db, reports


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout_bytes, result.stderr


def exported_json(db: str, *args: str) -> dict:
    code, out, err = cli("export", *args, "--format", "json", "-o", "-", "--db", db)
    assert code == 0, err
    return json.loads(out)


def parameter_edges(data: dict) -> set:
    return {(e["source"], e["target"], e["key"]) for e in data["edges"] if e.get("event") == lg.PARAMETER}


def test_parameters_are_edges_from_producer_to_consumer(store):
    db, reports = store
    report = reports[0]

    def e(task: str) -> str:
        return f"e:{report.tasks[task].execution_id}"

    data = exported_json(db, "--run", "run-0")
    edges = parameter_edges(data)
    assert {(e("square"), e("square-2"), "x"), (e("square"), e("add"), "a"), (e("square-2"), e("add"), "b"),
            (e("add"), e("repeat"), "n"), (e("add"), e("score"), "total")} <= edges
    # within each loop iteration, its square feeds its add; never across iterations, and never from
    # the run's own parameter x (no task made it)
    inner = {(u, v, key) for u, v, key in edges if key != "x" and data_task(data, v) == "add-2"}
    assert len(inner) == 4 and all(parent(data, u) == parent(data, v) for u, v, _ in inner)
    assert not [edge for edge in edges if data_task(data, edge[1]) == "square" or data_task(data, edge[1]) == "square-3"]
    assert len(edges) == 9
    code, _, err = cli("export", "--run", "run-0", "--format", "dot", "-o", "-", "--db", db)
    assert code == 0 and err.startswith(f"wrote {len(data['nodes'])} nodes and {len(data['edges'])} edges"), err
    assert len(data["edges"]) > 0


def data_task(data: dict, node: str) -> str:
    return next(n["task_name"] for n in data["nodes"] if n["id"] == node)


def parent(data: dict, node: str) -> int:
    return next(n["properties"].get("parent_dag_id") for n in data["nodes"] if n["id"] == node)


def test_every_run_draws_its_parameters_and_the_svg_shows_them(store):
    require_dot()
    db, reports = store
    whole = exported_json(db)
    assert len(parameter_edges(whole)) == 9 * RUNS  # cached runs too: a CACHED task records its outputs
    code, out, err = cli("export", "--run", "run-0", "--format", "svg", "-o", "-", "--db", db)
    assert code == 0, err
    svg = ElementTree.fromstring(out)
    drawn = {g.find(f"{SVG}title").text for g in classes(svg, "edge").values()}
    report = reports[0]
    producer, consumer = (f"e:{report.tasks[t].execution_id}" for t in ("add", "repeat"))
    assert f"{producer}->{consumer}" in drawn
    [edge] = [g for g in classes(svg, "edge").values() if g.find(f"{SVG}title").text == f"{producer}->{consumer}"]
    assert lines(edge) == ["n"]
    # the chain reads top to bottom: each consumer below its producer
    assert box(group(svg, producer))[3] < box(group(svg, consumer))[1]


def test_ten_runs_read_at_1200_px_in_rows_newest_first(store):
    require_dot()
    db, _ = store
    code, out, err = cli("export", "--format", "svg", "-o", "-", "--db", db)
    assert code == 0, err
    svg = ElementTree.fromstring(out)
    width, height = size_px(svg)
    scale = min(1.0, SHOWN_WIDTH / width)
    smallest = min(float(t.get("font-size")) for t in svg.iter(f"{SVG}text")) * 4 / 3 * scale
    assert smallest >= 9, (width, height)  # was a strip 15,000 px wide: text of 1 px at 1,200 px
    assert height >= width / 2, (width, height)
    frames = {run: box(group(svg, node)) for node, run in root_dags(db).items()}
    # reading order (rows top to bottom, each left to right) is newest first
    rows: list = []
    for run, (left, top, _, _) in sorted(frames.items(), key=lambda item: item[1][1]):
        if rows and abs(rows[-1][0][1] - top) < 40:
            rows[-1].append((left, top, run))
        else:
            rows.append([(left, top, run)])
    order = [run for row in rows for _, _, run in sorted(row)]
    assert order == [f"run-{run}" for run in reversed(range(RUNS))], order
    assert len(rows) > 1


def root_dags(db: str) -> dict:
    """The root DAG execution of each run, by node."""
    graph = load.load_store(connect(db), progress=False)
    return {node: data["run"] for node, data in graph.nodes(data=True)
            if lg.is_dag(data) and lg.parent_dag(data) is None}


def test_metric_values_are_in_the_labels(store):
    require_dot()
    db, _ = store
    code, out, err = cli("export", "--run", "run-0", "--format", "svg", "-o", "-", "--db", db)
    assert code == 0, err
    svg = ElementTree.fromstring(out)
    data = exported_json(db, "--run", "run-0")
    [metrics] = [n["id"] for n in data["nodes"] if n["type"] == "system.Metrics"]
    # run-0's x is 2: square 4, square-2 16, add 20
    assert lines(group(svg, metrics))[-2:] == [f"accuracy = {20 / 1000 + 0.0000012345:.10g}", "total = 20"]


# -- the HTML page of the ten runs, in headless Chromium at 1200x800 -------------------------------------

@pytest.fixture(scope="module")
def page_file(store, tmp_path_factory):
    require_dot()
    db, _ = store
    path = tmp_path_factory.mktemp("html") / "store.html"
    code, _, err = cli("export", "--format", "html", "-o", str(path), "--db", db)
    assert code == 0, err
    return path


@pytest.fixture
def page(browser, page_file):
    browser.open(page_file.as_uri())
    return browser


def test_html_opens_readable_on_the_newest_run(page, store):
    _, reports = store
    scale = page.evaluate("(function () { var svg = document.getElementById('lineage-svg'); "
                          "return svg.getBoundingClientRect().width / Number(svg.getAttribute('viewBox').split(' ')[2]); })()")
    text_px = 14 * scale  # Graphviz's 14 pt labels, in the drawing's units
    assert 11 <= text_px <= 14 * 4 / 3 + 0.01, text_px  # was the whole store squeezed: text of 1 px
    newest = page.evaluate("document.querySelector('#lineage-svg g.cluster').getBoundingClientRect().toJSON()")
    canvas = page.evaluate("document.getElementById('canvas').getBoundingClientRect().toJSON()")
    frame_of_newest = page.evaluate(f"document.getElementById('e:{reports[-1].dag_execution_id}')"
                                    ".getBoundingClientRect().toJSON()")
    assert canvas["top"] <= frame_of_newest["top"] < canvas["top"] + 80, (frame_of_newest, canvas)
    assert canvas["left"] <= frame_of_newest["left"] and frame_of_newest["right"] <= canvas["right"] + 1
    assert newest["top"] < canvas["bottom"]


def test_html_panel_summarises_the_runs_before_any_hover(page):
    panel = page.evaluate("document.getElementById('panel').innerText")
    assert panel.startswith(f"{RUNS} runs, ")
    listed = page.evaluate("Array.from(document.querySelectorAll('#panel li > button')).map(a => a.textContent)")
    assert listed == [f"run-{run}" for run in reversed(range(RUNS))]  # newest first, as drawn
    width = page.evaluate("document.getElementById('panel').getBoundingClientRect().width")
    assert width <= 0.27 * 1200, width  # was 388 px, a third of the window
    page.click(*page.centre_of("document.querySelector('#panel li > button')"))  # a run: its frame, selected
    assert page.evaluate("document.querySelector('#lineage-svg .selected').getAttribute('class')") == "cluster selected"


def test_html_search_placeholder_is_whole(page):
    shown, room = page.evaluate(
        "(function () { var s = document.getElementById('search'), style = getComputedStyle(s);"
        " var context = document.createElement('canvas').getContext('2d');"
        " context.font = style.fontSize + ' ' + style.fontFamily;"
        " return [context.measureText(s.placeholder).width,"
        "         s.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)]; })()")
    assert shown <= room, (shown, room)


def test_html_rows_have_distinct_names_and_long_values_fold(page, store):
    db, reports = store
    score = f"e:{reports[0].tasks['score'].execution_id}"
    page.evaluate(f"var s = document.getElementById('search'); s.value = ''; s.focus()")
    page.type_text(score)
    assert page.evaluate("document.querySelector('#lineage-svg .selected').id") == score
    names = page.evaluate("Array.from(document.querySelectorAll('#panel th')).map(e => e.textContent)")
    assert len(names) == len(set(names)), names  # "inputs" was both the artifacts and the parameters
    assert {"input artifacts", "output artifacts", "parameters from", "inputs", "outputs"} <= set(names)
    panel = page.evaluate("document.getElementById('panel').innerText")
    assert f"e:{reports[0].tasks['add'].execution_id} add" in panel
    key = next(n for n in exported_json(db, "--run", "run-0")["nodes"] if n["id"] == score)["properties"]["mlmd_cache_key"]
    key_text = json.dumps(key, indent=1)
    assert len(key_text) > 1000 and "def score" in key_text  # the component's source
    assert "def score" not in panel and len(panel) < 1500, len(panel)  # folded
    page.click(*page.centre_of("Array.from(document.querySelectorAll('#panel summary'))"
                               ".find(s => s.closest('tr').querySelector('th').textContent === 'mlmd_cache_key')"))
    assert "def score" in page.evaluate("document.getElementById('panel').innerText")  # unfolded on a click
