"""Package faces whose names load on first use (PEP 562's module ``__getattr__``).

Workers import ``pliant``, ``pliant.metrics`` and ``pliant.events``, and plugins
``pliant.plugin``: a face made with :func:`face` costs them one dict, and each name costs
its module only once it is used.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: typing alone costs a worker milliseconds of start-up
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = ["face"]


def face(package: str, sources: Mapping[str, str], *,
         prepare: Callable[[str], None] | None = None, hint: str = "") -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``. ``sources`` maps each public name to the
    module that defines it; ``prepare(module)``, when given, runs before a name of that
    module is first loaded; ``hint`` ends the error for a name that is not there."""

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}{hint}")
        if prepare is not None:
            prepare(module)
        import importlib

        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # the next use finds it without us
        return value

    return __getattr__
