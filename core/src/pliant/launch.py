"""What ``pliant run`` launches: from a :class:`~pliant.config.Config` to a running agent.

:func:`prepare` decides and builds everything a launch needs: how many workers
(``nproc_per_node``, GPUs counted without importing torch), what each runs, the
rendezvous backend and its parameters, the metric and event handlers and the timers
(:func:`choices`, which ``pliant config`` shows too, unbuilt), the
:class:`~pliant.agent.WorkerSpec` and the :class:`~pliant.agent.LocalElasticAgent`.
:meth:`Launch.run` runs it and turns the result into the process's exit code.

What the run prints of its own is two lines on stderr, through the ``pliant`` logger (at
INFO, so that ``--quiet`` hides them): the **start line**, as soon as the command line is
checked and before anything slow (plugins, the rendezvous, the workers' imports), naming
what starts; and the **summary**, last, with the outcome, the attempts and the wall time.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pliant import defaults, events, metrics
from pliant._bootstrap import COMMAND as BOOTSTRAP
from pliant._delivery.context import context, set_context
from pliant._version import __version__
from pliant.agent import LocalElasticAgent, SignalException, WorkerSpec
from pliant.agent.logs import make_run_dir
from pliant.agent.report import exit_code, format_report, signal_exit_code
from pliant.agent.restarts import RestartBudget
from pliant.config import Config, handler_conf, parse_plugin_conf
from pliant.errors import ConfigError, PluginError, UsageError
from pliant.plugins import PluginManager, Selected, TorchrunCreator
from pliant.rendezvous import RendezvousError, RendezvousParameters

__all__ = ["Choice", "Launch", "choices", "prepare", "rendezvous_backend"]

log = logging.getLogger("pliant")

#: torchrun's ``--event-log-handler`` names that record nothing (torch's NullHandler).
_TORCH_NULL_EVENT_HANDLERS = ("null", "dynamic_rendezvous")


@dataclass(frozen=True)
class Choice:
    """One backend a run uses, selected and validated, not yet built."""

    kind: str  #: "rendezvous", "metrics", "events" or "timer"
    table: str  #: the setting its own settings come from: "rdzv_conf", "metrics_conf", ...
    prefix: str  #: what its keys start with there ("console." in metrics_conf), or ""
    selected: Selected


@dataclass
class Launch:
    """A prepared run: the spec, its agent, and what was built for them."""

    run_id: str
    script: str  #: as the user gave it, for the failure report
    spec: WorkerSpec
    agent: LocalElasticAgent
    torchrun_exit_code: bool = False  #: --exit-code torchrun: every failure exits 1
    started: float = 0.0  #: time.monotonic() at the start line, for the summary's wall time

    def run(self) -> int:
        """Run the agent; the exit code for the process (a failure's report on stderr), after
        the summary line."""
        assert self.spec.rdzv_handler is not None
        try:
            result = self.agent.run()
        except SignalException as exc:
            code = 1 if self.torchrun_exit_code else signal_exit_code(exc.sigval)
            outcome, why = f"interrupted by {exc.sigval.name}", ""
        except RendezvousError as exc:
            # The workers are stopped; a rendezvous failure is the job's failure, not a usage
            # error.
            print(f"pliant: rendezvous error: {exc}", file=sys.stderr)
            code, outcome, why = 1, "failed", ": rendezvous error"
        else:
            code, outcome, why = 0, "succeeded", ""
            if result.is_failed():
                print(format_report(result, os.path.basename(self.script), self.run_id),
                      file=sys.stderr)
                root = result.root_cause()
                code = 1 if self.torchrun_exit_code else exit_code(root)
                outcome, why = "failed", "" if root is None else (
                    f": rank {root.global_rank} on {root.hostname} "
                    + (f"killed by {root.signal}" if root.signal else
                       f"exited with code {root.exitcode}"))
        finally:
            # Before the summary: on several nodes it may wait for the others to finish.
            self.spec.rdzv_handler.shutdown()
        # The run's last line: how it ended, in how long, on which attempt (as the restart
        # lines count them), and why, for a failure.
        attempt = RestartBudget(self.spec.max_restarts, self.agent.restart_count).progress()
        log.info("%s in %s, on %s%s%s", outcome, _duration(time.monotonic() - self.started),
                 attempt, why, f"; exit code {code}" if code else "")
        return code


def prepare(cfg: Config, script: str, script_args: Sequence[str], pm: PluginManager) -> Launch:
    """Everything ``pliant run SCRIPT ARGS`` needs, built; no worker started yet. A mistake
    in the configuration raises (ConfigError, UsageError, PluginError) before anything is.
    The start line is logged once every setting is checked and the handlers are built (the
    plugins they select are loaded for that, which takes milliseconds unless a plugin imports
    torch at its top), and before what may be slow: the rendezvous handler (which may start
    or reach a store), the rendezvous itself (which may wait for other nodes) and the
    workers' own imports.

    The handlers built are also this process's (:func:`pliant.metrics.configure`): the
    agent's own records, and the rendezvous handler's, go to them as the workers' do.
    """
    nproc = _nproc(cfg)
    _check_numa_binding(cfg)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cfg["virtual_local_rank"] and visible is not None and len(visible.split(",")) < nproc:
        raise ConfigError(f"virtual_local_rank (from {cfg.source('virtual_local_rank')}) gives "
                          f"each of the {nproc} workers one device of CUDA_VISIBLE_DEVICES="
                          f"{visible!r}, which lists fewer; list one per worker, or run fewer")
    entrypoint, args = _entrypoint(cfg, script, script_args)
    chosen = choices(cfg, pm)
    logs_specs = _logs_specs(cfg, pm)
    built: dict[str, list[Any]] = {"metrics": [], "events": [], "timer": []}
    for choice in chosen[1:]:
        built[choice.kind].append(choice.selected.create())
    metrics.configure(built["metrics"])
    events.configure(built["events"])
    backend = chosen[0].selected.registration.name
    if backend != "static" and cfg.is_set("node_rank") and cfg["node_rank"] != 0:
        logging.getLogger("pliant").warning(
            "--node-rank %d (from %s) is only used by the static rendezvous; the %s backend "
            "assigns node ranks itself", cfg["node_rank"], cfg.source("node_rank"), backend)
    run_id = cfg["rdzv_id"]
    if run_id == "none" and backend == "embedded":
        run_id = os.urandom(6).hex()
    run_dir = _run_dir(cfg, run_id)
    started = time.monotonic()
    log.info("%s", _start_line(cfg, nproc, backend, run_id, run_dir))
    try:
        return _build(cfg, chosen[0], built, logs_specs, nproc, (entrypoint, args), run_id,
                      run_dir, script, started)
    except BaseException:
        if run_dir is not None:  # nothing ran: leave no empty folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _build(cfg: Config, rendezvous: Choice, built: dict[str, list[Any]], logs_specs: Any,
           nproc: int, command: tuple[str, list[str]], run_id: str, run_dir: str | None,
           script: str, started: float) -> Launch:
    """The part of :func:`prepare` after the start line: the rendezvous handler (a backend
    may start or reach its store here), the spec and the agent."""
    entrypoint, args = command
    backend = rendezvous.selected.registration.name
    set_context(run_id=run_id, role=cfg["role"], rank=None)  # the agent's own records' tags
    min_nodes, max_nodes = cfg["nnodes"]
    extra: dict[str, Any] = {k: cfg[k] for k in ("master_addr", "master_port", "node_rank")
                             if cfg.is_set(k)}
    # Where the job's shape came from, for a backend's messages (static names them).
    extra["sources"] = {k: cfg.source(k) for k in ("nnodes", "node_rank", "master_addr",
                                                   "master_port", "rdzv_endpoint")}
    params = RendezvousParameters(backend, cfg["rdzv_endpoint"], run_id, min_nodes, max_nodes,
                                  cfg["local_addr"], **extra)
    spec = WorkerSpec(
        role=cfg["role"],
        local_world_size=nproc,
        rdzv_handler=rendezvous.selected.create(params),
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
        duplicate_stdout_filters=cfg["duplicate_stdout_filters"],
        duplicate_stderr_filters=cfg["duplicate_stderr_filters"],
        virtual_local_rank=cfg["virtual_local_rank"],
    )
    # The workers' records reach the handlers through the agent (its relay); they only need
    # the node's name for their tags.
    spec.env["PLIANT_NODE"] = context()["node"]
    agent = LocalElasticAgent(spec, logs_specs, start_method=cfg["start_method"],
                              signals_to_handle=cfg["signals_to_handle"],
                              timers=built["timer"],  # the agent starts and stops them
                              metric_handlers=built["metrics"], event_handlers=built["events"],
                              preload=cfg["preload"],
                              # On several nodes the standbys' imports overlap the rendezvous.
                              standbys_early=max_nodes > 1,
                              standby_delay=cfg["standby_delay"],
                              run_dir=run_dir,
                              shutdown_timeout_source=cfg.source("shutdown_timeout"))
    return Launch(run_id, script, spec, agent, cfg["exit_code"] == "torchrun", started)


def _run_dir(cfg: Config, run_id: str) -> str | None:
    """The folder of this run's worker logs and error files, made now so that the start line
    can name it; None where nothing is kept there (the agent makes a temporary one) or a
    ``--logs-specs`` class places the logs."""
    if cfg["logs_specs"] is not None or not (cfg["log_dir"] is not None or cfg["redirects"]
                                             or cfg["tee"]):
        return None
    try:
        return make_run_dir(run_id, cfg["log_dir"])
    except OSError as exc:
        raise ConfigError(f"cannot create the worker log folder in log_dir "
                          f"{cfg['log_dir'] or tempfile.gettempdir()!r} (from "
                          f"{cfg.source('log_dir')}): {exc.strerror or exc}; choose a folder you "
                          "can write to") from None


def _start_line(cfg: Config, nproc: int, backend: str, run_id: str, run_dir: str | None) -> str:
    """The run's first line: what starts, where they meet, where their logs go."""
    min_nodes, max_nodes = cfg["nnodes"]
    nodes = "" if max_nodes == 1 else " on this node, one of " + (
        f"{max_nodes}" if min_nodes == max_nodes else f"{min_nodes}-{max_nodes}") + " nodes"
    where = [f"rendezvous {backend}"]
    if cfg["rdzv_endpoint"]:
        where[0] += f" at {cfg['rdzv_endpoint']}"
    elif cfg["master_port"] is not None and max_nodes > 1:
        where[0] += f" at {cfg['master_addr']}:{cfg['master_port']}"
    where.append(f"run {run_id!r}")
    if cfg["max_restarts"]:
        where.append(f"up to {cfg['max_restarts']} restart{'s' * (cfg['max_restarts'] > 1)}")
    line = (f"pliant {__version__}: starting {nproc} worker{'s' * (nproc > 1)}{nodes} "
            f"({', '.join(where)})")
    if run_dir is not None:
        line += f"; worker logs in {run_dir}"
    elif cfg["logs_specs"] is not None:
        line += f"; worker logs placed by logs specs {cfg['logs_specs']!r}"
        line += f" in {cfg['log_dir']}" if cfg["log_dir"] else ""
    return line


def _duration(seconds: float) -> str:
    """A wall time as a person reads it: 0.42 s, 12.3 s, 5 min 03 s, 2 h 05 min."""
    if seconds < 60:
        return f"{seconds:.{2 if seconds < 10 else 1}f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _logs_specs(cfg: Config, pm: PluginManager) -> Any:
    """The LogsSpecs ``--logs-specs`` names, built as torchrun builds it; None without one
    (the agent then places the logs itself, in the same layout as torch's default)."""
    name = cfg["logs_specs"]
    if name is None:
        return None
    from pliant.agent import DefaultLogsSpecs, LogsSpecs, Std

    source = cfg.source("logs_specs")
    cls = DefaultLogsSpecs if name == "default" else pm.logs_specs_class(name, source)
    std: Any = Std
    if not issubclass(cls, LogsSpecs):  # written for torch: it gets torch's Std
        std = getattr(sys.modules.get("torch.distributed.elastic.multiprocessing.api"), "Std",
                      Std)

    def as_std(value: Any) -> Any:
        return ({k: std(v) for k, v in value.items()} if isinstance(value, dict)
                else std(value))

    try:
        return cls(log_dir=cfg["log_dir"], redirects=as_std(cfg["redirects"]),
                   tee=as_std(cfg["tee"]),
                   local_ranks_filter=set(cfg["local_ranks_filter"]) or None)
    except Exception as exc:
        raise PluginError(f"logs specs {name!r} (from {source}): {cls.__qualname__}(log_dir, "
                          f"redirects, tee, local_ranks_filter) failed: "
                          f"{type(exc).__name__}: {exc}") from exc


def choices(cfg: Config, pm: PluginManager) -> list[Choice]:
    """The rendezvous backend (first), the metric and event handlers and the timer that
    ``cfg`` selects, their settings validated; none built."""
    backend, source = rendezvous_backend(cfg)
    chosen = [Choice("rendezvous", "rdzv_conf", "", _select_rendezvous(cfg, pm, backend, source))]
    for kind in ("metrics", "events"):
        conf_source = cfg.source(f"{kind}_conf")
        names = [(name, cfg.source(kind)) for name in cfg[kind]]
        torch_handler = cfg["event_log_handler"]
        if kind == "events" and torch_handler not in (*_TORCH_NULL_EVENT_HANDLERS, *cfg[kind]):
            names.append((torch_handler, cfg.source("event_log_handler")))
        per = handler_conf(kind, [name for name, _ in names], cfg[f"{kind}_conf"], conf_source)
        chosen += [Choice(kind, f"{kind}_conf", f"{name}.", pm.select(
                       kind, name, name_source, per[name], conf_source))
                   for name, name_source in names]
    if cfg["timer"] is not None:
        chosen.append(Choice("timer", "timer_conf", "", pm.select(
            "timer", cfg["timer"], cfg.source("timer"), cfg["timer_conf"],
            cfg.source("timer_conf"))))
    elif cfg["timer_conf"]:
        raise ConfigError(f"timer_conf (from {cfg.source('timer_conf')}) is set but no timer is "
                          "selected; choose one with --timer NAME")
    return chosen


def _select_rendezvous(cfg: Config, pm: PluginManager, backend: str, source: str) -> Selected:
    """The rendezvous backend, its settings validated. A ``--rdzv-conf`` key the backend does
    not know is a warning, not a refusal, as torchrun ignores it (it may be meant for another
    backend or tool); a bad value for a key it knows is an error."""
    conf, conf_source = cfg["rdzv_conf"], cfg.source("rdzv_conf")
    selected = pm.select("rendezvous", backend, source, {}, conf_source)
    registration = selected.registration
    if isinstance(registration, TorchrunCreator):  # declares no settings: it gets every key
        return pm.select("rendezvous", backend, source, conf, conf_source)
    known = [s.name for s in registration.settings]
    kept = {}
    for key, value in conf.items():
        if key.replace("-", "_") in known:
            kept[key] = value
            continue
        close = difflib.get_close_matches(key.replace("-", "_"), known, n=1, cutoff=0.6)
        hint = (f"did you mean {close[0]!r}?" if close else
                f"it accepts: {', '.join(sorted(known)) or 'none'}")
        log.warning("rdzv_conf key %r (from %s) is not a setting of rendezvous backend %r; "
                    "ignored (%s)", key, conf_source, registration.name, hint)
    settings = parse_plugin_conf(kept, registration.settings,
                                 f"rendezvous backend {registration.name!r}", conf_source)
    return Selected(registration, selected.plugin, settings)


def rendezvous_backend(cfg: Config) -> tuple[str, str]:
    """The rendezvous backend's name and where that choice came from."""
    if cfg["standalone"]:
        return defaults.RDZV_ONE_NODE, cfg.source("standalone")
    if cfg.is_set("rdzv_backend"):
        return cfg["rdzv_backend"], cfg.source("rdzv_backend")
    if cfg["nnodes"] == (1, 1):
        if not cfg.is_set("rdzv_endpoint"):
            return defaults.RDZV_ONE_NODE, "default for one node"
    elif not cfg.is_set("rdzv_endpoint") or cfg.is_set("node_rank"):
        # torchrun's static command line (--node-rank, --master-addr, --master-port): its
        # default backend, and the only one that honours a node rank.
        return defaults.RDZV_STATIC, ("default for several nodes without --rdzv-endpoint"
                          if not cfg.is_set("rdzv_endpoint") else
                          f"default with --node-rank (from {cfg.source('node_rank')})")
    return cfg["rdzv_backend"], cfg.source("rdzv_backend")


def _nproc(cfg: Config) -> int:
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


def _check_numa_binding(cfg: Config) -> None:
    mode = cfg["numa_binding"]
    if mode is None:
        return
    where = f"numa_binding {mode!r} (from {cfg.source('numa_binding')})"
    if _gpu_count() == 0:
        raise ConfigError(f"{where} binds each worker to the CPUs near its GPU, and no NVIDIA "
                          "GPU is visible here; drop it")
    raise ConfigError(f"{where}: pliant does not bind workers to NUMA nodes yet; drop "
                      "--numa-binding, or start each worker under numactl with --no-python")


def _gpu_count() -> int:
    """Visible NVIDIA GPUs, read without importing torch: CUDA_VISIBLE_DEVICES, else the driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and not d.startswith("-")])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def _entrypoint(cfg: Config, script: str, args: Sequence[str]) -> tuple[str, list[str]]:
    """The program and arguments each worker runs; refuses a missing script. ``--run-path``
    wins over ``--no-python`` and ``-m``, as in torchrun: the script runs as a Python file."""
    if cfg["no_python"] and not cfg["run_path"]:
        if cfg["module"]:
            raise ConfigError(f"module (from {cfg.source('module')}) and no_python (from "
                              f"{cfg.source('no_python')}) cannot be combined: choose one")
        if shutil.which(script) is None:
            raise UsageError(f"program {script!r} (from the command line, with --no-python) was "
                             "not found on PATH nor as an executable file; check the name")
        return script, list(args)
    if cfg["module"] and not cfg["run_path"]:
        return sys.executable, [*BOOTSTRAP, "module", script, *args]
    if not os.path.isfile(script):
        raise UsageError(f"training script {script!r} (from the command line) does not exist in "
                         f"{os.getcwd()}; check the path, or pass -m for a module")
    return sys.executable, [*BOOTSTRAP, "script", script, *args]
