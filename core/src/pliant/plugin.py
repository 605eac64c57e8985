"""Everything a plugin author imports from pliant-core, in one place.

A plugin (``pliant-c10d``, ``pliant-etcd``, ``pliant-cloudwatch``, ``pliant-null``, yours)
imports pliant only from here; what is not exported here is pliant-core's own business
and may change in any release. This surface is versioned as a whole by
:data:`PLUGIN_API`: a plugin module says which version it was written for with a
module-level ``PLUGIN_API = 1``, and pliant refuses to load one that declares another.

What is here, by use:

* **registering**: :data:`hookimpl`, the registrations :class:`RendezvousBackend`,
  :class:`MetricBackend`, :class:`EventBackend`, :class:`TimerBackend` and their factory
  types (:data:`RendezvousFactory`, ...);
* **settings**: :class:`Setting`, the parsers (``parse_int``, ``parse_str``, ...) and
  :data:`Settings`, what a factory receives;
* **errors**: :class:`ConfigError`, :class:`UsageError`, :class:`PluginError` and the
  rendezvous errors (:class:`RendezvousConnectionError`, ...);
* **handler bases**: :class:`MetricHandler` (and :class:`MetricData`),
  :class:`EventHandler` (and :class:`Event`, :class:`EventSource`), :class:`TimerServer`
  (and :class:`ExpiredTimer`), :class:`RendezvousHandler`;
* **a rendezvous on your store**: :class:`RendezvousStore` (what a store implements) and
  :class:`Beat`, :class:`ElasticRendezvousHandler` (the protocol, written once),
  :data:`ELASTIC_SETTINGS` and :class:`Timeouts` (its settings, and its timing built once
  from them), :func:`parse_conf` (settings of a handler built by hand),
  :class:`RendezvousParameters`, :class:`RendezvousInfo`, :class:`RoundEnd`, and the endpoint
  helpers :func:`members`, :func:`split_scheme`, :func:`split_host_port`, :func:`free_port`
  and :func:`bindable_here`;
* **written for torch**: :func:`as_pliant_handler` (and :class:`TorchHandler`), which lets
  pliant's agent run a rendezvous handler of torch's kind, and :class:`LogsSpecs`,
  :class:`DefaultLogsSpecs`, :class:`LogsDest` and :class:`Std`, to write a
  ``torchrun.logs_specs`` class without importing torch;
* **conformance kits** (they import pytest: use them from your tests only):
  :class:`RendezvousStoreTests`, :class:`RendezvousHandlerTests` and
  :class:`MemoryRendezvousStore`, an in-memory store to try a handler on, and
  :class:`PluginManager`, to load your plugin in-process in a test.

Names load on first use, so importing this module costs next to nothing: a plugin that
registers a metric handler does not import the rendezvous protocol.
"""

from __future__ import annotations

from pliant._lazy import face

TYPE_CHECKING = False  # not typing's: every plugin imports this module when listed
if TYPE_CHECKING:
    from pliant.agent.api import Std
    from pliant.agent.logs import DefaultLogsSpecs, LogsDest, LogsSpecs
    from pliant.errors import ConfigError, PliantError, PluginError, UsageError
    from pliant.events.types import Event, EventHandler, EventMetadataValue, EventSource
    from pliant.hookspecs import PLUGIN_API, PROJECT, hookimpl
    from pliant.metrics.types import MetricData, MetricHandler
    from pliant.plugins import PluginManager
    from pliant.registrations import (
        EventBackend,
        EventFactory,
        MetricBackend,
        MetricFactory,
        Registration,
        RendezvousBackend,
        RendezvousFactory,
        Settings,
        TimerBackend,
        TimerFactory,
    )
    from pliant.rendezvous.api import (
        RendezvousClosedError,
        RendezvousConnectionError,
        RendezvousError,
        RendezvousGracefulExitError,
        RendezvousHandler,
        RendezvousInfo,
        RendezvousParameters,
        RendezvousStateError,
        RendezvousTimeoutError,
        RoundEnd,
    )
    from pliant.rendezvous.conf import ELASTIC_SETTINGS, Timeouts, parse_conf
    from pliant.rendezvous.elastic import ElasticRendezvousHandler
    from pliant.rendezvous.net import (
        bindable_here,
        free_port,
        members,
        split_host_port,
        split_scheme,
    )
    from pliant.rendezvous.registry import TorchHandler, as_pliant_handler
    from pliant.rendezvous.store import Beat, RendezvousStore
    from pliant.settings import (
        Setting,
        parse_bool,
        parse_choice,
        parse_float,
        parse_int,
        parse_kv,
        parse_list,
        parse_port,
        parse_str,
    )
    from pliant.testing.memory import MemoryRendezvousStore
    from pliant.testing.rendezvous import (
        MakeHandler,
        RendezvousHandlerTests,
        RendezvousStoreTests,
    )
    from pliant.timer.types import ExpiredTimer, TimerServer

