"""One nox session per concern. Run them all with ``nox``, one with ``nox -s tests``.

Sessions run in the current environment (``requirements-dev.txt`` is the one
development install), so nothing is installed twice and torch is not copied
into a venv per session.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests", "plugins", "docs"]

ROOT = Path(__file__).parent
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())


def _python(session: nox.Session, *args: str) -> None:
    session.run(sys.executable, *args, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over everything, and core's imports: one way down its layers, no circle."""
    _python(session, "-m", "ruff", "check", ".")
    _python(session, "tools/check_imports.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict, over pliant-core and the plugins' sources."""
    _python(session, "-m", "mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """Core unit tests and the end-to-end tests under tests/."""
    _python(session, "-m", "pytest", "core/tests", "tests", *session.posargs)


@nox.session
@nox.parametrize("plugin", PLUGINS)
def plugins(session: nox.Session, plugin: str) -> None:
    """Each plugin's own tests."""
    _python(session, "-m", "pytest", f"plugins/{plugin}/tests", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly: any warning fails."""
    _python(session, "-m", "mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks against torchrun; writes bench/results/."""
    # What only the bench needs (python-etcd, for torch's etcd-v2 backend in figure i).
    _python(session, "-m", "pip", "install", "-q", "-r", "bench/requirements.txt")
    _python(session, "bench/run.py", *session.posargs)
