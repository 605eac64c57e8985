"""Configuration: every option, the four sources it can come from, and which wins.

From lowest to highest precedence:

1. the defaults in :data:`CORE_SETTINGS`;
2. a config file: ``--config FILE`` (or ``PLIANT_CONFIG``), else ``./pliant.toml``,
   else ``[tool.pliant]`` in ``./pyproject.toml``;
3. environment variables ``PLIANT_<NAME>``, then torchrun's ``PET_<NAME>``, then a
   setting's ``env_aliases`` (``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``); any other ``PLIANT_*``
   or ``PET_*`` variable is a warning (:attr:`Config.warnings`);
4. command-line flags.

Each resolved value remembers its source, so an error (and ``pliant config``)
can say exactly where a value came from. Plugin settings use the same
:class:`~pliant.settings.Setting` schema and :func:`parse_plugin_conf`;
:func:`handler_conf` splits ``metrics_conf``/``events_conf`` by handler.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pliant import defaults
from pliant.errors import ConfigError
from pliant.settings import (
    Setting,
    parse_bool,
    parse_choice,
    parse_float,
    parse_int,
    parse_kv,
    parse_list,
    parse_nnodes,
    parse_nproc,
    parse_port,
    parse_signals,
    parse_std,
    parse_str,
)

__all__ = ["CORE_SETTINGS", "TORCHRUN_OPTIONS", "Config", "Value", "handler_conf", "load",
           "parse_plugin_conf"]


def _optional(parser: Any) -> Any:
    def parse(value: Any) -> Any:
        return None if value is None or value == "" else parser(value)

    return parse


def _ranks(value: Any) -> tuple[int, ...]:
    items = parse_list(value)
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise ValueError("expected comma-separated local ranks, e.g. 0 or 0,3") from None


def _modules(value: Any) -> tuple[str, ...]:
    names = parse_list(value)
    if "auto" in names and len(names) > 1:
        raise ValueError("expected 'auto' alone, or module names such as torch,numpy")
    for name in names:
        if name != "auto" and not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"expected module names separated by commas, such as torch,numpy; "
                             f"{name!r} is not one")
    return names


def _filters(value: Any) -> tuple[str, ...]:
    """torchrun's ``--duplicate-std*-filters``: comma-separated, ``,,`` for a literal comma."""
    if isinstance(value, list | tuple):
        return tuple(parse_str(item) for item in value)
    text = parse_str(value)
    if not text:
        return ()
    return tuple(item.replace("\0", ",") for item in text.replace(",,", "\0").split(","))


#: torch 2.13's ``--numa-binding`` modes (torch.numa.binding.AffinityMode).
NUMA_MODES = ("node", "socket", "exclusive", "core-complex")
#: ``--exit-code``: the root-cause worker's code (pliant's default) or torchrun's 1.
EXIT_CODES = ("worker", "torchrun")

CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("nnodes", parse_nnodes, (1, 1), "Number of nodes, or MIN:MAX for an elastic job.",
            metavar="N|MIN:MAX"),
    Setting("nproc_per_node", parse_nproc, 1,
            "Workers per node: an integer, or cpu, gpu or auto.", metavar="N|cpu|gpu|auto"),
    Setting("rdzv_backend", parse_str, defaults.RDZV_BACKEND,
            "Rendezvous backend (a plugin name; 'pliant plugins' lists them). Without it: "
            + "; ".join(f"{name!r} {when}" for name, when in defaults.RDZV_DEFAULTS) + ".",
            metavar="NAME"),
    Setting("rdzv_endpoint", parse_str, "", "Rendezvous endpoint, host[:port].",
            metavar="HOST[:PORT]"),
    Setting("rdzv_id", parse_str, "none", "The job's run id, shared by all its nodes.",
            metavar="ID"),
    Setting("rdzv_conf", parse_kv, {}, "Rendezvous backend settings, key=value,...",
            metavar="K=V,..."),
    Setting("standalone", parse_bool, False,
            "Single-node job on the embedded rendezvous: no server, no setup.", is_flag=True),
    Setting("max_restarts", parse_int(minimum=0), defaults.RUN_MAX_RESTARTS,
            "How many times the worker group may be restarted after a failure.", metavar="N"),
    Setting("monitor_interval", parse_float(minimum=0.0), defaults.MONITOR_INTERVAL,
            "Accepted for torchrun compatibility: pliant is notified of exits, it does not poll.",
            metavar="SECONDS"),
    Setting("start_method", parse_choice(*defaults.START_METHODS), defaults.START_METHOD,
            "How function entrypoints start (spawn or forkserver; both start a fresh "
            "interpreter).", metavar="METHOD"),
    Setting("role", parse_str, "default", "The workers' role name.", metavar="ROLE"),
    Setting("module", parse_bool, False,
            "Run the script argument as a Python module, like python -m.", short=("-m",),
            is_flag=True),
    Setting("no_python", parse_bool, False,
            "Run the script argument as an executable, without python.", is_flag=True),
    Setting("run_path", parse_bool, False,
            "Run the script as a Python file (runpy.run_path) even with --no-python or -m, as "
            "torchrun does; each worker is a fresh interpreter either way.", is_flag=True),
    Setting("log_dir", _optional(parse_str), None,
            "Directory for per-attempt, per-rank log files.", metavar="DIR"),
    Setting("redirects", parse_std, 0,
            "Send worker output to files only: 0 none, 1 stdout, 2 stderr, 3 both, or "
            "rank:level,...", short=("-r",), metavar="LEVEL"),
    Setting("tee", parse_std, 0, "Send worker output to files and the console (as -r).",
            short=("-t",), metavar="LEVEL"),
    Setting("local_ranks_filter", _ranks, (),
            "Show only these local ranks on the console, e.g. 0 or 0,2.", metavar="RANKS"),
    Setting("logs_specs", _optional(parse_str), None,
            "Place worker logs with the LogsSpecs class of this name in the torchrun.logs_specs "
            "entry-point group, as torchrun does ('default': torch's layout).", metavar="NAME"),
    Setting("node_rank", parse_int(minimum=0), 0,
            f"This node's rank, from 0 to --nnodes minus 1, for the {defaults.RDZV_STATIC!r} "
            "rendezvous (which it selects on several nodes when no --rdzv-backend is given); "
            "elastic backends number the nodes themselves and ignore it.", metavar="N"),
    Setting("master_addr", parse_str, "127.0.0.1", "Address workers use to reach rank 0.",
            metavar="ADDR"),
    Setting("master_port", _optional(parse_port), None,
            "Port workers use to reach rank 0; default: a free port, fresh each attempt.",
            metavar="PORT"),
    Setting("local_addr", _optional(parse_str), None, "This node's address.", metavar="ADDR"),
    Setting("signals_to_handle", parse_signals, defaults.SIGNALS,
            "Signals the agent forwards to its workers before it exits.", metavar="SIG,..."),
    Setting("shutdown_timeout", parse_float(minimum=0.0), defaults.SHUTDOWN_TIMEOUT,
            "Seconds between SIGTERM and SIGKILL when workers are stopped (also read from "
            "TORCH_ELASTIC_SHUTDOWN_TIMEOUT, as torchrun does).", metavar="SECONDS",
            env_aliases=("TORCH_ELASTIC_SHUTDOWN_TIMEOUT",)),
    Setting("event_log_handler", parse_str, "null",
            "torchrun's event handler name: 'null' (the default) records nothing; another "
            "name selects that pliant event handler, as --events does.", metavar="NAME"),
    Setting("numa_binding", _optional(parse_choice(*NUMA_MODES)), None,
            "torchrun's binding of workers to the CPUs near their GPU (" + ", ".join(NUMA_MODES)
            + "); needs NVIDIA GPUs.", metavar="MODE"),
    Setting("virtual_local_rank", parse_bool, False,
            "Every worker sees LOCAL_RANK=0 and CUDA_VISIBLE_DEVICES limited to its own GPU.",
            is_flag=True),
    Setting("duplicate_stdout_filters", _filters, (),
            "Also copy tee'd stdout lines containing any of these strings to "
            "filtered_stdout.log in the attempt's log directory (',,' for a comma).",
            metavar="TEXT,..."),
    Setting("duplicate_stderr_filters", _filters, (),
            "The same for stderr, to filtered_stderr.log.", metavar="TEXT,..."),
    Setting("exit_code", parse_choice(*EXIT_CODES), "worker",
            "What pliant exits with when the job fails: 'worker', the root-cause worker's "
            "code (128+N for signal N); 'torchrun', 1 as torchrun does.",
            metavar="worker|torchrun"),
    Setting("preload", _modules, defaults.PRELOAD,
            "Modules warm standby workers import before they are needed; 'auto': torch and "
            "what a DDP first step imports, when the script imports torch; '' for no "
            "standby (every worker starts cold).", metavar="MODULE,..."),
    Setting("standby_delay", parse_float(minimum=0.0), defaults.STANDBY_DELAY,
            "Seconds into a group when the warm standbys start, on one node (on several they "
            "start with the agent): a shorter job never has them importing beside it.",
            metavar="SECONDS"),
    Setting("metrics", parse_list, (), "Metric handlers (plugin names); none by default.",
            metavar="NAME,..."),
    Setting("events", parse_list, (), "Event handlers (plugin names); none by default.",
            metavar="NAME,..."),
    Setting("timer", _optional(parse_str), defaults.TIMER,
            f"Timer backend (a plugin name) that watches expires() deadlines; default "
            f"{defaults.TIMER!r}, in the agent; '' for none.", metavar="NAME"),
    Setting("metrics_conf", parse_kv, {}, "Metric handler settings, handler.key=value,...",
            metavar="K=V,..."),
    Setting("events_conf", parse_kv, {}, "Event handler settings, handler.key=value,...",
            metavar="K=V,..."),
    Setting("timer_conf", parse_kv, {}, "Timer backend settings, key=value,...",
            metavar="K=V,..."),
    Setting("disable_plugins", parse_list, (),
            "Plugins not to load (entry-point or distribution names).", metavar="NAME,..."),
    Setting("no_plugins", parse_bool, False,
            "Load no plugins from entry points; only pliant-core's built-ins.", is_flag=True),
    Setting("debug", parse_bool, False, "Show tracebacks and debug logs.", is_flag=True),
    Setting("quiet", parse_bool, False,
            "Print none of pliant's own information lines (the start line, the summary, "
            "restarts, rendezvous rounds); warnings, errors, the failure report and the line "
            "a signal prints still show.",
            short=("-q",), is_flag=True),
)