_SOURCES: dict[str, tuple[str, ...]] = {
    "pliant.agent.api": ("Std",),
    "pliant.agent.logs": ("DefaultLogsSpecs", "LogsDest", "LogsSpecs"),
    "pliant.errors": ("ConfigError", "PliantError", "PluginError", "UsageError"),
    "pliant.events.types": ("Event", "EventHandler", "EventMetadataValue", "EventSource"),
    "pliant.hookspecs": ("PLUGIN_API", "PROJECT", "hookimpl"),
    "pliant.metrics.types": ("MetricData", "MetricHandler"),
    "pliant.plugins": ("PluginManager",),
    "pliant.registrations": ("EventBackend", "EventFactory", "MetricBackend", "MetricFactory",
                             "Registration", "RendezvousBackend", "RendezvousFactory",
                             "Settings", "TimerBackend", "TimerFactory"),
    "pliant.rendezvous.api": ("RendezvousClosedError", "RendezvousConnectionError",
                              "RendezvousError", "RendezvousGracefulExitError",
                              "RendezvousHandler", "RendezvousInfo", "RendezvousParameters",
                              "RendezvousStateError", "RendezvousTimeoutError", "RoundEnd"),
    "pliant.rendezvous.conf": ("ELASTIC_SETTINGS", "Timeouts", "parse_conf"),
    "pliant.rendezvous.elastic": ("ElasticRendezvousHandler",),
    "pliant.rendezvous.net": ("bindable_here", "free_port", "members", "split_host_port",
                              "split_scheme"),
    "pliant.rendezvous.registry": ("TorchHandler", "as_pliant_handler"),
    "pliant.rendezvous.store": ("Beat", "RendezvousStore"),
    "pliant.settings": ("Setting", "parse_bool", "parse_choice", "parse_float", "parse_int",
                        "parse_kv", "parse_list", "parse_port", "parse_str"),
    "pliant.testing.memory": ("MemoryRendezvousStore",),
    "pliant.testing.rendezvous": ("MakeHandler", "RendezvousHandlerTests",
                                  "RendezvousStoreTests"),
    "pliant.timer.types": ("ExpiredTimer", "TimerServer"),
}
_LAZY = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "ELASTIC_SETTINGS",
    "PLUGIN_API",
    "PROJECT",
    "Beat",
    "ConfigError",
    "DefaultLogsSpecs",
    "ElasticRendezvousHandler",
    "Event",
    "EventBackend",
    "EventFactory",
    "EventHandler",
    "EventMetadataValue",
    "EventSource",
    "ExpiredTimer",
    "LogsDest",
    "LogsSpecs",
    "MakeHandler",
    "MemoryRendezvousStore",
    "MetricBackend",
    "MetricData",
    "MetricFactory",
    "MetricHandler",
    "PliantError",
    "PluginError",
    "PluginManager",
    "Registration",
    "RendezvousBackend",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousFactory",
    "RendezvousGracefulExitError",
    "RendezvousHandler",
    "RendezvousHandlerTests",
    "RendezvousInfo",
    "RendezvousParameters",
    "RendezvousStateError",
    "RendezvousStore",
    "RendezvousStoreTests",
    "RendezvousTimeoutError",
    "RoundEnd",
    "Setting",
    "Settings",
    "Std",
    "Timeouts",
    "TimerBackend",
    "TimerFactory",
    "TimerServer",
    "TorchHandler",
    "UsageError",
    "as_pliant_handler",
    "bindable_here",
    "free_port",
    "hookimpl",
    "members",
    "parse_bool",
    "parse_choice",
    "parse_conf",
    "parse_float",
    "parse_int",
    "parse_kv",
    "parse_list",
    "parse_port",
    "parse_str",
    "split_host_port",
    "split_scheme",
]


__getattr__ = face("pliant.plugin", _LAZY, hint="; a plugin imports only what this module "
                   "exports (pliant.plugin.__all__)")


def __dir__() -> list[str]:
    return __all__
