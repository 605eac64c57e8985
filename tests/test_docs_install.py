"""Every ``pip install`` the documentation shows works as written, from a checkout.

pliant's distributions are not on a package index yet, so a command that names one of them
(``pip install "pliant[c10d]"``, ``pip install pliant-c10d``) fails today. Such a command
may appear only labelled as the published form, with ``once released`` beside it; then what
it names must be a real distribution of this repository, with real extras. Every other
command must work from the root of a checkout:

* a path (``./core``, ``./plugins/c10d``, ``.``, ``'./plugins/etcd[testing]'``) is a folder
  of this repository with a ``pyproject.toml`` (and those extras);
* the repository distributions those paths depend on are on the same command line, as
  paths: pip finds them nowhere else (pliant-core alone may be missing from a command that
  adds a plugin to an install, as pliant's own hints do);
* any other package is a dependency the repository names (``requirements-dev.txt`` or a
  ``pyproject.toml``), and a version given is the version the repository pins;
* a command the reader is told to type that brings torch in pins torch as
  ``requirements-dev.txt`` does, and its page says how to get the CPU-only build (else pip
  installs the newest torch, with its CUDA libraries: some 5 GB).

The distributions are read from ``plugins/*/pyproject.toml``, so a new plugin is covered
without a change here. ``PACKAGE_FOR``, where pliant's "install it" hints look, is checked
against them too.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md"),
                *(REPO / "plugins").glob("*/README.md")])
PUBLISHED = "once released"
#: A path on a line saying this is the reader's own plugin, not a folder of this repository.
OWN_PLUGIN = "your plugin"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: Options pip takes with a value, and those without, that the docs may use.
VALUE_OPTIONS = {"-r", "--requirement", "--index-url", "--extra-index-url", "-c"}
FLAG_OPTIONS = {"-e", "--editable", "-q", "-U", "--upgrade"}


@dataclass(frozen=True)
class Dist:
    name: str
    folder: Path
    dependencies: tuple[Requirement, ...]
    extras: dict[str, tuple[Requirement, ...]]


def _dists() -> dict[str, Dist]:
    """Every distribution of the repository, by canonical name: the root ``pliant``, the
    core and each ``plugins/*``."""
    found = {}
    for pyproject in [REPO / "pyproject.toml", REPO / "core" / "pyproject.toml",
                      *sorted((REPO / "plugins").glob("*/pyproject.toml"))]:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        extras = {extra: tuple(map(Requirement, reqs))
                  for extra, reqs in project.get("optional-dependencies", {}).items()}
        found[canonicalize_name(project["name"])] = Dist(
            project["name"], pyproject.parent,
            tuple(map(Requirement, project.get("dependencies", []))), extras)
    return found


DISTS = _dists()
BY_FOLDER = {dist.folder: dist for dist in DISTS.values()}


def _dev_pins() -> dict[str, set[str]]:
    """Third-party packages the repository names, each with the versions it pins."""
    pins: dict[str, set[str]] = {}
    lines = (REPO / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    reqs = [Requirement(line.split("#")[0].strip()) for line in lines
            if line.split("#")[0].strip() and not line.startswith("-")]
    for dist in DISTS.values():
        reqs += [*dist.dependencies, *(r for rs in dist.extras.values() for r in rs)]
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in DISTS:
            pins.setdefault(name, set())
            if str(req.specifier).startswith("=="):
                pins[name].add(str(req.specifier))
    return pins


PINS = _dev_pins()


@dataclass(frozen=True)
class Command:
    page: Path
    lineno: int
    line: str
    args: tuple[str, ...]
    published: bool  #: labelled "once released"
    typed: bool  #: a command the reader types (not a message pliant printed)

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.lineno}: pip install {' '.join(self.args)}"


