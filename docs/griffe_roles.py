"""A griffe extension for the docs build: show reST roles in docstrings as Markdown code.

pliant's docstrings use Sphinx roles (``:class:`~pliant.errors.ConfigError```) and
``::`` literal-block markers; mkdocstrings renders Markdown, where both would show
as raw text. This turns ``:role:`~a.b.Name``` into ```Name```, ``:role:`a.b.Name```
into ```a.b.Name``` and a paragraph-ending ``::`` into ``:``. A reST definition
list whose terms are literals (a line ````term```` followed by lines indented by
4 spaces) becomes a Markdown one (``def_list``). Only the rendered docstrings
change; the source is untouched. Loaded by ``mkdocs.yml``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")
_LITERAL = re.compile(r"::$", re.MULTILINE)
# ``term`` on a line of its own, then its definition indented by 4 spaces.
_DEFINITION = re.compile(r"^(``[^`\n]+``)[ \t]*\n((?:    \S[^\n]*(?:\n|$))+)", re.MULTILINE)


def _definition(match: re.Match[str]) -> str:
    lines = [line.strip() for line in match.group(2).splitlines()]
    body = "\n    ".join(lines)
    return f"{match.group(1)}\n:   {body}\n\n"


def _code(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1]}`" if match.group(1) else f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite each docstring once, before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _ROLE.sub(_code, obj.docstring.value)
            text = _DEFINITION.sub(_definition, text)
            obj.docstring.value = _LITERAL.sub(":", text)
