"""The errors pliant shows to a user.

Every :class:`PliantError` is a mistake the user can fix, so the CLI prints its
message alone, without a traceback (unless ``--debug`` or ``PLIANT_DEBUG=1``).
A message names the offending value, where it came from and what would fix it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "PliantError", "PluginError", "UsageError", "install_hint"]


class PliantError(Exception):
    """Base class of the errors a user can fix; the CLI shows only the message."""


class ConfigError(PliantError):
    """A configuration value, file or key is wrong."""


class PluginError(PliantError):
    """A plugin is missing, broken, duplicated or misbehaving."""


class UsageError(PliantError):
    """The command line asks for something that cannot run (a missing script, say)."""


def install_hint(distribution: str) -> str:
    """How to install one of pliant's own distributions, for a message: from a checkout of
    pliant's repository, which works today, and by name, which works once pliant's
    distributions are on a package index (they are not yet)."""
    folder = ("core" if distribution == "pliant-core"
              else "plugins/" + distribution.removeprefix("pliant-"))
    return (f"from a checkout of pliant, pip install ./{folder} "
            f"(once released: pip install {distribution})")