_BY_NAME = {setting.name: setting for setting in CORE_SETTINGS}

#: The options of torch 2.13's ``torchrun`` (argparse dests): an abbreviation that could
#: mean one of these or one of pliant's own options means torchrun's, as under torchrun.
TORCHRUN_OPTIONS = frozenset({
    "nnodes", "nproc_per_node", "rdzv_backend", "rdzv_endpoint", "rdzv_id", "rdzv_conf",
    "standalone", "max_restarts", "monitor_interval", "start_method", "event_log_handler",
    "role", "module", "no_python", "run_path", "log_dir", "redirects", "tee",
    "local_ranks_filter", "duplicate_stdout_filters", "duplicate_stderr_filters", "node_rank",
    "master_addr", "master_port", "local_addr", "logs_specs", "numa_binding",
    "signals_to_handle", "shutdown_timeout", "virtual_local_rank", "help",
})


def _toml() -> Any:
    """The TOML parser, imported only when there is a file to read (start-up time)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def _close_match(word: str, choices: Sequence[str], n: int, cutoff: float) -> list[str]:
    import difflib

    return difflib.get_close_matches(word, choices, n=n, cutoff=cutoff)


@dataclass(frozen=True)
class Value:
    """A resolved value and its source."""

    value: Any
    source: str


class Config:
    """The effective configuration: one :class:`Value` per core setting."""

    def __init__(self, values: Mapping[str, Value], file: Path | None = None,
                 warnings: Sequence[str] = ()) -> None:
        self._values = dict(values)
        self.file = file
        #: What the user set that means nothing to pliant (a mistyped PLIANT_* variable).
        self.warnings = tuple(warnings)

    def __getitem__(self, name: str) -> Any:
        return self._values[name].value

    def source(self, name: str) -> str:
        return self._values[name].source

    def is_set(self, name: str) -> bool:
        """True when the value came from a file, the environment or a flag."""
        return self._values[name].source != "default"

    def items(self) -> list[tuple[str, Value]]:
        return list(self._values.items())


def _parse(setting: Setting, raw: Any, source: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        shown = "<hidden>" if setting.secret else repr(raw)
        raise ConfigError(f"invalid {setting.name} {shown} (from {source}): {exc}") from None


def _unknown_key(key: str, known: Sequence[str], where: str) -> ConfigError:
    close = _close_match(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(sorted(known))
    return ConfigError(f"unknown key {key!r} in {where}; {hint}")


def read_config_file(path: Path, source: str) -> tuple[dict[str, Any], str]:
    """Read a config file; returns its pliant table and how to name it in messages.

    A file named ``pyproject.toml`` contributes its ``[tool.pliant]`` table;
    any other file is a pliant.toml whose top level is the table.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}' ({source}): "
                          f"{exc.strerror or exc}; fix the path or the file's permissions") \
            from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' ({source}) is not UTF-8 text ({exc.reason} at "
                          f"byte {exc.start}); is it the right file?") from None
    try:
        data = _toml().loads(text)
    except _toml().TOMLDecodeError as exc:
        raise ConfigError(f"config file '{path}' ({source}) is not valid TOML: {exc}") \
            from None
    if path.name == "pyproject.toml":
        tool = data.get("tool")
        table = tool.get("pliant", {}) if isinstance(tool, dict) else {}
        if not isinstance(table, dict):
            raise ConfigError(f"[tool.pliant] in '{path}' ({source}) must be a table of pliant "
                              f"settings, not {table!r}")
        return dict(table), f"{path} [tool.pliant]"
    return data, str(path)


