"""What ``mlmd-cache run-pipeline`` shows while a run goes and after it: the display of the runner's
events (:func:`mlmd_cache.runner.run_pipeline`'s ``on_queued``, ``on_start``, ``on_wait`` and
``on_task``), kept out of the runner.

Not on a terminal, one plain line per task as it ends (what scripts and logs read) and the run's
summary. On a terminal (standard error), `rich <https://rich.readthedocs.io>`_ draws a live table of
the running tasks, with how long each has run and how many of the run's tasks are done, fitted to
the terminal's width and redrawn as it changes; each task that ends is printed above it, in the same
columns, a long name folded within its column. The table is taken away when the run ends, also on
Ctrl-C. ``rich`` is imported only here, so that the CLI's other commands start without it.

Every line goes through :func:`mlmd_cache.terminal.printable`: task names, reasons and errors may
hold terminal escapes.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import IO, Any

import click

from ..terminal import printable
from .reports import RunReport, TaskReport

__all__ = ["RunDisplay", "state_word", "task_line", "summary_lines"]

_STATE_WORDS = {"COMPLETE": "EXECUTED", "CACHED": "CACHED", "FAILED": "FAILED", "NOT_RUN": "NOT_RUN",
                "SKIPPED": "SKIPPED"}
_STATE_STYLES = {"EXECUTED": "green", "CACHED": "cyan", "DONE": "green", "FAILED": "bold red", "NOT_RUN": "yellow",
                 "SKIPPED": "dim"}
_NESTED_KINDS = ("dag", "loop", "iteration")  # they execute nothing themselves: the summary counts tasks
_NAME_WIDTH = 24  # the plain lines' name column, as scripts have read it
_ECHO_ROOM = 2  # columns left free at the end of the live table's lines (see _render)
_REFRESHES_PER_SECOND = 4


def state_word(task: TaskReport) -> str:
    """A DAG, loop or iteration that completed is DONE: it executes nothing itself."""
    if task.state == "COMPLETE" and task.kind in _NESTED_KINDS:
        return "DONE"
    return _STATE_WORDS[task.state]


def _execution_text(task: TaskReport) -> str:
    execution = f"execution {task.execution_id}" if task.execution_id else "no execution"
    if task.cached_execution_id:
        execution += f" (from {task.cached_execution_id})"
    if task.attempts > 1:
        execution += f", {task.attempts} attempts"
    return execution


def _reason(task: TaskReport) -> str:
    """Why a task did not run (NOT_RUN, SKIPPED)."""
    return f"({printable(task.error)})" if task.state in ("NOT_RUN", "SKIPPED") and task.error else ""


def _error_lines(task: TaskReport) -> list[str]:
    """The failure's text (its stderr's tail, a line each, a task's own colours escaped too), under a
    FAILED task's line."""
    if task.state == "FAILED" and task.error:
        return [f"    | {printable(text)}" for text in task.error.splitlines()]
    return []


def task_line(task: TaskReport) -> str:
    """The plain line of a task that ended: path, state, duration, execution, source of a hit."""
    line = f"{printable(task.name):<{_NAME_WIDTH}} {state_word(task):<8} {task.duration:7.2f}s  {_execution_text(task)}"
    if _reason(task):
        line += f"  {_reason(task)}"
    return "\n".join([line, *_error_lines(task)])


def summary_lines(report: RunReport) -> list[str]:
    """The run's summary: counts, then the store, the pipeline's outputs and the metrics logged; a
    line each, control characters escaped (:func:`printable`)."""
    counts: dict[str, int] = {}
    for task in report.tasks.values():
        if task.kind not in _NESTED_KINDS:
            counts[state_word(task)] = counts.get(state_word(task), 0) + 1
    summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items()) or "no tasks"
    lines = [f"run {report.run} of pipeline {report.pipeline}: " + ("interrupted; " if report.interrupted else "")
             + summary]
    if report.store:
        lines.append(f"  store    {report.store}")
    if report.pipeline_root:
        lines.append(f"  outputs  {report.pipeline_root}")
    if report.task_env:
        lines.append(f"  tasks    --task-env {report.task_env_detail or report.task_env}")
    for name, value in report.output_parameters.items():
        lines.append(f"  output   {name} = {json.dumps(value)}")
    for name, artifacts in report.output_artifacts.items():
        for artifact in artifacts:
            lines.append(f"  output   {name}: artifact {artifact['id']} {artifact['uri']}")
    for metrics in report.metrics:
        values = ", ".join(f"{key} = {json.dumps(value)}" for key, value in metrics.values.items()) or "no values"
        lines.append(f"  metrics  {metrics.task}/{metrics.output} (artifact {metrics.artifact_id}): {values}")
    return [printable(line) for line in lines]


def _same_file(first: IO[Any], second: IO[Any]) -> bool:
    try:
        return os.path.samestat(os.fstat(first.fileno()), os.fstat(second.fileno()))
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        return False


