"""A griffe extension for the docs build: show reST roles in docstrings as Markdown code.

pliant's docstrings use Sphinx roles (``:class:`~pliant.errors.ConfigError```) and
``::`` literal-block markers; mkdocstrings renders Markdown, where both would show
as raw text. This turns ``:role:`~a.b.Name``` into ```Name```, ``:role:`a.b.Name```
into ```a.b.Name``` and a paragraph-ending ``::`` into ``:``. Only the rendered
docstrings change; the source is untouched. Loaded by ``mkdocs.yml``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")
_LITERAL = re.compile(r"::$", re.MULTILINE)


def _code(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1]}`" if match.group(1) else f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite each docstring once, before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _ROLE.sub(_code, obj.docstring.value)
            obj.docstring.value = _LITERAL.sub(":", text)
