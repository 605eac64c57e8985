"""Every ``pliant plugins`` example in the documentation is what pliant prints.

An example block is a ``console`` block with a ``$ pliant plugins ...`` line followed by its
output. The HTML comment just above the block says which plugins were installed when it was
made, in the order they are found:

    <!-- pliant-plugins: null c10d torch -->

Each word is a distribution of this repository (its plugins/* folder name: ``null``,
``c10d``, ...), ``torch`` (its ``torchrun.*`` entry points), or one of the throwaway plugins
of :data:`THROWAWAY` below, which the plugin guide's failure examples need. The listing is
made in this process by the function ``pliant plugins`` prints with, from a
:class:`~pliant.plugins.PluginManager` given exactly those entry points; one test runs the
real command to show that it prints that function's output. Lines are compared cell by cell
(runs of two spaces or more separate cells, so that column widths may differ, as they do
with another torch version), and a line ``...`` in the docs stands for any lines.

``python tests/test_docs_plugins.py`` rewrites the examples that elide nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md"),
                *(REPO / "plugins").glob("*/README.md")])
MARKER = re.compile(r"<!--\s*pliant-plugins:(?P<words>[^>]*)-->")


def _stdout_plugin() -> str:
    """The plugin guide's own ``pliant_stdout.py``."""
    guide = (REPO / "docs" / "plugin-guide.md").read_text(encoding="utf-8")
    return guide.split('```python title="pliant_stdout.py"\n', 1)[1].split("```", 1)[0]


def _metric(name: str) -> str:
    return f"""
        from pliant.plugin import MetricBackend, hookimpl

        @hookimpl
        def pliant_metric_handlers():
            return [MetricBackend({name!r}, lambda settings: None)]
    """


#: key: (distribution, version, entry-point name, module source)
THROWAWAY: dict[str, tuple[str, str, str, str]] = {
    "stdout": ("pliant-stdout", "0.1.0", "stdout", _stdout_plugin()),
    "statsd": ("pliant-statsd", "0.1.0", "statsd", _metric("statsd")),
    "acme-statsd": ("acme-statsd", "0.3.0", "statsd", _metric("statsd")),
    "statsd-api2": ("pliant-statsd", "0.1.0", "statsd",
                    textwrap.dedent(_metric("statsd")) + "PLUGIN_API = 2\n"),
    "statsd-typo": ("pliant-statsd", "0.1.0", "statsd", """
        from pliant.plugin import EventBackend, hookimpl

        @hookimpl
        def pliant_event_handler():  # the hook is pliant_event_handlers
            return [EventBackend("statsd", lambda settings: None)]
    """),
    "cloudwatch-broken": ("pliant-cloudwatch", "0.1.0", "cloudwatch",
                          "import boto3_not_installed\n"),
    "mynull": ("pliant-mynull", "0.2.0", "mynull", _metric("null")),
    "myrdzv": ("pliant-myrdzv", "0.1.0", "myrdzv", """
        from pliant.plugin import RendezvousBackend, hookimpl

        @hookimpl
        def pliant_rendezvous_backends():
            return [RendezvousBackend("embedded", lambda params, settings: None)]
    """),
}
REAL = {p.name: p for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file()}


@dataclass(frozen=True)
class Example:
    page: Path
    lineno: int  #: of the ``$ pliant plugins`` line
    args: tuple[str, ...]
    words: tuple[str, ...] | None  #: the marker's, None without one
    shown: tuple[str, ...]  #: the output lines the docs show
    env: tuple[tuple[str, str], ...] = ()  #: variables set on the command line

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.lineno}"


def _examples(page: Path) -> Iterator[Example]:
    lines = page.read_text(encoding="utf-8").splitlines()
    words = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.search(line)
        if marker:
            words = tuple(marker["words"].split())
        elif line.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            block = lines[i + 1:end]
            for k, command in enumerate(block):
                if not command.startswith("$ ") or "pliant plugins" not in command:
                    continue
                words_typed = shlex.split(command[2:], comments=True)
                env = {}
                while words_typed and "=" in words_typed[0]:
                    key, _, value = words_typed.pop(0).partition("=")
                    env[key] = value
                if words_typed[:2] != ["pliant", "plugins"]:
                    continue
                shown = []
                for out in block[k + 1:]:
                    if out.startswith("$ "):
                        break
                    shown.append(out)
                if shown:
                    yield Example(page, i + 2 + k, tuple(words_typed[2:]), words,
                                  tuple(shown), tuple(sorted(env.items())))
            words = None
            i = end
        i += 1


EXAMPLES = [example for page in PAGES for example in _examples(page)]