class RunDisplay:
    """The display of one run; a context manager around :func:`~mlmd_cache.runner.run_pipeline`,
    whose callbacks are its methods. ``lines_to_stderr``: the task lines go to standard error (with
    ``--json``, whose object is standard output's only content)."""

    def __init__(self, *, lines_to_stderr: bool = False) -> None:
        self._lines = sys.stderr if lines_to_stderr else sys.stdout
        self._lock = threading.Lock()
        self._known: set[str] = set()  # the run's tasks known so far (loops add theirs as they start)
        self._ended: set[str] = set()
        self._running: dict[str, tuple[float, str]] = {}  # path -> (start, what), in start order
        self._began = time.monotonic()
        self._name_width = _NAME_WIDTH
        self._live: Any = None
        self._console: Any = None
        if sys.stderr.isatty():
            from rich.console import Console

            console = Console(file=sys.stderr, highlight=False, markup=False, emoji=False)
            if console.is_terminal and not console.is_dumb_terminal:
                self._console = console
        # What goes to standard output is printed above the live table when both are one terminal.
        self._stdout_on_console = self._console is not None and _same_file(sys.stdout, sys.stderr)
        # Task lines too (else plain lines, to a pipe or a file).
        self._lines_on_console = self._console is not None and (lines_to_stderr or self._stdout_on_console)

    def __enter__(self) -> "RunDisplay":
        if self._console is not None:
            from rich.live import Live

            self._live = Live(console=self._console, get_renderable=self._render, transient=True,
                              auto_refresh=True, refresh_per_second=_REFRESHES_PER_SECOND,
                              redirect_stdout=self._stdout_on_console,
                              redirect_stderr=True)
            self._live.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Take the live table away (the lines printed above it stay)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    # -- the runner's events -------------------------------------------------------------------------

    def queued(self, tasks: list[str]) -> None:
        with self._lock:
            self._known.update(tasks)

    def started(self, task: str) -> None:
        with self._lock:
            self._known.add(task)
            self._running[task] = (time.monotonic(), "running")
        self._refresh()

    def waiting(self, task: str, holder: int) -> None:
        """A task whose cache key another run holds (always told, on standard error)."""
        with self._lock:
            self._known.add(task)
            self._running[task] = (time.monotonic(), f"waiting for execution {holder}")
        self._refresh()
        self._print(f"{task}: waiting for execution {holder}, which holds its cache key", err=True)

    def finished(self, task: TaskReport) -> None:
        with self._lock:
            self._running.pop(task.name, None)
            if task.kind not in _NESTED_KINDS:
                self._known.add(task.name)
                self._ended.add(task.name)
        self._refresh()  # first: the table drawn again under the line is then the new one
        if self._lines_on_console:
            self._console.print(self._task_row(task))
            for line in [f"    {_reason(task)}"] if _reason(task) else _error_lines(task):
                self._console.print(line, overflow="fold")
        else:
            click.echo(task_line(task), file=self._lines)

    # -- after the run -------------------------------------------------------------------------------

    def summary(self, report: RunReport) -> None:
        """The summary, on standard output (call after :meth:`close`): on the terminal, folded to its width."""
        for line in summary_lines(report):
            self._print(line, err=False)

    # -- drawing -------------------------------------------------------------------------------------

    def _print(self, text: str, err: bool) -> None:
        text = printable(text)  # it quotes stored text (a task's name, a URI)
        if self._console is not None and (err or self._stdout_on_console):
            self._console.print(text, overflow="fold")
        else:
            click.echo(text, err=err)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _task_row(self, task: TaskReport) -> Any:
        """A task's line on the terminal: the plain line's columns, fitted to the terminal's width."""
        from rich.table import Table
        from rich.text import Text

        width = self._console.width
        # The name column grows with the longest name yet, but leaves the execution room for
        # "execution 123 (from 45)"; a longer name folds within its column.
        name = printable(task.name)
        self._name_width = max(self._name_width, len(name))
        name_width = max(12, min(self._name_width, width - 19 - 23))
        row = Table.grid(padding=(0, 1))
        row.add_column(width=name_width, overflow="fold")
        row.add_column(width=8, no_wrap=True)
        row.add_column(width=8, justify="right", no_wrap=True)
        row.add_column(overflow="fold", ratio=1)
        word = state_word(task)
        row.add_row(name, Text(word, style=_STATE_STYLES.get(word, "")), f"{task.duration:.2f}s",
                    _execution_text(task))
        return row

    def _render(self) -> Any:
        """The live table: the running tasks (as many as the terminal has room for), then the progress."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        with self._lock:
            running = list(self._running.items())
            done, total = len(self._ended), max(len(self._known), len(self._ended))
        room = max(1, self._console.height - 3)
        tasks = Table.grid(padding=(0, 1), expand=True)
        tasks.add_column(ratio=1, no_wrap=True, overflow="ellipsis", min_width=6)
        tasks.add_column(no_wrap=True, overflow="ellipsis", max_width=28, style="cyan")
        tasks.add_column(justify="right", no_wrap=True)
        shown = running if len(running) <= room else running[:room - 1]
        for name, (started, what) in shown:
            tasks.add_row(printable(name), what, _elapsed(now - started))
        if len(shown) < len(running):
            tasks.add_row(f"… and {len(running) - len(shown)} more", "", "")
        progress = Table.grid(padding=(0, 1), expand=True)
        progress.add_column(ratio=1)
        progress.add_column(no_wrap=True, justify="right")
        progress.add_row(ProgressBar(total=max(total, 1), completed=done),
                         Text(f"{done}/{total} tasks done, {len(running)} running, {_elapsed(now - self._began)}",
                              overflow="ellipsis", no_wrap=True))
        # Two columns short of the terminal's width: the terminal echoes Ctrl-C as "^C" after the last
        # line, and a full-width line would wrap there, so the cursor would be a row below where the
        # table is taken away from (a stale row left above the final lines).
        tasks.width = progress.width = max(_NAME_WIDTH, self._console.width - _ECHO_ROOM)
        return Group(tasks, progress)



def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
