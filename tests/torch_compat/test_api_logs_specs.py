"""torch's LogsSpecs/DefaultLogsSpecs, the agent placing logs with one, and ``--logs-specs``
selecting a class of the ``torchrun.logs_specs`` entry-point group as torchrun does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from api_compat import python_spec, write_distribution
from pliant.agent import DefaultLogsSpecs, LocalElasticAgent, LogsSpecs, Std
from pliant_e2e import PLIANT, run_pliant
from torch.distributed.elastic.multiprocessing import api as torch_mp

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def envs(n: int, restart: int = 0) -> dict[int, dict[str, str]]:
    return {r: {"TORCHELASTIC_RUN_ID": "job", "TORCHELASTIC_RESTART_COUNT": str(restart)}
            for r in range(n)}


def relative(dest: Any, root: str) -> dict[str, Any]:
    """A LogsDest's fields with the run's folder written as <run>."""
    def rel(path: str) -> str:
        return path.replace(root, "<run>") if path and path != os.devnull else path

    return {name: ({k: rel(v) for k, v in value.items()} if isinstance(value, dict)
                   else rel(value)) for name, value in vars(dest).items()}


def torch_std(value: Any) -> Any:
    return ({k: torch_mp.Std(v) for k, v in value.items()} if isinstance(value, dict)
            else torch_mp.Std(value))


CASES = [
    {},
    {"redirects": Std.ALL},
    {"tee": Std.OUT},
    {"redirects": {0: Std.ERR}, "tee": {1: Std.ALL}},
    {"redirects": Std.OUT, "tee": Std.ERR, "local_ranks_filter": {1}},
    {"local_ranks_filter": {0}},
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_default_logs_specs_reifies_as_torchs(tmp_path: Path, case: dict[str, Any]) -> None:
    ours_kw = dict(case)
    theirs_kw = {**case, **{k: torch_std(v) for k, v in case.items() if k != "local_ranks_filter"}}
    ours = DefaultLogsSpecs(log_dir=str(tmp_path / "ours"), **ours_kw)
    theirs = torch_mp.DefaultLogsSpecs(log_dir=str(tmp_path / "theirs"), **theirs_kw)
    assert ours.root_log_dir == str(tmp_path / "ours")
    for restart in (0, 1):
        our_envs, their_envs = envs(3, restart), envs(3, restart)
        our_dest, their_dest = ours.reify(our_envs), theirs.reify(their_envs)
        assert ours._run_log_dir is not None and theirs._run_log_dir is not None
        our_run = ours._run_log_dir
        assert os.path.basename(our_run).startswith("job_")
        assert relative(our_dest, our_run) == relative(their_dest, theirs._run_log_dir)
        assert ([relative_path(e["TORCHELASTIC_ERROR_FILE"], our_run) for e in our_envs.values()]
                == [relative_path(e["TORCHELASTIC_ERROR_FILE"], theirs._run_log_dir)
                    for e in their_envs.values()])
        assert sorted(os.listdir(os.path.join(our_run, f"attempt_{restart}"))) == ["0", "1", "2"]


def relative_path(path: str, root: str) -> str:
    return path.replace(root, "<run>")


def test_devnull_and_missing_log_dir_as_torchs(tmp_path: Path) -> None:
    ours, theirs = DefaultLogsSpecs(log_dir=os.devnull), torch_mp.DefaultLogsSpecs(
        log_dir=os.devnull)
    our_envs, their_envs = envs(2), envs(2)
    assert vars(ours.reify(our_envs)) == vars(theirs.reify(their_envs))
    assert our_envs == their_envs  # TORCHELASTIC_ERROR_FILE set to "" in both
    made = DefaultLogsSpecs()
    assert os.path.basename(made.root_log_dir).startswith("torchelastic_")
    assert os.path.isdir(made.root_log_dir)
    file = tmp_path / "f"
    file.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        DefaultLogsSpecs(log_dir=str(file))
    assert DefaultLogsSpecs(str(tmp_path), Std.ALL) == DefaultLogsSpecs(str(tmp_path), Std.ALL)
    assert repr(DefaultLogsSpecs(str(tmp_path))).startswith("DefaultLogsSpecs(root_log_dir=")
    with pytest.raises(TypeError):
        LogsSpecs()  # type: ignore[abstract]


PRINTS = ("import os, sys\n"
          "print('out', os.environ['RANK'])\n"
          "print('err', os.environ['RANK'], file=sys.stderr)\n")


@pytest.mark.parametrize("specs_class", [DefaultLogsSpecs, torch_mp.DefaultLogsSpecs],
                         ids=["pliant", "torch"])
def test_agent_places_logs_with_the_logs_specs_given_positionally(
        tmp_path: Path, specs_class: Any) -> None:
    std = Std if specs_class is DefaultLogsSpecs else torch_mp.Std
    specs = specs_class(log_dir=str(tmp_path), redirects=std.ALL)
    console = (tmp_path / "console.out").open("w+b"), (tmp_path / "console.err").open("w+b")
    agent = LocalElasticAgent(python_spec(PRINTS, nproc=2), specs, "spawn", 300.0,
                              console=console)
    assert not agent.run().is_failed()
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert run.name.startswith("api-compat_")
    for rank in (0, 1):
        folder = run / "attempt_0" / str(rank)
        assert (folder / "stdout.log").read_text() == f"out {rank}\n"
        assert (folder / "stderr.log").read_text() == f"err {rank}\n"
    console[0].seek(0)
    assert console[0].read() == b""  # redirected: nothing on the console


class OneFolder(LogsSpecs):
    """A user's LogsSpecs: every rank's stdout in one folder, teed, stderr to the console."""

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        self.seen: list[dict[int, dict[str, str]]] = []

    @property
    def root_log_dir(self) -> str:
        return str(self._root_log_dir)

    def reify(self, envs: dict[int, dict[str, str]]) -> Any:
        from pliant.agent import LogsDest

        self.seen.append({r: dict(e) for r, e in envs.items()})
        out = {r: os.path.join(self.root_log_dir, f"rank{r}.out") for r in envs}
        errors = {r: os.path.join(self.root_log_dir, f"rank{r}.json") for r in envs}
        for r, env in envs.items():
            env["TORCHELASTIC_ERROR_FILE"] = errors[r]
        return LogsDest(stdouts=out, stderrs=dict.fromkeys(envs, ""), tee_stdouts=dict(out),
                        error_files=errors)


def test_agent_follows_a_custom_logs_specs_error_files_included(tmp_path: Path) -> None:
    specs = OneFolder(str(tmp_path))
    console = (tmp_path / "console.out").open("w+b"), (tmp_path / "console.err").open("w+b")
    code = PRINTS + ("from torch.distributed.elastic.multiprocessing.errors import record\n"
                     "@record\ndef main():\n    if os.environ['RANK'] == '1':\n"
                     "        raise ValueError('custom 1')\n"
                     "main()\n")
    result = LocalElasticAgent(python_spec(code, nproc=2), logs_specs=specs,
                               console=console).run()
    assert result.is_failed()
    assert (tmp_path / "rank1.out").read_text() == "out 1\n"
    assert result.failures[1].error_file == str(tmp_path / "rank1.json")
    assert result.failures[1].message == "ValueError: custom 1"
    assert specs.seen[0][0]["TORCHELASTIC_RUN_ID"] == "api-compat"
    for stream in console:
        stream.seek(0)
    shown = console[0].read().decode()
    assert "out 0" in shown and "out 1" in shown  # teed
    assert "err 1" in console[1].read().decode()


# -- --logs-specs and the torchrun.logs_specs entry points ---------------------------------

CUSTOM = '''
import os
from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, LogsDest

class Flat(DefaultLogsSpecs):
    """torch's kind of LogsSpecs: every file straight in log_dir, named by rank."""

    def reify(self, envs):
        root = self.root_log_dir
        out = {r: os.path.join(root, f"flat{r}.log") for r in envs}
        for r, env in envs.items():
            env["TORCHELASTIC_ERROR_FILE"] = os.path.join(root, f"flat{r}.json")
        return LogsDest(stdouts=out, stderrs={r: "" for r in envs}, tee_stdouts={},
                        tee_stderrs={}, error_files={})