def _entry_points(words: tuple[str, ...], site: Path) -> list[importlib.metadata.EntryPoint]:
    eps: list[importlib.metadata.EntryPoint] = []
    for word in words:
        if word in THROWAWAY:
            dist, version, name, source = THROWAWAY[word]
            module = "docs_" + word.replace("-", "_")  # one module per variant
            (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
            info = site / f"{module}-{version}.dist-info"  # a real installed distribution
            info.mkdir()
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
            (info / "entry_points.txt").write_text(f"[pliant]\n{name} = {module}\n",
                                                   encoding="utf-8")
            eps += importlib.metadata.PathDistribution(info).entry_points
        elif word in REAL or word == "torch":
            project = "torch" if word == "torch" else f"pliant-{word}"
            eps += [ep for ep in importlib.metadata.distribution(project).entry_points
                    if ep.group == "pliant" or ep.group.startswith("torchrun.")]
        else:
            raise AssertionError(f"unknown word {word!r} in a pliant-plugins marker")
    return eps


def listing(example: Example, site: Path) -> str:
    """What ``pliant plugins ARGS`` prints with the marker's plugins installed."""
    from pliant.cli import plugins_listing
    from pliant.plugins import PluginManager

    args, env = list(example.args), dict(example.env)
    disabled, no_plugins, by = [], False, ""
    if "PLIANT_DISABLE_PLUGINS" in env:
        disabled, by = env["PLIANT_DISABLE_PLUGINS"].split(","), "env PLIANT_DISABLE_PLUGINS"
    if "--disable-plugins" in args:
        disabled = args[args.index("--disable-plugins") + 1].split(",")
        by = "flag --disable-plugins"
    if "--no-plugins" in args:
        no_plugins, by = True, "flag --no-plugins"
    pm = PluginManager(disabled, no_plugins, by,
                       entry_points=_entry_points(example.words or (), site))
    return plugins_listing(pm, as_json="--json" in args)


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _matches(shown: list[str], real: list[str]) -> bool:
    """``shown`` is ``real``, cell by cell, where a line ``...`` stands for any lines."""
    if not shown:
        return not real
    if shown[0].strip() == "...":
        return any(_matches(shown[1:], real[i:]) for i in range(len(real) + 1))
    return bool(real) and _cells(shown[0]) == _cells(real[0]) and _matches(shown[1:], real[1:])


@pytest.fixture
def fresh_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for throwaway plugins; what was imported from it is forgotten."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [n for n in sys.modules if n.startswith("docs_")]:
        del sys.modules[name]


def test_the_docs_have_pliant_plugins_examples():
    assert len(EXAMPLES) >= 10
    assert any("--json" in e.args for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_each_pliant_plugins_example_is_the_real_output(example, fresh_site):
    assert example.words is not None, (
        f"{example}: say above the block which plugins it was made with, "
        "<!-- pliant-plugins: WORD ... --> (see tests/test_docs_plugins.py)")
    real = listing(example, fresh_site).splitlines()
    assert _matches(list(example.shown), real), (
        f"{example} shows:\n" + "\n".join(example.shown) + "\n\npliant prints:\n"
        + "\n".join(real) + "\n\n(python tests/test_docs_plugins.py rewrites the examples "
        "that elide nothing)")


def test_pliant_plugins_prints_that_listing(tmp_path):
    """The real command prints what the examples are checked against, text and JSON: the
    listing of a PluginManager of every installed plugin (made in a fresh process too, so
    that nothing this test process registered shows)."""
    for args in ([], ["--json"]):
        listing = (f"from pliant.cli import plugins_listing; from pliant.plugins import "
                   f"PluginManager; print(plugins_listing(PluginManager(), {bool(args)}), end='')")
        command, expected = (subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                            cwd=tmp_path)
                             for argv in ([sys.executable, "-m", "pliant", "plugins", *args],
                                          [sys.executable, "-c", listing]))
        assert command.returncode == 0, command.stderr
        assert command.stdout == expected.stdout, expected.stderr
    assert {p["name"] for p in json.loads(command.stdout)} >= {"builtin", "null"}
    assert command.stdout.startswith("[")


def _rewrite() -> None:
    import tempfile

    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        lines = text.splitlines()
        for example in reversed([e for e in EXAMPLES if e.page == page]):
            if example.words is None or any(line.strip() == "..." for line in example.shown):
                print(f"{example}: left as it is (no marker, or it elides lines)")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                sys.path.insert(0, tmp)
                real = listing(example, Path(tmp)).splitlines()
                sys.path.remove(tmp)
                for name in [n for n in sys.modules if n.startswith("docs_")]:
                    del sys.modules[name]
            lines[example.lineno:example.lineno + len(example.shown)] = real
        page.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    _rewrite()
