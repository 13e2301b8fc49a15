"""`mlmd-lineage export --format html` of hostile names (issue 23, item 3): the hostile-input walk's 15
payloads as run names, task names, artifact URIs and property values, exported through the CLI from
a real store and opened in headless Chromium. Every payload tries to run script that marks the page
(``data-pwned`` on the root element, ``window.__pwned``); the test reads the page without its own
script (the DevTools protocol, and Chromium's ``--dump-dom``) and checks that nothing ran, that no
element carries a handler attribute or a link, and that the page still works: every node drawn, the
data loaded, the names shown as text. (no `from __future__ import annotations`: KFP reads the
components' annotations as types)"""

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl
from kfp.dsl import Dataset, Output

from tests.browser import FLAGS, NO_NETWORK, Browser, chromium_path, require_dot
from tests.pipelines import IMAGE
from tests.test_hostile import run

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice


def _mark(n: int) -> str:
    """Script that marks the page (no space, no quote: it has to fit wherever a payload lands)."""
    return f"document.documentElement.dataset.pwned{n}=window.__pwned={n}"


# The walk's payloads (each with its own mark, so that a failure names the payload that ran)
PAYLOADS = {
    "data-marker": f"r/*DATA*/null autofocus tabindex=1 onfocus={_mark(1)}//",
    "end-script": f"</script><script>{_mark(2)}</script>",
    "img-onerror": f"<img src=x onerror={_mark(3)}>",
    "double-quote": f'"><img src=x onerror={_mark(4)}>',
    "single-quote": f"'><img src=x onerror={_mark(5)}>",
    "javascript-uri": f"javascript:{_mark(6)}",
    "svg-onload": f"<svg onload={_mark(7)}>",
    "template": f"{{{{ {_mark(8)} }}}}{{% if 1 %}}<img src=x onerror={_mark(8)}>{{% endif %}}{{# #}}",
    "end-textarea": f"</textarea><img src=x onerror={_mark(9)}>",
    "end-comment": f"--><img src=x onerror={_mark(10)}><!--",
    "line-separators": f"\u2028\u2029</script><img src=x onerror={_mark(11)}>\u2028",
    "script-comment": f"<!--<script>{_mark(12)}</script>",
    "attribute": f'" autofocus onfocus={_mark(13)} x="',
    "entities": f"&lt;img src=x onerror={_mark(14)}&gt;&amp;&foo;&#60;",
    "cdata-link": f"]]><a href=javascript:{_mark(15)}>x</a><iframe srcdoc=<script>{_mark(15)}</script>>",
}


@dsl.component(base_image=IMAGE)
def make(x: str, data: Output[Dataset]) -> str:
    with open(data.path, "w") as file:
        file.write(x)
    return x


@dsl.pipeline(name="hostile-page")
def hostile_page(x: str, uri: str):
    make(x=x)
    dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=True)


def renamed(source: Path, target: Path, task: str) -> Path:
    documents = list(yaml.safe_load_all(source.read_text()))
    tasks = documents[0]["root"]["dag"]["tasks"]
    body = tasks.pop("make")
    body["taskInfo"]["name"] = task
    tasks[task] = body
    target.write_text(yaml.safe_dump_all(documents, allow_unicode=True))
    return target


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run per payload: the payload is the run's name, its task's name (``t `` before it), the
    imported artifact's URI and the value of the parameter (and output) ``x``."""
    directory = tmp_path_factory.mktemp("hostile-page")
    source = directory / "page.yaml"
    compiler.Compiler().compile(hostile_page, str(source))
    db = f"sqlite:///{directory / 'mlmd.sqlite'}"
    tasks, artifacts = {}, {}
    for number, (label, payload) in enumerate(PAYLOADS.items()):
        pipeline = renamed(source, directory / f"{number}.yaml", "t " + payload)
        code, out, err = run("mlmd-cache", "run-pipeline", str(pipeline), "--db", db, "--run-name", payload,
                             "--pipeline-root", str(directory / "root"), "--param", f"x={payload}",
                             "--param", f"uri={payload}", "--json")
        assert code == 0, (label, err)
        tasks[label] = json.loads(out)["tasks"]["t " + payload]["execution_id"]
        code, out, err = run("mlmd-lineage", "show", "execution", str(tasks[label]), "--db", db, "--json")
        assert code == 0, (label, err)
        [artifacts[label]] = [o["id"] for o in json.loads(out)["out"] if o["kind"] == "artifact"]
    return {"db": db, "directory": directory, "tasks": tasks, "artifacts": artifacts}


def export(store: dict, name: str, *args: str) -> Path:
    require_dot()
    path = store["directory"] / f"{name}.html"
    code, _, err = run("mlmd-lineage", "export", *args, "--format", "html", "-o", str(path), "--db", store["db"])
    assert code == 0, err
    return path


def exported_nodes(store: dict, *args: str) -> set:
    """The nodes a drawing shows: those of the JSON export but the DAG executions (drawn as frames)."""
    code, out, err = run("mlmd-lineage", "export", *args, "--format", "json", "-o", "-", "--db", store["db"])
    assert code == 0, err
    return {n["id"] for n in json.loads(out[out.index("{"):])["nodes"] if n["type"] != "system.DAGExecution"}


