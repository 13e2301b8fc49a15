"""The Python examples of the README and of the docs pages (docs/**/*.md), run as a reader pastes them.
Each ```python block is run by the test of the page and section it is in; a block in a section no
test knows fails, so a new example cannot go untested. A line ``expression  # literal`` in a block is
checked: the expression must equal the literal."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import serving

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```\n", re.M | re.S)


def _blocks_by_section() -> dict[tuple[str, str], list[str]]:
    """The ```python blocks of the README and the docs, by (page, title of the ``##`` section they are
    in; the page's ``#`` title before its first ``##``), the page relative to the checkout."""
    sections: dict[tuple[str, str], list[str]] = {}
    for page in PAGES:
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            title = (re.findall(r"^##? (.+)$", text[:match.start()], re.M) or [""])[-1]
            sections.setdefault((page.relative_to(ROOT).as_posix(), title), []).append(match[1])
    return sections


def _console_after(page: str, block: str) -> str:
    """The ```console block that follows ``block`` in ``page``."""
    text = (ROOT / page).read_text()
    rest = text[text.index(block) + len(block):]
    return re.search(r"^```console\n(.*?)^```\n", rest, re.M | re.S)[1]


def _with_checks(block: str) -> str:
    """``block`` with each ``expression  # literal`` line turned into an assertion."""
    lines = []
    for line in block.splitlines():
        code, _, comment = line.partition("  # ")
        try:
            expected = ast.literal_eval(comment.strip())
            ast.parse(code.strip(), mode="eval")
        except (SyntaxError, ValueError):
            lines.append(line)
            continue
        lines.append(f"assert ({code.strip()}) == {expected!r}, {code.strip()!r}")
    return "\n".join(lines) + "\n"


def _python(script: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, check=True)


def _demo_store(tmp_path: Path) -> Path:
    """The store of ``examples/demo.sh`` (runs baseline, rerun, lr-0.02), as the lineage page's tour uses."""
    demo = tmp_path / "demo"
    subprocess.run(["bash", str(ROOT / "examples" / "demo.sh")], check=True, capture_output=True,
                   env={**os.environ, "MLMD_DEMO_DIR": str(demo)})
    return demo / "metadata.sqlite"


QUICKSTART = ("docs/python.md", "Quickstart")
LINEAGE = ("docs/lineage.md", "In Python")
SERVE = ("docs/serve.md", "Serving MLMD over gRPC: `mlmd-cache serve`")


def test_every_python_example_of_the_readme_and_the_docs_has_a_test():
    untested = set(_blocks_by_section()) - set(SECTION_TESTS)
    assert not untested, f"Python examples in sections no test knows: {sorted(untested)}"


def test_the_blocks_without_a_test_are_found():
    """The rule above sees every page: a block in a new section of a docs page is found there."""
    assert {QUICKSTART, LINEAGE, SERVE} <= set(_blocks_by_section())
    assert all(page.exists() for page in PAGES) and len(PAGES) > 10


def test_quickstart_runs_as_pasted_and_hits_on_its_second_run(tmp_path):
    [block] = _blocks_by_section()[QUICKSTART]
    assert block == (ROOT / "examples" / "quickstart.py").read_text(), "examples/quickstart.py is the page's block"
    script = tmp_path / "quickstart.py"
    script.write_text(block)
    outputs = [_python(script, tmp_path).stdout for _ in range(2)]
    for model in (tmp_path / "quickstart" / "models").iterdir():
        model.unlink()
    outputs.append(_python(script, tmp_path).stdout)
    shown = [part for part in re.split(r"^\$ .*\n", _console_after(QUICKSTART[0], block), flags=re.M) if part]
    assert outputs == [part.replace("/home/me/mlmd-cache/", f"{tmp_path}/") for part in shown]


def test_lineage_example_runs_on_the_demo_store(tmp_path):
    store = _demo_store(tmp_path)
    (tmp_path / "mlmd.sqlite").symlink_to(store)
    for number, block in enumerate(_blocks_by_section()[LINEAGE]):
        script = tmp_path / f"lineage_{number}.py"
        script.write_text(_with_checks(block))
        _python(script, tmp_path)


def test_serve_example_talks_to_a_running_server(tmp_path):
    [block] = _blocks_by_section()[SERVE]
    assert 'port=8080' in block
    with serving("--db", f"sqlite:///{tmp_path}/served.sqlite") as (_, url):
        port = url.rsplit(":", 1)[1]
        script = tmp_path / "served.py"
        script.write_text(block.replace("port=8080", f"port={port}"))
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    # the example's last line shows the server answering as the official one does: NotFoundError
    assert done.returncode == 1 and "ml_metadata.errors.NotFoundError" in done.stderr, done.stderr


SECTION_TESTS = {
    QUICKSTART: test_quickstart_runs_as_pasted_and_hits_on_its_second_run,
    LINEAGE: test_lineage_example_runs_on_the_demo_store,
    SERVE: test_serve_example_talks_to_a_running_server,
}


@pytest.mark.parametrize("line, expected", [
    ("lineage.path(g, 'a:1')   # ['a:1']", "assert (lineage.path(g, 'a:1')) == ['a:1'], \"lineage.path(g, 'a:1')\"\n"),
    ("store.get_artifact_type('x')   # NotFoundError, as from the server", None),
    ("x = 1  # 1", None),
])
def test_checked_lines(line, expected):
    assert _with_checks(line) == (expected or line + "\n")