def _units(page: Path) -> Iterator[tuple[int, str, str | None]]:
    """The page as (line number, text, fence): a line of a code block with its fence's
    language, or a paragraph of prose (its lines joined: inline code may wrap) with None."""
    fence: str | None = None
    paragraph: list[tuple[int, str]] = []
    for lineno, line in enumerate([*page.read_text(encoding="utf-8").splitlines(), ""], 1):
        ends = not line.strip() or line.lstrip().startswith("```")
        if fence is None and ends and paragraph:
            yield paragraph[0][0], " ".join(text for _, text in paragraph), None
            paragraph = []
        if line.lstrip().startswith("```"):
            fence = None if fence is not None else line.strip()[3:]
        elif fence is not None:
            yield lineno, line, fence
        elif line.strip():
            paragraph.append((lineno, line.strip()))


def _commands(page: Path) -> list[Command]:
    """Each ``pip install`` on the page: in a code block, on a ``$`` line (typed) or not
    (output); in prose, in inline code (typed)."""
    found = []
    for lineno, text, fence in _units(page):
        if fence is None:  # prose: each inline code span, with the words before it
            pieces = text.split("`")
            segments = [(pieces[i - 1], pieces[i]) for i in range(1, len(pieces), 2)]
            typed = True
        else:
            segments = [("", text)]
            typed = fence in ("bash", "sh", "shell") or text.startswith("$ ")
        for before, segment in segments:
            # A command ends where the shell or the sentence goes on to something else.
            for part in re.split(r"&&|;|\||\(|\)", segment):
                _, sep, rest = part.partition("pip install")
                if not sep:
                    continue
                args = tuple(shlex.split(rest, comments=True))
                published = PUBLISHED in (before + part).lower()
                if args:
                    found.append(Command(page, lineno, text, args, published, typed))
    return found


COMMANDS = [command for page in PAGES for command in _commands(page)]


def _problems(command: Command) -> list[str]:
    problems = []
    paths: list[Dist] = []
    named: dict[str, Requirement] = {}
    words = iter(command.args)
    for word in words:
        if word in VALUE_OPTIONS:
            value = next(words, "")
            if word in ("-r", "--requirement", "-c") and not (REPO / value).is_file():
                problems.append(f"{value!r} is not a file of the repository")
            continue
        if word in FLAG_OPTIONS:
            continue
        if word.startswith("-"):
            problems.append(f"option {word} is not one this test knows: add it here")
            continue
        base, _, extras_text = word.partition("[")
        extras = [e for e in extras_text.rstrip("]").split(",") if e]
        if base in (".", "..") or "/" in base:
            if OWN_PLUGIN in command.line:
                continue
            dist = BY_FOLDER.get((REPO / base).resolve())
            if dist is None:
                problems.append(f"{base!r} is not a folder of the repository with a "
                                "pyproject.toml")
                continue
            if command.published:
                problems.append(f"{word!r} is a path, but the command is labelled "
                                f"{PUBLISHED!r}")
            problems += [f"{dist.name} has no extra {e!r}" for e in extras
                         if e not in dist.extras]
            paths.append(Dist(dist.name, dist.folder, dist.dependencies + tuple(
                r for e in extras for r in dist.extras.get(e, ())), {}))
            continue
        req = Requirement(word)
        name = canonicalize_name(req.name)
        named[name] = req
        if name in DISTS:
            if not command.published:
                problems.append(f"{req.name} is not on a package index yet: give its folder "
                                f"(./{DISTS[name].folder.relative_to(REPO)}) or label the "
                                f"command {PUBLISHED!r}")
            problems += [f"{req.name} has no extra {e!r}" for e in req.extras
                         if e not in DISTS[name].extras]
        elif name not in PINS:
            problems.append(f"{req.name} is not a dependency the repository names")
        elif req.specifier and str(req.specifier) not in PINS[name]:
            problems.append(f"{word}: the repository pins {req.name} "
                            f"{', '.join(sorted(PINS[name])) or '(unpinned)'}")
    given = {canonicalize_name(dist.name) for dist in paths}
    needed: set[str] = set()
    todo = [req for dist in paths for req in dist.dependencies]
    while todo:  # the repository distributions the paths need, and what those need
        name = canonicalize_name(todo.pop().name)
        if name in DISTS and name not in needed:
            needed.add(name)
            todo += DISTS[name].dependencies
    missing = sorted(needed - given - {"pliant-core"} if "./core" not in command.args
                     else needed - given)
    problems += [f"needs {DISTS[name].name}, which pip finds only as a path on the same line: "
                 f"add ./{DISTS[name].folder.relative_to(REPO)}" for name in missing]
    brings_torch = "torch" in named or any(
        canonicalize_name(req.name) == "torch"
        for name in given | needed for req in DISTS[name].dependencies)
    if command.typed and brings_torch and not command.published:
        if not named.get("torch") or not named["torch"].specifier:
            problems.append(f"brings torch in unpinned (pip takes the newest, with CUDA): add "
                            f"torch{''.join(sorted(PINS['torch']))}")
        if CPU_INDEX not in command.page.read_text(encoding="utf-8"):
            problems.append(f"brings torch in, but the page does not say how to get the "
                            f"CPU-only build ({CPU_INDEX})")
    return problems


