"""``--rdzv-conf`` for the elastic protocol: its settings, and the timing built from them.

:data:`ELASTIC_SETTINGS` is the one place each default is written. The plugin
manager parses a backend's settings once and hands the dict to its factory;
:meth:`Timeouts.from_settings` reads the protocol's part of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pliant.config import parse_plugin_conf
from pliant.rendezvous.api import RendezvousParameters
from pliant.settings import Setting, parse_float, parse_int, parse_str

__all__ = ["ELASTIC_SETTINGS", "Timeouts", "parse_conf"]

ELASTIC_SETTINGS: tuple[Setting, ...] = (
    Setting("join_timeout", parse_float(minimum=0.0), 600.0,
            "Seconds to wait for min_nodes to join a round before failing. Long on purpose: a "
            "scheduler may take minutes to start every node."),
    Setting("last_call_timeout", parse_float(minimum=0.0), 2.0,
            "Seconds a round stays open for more nodes once min_nodes joined. Only the first "
            "round and late arrivals wait for it: a re-rendezvous completes as soon as the "
            "nodes expected back have joined. torch waits 30 s every time."),
    Setting("close_timeout", parse_float(minimum=0.0), 10.0,
            "Seconds to wait for the node closing a round to publish it."),
    Setting("keep_alive_interval", parse_float(minimum=0.01), 1.0,
            "Seconds between heartbeats. A node is declared dead after keep_alive_interval x "
            "keep_alive_max_attempt without one (torch: 5 s x 3 = 15 s)."),
    Setting("keep_alive_max_attempt", parse_int(minimum=1), 3,
            "Heartbeats a node may miss before it is declared dead."),
    Setting("read_timeout", parse_float(minimum=0.1), 30.0,
            "Seconds to wait for the store at start (agents may start before the node that "
            "hosts it) and for any one store operation before it counts as unreachable "
            "(torch: 60 s). A store that went away with its host is noticed at once."),
    Setting("token_file", parse_str, None,
            "A file holding the job's secret (else $PLIANT_RDZV_TOKEN_FILE). With one, every "
            "value the rendezvous writes is signed (HMAC-SHA256), and a value that does not "
            "verify is refused: someone who can reach the store cannot steer the job. Give "
            "every node the same secret.", metavar="PATH", secret=True),
)


@dataclass(frozen=True)
class Timeouts:
    """The protocol's timing, from ``--rdzv-conf`` (torch's keys and meanings)."""

    join_timeout: float
    last_call_timeout: float
    close_timeout: float
    keep_alive_interval: float
    keep_alive_max_attempt: int
    read_timeout: float

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Timeouts:
        """From parsed settings (what a backend's factory receives); a key that is missing
        takes its :data:`ELASTIC_SETTINGS` default."""
        fields = cls.__dataclass_fields__
        return cls(**{s.name: settings.get(s.name, s.default) for s in ELASTIC_SETTINGS
                      if s.name in fields})

    @classmethod
    def from_params(cls, params: RendezvousParameters) -> Timeouts:
        """From ``params.config``, parsed here: for a handler built by hand, as before
        factories received parsed settings. A factory uses :meth:`from_settings`."""
        return cls.from_settings(parse_conf(params, ELASTIC_SETTINGS, "elastic rendezvous"))

    @classmethod
    def defaults(cls) -> Timeouts:
        return cls.from_settings({})

    @property
    def dead_after(self) -> float:
        """Silence after which a node counts as dead. At least two intervals, so that one
        heartbeat arriving late is never a death."""
        return self.keep_alive_interval * max(self.keep_alive_max_attempt, 2)


def parse_conf(params: RendezvousParameters, settings: Sequence[Setting], owner: str,
               ) -> dict[str, Any]:
    """``params.config`` parsed against ``settings``, for a handler built by hand rather than
    by its factory (which receives them parsed). Keys ``settings`` does not declare are left
    to whoever reads them (``master_addr``), as ``params.get`` always did."""
    names = {s.name for s in settings}
    conf = {k: str(v) for k, v in params.config.items()
            if v is not None and k.replace("-", "_") in names}
    return parse_plugin_conf(conf, settings, owner, "RendezvousParameters")