def _has_pliant_table(pyproject_text: str) -> bool:
    # Parsed, not searched: [tool] with pliant.x = ... is a [tool.pliant] table too, and
    # "[tool.pliant]" in a comment is not. A broken file that names the table is read
    # anyway, so that its syntax error is reported rather than silently ignored.
    try:
        tool = _toml().loads(pyproject_text).get("tool")
    except _toml().TOMLDecodeError:
        return "[tool.pliant" in pyproject_text
    return isinstance(tool, dict) and "pliant" in tool


def find_config_file(explicit: tuple[str, str] | None, cwd: Path) -> tuple[Path, str] | None:
    """The config file to read: the explicit one, else ./pliant.toml, else ./pyproject.toml."""
    if explicit is not None:
        return Path(explicit[0]), f"from {explicit[1]}"
    if (cwd / "pliant.toml").is_file():
        return cwd / "pliant.toml", "found in the working directory"
    pyproject = cwd / "pyproject.toml"
    try:
        has_table = _has_pliant_table(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        has_table = False
    return (pyproject, "found in the working directory") if has_table else None


def load(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    cwd: Path,
    explicit_file: tuple[str, str] | None = None,
) -> Config:
    """Resolve every core setting from defaults, file, environment and flags.

    ``flags`` maps setting names to the raw values given on the command line;
    ``explicit_file`` is ``(path, source)`` from ``--config`` or ``PLIANT_CONFIG``.
    """
    values = {s.name: Value(s.default, "default") for s in CORE_SETTINGS}

    found = find_config_file(explicit_file, cwd)
    file_path = None
    if found is not None:
        file_path, how = found
        table, where = read_config_file(file_path, how)
        for key, raw in table.items():
            name = key.replace("-", "_")
            if name not in _BY_NAME:
                raise _unknown_key(key, list(_BY_NAME), where)
            source = f"{where} key {key!r}"
            values[name] = Value(_parse(_BY_NAME[name], raw, source), source)

    for setting in CORE_SETTINGS:
        upper = setting.name.upper()
        for var in (f"PLIANT_{upper}", f"PET_{upper}", *setting.env_aliases):
            if var in env:
                source = f"env {var}"
                raw = env[var]
                values[setting.name] = Value(_parse(setting, raw, source), source)
                break

    for name, raw in flags.items():
        setting = _BY_NAME[name]
        source = f"flag {setting.flag}"
        values[name] = Value(_parse(setting, raw, source), source)

    return Config(values, file_path, _unknown_variables(env))


#: pliant's own variables that are not settings: what the agent gives its workers (and a
#: worker's own ``pliant run`` inherits), and the config file's path.
INTERNAL_ENV = frozenset({"PLIANT_CONFIG", "PLIANT_AGENT_PID", "PLIANT_NODE", "PLIANT_RELAY",
                          "PLIANT_RETURN_FILE", "PLIANT_STANDBY_FD", "PLIANT_STANDBY_PRELOAD"})


def _unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A warning for each ``PLIANT_*``/``PET_*`` variable that is no setting: a typo must not
    be silently ignored (``PET_VIRTUAL_LOCAL_RANK`` was, once)."""
    known = {*INTERNAL_ENV, *(alias for s in CORE_SETTINGS for alias in s.env_aliases)}
    found = []
    for var in sorted(env):
        prefix = "PLIANT_" if var.startswith("PLIANT_") else "PET_" if var.startswith("PET_") \
            else None
        if prefix is None or var in known:
            continue
        name = var[len(prefix):].lower()
        if name in _BY_NAME:
            continue
        if name in TORCHRUN_OPTIONS:
            found.append(f"env {var} is torchrun's --{name.replace('_', '-')}, which pliant "
                         "does not support; ignored")
            continue
        close = _close_match(name, list(_BY_NAME), n=1, cutoff=0.75)
        hint = f"did you mean {prefix}{close[0].upper()}?" if close else \
            "see 'pliant config' for the settings and 'pliant run --help' for their flags"
        found.append(f"env {var} is not a pliant setting; ignored ({hint})")
    return found


def parse_plugin_conf(
    conf: Mapping[str, str],
    settings: Sequence[Setting],
    owner: str,
    source: str,
) -> dict[str, Any]:
    """Validate a plugin's ``key=value`` settings against the schema it declared.

    Missing keys take their defaults; an unknown key suggests the close match.
    """
    by_name = {s.name: s for s in settings}
    result = {s.name: s.default for s in settings}
    for key, raw in conf.items():
        name = key.replace("-", "_")
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            close = _close_match(name, list(by_name), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"{owner} accepts: {known}"
            raise ConfigError(f"unknown setting {key!r} for {owner} (from {source}); {hint}")
        result[name] = _parse(by_name[name], raw, f"{source}, {owner} key {key!r}")
    return result


def handler_conf(kind: str, names: Sequence[str], conf: Mapping[str, str], source: str,
                 ) -> dict[str, dict[str, str]]:
    """Split ``handler.key=value`` settings (``metrics_conf``, ``events_conf``) by handler,
    refusing a key for a handler that is not selected."""
    per: dict[str, dict[str, str]] = {name: {} for name in names}
    for key, value in conf.items():
        name, _, sub = key.partition(".")
        if name not in per or not sub:
            raise ConfigError(f"{kind}_conf key {key!r} (from {source}) must be HANDLER.KEY for a "
                              f"selected {kind} handler; selected: {', '.join(names) or 'none'}")
        per[name][sub] = value
    return per