'''

ENTRY_POINTS = """[torchrun.logs_specs]
flat = flatlogs:Flat
broken = brokenlogs:Missing
"""


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    """A distribution with two ``torchrun.logs_specs`` entry points: one good, one broken."""
    return write_distribution(tmp_path / "site", "flatlogs", ENTRY_POINTS, {
        "flatlogs": CUSTOM, "brokenlogs": BROKEN})


# Leaves a mark when imported (then fails), to show which entry points a run loads.
BROKEN = """import os
if os.environ.get("MARKER"):
    open(os.environ["MARKER"], "w").close()
raise ImportError('brokenlogs needs libfoo')
"""


def test_logs_specs_flag_selects_the_entry_point_as_torchrun(
        tmp_path: Path, installed: dict[str, str]) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import os\nprint('hello', os.environ['RANK'])\n")
    for launcher, spelling in (("torchrun", "--logs-specs"), ("pliant", "--logs_specs")):
        logs = tmp_path / launcher
        argv = ([TORCHRUN] if launcher == "torchrun" else [PLIANT, "run"]) + [
            "--nproc-per-node", "2", spelling, "flat", "--log-dir", str(logs), str(script)]
        done = subprocess.run(argv, env={**os.environ, **installed}, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in logs.iterdir()) == ["flat0.log", "flat1.log"]
        assert (logs / "flat1.log").read_text() == "hello 1\n"
    env = {**installed, "PET_LOGS_SPECS": "flat", "MARKER": str(tmp_path / "imported")}
    done = run_pliant("run", "--nproc-per-node", "1", "--log-dir", str(tmp_path / "env"),
                      str(script), env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env" / "flat0.log").read_text() == "hello 0\n"
    assert not (tmp_path / "imported").exists()  # as torchrun: only the named one is loaded


def test_logs_specs_default_is_torchs_layout(tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import os\nprint('hello', os.environ['RANK'])\n")
    done = run_pliant("run", "--nproc-per-node", "2", "--logs-specs", "default", "--log-dir",
                      str(tmp_path / "logs"), "--redirects", "1", "--rdzv-id", "job9",
                      str(script))
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "logs").iterdir()
    assert run.name.startswith("job9_")
    assert (run / "attempt_0" / "1" / "stdout.log").read_text() == "hello 1\n"


def test_logs_specs_errors_name_the_value_and_the_entry_point(
        tmp_path: Path, installed: dict[str, str]) -> None:
    script = tmp_path / "hello.py"
    script.write_text("print('never')\n")
    unknown = run_pliant("run", "--logs-specs", "nope", str(script), env=installed)
    assert unknown.returncode != 0 and "never" not in unknown.stdout
    assert "unknown logs specs 'nope' (from flag --logs-specs)" in unknown.stderr
    assert "available: default, broken, flat" in unknown.stderr
    broken = run_pliant("run", "--logs-specs", "broken", str(script),
                        env={**installed, "PLIANT_DEBUG": ""})
    assert broken.returncode != 0
    assert "logs specs 'broken'" in broken.stderr and "brokenlogs:Missing" in broken.stderr
    assert "ImportError: brokenlogs needs libfoo" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_pliant_plugins_shows_the_logs_specs_entry_points(installed: dict[str, str]) -> None:
    listed = run_pliant("plugins", env=installed)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "flatlogs" in rows["torchrun.logs_specs:flat"]
    assert "loaded" in rows["torchrun.logs_specs:flat"]
    assert "failed" in rows["torchrun.logs_specs:broken"]
    assert "torchrun.logs_specs:broken: failed: load failed: ImportError: brokenlogs needs " \
           "libfoo" in listed.stdout
    assert "torchrun.logs_specs:default" in rows  # torch's own
