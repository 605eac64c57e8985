"""Helpers for pliant-core's tests: throwaway plugin distributions and a CLI runner.

A plugin here is a real distribution: a module plus a ``<name>-<version>.dist-info``
directory in a folder on ``PYTHONPATH``, found by ``importlib.metadata`` exactly
as an installed one would be. The CLI runs in a subprocess, so what a test sees
is what a user sees: the exit code, stdout and stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

MakeDist = Callable[..., Path]


@dataclass(frozen=True, repr=False)
class Result:
    """What one ``pliant`` command did."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:  # shown by pytest when an assertion on a Result fails
        return (f"pliant {' '.join(self.args)} -> {self.returncode} in {self.seconds:.2f}s\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


Pliant = Callable[..., Result]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder on the subprocesses' PYTHONPATH that holds throwaway distributions."""
    path = tmp_path / "site"
    path.mkdir()
    return path


def write_dist(
    site: Path,
    name: str,
    version: str,
    source: str,
    entry_points: Mapping[str, str] | None = None,
) -> Path:
    """Write the module ``name`` with dashes as underscores, and its dist-info.

    ``entry_points`` maps entry-point names in the ``pliant`` group to their
    values; by default, the name without its ``pliant-`` prefix names the module.
    """
    module = name.replace("-", "_")
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    if entry_points is None:
        entry_points = {name.removeprefix("pliant-"): module}
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = ["[pliant]", *(f"{ep} = {value}" for ep, value in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return info


@pytest.fixture
def make_dist(site: Path) -> MakeDist:
    """``make_dist(name, version, source, entry_points=None)``: see :func:`write_dist`."""

    def make(name: str, version: str, source: str,
             entry_points: Mapping[str, str] | None = None) -> Path:
        return write_dist(site, name, version, source, entry_points)

    return make


def clean_env() -> dict[str, str]:
    """This process's environment without any pliant or torchrun settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PLIANT_", "PET_"))}


@pytest.fixture
def pliant(site: Path, tmp_path: Path) -> Pliant:
    """``pliant(*args, env=None, cwd=None, timeout=60)`` runs the real CLI in a subprocess.

    The working directory defaults to ``tmp_path``; ``env`` adds to a clean
    environment whose PYTHONPATH is :func:`site`.
    """

    def run(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> Result:
        # The throwaway distributions first; then what this process was given (a checkout
        # that is not the installed one puts its sources there).
        path = [str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        full_env = {**clean_env(), "PYTHONPATH": os.pathsep.join(path), **(env or {})}
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pliant.cli", *args], cwd=cwd or tmp_path,
                              env=full_env, capture_output=True, text=True, timeout=timeout)
        return Result(tuple(args), proc.returncode, proc.stdout, proc.stderr,
                      time.monotonic() - start)

    return run


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """A tiny training script that prints its rank."""
    path = tmp_path / "train.py"
    path.write_text("import os\nprint('hello from rank', os.environ['RANK'])\n",
                    encoding="utf-8")
    return path


@pytest.fixture
def import_site(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``site`` on this process's sys.path; modules imported from it are forgotten after."""
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(site)):
            del sys.modules[name]
