"""A griffe extension for the docs' API reference: the docstrings of ``mlmd_cache`` and ``lineage``
hold doctest examples (``>>>`` lines and the output under them, up to a blank line) in plain text,
as Python's doctest reads them; Markdown would read their brackets as links. Each such block is
fenced as a ``pycon`` code block before the docstring is rendered, so it shows as the console
session it is; Sphinx cross-reference roles (``:func:`~x.y```) become code spans. Loaded from
mkdocs.yml by path (it is no part of the packages)."""
from __future__ import annotations

import re
from typing import Any

import griffe

_DOCTEST = re.compile(r"^(?P<indent>[ \t]*)>>> .*(?:\n(?P=indent)(?!\s*$).*)*", re.M)
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|exc|data|obj|const):`~?\.?([^`]+)`")


def roles(text: str) -> str:
    """``text`` with Sphinx roles as code spans.

    >>> roles("see :func:`~lineage.load.load_runs` and :class:`.Task`")
    'see `load_runs` and `Task`'
    """
    return _ROLE.sub(lambda match: f"`{match[1].rsplit('.', 1)[-1]}`", text)


def fence(text: str) -> str:
    """``text`` with each doctest block in a ```` ```pycon ```` fence.

    >>> fence("Example:\\n\\n>>> 1 + 1\\n2\\n\\nThen.")
    'Example:\\n\\n```pycon\\n>>> 1 + 1\\n2\\n```\\n\\nThen.'
    """
    def wrap(match: re.Match) -> str:
        indent = match["indent"]
        return f"{indent}```pycon\n{match[0]}\n{indent}```"
    return _DOCTEST.sub(wrap, text)


class DoctestFences(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = roles(fence(obj.docstring.value))
