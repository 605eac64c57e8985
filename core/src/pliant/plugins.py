"""Plugin discovery, the registry of backends, and selection by name.

Entry points in the ``pliant`` group are loaded one at a time, each in its own
``try``: a broken plugin is recorded with its error and the others still work
(pluggy's own loader stops at the first failure). They are loaded only when a
name outside pliant-core is needed, or to list them. pliant-core's built-in
backends are registered through the very same hooks, so they look exactly
like a third-party plugin's.

Selection answers an unknown name with what was asked for, where the request
came from, the names available and the package to install; it refuses a name
that two plugins provide, naming both distributions.

:func:`handlers_from_env` is the one place metric and event handlers are built
from a process's environment (``PLIANT_METRICS``, ``PLIANT_EVENTS``), for a
process that did not configure its own.

torchrun's own entry-point groups are loaded as torchrun loads them, each entry point in
its own ``try`` and shown by ``pliant plugins`` as ``GROUP:NAME``: ``torchrun.handlers``
(``get_handler()`` returns a rendezvous creator ``creator(params)``; each is a rendezvous
backend of its entry point's name, scanned with pliant's plugins) and
``torchrun.logs_specs`` (a ``LogsSpecs`` class, loaded when ``--logs-specs`` names it).
Creators registered in this process with ``rendezvous_handler_registry.register`` are
rendezvous backends too.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

import pliant.hookspecs as hookspecs
from pliant._version import __version__
from pliant.config import handler_conf, parse_plugin_conf
from pliant.errors import PliantError, PluginError, install_hint
from pliant.registrations import (
    EventBackend,
    MetricBackend,
    Registration,
    RendezvousBackend,
    TimerBackend,
)
from pliant.rendezvous.registry import as_pliant_handler, rendezvous_handler_registry
from pliant.settings import parse_kv, parse_list

__all__ = [
    "KINDS",
    "TORCHRUN_HANDLERS",
    "TORCHRUN_LOGS_SPECS",
    "Kind",
    "PluginInfo",
    "PluginManager",
    "Selected",
    "TorchrunCreator",
    "handlers_from_env",
    "install_hint_for",
]

#: torchrun's entry-point groups: rendezvous creators, and LogsSpecs classes.
TORCHRUN_HANDLERS = "torchrun.handlers"
TORCHRUN_LOGS_SPECS = "torchrun.logs_specs"

log = logging.getLogger("pliant.sinks")

#: Where a backend name that is not installed can be found: pliant's own plugins
#: (tests/test_docs_install.py checks that every backend of plugins/* is here).
_PACKAGE_FOR = {
    "c10d": "pliant-c10d",
    "etcd": "pliant-etcd",
    "etcd-v2": "pliant-etcd",
    "cloudwatch": "pliant-cloudwatch",
    "prometheus": "pliant-prometheus",
    "null": "pliant-null",
}


@dataclass(frozen=True)
class Kind:
    """One of the four kinds of backend, and the hook that registers it."""

    key: str
    hook: str
    type: type[Registration[Any]]

    @property
    def label(self) -> str:
        return self.type.kind


KINDS: dict[str, Kind] = {
    "rendezvous": Kind("rendezvous", "pliant_rendezvous_backends", RendezvousBackend),
    "metrics": Kind("metrics", "pliant_metric_handlers", MetricBackend),
    "events": Kind("events", "pliant_event_handlers", EventBackend),
    "timer": Kind("timer", "pliant_timer_backends", TimerBackend),
}


@dataclass
class PluginInfo:
    """What ``pliant plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    status: str = "loaded"  # loaded | failed | disabled
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.distribution} {self.version})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class Selected:
    """A backend chosen by name, with its validated settings, ready to build."""

    registration: Registration[Any]
    plugin: PluginInfo
    settings: dict[str, Any]

    def create(self, *args: Any) -> Any:
        """Call the factory with ``args`` and then the parsed settings: ``factory(settings)``
        for most kinds, ``factory(params, settings)`` for a rendezvous backend. A plugin that
        raises becomes a PluginError naming it."""
        reg = self.registration
        try:
            return reg.factory(*args, self.settings)
        except (PliantError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # even SystemExit: a plugin must not end the run silently
            raise PluginError(f"{reg.kind} {reg.name!r} from plugin {self.plugin.label} failed "
                              f"to start: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class TorchrunCreator(RendezvousBackend):
    """A rendezvous creator written for torchrun, as a backend: it declares no settings, so
    every ``--rdzv-conf`` key reaches it in ``params`` as torchrun passes them."""


def _torch_factory(creator: Any) -> Any:
    """``factory(params, settings)`` calling torch's ``creator(params)``, with the
    ``--rdzv-conf`` keys in ``params`` (torch's RendezvousParameters when torch is there)."""

    def factory(params: Any, settings: Mapping[str, Any]) -> Any:
        try:
            from torch.distributed.elastic.rendezvous import RendezvousParameters
        except ImportError:
            from pliant.rendezvous.api import RendezvousParameters  # type: ignore[assignment]
        torch_params = RendezvousParameters(
            params.backend, params.endpoint, params.run_id, params.min_nodes,
            params.max_nodes, params.local_addr, **{**params.config, **settings})
        return as_pliant_handler(creator(torch_params))

    return factory


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _api_mismatch(declared: object, info: PluginInfo) -> str:
    series = ".".join(__version__.split(".")[:2])
    return (f"written for plugin API {declared!r} (its PLUGIN_API), but pliant-core {__version__} "
            f"speaks plugin API {hookspecs.PLUGIN_API}; install a release of {info.distribution} "
            f"made for pliant-core {series}, or the pliant-core it was made for")


class PluginManager:
    """Loads the plugins once and answers which backends exist and which one to use.

    Entry points are loaded on first need: selecting a name that pliant-core
    provides itself (the ``embedded`` rendezvous) loads none, so a plain
    one-node run pays nothing for the plugins installed. ``disabled`` names
    plugins (entry-point or distribution names) not to load; ``no_plugins``
    loads none (pliant-core's built-ins stay). ``disabled_by`` says where that
    choice came from, for messages.
    """

    def __init__(
        self,
        disabled: Iterable[str] = (),
        no_plugins: bool = False,
        disabled_by: str = "",
        entry_points: Sequence[importlib.metadata.EntryPoint] | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._by_plugin: dict[int, PluginInfo] = {}
        self._cache: dict[str, dict[str, list[tuple[Registration[Any], PluginInfo]]]] = {}
        self.no_plugins = no_plugins
        self.disabled_by = disabled_by

        from pliant import _builtin

        core = PluginInfo("builtin", "pliant-core", __version__, _builtin.__name__)
        self._register(_builtin, core)
        self._entry_points = entry_points
        self._skip = set(disabled)
        self._scanned = False
        self._torchrun: dict[str, dict[str, tuple[Any, PluginInfo]]] = {}

    # -- loading ---------------------------------------------------------------

    def _scan(self) -> None:
        """Load every entry point of the group, once; pliant-core's names need none of them."""
        if self._scanned:
            return
        self._scanned = True
        self._cache.clear()
        entry_points = self._entry_points
        if entry_points is None:
            entry_points = list(importlib.metadata.entry_points(group=hookspecs.PROJECT))
        for ep in entry_points:
            if ep.group not in (TORCHRUN_HANDLERS, TORCHRUN_LOGS_SPECS):
                self._load(ep, self._skip)

    def _load(self, ep: importlib.metadata.EntryPoint, skip: set[str]) -> None:
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            name=ep.name,
            distribution=dist.name if dist is not None else "?",
            version=dist.version if dist is not None else "?",
            module=ep.value,
        )
        key = ep.name
        if key in self._infos:  # two distributions chose one entry-point name: keep both
            key = info.name = f"{ep.name} ({info.distribution})"
        self._infos[key] = info
        if self.no_plugins or ep.name in skip or info.distribution in skip:
            info.status = "disabled"
            info.error = f"disabled by {self.disabled_by or 'configuration'}"
            return
        try:
            module = ep.load()
        except BaseException as exc:  # a plugin's import may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            info.status, info.error = "failed", f"import failed: {_describe(exc)}"
            return
        declared = getattr(module, "PLUGIN_API", hookspecs.PLUGIN_API)
        if declared != hookspecs.PLUGIN_API:
            info.status, info.error = "failed", _api_mismatch(declared, info)
            return
        self._register(module, info)

    def _register(self, module: Any, info: PluginInfo) -> None:
        self._infos.setdefault(info.name, info)
        try:
            self._pm.register(module, name=info.name)
        except Exception as exc:
            info.status, info.error = "failed", f"invalid hooks: {_describe(exc)}"
            return
        callers = self._pm.get_hookcallers(module) or []
        unknown = [c.name for c in callers if not c.has_spec()]
        if unknown:
            self._pm.unregister(module)
            info.status = "failed"
            info.error = ("implements unknown hook(s) " + ", ".join(unknown) + "; known hooks: "
                          + ", ".join(k.hook for k in KINDS.values()))
            return
        info.hooks = sorted(c.name for c in callers)
        self._by_plugin[id(module)] = info
        self._pm.check_pending()

    def torchrun_group(self, group: str, only: str | None = None,
                       ) -> dict[str, tuple[Any, PluginInfo | None]]:
        """What each entry point of torchrun's ``group`` loaded to (None when it failed), by
        name, with its :class:`PluginInfo`; each loaded once, in its own ``try``. With
        ``only``, that entry point alone is loaded (as torchrun loads ``--logs-specs``);
        the others are listed, not loaded."""
        loaded = self._torchrun.setdefault(group, {})
        if self._entry_points is None:
            eps = list(importlib.metadata.entry_points(group=group))
        else:  # the given ones only, as for pliant's group
            eps = [ep for ep in self._entry_points if ep.group == group]
        found: dict[str, tuple[Any, PluginInfo | None]] = {}
        for ep in eps:
            if ep.name not in loaded and (only is None or ep.name == only):
                loaded[ep.name] = self._load_torchrun(group, ep)
            found[ep.name] = loaded.get(ep.name, (None, None))
        return found

    def _load_torchrun(self, group: str, ep: importlib.metadata.EntryPoint,
                       ) -> tuple[Any, PluginInfo]:
        dist = getattr(ep, "dist", None)
        info = PluginInfo(name=f"{group}:{ep.name}",
                          distribution=dist.name if dist is not None else "?",
                          version=dist.version if dist is not None else "?",
                          module=ep.value, hooks=[group])
        self._infos[info.name] = info
        if group == TORCHRUN_LOGS_SPECS and ep.name == "default":
            info.status = "disabled"  # not even imported: it would import torch for nothing
            info.error = ("--logs-specs default is pliant-core's DefaultLogsSpecs, the same "
                          "layout, without importing torch")
            return None, info
        if self.no_plugins or ep.name in self._skip or info.distribution in self._skip:
            info.status = "disabled"
            info.error = f"disabled by {self.disabled_by or 'configuration'}"
            return None, info
        try:
            value = ep.load()
            if group == TORCHRUN_HANDLERS:
                value = value()  # torch: get_handler() returns the creator
                if not callable(value):
                    raise TypeError(f"get_handler() returned {value!r}, not a creator(params)")
        except BaseException as exc:  # an import may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            info.status, info.error = "failed", f"load failed: {_describe(exc)}"
            return None, info
        return value, info

    def logs_specs_class(self, name: str, source: str) -> Any:
        """The class that the ``torchrun.logs_specs`` entry point ``name`` loads (torchrun's
        ``--logs-specs``); an unknown name, or one that fails to load, is a PluginError."""
        found = self.torchrun_group(TORCHRUN_LOGS_SPECS, only=name)
        if name not in found:
            available = ", ".join(["default", *sorted(n for n in found if n != "default")])
            raise PluginError(f"unknown logs specs {name!r} (from {source}); available: "
                              f"{available}. A package provides one with an entry point in "
                              f"the {TORCHRUN_LOGS_SPECS!r} group naming its LogsSpecs class.")
        cls, info = found[name]
        assert info is not None  # loaded just now
        if cls is None:
            raise PluginError(f"logs specs {name!r} (from {source}) comes from {info.label}, "
                              f"entry point {info.module!r}, which {info.status}: {info.error}")
        if not isinstance(cls, type) or not callable(getattr(cls, "reify", None)):
            raise PluginError(f"logs specs {name!r} (from {source}): entry point {info.module!r}"
                              f" of {info.label} is {cls!r}, not a LogsSpecs class")
        return cls

    def _torchrun_backends(self) -> list[tuple[Registration[Any], PluginInfo]]:
        """The rendezvous creators of ``torchrun.handlers`` and of this process's
        ``rendezvous_handler_registry``, as backends."""
        found: list[tuple[Registration[Any], PluginInfo]] = []
        for name, (creator, info) in self.torchrun_group(TORCHRUN_HANDLERS).items():
            if creator is None or info is None:
                continue
            try:
                found.append((TorchrunCreator(name, _torch_factory(creator)), info))
            except (TypeError, ValueError) as exc:
                info.status, info.error = "failed", _describe(exc)
        for name in rendezvous_handler_registry.names():
            info = self._infos.setdefault("rendezvous_handler_registry", PluginInfo(
                "rendezvous_handler_registry", "(this process)", "-",
                "pliant.rendezvous.rendezvous_handler_registry", hooks=["register"]))
            creator = rendezvous_handler_registry.creator(name)
            try:
                found.append((TorchrunCreator(name, _torch_factory(creator)), info))
            except (TypeError, ValueError) as exc:
                info.error = _describe(exc)
        return found

    # -- querying --------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or not; calling the hooks first records their failures."""
        for kind in KINDS.values():
            self.registrations(kind)
        self.torchrun_group(TORCHRUN_LOGS_SPECS)
        return list(self._infos.values())

    def backends(self) -> list[tuple[Kind, str, Registration[Any], PluginInfo]]:
        """Every name a user can select, kind by kind (in :data:`KINDS` order) and by name,
        with each plugin that provides it: a name provided twice appears twice."""
        return [(kind, name, registration, info)
                for kind in KINDS.values()
                for name, providers in sorted(self.registrations(kind).items())
                for registration, info in providers]

    def registrations(self, kind: Kind) -> dict[str, list[tuple[Registration[Any], PluginInfo]]]:
        """Every backend of one kind, by name, with the plugin(s) providing it."""
        self._scan()
        return self._collect(kind)

    def _collect(self, kind: Kind) -> dict[str, list[tuple[Registration[Any], PluginInfo]]]:
        if kind.key in self._cache:
            return self._with_torchrun(kind, self._cache[kind.key])
        found: dict[str, list[tuple[Registration[Any], PluginInfo]]] = {}
        hook = getattr(self._pm.hook, kind.hook)
        for impl in hook.get_hookimpls():  # registration order: pliant-core first
            info = self._by_plugin[id(impl.plugin)]
            try:
                items = list(impl.function() or ())
                for item in items:
                    if not isinstance(item, kind.type):
                        raise TypeError(f"{kind.hook} returned {item!r}, not a "
                                        f"pliant.{kind.type.__name__}")
            except BaseException as exc:  # a plugin's hook may raise anything, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                info.status, info.error = "failed", f"{kind.hook} raised {_describe(exc)}"
                continue
            for item in items:
                core = found.get(item.name, [(None, None)])[0][1]
                if core is not None and core.name == "builtin":
                    # pliant-core's names always mean pliant-core's backend, so that a run
                    # that needs nothing else never has to load the plugins.
                    info.error = (f"its {kind.label} {item.name!r} is ignored: pliant-core "
                                  "reserves that name")
                    continue
                found.setdefault(item.name, []).append((item, info))
        self._cache[kind.key] = found
        return self._with_torchrun(kind, found)

    def _with_torchrun(self, kind: Kind, found: dict[str, list[tuple[Registration[Any],
                       PluginInfo]]]) -> dict[str, list[tuple[Registration[Any], PluginInfo]]]:
        """``found`` and, for rendezvous once the plugins are scanned, the torchrun creators
        (looked at on each call: the in-process registry may grow)."""
        if kind.key != "rendezvous" or not self._scanned:
            return found
        merged = {name: list(providers) for name, providers in found.items()}
        for item, info in self._torchrun_backends():
            core = merged.get(item.name, [(None, None)])[0][1]
            if core is not None and core.name == "builtin":
                info.error = (f"its rendezvous backend {item.name!r} is ignored: "
                              "pliant-core reserves that name")
                continue
            merged.setdefault(item.name, []).append((item, info))
        return merged

    def select(
        self,
        kind_key: str,
        name: str,
        source: str,
        conf: dict[str, str] | None = None,
        conf_source: str = "",
    ) -> Selected:
        """The backend called ``name``, with ``conf`` validated against its settings."""
        kind = KINDS[kind_key]
        providers = self._collect(kind).get(name, []) if not self._scanned else []
        if not providers or providers[0][1].name != "builtin":
            providers = self.registrations(kind).get(name, [])
        if not providers:
            raise PluginError(self._unknown(kind, name, source))
        if len(providers) > 1:
            names = " and ".join(f"{info.distribution} {info.version} (plugin {info.name!r})"
                                 for _, info in providers)
            raise PluginError(
                f"{kind.label} {name!r} (from {source}) is provided twice, by {names}; "
                f"uninstall one, or disable one with --disable-plugins NAME")
        registration, info = providers[0]
        owner = f"{kind.label} {name!r}"
        if isinstance(registration, TorchrunCreator):
            return Selected(registration, info, dict(conf or {}))  # all reach its params
        settings = parse_plugin_conf(conf or {}, registration.settings, owner, conf_source)
        return Selected(registration, info, settings)

    def _suspects(self, name: str) -> list[PluginInfo]:
        """The plugins that did not load but would provide the backend ``name``."""
        package = _PACKAGE_FOR.get(name)
        return [i for i in self._infos.values() if i.status in ("failed", "disabled")
                and (i.name in (name, f"{TORCHRUN_HANDLERS}:{name}")
                     or (package and i.distribution == package))]

    @staticmethod
    def _not_loaded(infos: Iterable[PluginInfo]) -> list[str]:
        return [f"plugin {info.label}, which " + (f"failed to load: {info.error}"
                if info.status == "failed" else f"is {info.error}") for info in infos]

    def missing(self, name: str) -> str:
        """Why no plugin provides the backend ``name``: the plugin that would, and why it
        did not load; else how to install pliant's plugin that does, if one does."""
        why = self._not_loaded(self._suspects(name))
        if why:
            return "; ".join(f"it would come from {w}" for w in why)
        hint = install_hint_for(name)
        return f"not installed; {hint}" if hint else "not installed"

    def _unknown(self, kind: Kind, name: str, source: str) -> str:
        available = sorted(self.registrations(kind))
        lines = [f"unknown {kind.label} {name!r} (from {source}); "
                 f"available: {', '.join(available) or 'none'}."]
        package = _PACKAGE_FOR.get(name)
        broken = [i for i in self._infos.values() if i.status == "failed"]
        suspects = self._suspects(name)
        lines += [f"It would come from {why}" for why in self._not_loaded(suspects)]
        disabled = [i for i in self._infos.values() if i.status == "disabled"
                    and i not in suspects]
        if disabled:
            lines.append("Disabled plugins (" + (self.disabled_by or "configuration") + "): "
                         + ", ".join(i.label for i in disabled) + ".")
        if not suspects:
            if package:
                lines.append(f"To use it, install it: {install_hint(package)}")
            else:
                lines.append(f"To use it, install a plugin that provides {kind.label} {name!r}, "
                             "or choose one of the available names.")
        others = [i for i in broken if i not in suspects]
        if others:
            lines.append("Plugins that failed to load: "
                         + "; ".join(f"{i.label}: {i.error}" for i in others))
        return "\n".join(lines)


def install_hint_for(name: str) -> str | None:
    """How to install the plugin of pliant's that provides the backend ``name``, if one does."""
    package = _PACKAGE_FOR.get(name)
    return install_hint(package) if package else None


def handlers_from_env(kind: str, environ: Mapping[str, str]) -> list[Any]:
    """The ``kind`` ("metrics" or "events") handlers that ``PLIANT_<KIND>`` names, with
    their settings from ``PLIANT_<KIND>_CONF``, built.

    For a process that did not configure its own handlers, on its first record (a worker
    of ``pliant run`` is given the relay to its agent instead, and never gets here). A
    handler that cannot be built is reported once on stderr and none are used: the process
    goes on without them rather than not at all.
    """
    var = f"PLIANT_{kind.upper()}"
    names_text = environ.get(var, "").strip()
    if not names_text:
        return []
    try:
        names = parse_list(names_text)
        conf_var = f"{var}_CONF"
        source = f"env {conf_var}"
        per = handler_conf(kind, names, parse_kv(environ.get(conf_var, "")), source)
        manager = PluginManager()
        return [manager.select(kind, name, f"env {var}", per[name], source).create()
                for name in names]
    except Exception as exc:
        print(f"pliant: {kind} handlers from the environment not built: {exc}", file=sys.stderr)
        log.debug("building %s handlers", kind, exc_info=True)
        return []
