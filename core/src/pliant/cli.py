"""``pliant``: the command line. ``pliant run`` takes torchrun's flags.

Subcommands:

* ``pliant run [flags] SCRIPT [ARGS...]`` launches and watches the workers;
* ``pliant plugins [--json]`` lists the plugins and whether they loaded;
* ``pliant config [flags]`` prints every effective setting and its source;
* ``pliant store [--backend c10d] [--host H] [--port P]`` runs a standalone
  rendezvous store, so the coordination point need not live in a training node.

A mistake the user can fix ends with a one-paragraph message and exit code 2,
never a traceback (``--debug`` or ``PLIANT_DEBUG=1`` shows one).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pliant import __version__, config
from pliant._bootstrap import COMMAND as BOOTSTRAP
from pliant.errors import ConfigError, PliantError, UsageError
from pliant.settings import parse_bool

__all__ = ["main"]

log = logging.getLogger("pliant")

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        command = next((a for a in sys.argv[1:2] if a in ("run", "plugins", "config", "store")),
                       "")
        prog = f"pliant {command}".strip() if self.prog == "pliant" else self.prog
        raise UsageError(f"{message}\nSee '{prog} --help' for the flags it takes.")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS,
                        help="Read settings from FILE (pliant.toml or pyproject.toml).")
    for setting in config.CORE_SETTINGS:
        names = [*setting.short, setting.flag]
        if "-" in setting.flag[2:]:
            names.append("--" + setting.name)  # torchrun also takes --nproc_per_node
        kwargs: dict[str, Any] = {"dest": setting.name, "default": argparse.SUPPRESS,
                                  "help": setting.help}
        if setting.is_flag:
            parser.add_argument(*names, action="store_const", const="true", **kwargs)
        else:
            parser.add_argument(*names, metavar=setting.metavar, **kwargs)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pliant", description="Elastic, fault-tolerant launcher for PyTorch.",
                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"pliant {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="Launch a training script (torchrun's flags).",
                         allow_abbrev=False,
                         description="Launch SCRIPT on this node's workers and keep them running.")
    _add_setting_flags(run)
    run.add_argument("training_script", metavar="SCRIPT", nargs="?",
                     help="The script (or module with -m, or program with --no-python).")
    run.add_argument("training_script_args", nargs=argparse.REMAINDER, metavar="...",
                     help="Passed to the script unchanged.")

    plugins = sub.add_parser("plugins", help="List plugins, their hooks and their status.",
                             allow_abbrev=False)
    plugins.add_argument("--json", action="store_true", help="Print JSON.")
    plugins.add_argument("--disable-plugins", dest="disable_plugins", default=argparse.SUPPRESS,
                         metavar="NAME,...", help="Plugins not to load.")
    plugins.add_argument("--no-plugins", dest="no_plugins", action="store_const", const="true",
                         default=argparse.SUPPRESS, help="Load no plugins from entry points.")

    show = sub.add_parser("config", help="Print every effective setting and its source.",
                          allow_abbrev=False)
    _add_setting_flags(show)
    store = sub.add_parser(
        "store", allow_abbrev=False,
        help="Run a standalone rendezvous store (agents then use --rdzv-endpoint HOST:PORT).")
    store.add_argument("--backend", default=None, metavar="NAME",
                       help="The rendezvous backend whose store to run (default: c10d).")
    store.add_argument("--host", default="0.0.0.0", help="Address to listen on (default: all).")
    store.add_argument("--port", type=int, default=29400,
                       help="Port to listen on (default: 29400; 0 picks a free one).")
    return parser


def _load_config(ns: argparse.Namespace) -> config.Config:
    flags = {s.name: getattr(ns, s.name) for s in config.CORE_SETTINGS if hasattr(ns, s.name)}
    explicit = None
    if hasattr(ns, "config_file"):
        explicit = (ns.config_file, "flag --config")
    elif os.environ.get("PLIANT_CONFIG"):
        explicit = (os.environ["PLIANT_CONFIG"], "env PLIANT_CONFIG")
    return config.load(flags, os.environ, Path.cwd(), explicit)


def _plugin_manager(cfg: config.Config) -> Any:
    from pliant.plugins import PluginManager

    by = cfg.source("no_plugins") if cfg["no_plugins"] else cfg.source("disable_plugins")
    return PluginManager(cfg["disable_plugins"], cfg["no_plugins"], by)


# -- pliant run -----------------------------------------------------------------------------


def _rdzv_backend(cfg: config.Config) -> tuple[str, str]:
    """The rendezvous backend's name and where that choice came from."""
    if cfg["standalone"]:
        return "embedded", cfg.source("standalone")
    explicit = cfg.is_set("rdzv_backend") or cfg.is_set("rdzv_endpoint")
    if not explicit and cfg["nnodes"] == (1, 1):
        return "embedded", "default for one node"
    return cfg["rdzv_backend"], cfg.source("rdzv_backend")


