"""The docs site (docs/, mkdocs.yml): it builds with `mkdocs build --strict` (no broken link or anchor,
no page missing from the navigation), and a broken link fails that build; every option of every
command is on the commands page, with each command's --help as it is; the README's demo output is the docs home's; and the files the
examples of the README and the docs name under examples/ are shipped, the pipelines among them load."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.test_readme import PAGES, ROOT

COMMANDS_PAGE = ROOT / "docs" / "reference" / "commands.md"
_CONSOLE = re.compile(r"^```(?:console|bash)\n(.*?)^```\n", re.M | re.S)


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=config.parent,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)


def test_the_docs_site_builds_strictly(tmp_path):
    built = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "index.html").exists()
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("mlmd_cache.ExecutionCache", "mlmd_cache.CacheKey", "mlmd_cache.connect",
                 "mlmd_cache.runner.run_pipeline", "lineage.load_subgraph", "lineage.upstream"):
        assert f'id="{name}"' in api, f"the API reference lacks {name}"


def test_a_broken_link_fails_the_build(tmp_path):
    """The strict build is what catches broken links: a copy of the site with one broken link fails."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    for package in ("mlmd_cache", "lineage"):  # the API reference reads them beside mkdocs.yml
        (tmp_path / package).symlink_to(ROOT / package)
    page = tmp_path / "docs" / "beyond-kfp" / "stats.md"
    page.write_text(page.read_text() + "\nSee [the plan](plan.md#no-such-section) and [gone](no-such-page.md).\n")
    built = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert "no-such-page.md" in built.stderr and "#no-such-section" in built.stderr, built.stderr


def _commands(command: click.Command, path: list[str]):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                yield from _commands(sub, path + [name])


def test_every_option_of_every_command_is_on_the_commands_page():
    from lineage.cli import main as lineage_main
    from mlmd_cache.cli import main as cache_main

    text = COMMANDS_PAGE.read_text()
    missing = []
    for root, name in ((cache_main, "mlmd-cache"), (lineage_main, "mlmd-lineage")):
        for path, command in _commands(root, [name]):
            heading = f"### `{' '.join(path)}`"
            if heading not in text:
                missing.append(heading)
                continue
            section = text[text.index(heading):].split("\n### ", 1)[0]
            missing += [f"{' '.join(path)} {option}" for param in command.params
                        if isinstance(param, click.Option) and not param.hidden
                        for option in param.opts if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", section)]
    assert not missing, f"not on {COMMANDS_PAGE.relative_to(ROOT)}: {missing}"


def _demo_output(page: Path) -> str:
    [block] = [b for b in _CONSOLE.findall(page.read_text()) if b.startswith("$ bash examples/demo.sh\n")]
    return block


_HELP_BLOCK = re.compile(r"^```text\n\$ ((?:mlmd-cache|mlmd-lineage)[\w -]*? --help)\n(.*?)^```\n", re.M | re.S)


def test_the_commands_page_shows_each_command_s_help_as_it_is():
    # As a user at /home/me sees it. Compared word for word, not line for line: how click wraps at
    # a terminal's width is click's, what the help says is ours.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MLMD_"))},
           "HOME": "/home/me", "COLUMNS": "100"}
    blocks = _HELP_BLOCK.findall(COMMANDS_PAGE.read_text())
    assert len(blocks) >= 18, "the commands page lost its --help blocks"
    for command, shown in blocks:
        program, *args = command.split()
        live = subprocess.run([str(Path(sys.executable).parent / program), *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=60)
        assert live.returncode == 0, live.stderr
        assert live.stdout.split() == shown.split(), (
            f"docs/reference/commands.md shows another `{command}` than the command's own")


def test_the_readme_shows_the_demo_output_of_the_docs_home():
    """scripts/check_demo.sh checks the demo's states; the README and the docs home show one output."""
    readme = _demo_output(ROOT / "README.md")
    assert readme == _demo_output(ROOT / "docs" / "index.md")
    runs = [[line.split()[:2] for line in part.splitlines()[1:5]] for part in readme.split("$ mlmd-cache run-pipeline")[1:]]
    assert [[state for _, state in run] for run in runs] == [
        ["EXECUTED"] * 4, ["CACHED"] * 4, ["CACHED", "CACHED", "EXECUTED", "EXECUTED"]]


def test_the_files_the_examples_name_are_shipped():
    named = {match for page in PAGES for block in _CONSOLE.findall(page.read_text())
             for match in re.findall(r"(?<![\w/])examples/[\w.-]+\.\w+", block)}
    assert {"examples/key.json", "examples/waits.yaml", "examples/rows.yaml", "examples/labelled.yaml"} <= named
    assert not [path for path in sorted(named) if not (ROOT / path).is_file()]


def test_key_json_is_the_key_the_pages_show():
    from mlmd_cache import CacheKey

    key = CacheKey.from_json((ROOT / "examples" / "key.json").read_text())
    for page in (COMMANDS_PAGE, ROOT / "README.md", ROOT / "docs" / "serve.md"):
        assert f"fingerprint {key.fingerprint()}\n" in page.read_text(), page


@pytest.mark.parametrize("pipeline, args", [
    ("waits.yaml", ["--param", "go=/tmp/go", "--param", "started=/tmp/started"]),
    ("rows.yaml", []),
    ("early_cutoff.yaml", ["--key-by-content"]),
    ("labelled.yaml", ["--param", f"labels={ROOT}/examples/labels.csv"]),
])
def test_the_shipped_pipelines_plan(tmp_path, pipeline, args):
    """Each pipeline under examples/ loads and plans on a new store (the runs themselves are the
    features' own tests, on pipelines of the same shape)."""
    cli = [sys.executable, "-m", "mlmd_cache"]
    db = f"sqlite:///{tmp_path}/mlmd.sqlite"
    subprocess.run(cli + ["index", "--db", db], check=True, capture_output=True)  # makes the store
    planned = subprocess.run(cli + ["plan", str(ROOT / "examples" / pipeline), "--db", db, "--json", *args],
                             capture_output=True, text=True)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["tasks"]


def test_the_pvc_pipeline_is_refused_as_the_page_shows(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mlmd_cache", "run-pipeline", str(ROOT / "examples" / "pvc_pipeline.yaml"),
                           "--db", f"sqlite:///{tmp_path}/mlmd.sqlite"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() in (ROOT / "docs" / "run-pipelines.md").read_text()
