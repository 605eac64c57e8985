"""The hooks a pliant plugin implements.

A plugin is a module named by an entry point in the ``pliant`` group. It
implements any of the four registration hooks below with ``@hookimpl``;
each hook returns the backends the plugin provides. pliant calls every
implementation (none of these stops at the first result); selecting a name
that two plugins provide is an error naming both.

A plugin imports these names, and everything else it uses of pliant-core, from
:mod:`pliant.plugin`. Example, from ``pliant-null``::

    from pliant.plugin import MetricBackend, hookimpl

    PLUGIN_API = 1

    @hookimpl
    def pliant_metric_handlers():
        return [MetricBackend("null", _null_metrics, description="Drops every metric.")]
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from pliant.registrations import EventBackend, MetricBackend, RendezvousBackend, TimerBackend

#: The one name shared by the pluggy project, the entry-point group and the hook prefix.
PROJECT = "pliant"
#: The version of the contract between pliant-core and its plugins: these hooks, the
#: registrations, the settings and the interfaces :mod:`pliant.plugin` exports. A plugin
#: module says which one it was written for with a module-level ``PLUGIN_API = 1``; pliant
#: refuses to load a plugin that declares another (``pliant plugins`` shows why). It
#: changes only with a release of pliant-core that breaks plugins, and never within a
#: minor series, which is why plugins pin ``pliant-core>=X.Y,<X.Y+1``.
PLUGIN_API = 1

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PLUGIN_API", "PROJECT", "hookimpl", "hookspec"]


@hookspec
def pliant_rendezvous_backends() -> Sequence[RendezvousBackend]:  # type: ignore[empty-body]
    """Return the rendezvous backends this plugin provides.

    Called once, when pliant first needs a rendezvous backend. A backend is
    selected by ``--rdzv-backend NAME`` (or ``rdzv_backend`` in a config file,
    or ``PLIANT_RDZV_BACKEND``); its factory then receives the job's
    :class:`~pliant.rendezvous.RendezvousParameters` and its ``--rdzv-conf``
    settings, validated and parsed (see
    :class:`~pliant.registrations.RendezvousBackend`).
    """


@hookspec
def pliant_metric_handlers() -> Sequence[MetricBackend]:  # type: ignore[empty-body]
    """Return the metric handlers this plugin provides.

    Selected with ``--metrics NAME[,NAME]``; each factory receives its
    validated settings and returns a :class:`pliant.metrics.MetricHandler`.
    """


@hookspec
def pliant_event_handlers() -> Sequence[EventBackend]:  # type: ignore[empty-body]
    """Return the event handlers this plugin provides.

    Selected with ``--events NAME[,NAME]``; each factory receives its
    validated settings and returns a :class:`pliant.events.EventHandler`.
    """


@hookspec
def pliant_timer_backends() -> Sequence[TimerBackend]:  # type: ignore[empty-body]
    """Return the timer (hang detection) backends this plugin provides.

    Selected with ``--timer NAME``; the factory receives its validated
    settings and returns a :class:`pliant.timer.TimerServer`.
    """