def _nproc(cfg: config.Config) -> int:
    value = cfg["nproc_per_node"]
    if isinstance(value, int):
        return value
    gpus = _gpu_count()
    if value == "gpu" and gpus == 0:
        raise ConfigError(f"nproc_per_node 'gpu' (from {cfg.source('nproc_per_node')}): no "
                          "NVIDIA GPU is visible here; give a number or 'cpu'")
    if value == "gpu" or (value == "auto" and gpus):
        return gpus
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _gpu_count() -> int:
    """Visible NVIDIA GPUs, read without importing torch: CUDA_VISIBLE_DEVICES, else the driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and not d.startswith("-")])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def _entrypoint(cfg: config.Config, script: str, args: Sequence[str]) -> tuple[str, list[str]]:
    """The program and arguments each worker runs; refuses a missing script."""
    if cfg["no_python"]:
        if cfg["module"]:
            raise ConfigError("-m/--module and --no-python cannot be combined: choose one")
        import shutil

        if shutil.which(script) is None:
            raise UsageError(f"program {script!r} (from the command line, with --no-python) was "
                             "not found on PATH nor as an executable file; check the name")
        return script, list(args)
    if cfg["module"]:
        return sys.executable, [*BOOTSTRAP, "module", script, *args]
    if not os.path.isfile(script):
        raise UsageError(f"training script {script!r} (from the command line) does not exist in "
                         f"{os.getcwd()}; check the path, or pass -m for a module")
    return sys.executable, [*BOOTSTRAP, "script", script, *args]


def _handler_conf(kind: str, names: Sequence[str], conf: dict[str, str], source: str,
                  ) -> dict[str, dict[str, str]]:
    """Split ``handler.key=value`` settings by handler, refusing unselected handlers."""
    per: dict[str, dict[str, str]] = {name: {} for name in names}
    for key, value in conf.items():
        name, _, sub = key.partition(".")
        if name not in per or not sub:
            raise ConfigError(f"{kind}_conf key {key!r} (from {source}) must be HANDLER.KEY for a "
                              f"selected {kind} handler; selected: {', '.join(names) or 'none'}")
        per[name][sub] = value
    return per


def _selected_sinks(cfg: config.Config, pm: Any) -> list[tuple[str, str, Any]]:
    """The chosen metric handlers, event handlers and timer, validated, not yet built.

    Each entry is ``(kind, conf key prefix, Selected)``.
    """
    chosen = []
    for kind in ("metrics", "events"):
        conf_source = cfg.source(f"{kind}_conf")
        per = _handler_conf(kind, cfg[kind], cfg[f"{kind}_conf"], conf_source)
        chosen += [(kind, f"{name}.", pm.select(kind, name, cfg.source(kind), per[name],
                                                conf_source))
                   for name in cfg[kind]]
    if cfg["timer"] is not None:
        chosen.append(("timer", "", pm.select("timer", cfg["timer"], cfg.source("timer"),
                                              cfg["timer_conf"], cfg.source("timer_conf"))))
    elif cfg["timer_conf"]:
        raise ConfigError(f"timer_conf (from {cfg.source('timer_conf')}) is set but no timer is "
                          "selected; choose one with --timer NAME")
    return chosen


def _build_sinks(cfg: config.Config, pm: Any) -> list[Any]:
    """Configure the metric and event handlers; return the timer servers to start."""
    from pliant import events, metrics

    built: dict[str, list[Any]] = {"metrics": [], "events": [], "timer": []}
    for kind, _, selected in _selected_sinks(cfg, pm):
        built[kind].append(selected.create())
    metrics.configure(built["metrics"])
    events.configure(built["events"])
    return built["timer"]


def _sink_env(cfg: config.Config, run_id: str) -> dict[str, str]:
    """Tag the agent's own records, and give its workers the node's name for theirs (their
    records reach the handlers through the agent: see :mod:`pliant._relay`)."""
    from pliant._dispatch import context, set_context

    set_context(run_id=run_id, role=cfg["role"], rank=None)
    return {"PLIANT_NODE": context()["node"]}


def _run(ns: argparse.Namespace) -> int:
    from pliant.agent import LocalElasticAgent, SignalException, WorkerSpec
    from pliant.agent.report import exit_code, format_report, signal_exit_code
    from pliant.rendezvous import RendezvousError, RendezvousParameters

    if ns.training_script is None:
        raise UsageError("pliant run needs the script to launch, as torchrun does: "
                         "pliant run --nproc-per-node 2 train.py [ARGS...]")
    cfg = _load_config(ns)
    _setup_logging(cfg["debug"])
    nproc = _nproc(cfg)
    entrypoint, args = _entrypoint(cfg, ns.training_script, ns.training_script_args)

    pm = _plugin_manager(cfg)
    backend, backend_source = _rdzv_backend(cfg)
    rdzv = pm.select("rendezvous", backend, backend_source, cfg["rdzv_conf"],
                     cfg.source("rdzv_conf"))
    timers = _build_sinks(cfg, pm)

    run_id = cfg["rdzv_id"]
    if run_id == "none" and backend == "embedded":
        run_id = os.urandom(6).hex()
    min_nodes, max_nodes = cfg["nnodes"]
    extra = {k: cfg[k] for k in ("master_addr", "master_port", "node_rank") if cfg.is_set(k)}
    params = RendezvousParameters(backend, cfg["rdzv_endpoint"], run_id, min_nodes, max_nodes,
                                  cfg["local_addr"], **extra)
    handler = rdzv.create(params)
    spec = WorkerSpec(
        role=cfg["role"],
        local_world_size=nproc,
        rdzv_handler=handler,
        entrypoint=entrypoint,
        args=tuple(args),
        max_restarts=cfg["max_restarts"],
        monitor_interval=cfg["monitor_interval"],
        local_addr=cfg["local_addr"],
        log_dir=cfg["log_dir"],
        redirects=cfg["redirects"],
        tee=cfg["tee"],
        local_ranks_filter=frozenset(cfg["local_ranks_filter"]),
        shutdown_timeout=cfg["shutdown_timeout"],
    )
    spec.env.update(_sink_env(cfg, run_id))
    agent = LocalElasticAgent(spec, cfg["start_method"], signals_to_handle=cfg["signals_to_handle"],
                              timers=timers)  # the agent starts and stops them
    try:
        result = agent.run()
    except SignalException as exc:
        return signal_exit_code(exc.sigval)
    except RendezvousError as exc:
        # The workers are stopped; a rendezvous failure is the job's failure, not a usage error.
        print(f"pliant: rendezvous error: {exc}", file=sys.stderr)
        return 1
    finally:
        handler.shutdown()
    if result.is_failed():
        print(format_report(result, os.path.basename(ns.training_script), run_id), file=sys.stderr)
        return exit_code(result.root_cause())
    return 0


# -- pliant plugins / pliant config ----------------------------------------------------------


def _plugins(ns: argparse.Namespace) -> int:
    cfg = _load_config(ns)
    infos = _plugin_manager(cfg).plugins()
    if ns.json:
        import json

        print(json.dumps([info.as_dict() for info in infos], indent=2))
        return 0
    rows = [("NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS")]
    rows += [(i.name, i.distribution, i.version, i.status, ",".join(i.hooks) or "-") for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]))
    for info in infos:
        if info.error:
            print(f"\n{info.name}: {info.status}: {info.error}")
    return 0


def _show_config(ns: argparse.Namespace) -> int:
    cfg = _load_config(ns)
    pm = _plugin_manager(cfg)
    backend, source = _rdzv_backend(cfg)
    selected = [("rdzv_conf", "", pm.select("rendezvous", backend, source, cfg["rdzv_conf"],
                                            cfg.source("rdzv_conf")))]
    selected += [(f"{kind}_conf", prefix, chosen)
                 for kind, prefix, chosen in _selected_sinks(cfg, pm)]
    secret = {(table, prefix + s.name) for table, prefix, chosen in selected
              for s in chosen.registration.settings if s.secret}
    print(f"# config file: {cfg.file or 'none'}")
    for name, value in cfg.items():
        shown = value.value
        if isinstance(shown, dict):  # a plugin's table: its secrets stay hidden here too
            shown = {k: "<hidden>" if (name, k) in secret else v for k, v in shown.items()}
        print(f"{name} = {_show(shown)}  # {value.source}")
    for table, prefix, chosen in selected:
        reg = chosen.registration
        print(f"# {reg.kind} {reg.name!r}, from plugin {chosen.plugin.label}")
        for setting in reg.settings:
            key = prefix + setting.name
            origin = cfg.source(table) if key in cfg[table] else "default"
            shown = "<hidden>" if setting.secret else _show(chosen.settings[setting.name])
            print(f"{table}.{key} = {shown}  # {origin}")
    return 0


def _show(value: Any) -> str:
    if value in (None, "", (), {}):
        return "(none)"
    if isinstance(value, tuple) and value and hasattr(value[0], "name"):
        return ",".join(v.name for v in value)
    if value == (1, 1) or (isinstance(value, tuple) and len(value) == 2
                           and all(isinstance(v, int) for v in value)):
        return f"{value[0]}:{value[1]}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "(none)" if value is None else str(value)


def _store(ns: argparse.Namespace) -> int:
    _setup_logging(False)
    if not 0 <= ns.port <= 65535:
        raise UsageError(f"invalid port {ns.port} (from flag --port): expected 0 to 65535 "
                         "(0 picks a free one)")
    pm = _plugin_manager(_load_config(ns))
    backend = ns.backend or "c10d"
    chosen = pm.select("rendezvous", backend, "flag --backend" if ns.backend else
                       "the default of pliant store", {}, "")
    serve = getattr(chosen.registration, "serve", None)
    if serve is None:
        raise UsageError(f"the {backend!r} rendezvous backend has no standalone store; "
                         "`pliant store` serves backends whose plugin provides one, such as "
                         "c10d (pip install pliant-c10d)")
    serve(ns.host, ns.port)
    return 0


# -- entry point --------------------------------------------------------------------------------


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="[pliant] %(message)s", stream=sys.stderr)


def _debug_requested(argv: Sequence[str]) -> bool:
    try:
        env = parse_bool(os.environ.get("PLIANT_DEBUG", ""))
    except ValueError:
        env = False
    # --debug counts among pliant's flags, not after the script: skip each flag's value.
    takes_value = {"--config", *(name for s in config.CORE_SETTINGS if not s.is_flag
                                 for name in (*s.short, s.flag, "--" + s.name))}
    words = iter(argv[1:])
    for word in words:
        if word == "--debug":
            return True
        if not word.startswith("-"):
            break
        if word in takes_value:
            next(words, None)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
            raise UsageError(f"pliant needs a command before {argv[0]!r}: to launch a script "
                             f"as torchrun would, use 'pliant run {' '.join(argv[:3])} ...'")
        ns = _build_parser().parse_args(argv)
        if ns.command == "run":
            return _run(ns)
        if ns.command == "plugins":
            return _plugins(ns)
        if ns.command == "config":
            return _show_config(ns)
        if ns.command == "store":
            return _store(ns)
        _build_parser().print_help()
        return 2
    except PliantError as exc:
        if _debug_requested(argv):
            raise
        print(f"pliant: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pliant config | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
