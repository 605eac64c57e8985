"""``pliant``: the command line. ``pliant run`` takes torchrun's flags.

Subcommands:

* ``pliant run [flags] SCRIPT [ARGS...]`` launches and watches the workers;
* ``pliant plugins [--json]`` lists the plugins and whether they loaded;
* ``pliant config [flags]`` prints every effective setting and its source;
* ``pliant store [--backend c10d] [--host H] [--port P]`` runs a standalone
  rendezvous store, so the coordination point need not live in a training node;
* ``pliant status --rdzv-endpoint E --rdzv-id ID [--json]`` shows where a running
  multi-node job stands, read from its store without joining it.

``run`` and ``config`` take unambiguous prefixes of their long flags, as torchrun's
argparse parser does (:func:`expand_abbreviations`).

A mistake the user can fix ends with a one-paragraph message and exit code 2,
never a traceback (``--debug`` or ``PLIANT_DEBUG=1`` shows one).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pliant import config, defaults
from pliant._version import __version__
from pliant.errors import PliantError, UsageError, install_hint
from pliant.settings import parse_bool

if TYPE_CHECKING:
    from pliant.plugins import PluginManager

__all__ = ["main", "plugins_listing"]

log = logging.getLogger("pliant")

class _Parser(argparse.ArgumentParser):
    """Answers a mistake with a UsageError naming the subcommand's ``--help``. ``argv``, the
    words main() parses, says which subcommand was meant."""

    def __init__(self, *args: Any, argv: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.argv = argv

    def error(self, message: str) -> NoReturn:
        command = next((a for a in self.argv[:1] if a in ("run", "plugins", "config", "store",
                                                         "status")),
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


def _options() -> dict[str, tuple[str, bool]]:
    """Every long option of ``pliant run``/``pliant config``: its dest, and whether it takes
    a value."""
    options = {"--help": ("help", False), "--config": ("config_file", True)}
    for setting in config.CORE_SETTINGS:
        for name in {setting.flag, "--" + setting.name}:
            options[name] = (setting.name, not setting.is_flag)
    return options


def expand_abbreviations(words: Sequence[str]) -> list[str]:
    """Spell out the unambiguous prefixes of long options (``--nproc-per 2``), as torchrun's
    argparse parser accepts them. Words after the script are the script's. A prefix shared by
    a torchrun option and pliant's own means torchrun's; one shared by several options of the
    same origin is refused, naming them."""
    options = _options()
    takes_value = {"-r", "-t", *(name for name, (_, value) in options.items() if value)}
    result: list[str] = []
    words = list(words)
    while words:
        word = words.pop(0)
        if word == "--" or not word.startswith("-") or word == "-":
            return [*result, word, *words]  # the script and its arguments, untouched
        name, eq, value = word.partition("=")
        if name.startswith("--") and name not in options:
            matches = {opt: dest for opt, (dest, _) in options.items() if opt.startswith(name)}
            dests = set(matches.values())
            if len(dests) > 1 and len(dests & config.TORCHRUN_OPTIONS) == 1:
                dests &= config.TORCHRUN_OPTIONS
            if len(dests) > 1:
                shown = ", ".join(sorted(matches))
                raise UsageError(f"ambiguous option: {name} could match {shown}\n"
                                 "Spell it out; see 'pliant run --help' for the flags it takes.")
            if dests:
                (dest,) = dests
                name = next(opt for opt, d in matches.items() if d == dest)
                word = name + eq + value
        result.append(word)
        if name in takes_value and not eq and words:
            result.append(words.pop(0))
    return result


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="pliant", description="Elastic, fault-tolerant launcher for PyTorch.",
                     allow_abbrev=False, argv=argv)
    parser.add_argument("--version", action="version", version=f"pliant {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="Launch a training script (torchrun's flags).",
                         allow_abbrev=False, argv=argv,
                         description="Launch SCRIPT on this node's workers and keep them running.")
    _add_setting_flags(run)
    run.add_argument("training_script", metavar="SCRIPT", nargs="?",
                     help="The script (or module with -m, or program with --no-python).")
    run.add_argument("training_script_args", nargs=argparse.REMAINDER, metavar="...",
                     help="Passed to the script unchanged.")

    plugins = sub.add_parser("plugins", help="List plugins, their hooks and their status.",
                             allow_abbrev=False, argv=argv)
    plugins.add_argument("--json", action="store_true", help="Print JSON.")
    plugins.add_argument("--disable-plugins", dest="disable_plugins", default=argparse.SUPPRESS,
                         metavar="NAME,...", help="Plugins not to load.")
    plugins.add_argument("--no-plugins", dest="no_plugins", action="store_const", const="true",
                         default=argparse.SUPPRESS, help="Load no plugins from entry points.")

    show = sub.add_parser("config", help="Print every effective setting and its source.",
                          allow_abbrev=False, argv=argv)
    _add_setting_flags(show)
    store = sub.add_parser(
        "store", allow_abbrev=False, argv=argv,
        help="Run a standalone rendezvous store (agents then use --rdzv-endpoint HOST:PORT).")
    store.add_argument("--backend", default=None, metavar="NAME",
                       help="The rendezvous backend whose store to run (default: c10d).")
    store.add_argument("--host", default=None, metavar="ADDR",
                       help="Address or name to listen on (default: this machine's name, on "
                            "the address it resolves to here; 0.0.0.0 for every interface).")
    store.add_argument("--port", type=int, default=29400,
                       help="Port to listen on (default: 29400; 0 picks a free one).")
    _add_status_parser(sub, argv)
    return parser


def _load_config(ns: argparse.Namespace) -> config.Config:
    flags = {s.name: getattr(ns, s.name) for s in config.CORE_SETTINGS if hasattr(ns, s.name)}
    explicit = None
    if hasattr(ns, "config_file"):
        explicit = (ns.config_file, "flag --config")
    elif os.environ.get("PLIANT_CONFIG"):
        explicit = (os.environ["PLIANT_CONFIG"], "env PLIANT_CONFIG")
    cfg = config.load(flags, os.environ, Path.cwd(), explicit)
    _setup_logging(cfg["debug"], cfg["quiet"])
    for warning in cfg.warnings:
        log.warning("%s", warning)
    return cfg


def _plugin_manager(cfg: config.Config) -> Any:
    from pliant.plugins import PluginManager

    by = cfg.source("no_plugins") if cfg["no_plugins"] else cfg.source("disable_plugins")
    return PluginManager(cfg["disable_plugins"], cfg["no_plugins"], by)


# -- pliant run -----------------------------------------------------------------------------


def _run(ns: argparse.Namespace) -> int:
    from pliant import launch

    if ns.training_script is None:
        raise UsageError("pliant run needs the script to launch, as torchrun does: "
                         "pliant run --nproc-per-node 2 train.py [ARGS...]")
    cfg = _load_config(ns)
    prepared = launch.prepare(cfg, ns.training_script, ns.training_script_args,
                              _plugin_manager(cfg))
    return prepared.run()


# -- pliant plugins / pliant config ----------------------------------------------------------


def _plugins(ns: argparse.Namespace) -> int:
    cfg = _load_config(ns)
    print(plugins_listing(_plugin_manager(cfg), as_json=ns.json), end="")
    return 0


#: The setting that selects each kind of backend (``pliant plugins`` shows its flag).
_SELECTED_BY = {"rendezvous": "rdzv_backend", "metrics": "metrics", "events": "events",
                "timer": "timer"}


def _defaults(kind: str) -> dict[str, str]:
    """The names ``pliant run`` selects of ``kind`` when its flag is not given, each with
    when ("" for always), as :mod:`pliant.defaults` and the settings define them."""
    if kind == "rendezvous":
        return dict(defaults.RDZV_DEFAULTS)
    default = next(s for s in config.CORE_SETTINGS if s.name == _SELECTED_BY[kind]).default
    return {name: "" for name in (default if isinstance(default, tuple) else (default,))
            if name}


def _flag(kind: str) -> str:
    return "--" + _SELECTED_BY[kind].replace("_", "-")


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the last one is not padded."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                       row[-1]]).rstrip() for row in rows]


def plugins_listing(pm: PluginManager, as_json: bool = False) -> str:
    """What ``pliant plugins`` prints for the plugins ``pm`` finds.

    First the backends, the names ``--rdzv-backend``, ``--metrics``, ``--events`` and
    ``--timer`` take: which plugin provides each and which are the defaults (a default that
    is not installed is listed too, with where to get it). Then the plugins: distribution,
    version, status and hooks, and why one did not load. ``as_json``: the plugins as a JSON
    list, each with the backends it provides."""
    infos = pm.plugins()
    backends = pm.backends()
    if as_json:
        import json

        provided: dict[int, list[dict[str, Any]]] = {}
        for kind, name, registration, info in backends:
            when = _defaults(kind.key).get(name)
            provided.setdefault(id(info), []).append({
                "kind": kind.key, "flag": _flag(kind.key), "name": name,
                "default": when is not None, "default_when": when or None,
                "description": registration.description})
        return json.dumps([{**info.as_dict(), "backends": provided.get(id(info), [])}
                           for info in infos], indent=2) + "\n"
    from pliant.plugins import KINDS

    rows: list[tuple[str, ...]] = [("FLAG", "NAME", "PROVIDED BY", "DEFAULT")]
    notes: list[str] = []
    none_by_default = []
    for kind in KINDS.values():
        flag, chosen = _flag(kind.key), _defaults(kind.key)
        found = [(name, info.label) for k, name, _, info in backends if k is kind]
        for name in sorted(set(chosen) - {name for name, _ in found}):
            found.append((name, "(not available)"))
            notes.append(f"{flag} {name}: {pm.missing(name)}")
        for name, label in sorted(found):
            when = chosen.get(name)
            default = "" if when is None else "yes" + (f", {when}" if when else "")
            rows.append((flag, name, label, default))
        names = [name for name, _ in found]
        notes += [f"{flag} {name}: provided twice; selecting it fails until one plugin is "
                  "disabled (--disable-plugins NAME)" for name in sorted(set(names))
                  if names.count(name) > 1]
        if not chosen:
            none_by_default.append(flag)
    lines = _table(rows) + notes
    if none_by_default:
        lines.append(f"{' and '.join(none_by_default)}: none unless given")
    lines.append("")
    rows = [("NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS")]
    rows += [(i.name, i.distribution, i.version, i.status, ",".join(i.hooks) or "-")
             for i in infos]
    lines += _table(rows)
    for info in infos:
        if info.error:
            lines += ["", f"{info.name}: {info.status}: {info.error}"]
    return "\n".join(lines) + "\n"


def _show_config(ns: argparse.Namespace) -> int:
    from pliant.launch import choices

    cfg = _load_config(ns)
    selected = [(c.table, c.prefix, c.selected) for c in choices(cfg, _plugin_manager(cfg))]
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
                         f"c10d: {install_hint('pliant-c10d')}")
    serve(ns.host or socket.gethostname(), ns.port)
    return 0


# -- pliant status -----------------------------------------------------------------------------

#: The run flags ``pliant status`` takes, to name the job as its agents do.
_STATUS_FLAGS = {
    "rdzv_backend": "The job's rendezvous backend (default: c10d; etcd).",
    "rdzv_endpoint": "The job's rendezvous endpoint, as its agents were given it.",
    "rdzv_id": "The job's run id.",
    "rdzv_conf": "The backend's settings, as the job's: token_file (to verify the job's "
                 "records), and how to reach the store (etcd: key_prefix, TLS, user).",
}


def _add_status_parser(sub: Any, argv: Sequence[str]) -> None:
    from pliant.defaults import STATUS_TIMEOUT

    status = sub.add_parser(
        "status", allow_abbrev=False, argv=argv,
        help="Show where a running multi-node job stands (read from its rendezvous store).",
        description="Read a job's round, members, restarts and last outcome from its "
                    "rendezvous store, without joining or disturbing it.")
    status.add_argument("--config", dest="config_file", metavar="FILE",
                        default=argparse.SUPPRESS,
                        help="Read settings from FILE (pliant.toml or pyproject.toml).")
    for setting in config.CORE_SETTINGS:
        if setting.name in _STATUS_FLAGS:
            status.add_argument(setting.flag, "--" + setting.name, dest=setting.name,
                                metavar=setting.metavar, default=argparse.SUPPRESS,
                                help=_STATUS_FLAGS[setting.name])
    status.add_argument("--json", action="store_true", help="Print JSON.")
    status.add_argument("--timeout", type=float, default=STATUS_TIMEOUT, metavar="SECONDS",
                        help="Give up on a store that does not answer after SECONDS (default: "
                             f"{STATUS_TIMEOUT:g}).")


def _status(ns: argparse.Namespace) -> int:
    from pliant.errors import PluginError
    from pliant.rendezvous.status import open_and_read, render

    cfg = _load_config(ns)
    if not ns.timeout > 0:
        raise UsageError(f"invalid --timeout {ns.timeout:g}: expected seconds above 0")
    endpoint, run_id, backend = cfg["rdzv_endpoint"], cfg["rdzv_id"], cfg["rdzv_backend"]
    if not endpoint.strip() or not cfg.is_set("rdzv_id"):
        raise UsageError("pliant status needs the job's --rdzv-endpoint and --rdzv-id (as its "
                         "agents were given them): pliant status --rdzv-backend c10d "
                         "--rdzv-endpoint HOST:PORT --rdzv-id ID")
    conf = {str(k): str(v) for k, v in cfg["rdzv_conf"].items()}
    chosen = _plugin_manager(cfg).select("rendezvous", backend, cfg.source("rdzv_backend"),
                                         conf, cfg.source("rdzv_conf"))
    opener = getattr(chosen.registration, "client_store", None)
    if opener is None:
        raise UsageError(f"pliant status cannot read a job on the {backend!r} rendezvous (from "
                         f"{cfg.source('rdzv_backend')}): plugin {chosen.plugin.label} opens "
                         "no client store for it; status reads backends that do, such as c10d "
                         "and etcd")

    def open_store() -> Any:
        try:
            return opener(endpoint, chosen.settings, ns.timeout)
        except (PliantError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise PluginError(f"rendezvous backend {backend!r} from plugin "
                              f"{chosen.plugin.label} failed to open a client store: "
                              f"{type(exc).__name__}: {exc}") from exc

    status = open_and_read(open_store, backend, endpoint, run_id, ns.timeout,
                           chosen.settings.get("token_file"))
    print(render(status, ns.json))
    return 0


# -- entry point --------------------------------------------------------------------------------


def _setup_logging(debug: bool, quiet: bool = False) -> None:
    """pliant's lines on stderr, ``[pliant] `` first; ``--quiet``: warnings and errors only
    (``--debug`` wins). The first call decides."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="[pliant] %(message)s", stream=sys.stderr)


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
        if argv[:1] in (["run"], ["config"]):
            argv = [argv[0], *expand_abbreviations(argv[1:])]
        parser = _build_parser(argv)
        ns = parser.parse_args(argv)
        if ns.command == "run":
            return _run(ns)
        if ns.command == "plugins":
            return _plugins(ns)
        if ns.command == "config":
            return _show_config(ns)
        if ns.command == "store":
            return _store(ns)
        if ns.command == "status":
            return _status(ns)
        parser.print_help()
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
