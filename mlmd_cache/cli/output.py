"""What the list commands of both CLIs print, in one place: one set of output options (``--table``,
the default text; ``--csv``; ``--tsv``; ``--nl``, JSON lines; ``--json``, the command's one JSON
object), at most one of them, as sqlite-utils takes them; the writers of their rows; and the text
table and tree the human-readable output draws with rich (imported when a command prints, never by
``--help``).

The machine formats are written exactly, as ``--json`` is (JSON escapes control characters itself;
CSV cannot), except that CSV and TSV on a terminal show control characters escaped, as every
human-readable line does (:func:`mlmd_cache.terminal.printable`): stored text must not act on a
terminal, and what goes into a file or a pipe stays exact.
"""
from __future__ import annotations

import csv
import functools
import io
import json
from typing import Any, Callable, Iterable, Mapping, Sequence

import click

from ..terminal import printable

__all__ = ["OUTPUT_FORMATS", "ROW_FORMATS", "output_options", "write_rows", "machine_output", "table_lines", "echo_table", "Tree"]

OUTPUT_FORMATS = ("table", "csv", "tsv", "nl", "json")
ROW_FORMATS = ("csv", "tsv", "nl")  # one line (or record) per row; "table" and "json" are each command's own

_HELP = {
    "table": "Print text for reading: a table, a tree (the default).",
    "csv": "Print the rows as CSV, with a header line.",
    "tsv": "Print the rows as TSV, with a header line.",
    "nl": "Print one JSON object per row (JSON lines).",
    "json": "Print one JSON object.",
}


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--table``, ``--csv``, ``--tsv``, ``--nl`` and ``--json`` on a command, which gets the one
    given as ``output_format`` (``"table"`` when none is); two of them are a one-line usage error."""

    @functools.wraps(command)
    def with_output_format(*args: Any, **kwargs: Any) -> Any:
        given = [name for name in OUTPUT_FORMATS if kwargs.pop(f"output_{name}")]
        if len(given) > 1:
            raise click.UsageError(f"give one output format, not {' and '.join('--' + name for name in given)}")
        return command(*args, output_format=given[0] if given else "table", **kwargs)

    for name in reversed(OUTPUT_FORMATS):
        with_output_format = click.option(f"--{name}", f"output_{name}", is_flag=True,
                                          help=_HELP[name])(with_output_format)
    return with_output_format


def _cell(value: Any) -> str:
    """A value as a CSV cell: nothing for None, JSON for lists, dicts and booleans (as sqlite-utils
    writes them), else its text."""
    if value is None:
        return ""
    if isinstance(value, (list, dict, tuple, bool)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def write_rows(output_format: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """``rows`` (the objects of the command's ``--json`` list) in one of :data:`ROW_FORMATS`: CSV or TSV
    with a header line of ``columns`` (a header alone when there are no rows), or one JSON object per
    row with all its fields."""
    out = click.get_text_stream("stdout")
    if output_format == "nl":
        for row in rows:
            out.write(json.dumps(dict(row), sort_keys=True, default=str) + "\n")
        out.flush()
        return
    if output_format not in ("csv", "tsv"):
        raise ValueError(f"output format {output_format!r}: expected one of {', '.join(ROW_FORMATS)}")
    safe = printable if out.isatty() else str
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t" if output_format == "tsv" else ",", lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    out.write(buffer.getvalue() if safe is str else "\n".join(safe(line) for line in buffer.getvalue().split("\n")))
    out.flush()


def machine_output(output_format: str, columns: Sequence[str], rows: Callable[[], Iterable[Mapping[str, Any]]],
                   document: Callable[[], Any], *, sort_keys: bool = True) -> bool:
    """What a list command prints for the machine formats: its ``rows()`` for ``--csv``, ``--tsv``
    and ``--nl`` (:func:`write_rows`), its ``document()`` for ``--json``. True when it printed (the
    command is done), False for ``--table``, the command's own text."""
    if output_format in ROW_FORMATS:
        write_rows(output_format, columns, rows())
        return True
    if output_format == "json":
        click.echo(json.dumps(document(), sort_keys=sort_keys, default=str))
        return True
    return False


def _console(width: int):
    # Rendered into a string, never to the terminal: no colour, no markup or emoji codes read from
    # stored text, and wide enough that nothing wraps (a line is as long as its content).
    from rich.console import Console

    return Console(file=io.StringIO(), width=width, color_system=None, highlight=False, emoji=False, markup=False,
                   legacy_windows=False, soft_wrap=False)


def _rendered(renderable: Any, width: int) -> list[str]:
    console = _console(width)
    console.print(renderable)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A text table drawn by rich's ``Table``: columns as wide as their widest cell (measured as a
    terminal shows it: a wide character takes two cells), two spaces apart, no rules; cells escaped
    (:func:`printable`) before they are measured, None shown as ``-``."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="", expand=False)
    for header in headers:
        table.add_column(Text(str(header)), no_wrap=True, overflow="ignore")
    cells = [[Text("-" if cell is None else printable(cell)) for cell in row] for row in rows]
    for row in cells:
        table.add_row(*row)
    widths = [max([cell_len(str(header))] + [row[column].cell_len for row in cells])
              for column, header in enumerate(headers)]
    return _rendered(table, sum(widths) + 2 * len(widths) + 1)


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> None:
    """Print :func:`table_lines`, each line after ``indent``."""
    for line in table_lines(headers, rows):
        click.echo(indent + line)


def _text(label: str):
    from rich.text import Text

    return Text(printable(label))


class Tree:
    """A tree of text lines drawn by rich's ``Tree`` (guides ``├──``, ``│``, ``└──``): labels escaped
    (:func:`printable`)."""

    def __init__(self, label: str) -> None:
        from rich.tree import Tree as RichTree

        self._node = RichTree(_text(label))

    def add(self, label: str) -> "Tree":
        """A child of this node, as a tree to add to."""
        child = Tree.__new__(Tree)  # a node of this tree, not a new rich Tree
        child._node = self._node.add(_text(label))
        return child

    def lines(self) -> list[str]:
        from rich.cells import cell_len

        widest, depth, stack = 0, 0, [(self._node, 0)]
        while stack:
            node, level = stack.pop()
            widest, depth = max(widest, cell_len(node.label.plain)), max(depth, level)
            stack.extend((child, level + 1) for child in node.children)
        return _rendered(self._node, widest + 4 * depth + 1)

    def echo(self) -> None:
        for line in self.lines():
            click.echo(line)