# What a page may hold, read through DevTools (the page's own script plays no part in it)
INSPECT = """(function () {
  var all = Array.from(document.querySelectorAll('*'));
  return {
    marks: Object.keys(document.documentElement.dataset),
    flag: window.__pwned === undefined ? null : String(window.__pwned),
    handlers: all.flatMap(function (e) { return Array.from(e.attributes)
      .filter(function (a) { return /^on/i.test(a.name) || /^\\s*javascript:/i.test(a.value); })
      .map(function (a) { return e.tagName + ' ' + a.name; }); }),
    elements: all.map(function (e) { return e.tagName.toLowerCase(); })
      .filter(function (t) { return ['img', 'iframe', 'a', 'object', 'embed', 'textarea', 'foreignobject'].indexOf(t) >= 0; }),
    scripts: document.scripts.length,
    svgs: document.querySelectorAll('svg').length,
    nodes: Array.from(document.querySelectorAll('#lineage-svg g.node')).map(function (e) { return e.id; }),
    labels: Array.from(document.querySelectorAll('#lineage-svg text')).map(function (t) { return t.textContent; }),
    title: document.title,
    heading: document.querySelector('h1') && document.querySelector('h1').textContent
  };
})()"""


def dump_dom(page: Path) -> str:
    """Chromium's own ``--dump-dom``: the DOM after the page's scripts and handlers ran."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run([chromium_path(), *FLAGS, *NO_NETWORK, f"--user-data-dir={profile}", "--dump-dom",
                               page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def searched(browser: Browser, text: str) -> int:
    """How many nodes the page's search box highlights for ``text`` (its own script does that)."""
    return browser.evaluate(f"var s = document.getElementById('search'); s.value = {json.dumps(text)}; "
                            "s.dispatchEvent(new Event('input')); "
                            "document.querySelectorAll('#lineage-svg .match').length")


def check_page(browser: Browser, page: Path, title: str, nodes: set, tasks: dict) -> None:
    """Nothing ran; the page works: every node drawn, the data loaded, each task's names shown as text."""
    assert "data-pwned" not in dump_dom(page)
    browser.open(page.as_uri())
    browser.call("Emulation.setFocusEmulationEnabled", enabled=True)  # focus handlers as in a window
    browser.evaluate("document.getElementById('search').focus(); document.activeElement.blur()")
    seen = browser.evaluate(INSPECT)
    assert (seen["marks"], seen["flag"], seen["handlers"], seen["elements"]) == ([], None, [], []), seen
    assert (seen["scripts"], seen["svgs"]) == (2, 1), seen  # the data and the page's script; the drawing
    assert (seen["title"], seen["heading"]) == (title, title)
    assert set(seen["nodes"]) == nodes  # the drawing: every node
    labels = "\n".join(seen["labels"])
    for label, execution in tasks.items():
        payload = PAYLOADS[label]
        # drawn as written, the line separators shown escaped (as everywhere a name is drawn or printed)
        drawn = payload.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        assert f"t {drawn}" in labels or f"run {drawn}" in labels, (label, labels)
        # the data: hovering a task shows its properties (the panel is text made by the page's script)
        panel = browser.evaluate(
            f"document.getElementById('e:{execution}').dispatchEvent(new MouseEvent('mouseover', {{bubbles: true}}));"
            "document.getElementById('panel').textContent")
        assert f"execution {execution} t {payload}" in panel, (label, panel)
        assert panel.count(payload) >= 2, (label, panel)  # the task's name, its run's (and parameter x)
    assert searched(browser, "t ") >= len(tasks)  # the page's own script: the search box finds the tasks
    for n in range(1, len(PAYLOADS) + 1):  # and nothing ran since the page was used
        assert browser.evaluate("window.__pwned === undefined && !document.documentElement.dataset.pwned"
                                f"{n}") is True, n


def test_the_whole_store_on_one_page(store, browser):
    page = export(store, "store")
    check_page(browser, page, "lineage of the store", exported_nodes(store), store["tasks"])
    text = page.read_text()
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert policy and "'unsafe-inline'" not in policy.group(1) and "default-src 'none'" in policy.group(1)


@pytest.mark.parametrize("label", list(PAYLOADS))
def test_a_page_per_run(store, browser, label):
    payload = PAYLOADS[label]
    page = export(store, label, "--run", payload)
    check_page(browser, page, f"lineage of run {payload!r}", exported_nodes(store, "--run", payload),
               {label: store["tasks"][label]})


@pytest.mark.parametrize("label", list(PAYLOADS))
def test_a_page_per_artifact_neighbourhood(store, browser, label):
    """Without the run's root DAG execution, the run's frame is named (and has its id) after the run."""
    selection = ["--artifact", str(store["artifacts"][label]), "--depth", "1"]
    page = export(store, f"{label}-artifact", *selection)
    assert 'id="run:' in page.read_text()
    check_page(browser, page, f"lineage of artifact #{store['artifacts'][label]}", exported_nodes(store, *selection),
               {label: store["tasks"][label]})


def test_the_policy_blocks_what_would_get_in(store, browser, tmp_path):
    """The Content-Security-Policy holds by itself: a handler and a script put into the page by hand
    (as a broken escaping would) do not run, while the page's own script does."""
    page = export(store, "policy", "--run", PAYLOADS["data-marker"])
    text = page.read_text()
    spoiled = text.replace("<h1>", f"<h1><img src=x onerror={_mark(98)}><script>{_mark(99)}</script>", 1)
    assert spoiled != text
    (tmp_path / "spoiled.html").write_text(spoiled)
    browser.open((tmp_path / "spoiled.html").as_uri())
    seen = browser.evaluate(INSPECT)
    assert seen["marks"] == [] and seen["flag"] is None, seen
    assert searched(browser, "t ") >= 1  # the page's own script runs
