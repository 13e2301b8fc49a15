"""`mlmd-lineage export`: drawings readable at a README's width (800 px), runs as frames, short
paths, tasks that never ran; standard output for every format; empty selections refused; the HTML
page in a real headless Chromium (no network, nodes, search, properties, pan and zoom, screenshot).
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import io
import json
import re
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from click.testing import CliRunner
from kfp import dsl
from ml_metadata.proto import metadata_store_pb2 as mlmd

from lineage import export as lexport
from lineage import graph as lg
from lineage import load
from lineage.cli import main
from mlmd_cache import ExecutionCache, connect
from tests import pipelines as p
from tests.browser import require_dot, screenshot
from tests.test_lineage import Scenario

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

SVG = "{http://www.w3.org/2000/svg}"
PT_TO_PX = 4 / 3  # an SVG drawn at its own size: Graphviz measures in points
README_WIDTH = 800


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("export")
    return Scenario(f"sqlite:///{root / 'store' / 'mlmd.sqlite'}", root)


@dsl.pipeline(name="fails-midway")
def fails_midway():
    first = p.echo_value(x="start")
    boom = p.maybe_fail(fail=True).after(first)
    p.echo_value(x=boom.output)  # NOT_RUN: no execution records it


@dsl.pipeline(name="branch-not-taken")
def branch_not_taken(flag: bool = False):
    p.echo_value(x="always")
    with dsl.If(flag == True):  # noqa: E712 (KFP's condition syntax)
        p.echo_value(x="only when asked")


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("other-runs")
    db = f"sqlite:///{root / 'mlmd.sqlite'}"
    failed = p.run(db, p.compile_to(root / "fails.yaml", fails_midway), root, run_name="failed")
    skipped = p.run(db, p.compile_to(root / "branch.yaml", branch_not_taken), root, run_name="skipped")
    return db, failed, skipped


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout_bytes, result.stderr


def export_svg(db: str, *args: str) -> ElementTree.Element:
    require_dot()
    code, out, err = cli("export", *args, "--format", "svg", "-o", "-", "--db", db)
    assert code == 0, err
    return ElementTree.fromstring(out)


def size_px(svg: ElementTree.Element) -> tuple[float, float]:
    return tuple(float(svg.get(side).removesuffix("pt")) * PT_TO_PX for side in ("width", "height"))


def text_px_at_readme_width(svg: ElementTree.Element) -> float:
    """The smallest text of the drawing in pixels, the drawing shown at most 800 px wide."""
    width, _ = size_px(svg)
    smallest = min(float(t.get("font-size")) for t in svg.iter(f"{SVG}text")) * PT_TO_PX
    return smallest * min(1.0, README_WIDTH / width)


def group(svg: ElementTree.Element, element_id: str) -> ElementTree.Element:
    [found] = [g for g in svg.iter(f"{SVG}g") if g.get("id") == element_id]
    return found


def lines(element: ElementTree.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def own_lines(element: ElementTree.Element) -> list[str]:
    """The text of a frame itself, not of what it holds."""
    return [t.text or "" for t in element.findall(f"{SVG}text")]


def box(element: ElementTree.Element) -> tuple[float, float, float, float]:
    """The bounds of a frame's outline or a node's shape (Graphviz's SVG does not nest a frame's nodes in it)."""
    shape = next(e for e in element if e.tag in (f"{SVG}path", f"{SVG}polygon", f"{SVG}ellipse"))
    if shape.tag == f"{SVG}ellipse":
        cx, cy, rx, ry = (float(shape.get(k)) for k in ("cx", "cy", "rx", "ry"))
        return cx - rx, cy - ry, cx + rx, cy + ry
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", shape.get("d") or shape.get("points"))]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def inside(svg: ElementTree.Element, frame_id: str) -> set[str]:
    """The nodes drawn within a frame."""
    left, top, right, bottom = box(group(svg, frame_id))
    found = set()
    for key, node in classes(svg, "node").items():
        x0, y0, x1, y1 = box(node)
        if left <= x0 and x1 <= right and top <= y0 and y1 <= bottom:
            found.add(key)
    return found


def classes(svg: ElementTree.Element, kind: str) -> dict[str, ElementTree.Element]:
    return {g.get("id"): g for g in svg.iter(f"{SVG}g") if g.get("class") == kind}


# -- static drawings ---------------------------------------------------------------------------------

def test_a_run_is_readable_at_readme_width(scenario):
    svg = export_svg(scenario.db, "--run", "run-3")
    width, height = size_px(svg)
    assert width / height <= 2, (width, height)  # a chain is a column, not a strip
    assert text_px_at_readme_width(svg) >= 8, size_px(svg)
    code, png, err = cli("export", "--run", "run-3", "--format", "png", "-o", "-", "--db", scenario.db)
    assert code == 0 and png.startswith(b"\x89PNG\r\n\x1a\n"), err
    png_width, png_height = struct.unpack(">II", png[16:24])
    # drawn at 96 dpi, the PNG has the SVG's size in pixels, so its text is as large
    assert abs(png_width - width) <= 0.02 * width and abs(png_height - height) <= 0.02 * height


def test_the_whole_store_is_a_frame_per_run(scenario):
    svg = export_svg(scenario.db)  # five runs side by side: for the HTML page's zoom rather than a README
    frames = classes(svg, "cluster")
    assert len(frames) == 5 and all(key.startswith("e:") for key in frames)  # one frame per run, its root DAG


def test_the_run_is_a_frame_and_no_node_floats(scenario):
    s = scenario
    graph = load.load_run(s.store, "run-3")
    [root] = [n for n, d in graph.nodes(data=True) if d["type"] == "system.DAGExecution"]
    svg = export_svg(s.db, "--run", "run-3")
    frame = group(svg, root)
    assert frame.get("class") == "cluster"
    assert own_lines(frame) == ["run run-3 · pipeline lineage-chain", f"DAG execution {root[2:]}, complete"]
    nodes = classes(svg, "node")
    assert set(nodes) == set(graph) - {root}  # the DAG is the frame, not a node
    ends = {end for g in classes(svg, "edge").values() for end in g.find(f"{SVG}title").text.split("->")}
    assert set(nodes) <= ends
    # run-3's tasks are in its frame; the dataset it reused is in run-1's frame
    assert inside(svg, root) == {s.e("run-3", t) for t in ("make-data", "train", "evaluate")} | {
        s.output("run-3", "train"), s.output("run-3", "evaluate")}
    assert inside(svg, "run:run-1") == {s.output("run-1", "make-data")}
    assert own_lines(group(svg, "run:run-1")) == ["run run-1"]


def test_paths_are_cut_at_separators_and_show_no_local_directory(scenario, tmp_path_factory):
    s = scenario
    graph = load.load_run(s.store, "run-3")
    svg = export_svg(s.db, "--run", "run-3")
    texts = lines(svg)
    base = str(tmp_path_factory.getbasetemp())
    assert not [t for t in texts if base in t or "pytest-" in t]
    for node, data in graph.nodes(data=True):
        if data["kind"] != "artifact":
            continue
        [shown] = [t for t in lines(group(svg, node)) if t.startswith("…/")]
        components = data["uri"].split("/")
        assert shown in {"…/" + "/".join(components[-k:]) for k in (1, 2, 3)}, shown
        assert len(shown) <= 32


def test_cached_executions_are_dashed_and_name_their_source(scenario):
    s = scenario
    svg = export_svg(s.db, "--run", "run-3")
    cached = group(svg, s.e("run-3", "make-data"))
    source = s.reports["run-1"].tasks["make-data"].execution_id
    assert f"cached from {source}" in lines(cached)
    assert cached.find(f"{SVG}path").get("stroke-dasharray")
    assert not group(svg, s.e("run-3", "train")).find(f"{SVG}path").get("stroke-dasharray")


def test_a_failed_run_shows_the_task_that_never_ran(other_runs):
    db, failed, _ = other_runs
    assert p.states(failed) == {"echo-value": "COMPLETE", "maybe-fail": "FAILED", "echo-value-2": "NOT_RUN"}
    assert failed.tasks["echo-value-2"].execution_id is None  # no record: counted from the DAG's total_dag_tasks
    graph = load.load_run(connect(db), "failed")
    [root] = [n for n, d in graph.nodes(data=True) if d["type"] == "system.DAGExecution"]
    svg = export_svg(db, "--run", "failed")
    assert own_lines(group(svg, root))[-1] == f"DAG execution {root[2:]}, failed"
    missing = group(svg, f"not-run:{root}")
    assert lines(missing) == ["1 task not run (after a failure)", "no execution recorded"]
    assert f"not-run:{root}" in inside(svg, root)
    boom = f"e:{failed.tasks['maybe-fail'].execution_id}"
    edges = {g.find(f"{SVG}title").text for g in classes(svg, "edge").values()}
    assert f"{boom}->not-run:{root}" in edges
    assert "FAILED" in " ".join(lines(group(svg, boom)))


def test_a_branch_not_taken_is_drawn_skipped(other_runs):
    db, _, skipped = other_runs
    assert p.states(skipped)["condition-1"] == "SKIPPED"
    condition = f"e:{skipped.tasks['condition-1'].execution_id}"
    svg = export_svg(db, "--run", "skipped")
    frame = group(svg, condition)
    assert own_lines(frame) == [f"condition-1: DAG execution {condition[2:]}, skipped (condition false)"]
    assert frame.find(f"{SVG}path").get("stroke-dasharray")  # dotted
    assert lines(group(svg, f"not-run:{condition}")) == ["1 task skipped", "no execution recorded"]
    assert f"not-run:{condition}" in inside(svg, condition)


def test_an_artifact_neighbourhood_counts_no_tasks_it_did_not_load(scenario):
    svg = export_svg(scenario.db, "--artifact", scenario.output("run-3", "train")[2:], "--depth", "1")
    assert not [key for key in classes(svg, "node") if key.startswith("not-run:")]


# -- standard output, formats, empty selections ------------------------------------------------------

@pytest.mark.parametrize("fmt", lexport.FORMATS)
def test_dash_is_standard_output_for_every_format(scenario, tmp_path, monkeypatch, fmt):
    if fmt in ("svg", "png", "html"):
        require_dot()
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("export", "--run", "run-3", "--format", fmt, "-o", "-", "--db", scenario.db)
    assert code == 0, err
    assert not Path("-").exists()
    graph = lg.with_parameter_flow(load.load_run(scenario.store, "run-3"))  # train's loss feeds evaluate
    assert err == f"wrote {len(graph)} nodes and {graph.number_of_edges()} edges to standard output ({fmt})\n"
    code, _, err = cli("export", "--run", "run-3", "-o", f"run.{fmt}", "--db", scenario.db)
    assert code == 0, err
    assert out == Path(f"run.{fmt}").read_bytes()


def test_dash_needs_a_format(scenario):
    code, out, err = cli("export", "--run", "run-3", "-o", "-", "--db", scenario.db)
    assert code == 2 and not out
    assert err.startswith("Error: give --format with -o -") and len(err.splitlines()) == 1


def test_empty_selections_write_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    store = connect(db)

    def refused(args, message):
        target = tmp_path / "out.dot"
        code, out, err = cli("export", *args, "-o", str(target), "--db", db)
        assert (code, err) == (1, f"Error: nothing to export: {message}\n"), args
        assert not target.exists() and not out
        code, out, err = cli("export", *args, "--format", "png", "-o", "-", "--db", db)
        assert (code, out) == (1, b""), args

    refused([], "the store has no executions")
    ExecutionCache(store).pipeline_run("p", "nothing-ran")
    refused(["--run", "nothing-ran"], "run 'nothing-ran' has no executions")
    artifact_type = store.put_artifact_type(mlmd.ArtifactType(name="system.Dataset"))
    [lonely] = store.put_artifacts([mlmd.Artifact(type_id=artifact_type, uri="file:///x", state=mlmd.Artifact.LIVE)])
    refused([], "the store has no lineage (no execution read or wrote its 1 artifact)")
    refused(["--artifact", str(lonely)], f"artifact #{lonely} has no lineage (no execution read or wrote it)")


def test_an_unwritable_output_is_one_line(scenario, tmp_path):
    code, _, err = cli("export", "--run", "run-3", "-o", str(tmp_path / "missing" / "run.json"), "--db", scenario.db)
    assert code == 2 and err.startswith("Error: cannot write ") and len(err.splitlines()) == 1


# -- the HTML page in headless Chromium ---------------------------------------------------------------

@pytest.fixture(scope="module")
def page_file(scenario, tmp_path_factory) -> Path:
    require_dot()
    path = tmp_path_factory.mktemp("html") / "store.html"
    code, _, err = cli("export", "--format", "html", "-o", str(path), "--db", scenario.db)
    assert code == 0, err
    return path


@pytest.fixture
def page(browser, page_file):
    requests = browser.open(page_file.as_uri())
    browser.requests = requests
    return browser


def viewbox(page) -> list[float]:
    return [float(v) for v in page.evaluate("document.getElementById('lineage-svg').getAttribute('viewBox')").split()]


def test_html_needs_no_network(page, page_file):
    text = page_file.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text)
    assert page.requests == [page_file.as_uri()]  # the page itself, nothing else (and the network is off)
    assert page.evaluate("document.readyState") == "complete"


def test_html_holds_every_node(page, scenario):
    whole = load.load_store(scenario.store, progress=False)
    dags = {n for n, d in whole.nodes(data=True) if d["type"] == "system.DAGExecution"}
    shown = page.evaluate("Array.from(document.querySelectorAll('#lineage-svg g.node')).map(e => e.id)")
    assert set(shown) == set(whole) - dags
    frames = page.evaluate("Array.from(document.querySelectorAll('#lineage-svg g.cluster')).map(e => e.id)")
    assert set(frames) == dags


def test_html_search_highlights_and_centres(page, scenario):
    target = scenario.output("run-3", "train")
    page.evaluate("document.getElementById('search').focus()")
    page.type_text(target)
    assert page.evaluate("Array.from(document.querySelectorAll('#lineage-svg .match')).map(e => e.id)") == [target]
    assert page.evaluate("document.getElementById('matches').textContent") == "1 match"
    x, y = page.centre_of(f"document.getElementById('{target}')")
    cx, cy = page.centre_of("document.getElementById('canvas')")
    assert abs(x - cx) < 2 and abs(y - cy) < 2
    assert f"artifact #{target[2:]} model" in page.evaluate("document.getElementById('panel').innerText")

    page.evaluate("var s = document.getElementById('search'); s.value = ''; s.focus()")
    page.type_text("train")  # by task name: every run's train (and the paths under train/)
    matches = page.evaluate("Array.from(document.querySelectorAll('#lineage-svg .match')).map(e => e.id)")
    assert {scenario.e(run, "train") for run in scenario.reports} <= set(matches)
    first = page.evaluate("document.querySelector('#lineage-svg .selected').id")
    page.press("Enter")  # the next match
    assert page.evaluate("document.querySelector('#lineage-svg .selected').id") != first


def test_html_hover_and_click_show_properties(page, scenario):
    node = scenario.e("run-2", "train")
    page.evaluate("document.getElementById('fit').click()")
    page.mouse("mouseMoved", *page.centre_of(f"document.getElementById('{scenario.output('run-3', 'evaluate')}')"))
    assert f"artifact #{scenario.output('run-3', 'evaluate')[2:]} metrics" in page.evaluate(
        "document.getElementById('panel').innerText")
    page.click(*page.centre_of(f"document.getElementById('{node}')"))
    assert page.evaluate("document.querySelector('#lineage-svg .selected').id") == node
    panel = page.evaluate("document.getElementById('panel').innerText")
    source = scenario.reports["run-1"].tasks["train"].execution_id
    assert f"execution {node[2:]} train" in panel and "CACHED" in panel and f"e:{source} train" in panel
    assert "run-2" in panel and "cache_fingerprint" in panel
    page.mouse("mouseMoved", *page.centre_of(f"document.getElementById('{scenario.e('run-1', 'train')}')"))
    assert f"execution {node[2:]} train" in page.evaluate("document.getElementById('panel').innerText")  # kept
    page.click(*page.centre_of("document.querySelector('#panel a')"))  # a neighbour, by its link
    assert page.evaluate("document.querySelector('#lineage-svg .selected').id") != node


def test_html_pans_and_zooms(page):
    page.evaluate("document.getElementById('fit').click()")
    initial = viewbox(page)
    cx, cy = page.centre_of("document.getElementById('canvas')")
    page.mouse("mouseWheel", cx, cy, deltaX=0, deltaY=-400)
    zoomed = viewbox(page)
    assert zoomed[2] < initial[2] * 0.7
    page.drag((cx, cy), (cx + 100, cy + 50))
    dragged = viewbox(page)
    assert dragged[0] < zoomed[0] and dragged[1] < zoomed[1] and dragged[2] == zoomed[2]
    page.evaluate("document.getElementById('zoom-out').click()")
    assert viewbox(page)[2] > dragged[2]
    page.evaluate("document.getElementById('fit').click()")
    assert viewbox(page) == initial


def test_html_screenshot_shows_the_graph(page_file, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    screenshot(page_file.as_uri(), str(shot), 1200, 800)
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert image.size == (1200, 800)
    colours = image.getcolors(maxcolors=1 << 20)
    counts = {colour: count for count, colour in colours}
    drawn = sum(count for colour, count in counts.items() if colour != (255, 255, 255))
    assert drawn > 0.1 * 1200 * 800  # not blank
    # the drawing itself: executed (green), cached (grey) and artifact (blue) fills, each a visible area
    for fill in ((0xe6, 0xf4, 0xea), (0xf1, 0xf3, 0xf4), (0xe8, 0xf0, 0xfe)):
        assert counts.get(fill, 0) > 2000, fill


def test_html_data_cannot_end_its_script(scenario, tmp_path):
    require_dot()
    graph = load.load_run(scenario.store, "run-3")
    graph.nodes[scenario.e("run-3", "train")]["properties"]["note"] = "</script><script>alert(1)</script>"
    text = lexport.to_html(graph)
    data = text[text.index('id="lineage-data">') + len('id="lineage-data">'):]
    data = data[:data.index("</script>")]
    decoded = json.loads(data)
    assert decoded["nodes"][scenario.e("run-3", "train")]["properties"]["note"].startswith("</script>")


def test_loading_a_store_shows_rich_progress_and_clears_it(scenario, capsys):
    load.load_store(scenario.store, progress=True)
    err = capsys.readouterr().err
    # rich's bar (the one the runner's live table uses, not a second hand-drawn one): the count done,
    # the time left, taken away at the end
    assert "loading lineage" in err and "━" in err and re.search(r"(\d+)/\1\b", err), err
    assert err.endswith("\x1b[2K"), err
    load.load_store(scenario.store, progress=False)
    assert capsys.readouterr().err == ""