def test_the_docs_show_pip_install_commands():
    # The extraction itself works: the quick start's line is found, and a published form.
    assert any(c.page.name == "README.md" and "./core" in c.args for c in COMMANDS)
    assert any(c.published for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_each_pip_install_in_the_docs_works_from_a_checkout(command):
    assert not _problems(command), f"{command}\n  " + "\n  ".join(_problems(command))


def test_a_published_form_is_shown_with_the_checkout_form_beside_it():
    # A reader can always do today what a published-form line promises for later.
    for command in COMMANDS:
        if command.published and command.typed:
            near = [c for c in COMMANDS if c.page == command.page and not c.published
                    and abs(c.lineno - command.lineno) <= 3]
            assert near, f"{command}: no checkout form within 3 lines"


def test_the_checks_catch_what_fails_for_a_new_user():
    page = REPO / "README.md"

    def check(args: str, typed: bool = True) -> list[str]:
        line = f"$ pip install {args}"
        return _problems(Command(page, 0, line, tuple(shlex.split(args, comments=True)),
                                 PUBLISHED in line,
                                 typed))

    assert check('"pliant[c10d]"')  # not on an index
    assert check("'.[all]'")  # pliant-c10d, -etcd, -cloudwatch: not on the line
    assert check("./core ./plugins/c10d")  # torch unpinned
    assert check("./core ./plugins/c10d torch==2.14.1")  # not the pin
    assert check("./core ./plugins/nope")
    assert check("./core torchvision")  # not a dependency of the repository
    assert not check("./core ./plugins/null ./plugins/c10d torch==2.13.0")
    assert not check('"pliant[c10d]"  # once released')
    assert check('"pliant[nope]"  # once released')


def test_pliants_install_hints_cover_every_plugin_of_the_repository():
    """``pliant run --metrics NAME`` with NAME not installed says which plugin to install:
    every backend of plugins/* has that hint, and each hint names a plugin that exists."""
    from pliant.plugins import _PACKAGE_FOR, PluginManager

    plugins = {canonicalize_name(d.name) for d in DISTS.values()
               if d.folder.parent == REPO / "plugins"}
    assert {canonicalize_name(p) for p in _PACKAGE_FOR.values()} <= plugins
    provided = {name: canonicalize_name(info.distribution)
                for _, name, _, info in PluginManager().backends()
                if canonicalize_name(info.distribution) in plugins}
    assert {canonicalize_name(info) for info in provided.values()} == plugins, (
        "every plugin of plugins/* is installed for development (requirements-dev.txt)")
    assert {name: canonicalize_name(p) for name, p in _PACKAGE_FOR.items()} == provided
