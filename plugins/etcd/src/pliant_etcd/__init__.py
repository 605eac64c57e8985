"""pliant-etcd: elastic multi-node rendezvous on etcd's v3 API.

The plugin implements only :class:`pliant.rendezvous.store.RendezvousStore` on
etcd (:mod:`pliant_etcd.store`); the protocol (rounds, ranks, restarts,
liveness, scale-up) is the core's
:class:`~pliant.rendezvous.elastic.ElasticRendezvousHandler`. etcd runs on its
own (a cluster the team already has, a Kubernetes service): no agent hosts
anything, and any single training node may be lost.

Listing plugins imports nothing heavy: the etcd client (gRPC, protobuf) is
imported when the backend is chosen, and torch never is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pliant.plugin import (
    ELASTIC_SETTINGS,
    ConfigError,
    ElasticRendezvousHandler,
    RendezvousBackend,
    RendezvousHandler,
    RendezvousParameters,
    RendezvousStore,
    Setting,
    Timeouts,
    hookimpl,
    members,
    parse_choice,
    parse_conf,
    parse_float,
    parse_str,
    split_host_port,
    split_scheme,
)

if TYPE_CHECKING:
    from pliant_etcd.store import EtcdConfig

__all__ = ["DEFAULT_PORT", "ETCD_SETTINGS", "PLUGIN_API", "EtcdRendezvousHandler",
           "client_store", "config_from", "create_handler", "parse_endpoints"]

#: The version of pliant's plugin contract (:mod:`pliant.plugin`) this module is written for.
PLUGIN_API = 1

#: etcd's client port.
DEFAULT_PORT = 2379

_COMPAT = "Accepted so that torchrun command lines run unchanged; pliant has no use for it."
_WHERE = "--rdzv-conf, the config file's [rdzv_conf] table or PLIANT_RDZV_CONF"


def _parse_prefix(value: object) -> str:
    text = parse_str(value).strip()
    if not text.startswith("/"):
        raise ValueError("expected a key prefix starting with '/', such as /pliant/")
    return text if text.endswith("/") else text + "/"


ETCD_SETTINGS: tuple[Setting, ...] = (
    *ELASTIC_SETTINGS,
    Setting("key_prefix", _parse_prefix, "/pliant/",
            "Every key of a run lives under KEY_PREFIX<run_id>/; a finished run leaves nothing "
            "there.", metavar="PREFIX"),
    Setting("protocol", parse_choice("http", "https"), None,
            "http or https. Unset: https when cacert is given or an endpoint says https://."),
    Setting("cacert", parse_str, None,
            "PEM file of the CA that signed the etcd members' certificates (turns TLS on).",
            metavar="FILE"),
    Setting("cert", parse_str, None, "PEM client certificate, for members that check them.",
            metavar="FILE"),
    Setting("key", parse_str, None, "PEM private key of the client certificate.",
            metavar="FILE"),
    Setting("user", parse_str, None, "etcd user, when the cluster has authentication on.",
            metavar="NAME"),
    Setting("password", parse_str, None,
            "The user's password. Never logged or shown; prefer the config file or "
            "PLIANT_RDZV_CONF to the command line, which other users of the machine can read.",
            secret=True),
    Setting("timeout", parse_float(minimum=0.0), None, _COMPAT),
)


def parse_endpoints(endpoint: str) -> tuple[tuple[tuple[str, int], ...], bool]:
    """``[https://]host[:port],...`` (IPv6 in brackets) to members and whether one said
    https."""
    found, https = [], False
    for item in members(endpoint):
        scheme, text = split_scheme(item)
        if scheme and scheme not in ("http", "https"):
            raise ConfigError(f"--rdzv-endpoint {endpoint!r}: {scheme!r} is not http or https")
        https = https or scheme == "https"
        found.append(split_host_port(text, DEFAULT_PORT, endpoint))
    if not found:
        raise ConfigError("the etcd rendezvous needs --rdzv-endpoint HOST[:PORT][,HOST:PORT...] "
                          "(the etcd members' client addresses)")
    return tuple(found), https


def _file(settings: Mapping[str, Any], name: str) -> str | None:
    path = settings.get(name)
    if path is None:
        return None
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise ConfigError(f"{name}={path} (from {_WHERE}): no such file; give the PEM file's "
                          "path")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{name}={path} (from {_WHERE}): not readable by this user")
    return path


def _settings(params: RendezvousParameters) -> dict[str, Any]:
    """ETCD_SETTINGS parsed from ``params.config``, for a handler built by hand."""
    return parse_conf(params, ETCD_SETTINGS, "rendezvous backend 'etcd'")


def config_from(params: RendezvousParameters, settings: Mapping[str, Any] | None = None,
                timeouts: Timeouts | None = None) -> EtcdConfig:
    """The store's configuration from the endpoint and the ``--rdzv-conf`` settings (parsed;
    from ``params.config`` when not given)."""
    from pliant_etcd.store import EtcdConfig

    if settings is None:
        settings = _settings(params)
    timeouts = timeouts or Timeouts.from_settings(settings)
    members, https = parse_endpoints(params.endpoint)
    cacert, cert, key = _file(settings, "cacert"), _file(settings, "cert"), _file(settings, "key")
    if (cert is None) != (key is None):
        raise ConfigError(f"cert and key (from {_WHERE}) go together: give both, or neither")
    protocol = settings.get("protocol") or ("https" if https or cacert else "http")
    if protocol == "https" and cacert is None:
        raise ConfigError(f"protocol https needs cacert=FILE (from {_WHERE}): the CA that "
                          "signed the etcd members' certificates")
    user, password = settings.get("user"), settings.get("password")
    if (user is None) != (password is None):
        raise ConfigError(f"user and password (from {_WHERE}) go together: give both, or "
                          "neither")
    return EtcdConfig(
        members=members, prefix=settings["key_prefix"],
        timeout=timeouts.read_timeout, lease_ttl=max(1, math.ceil(timeouts.dead_after)),
        cacert=cacert, cert=cert, key=key, tls=protocol == "https", user=user,
        password=password)


class EtcdRendezvousHandler(ElasticRendezvousHandler):
    """The core protocol on an etcd cluster."""

    def __init__(self, params: RendezvousParameters,
                 settings: Mapping[str, Any] | None = None) -> None:
        """``settings``: ETCD_SETTINGS, parsed (the factory's); parsed from ``params.config``
        when not given."""
        from pliant_etcd.store import EtcdRendezvousStore

        if settings is None:
            settings = _settings(params)
        timeouts = Timeouts.from_settings(settings)
        store = EtcdRendezvousStore(config_from(params, settings, timeouts))
        super().__init__("etcd", store, params, timeouts, token_file=settings.get("token_file"))


def create_handler(params: RendezvousParameters, settings: Mapping[str, Any] | None = None,
                   ) -> RendezvousHandler:
    return EtcdRendezvousHandler(params, settings)


def client_store(endpoint: str, settings: Mapping[str, Any], timeout: float,
                 ) -> RendezvousStore:
    """A client of the etcd members at ``endpoint``, for ``pliant status``: every call gives
    up after ``timeout`` seconds (instead of read_timeout), and it takes no lease."""
    from pliant_etcd.store import EtcdRendezvousStore

    params = RendezvousParameters("etcd", endpoint, "status", 1, 1)
    config = config_from(params, settings, replace(Timeouts.from_settings(settings),
                                                   read_timeout=timeout))
    return EtcdRendezvousStore(config)


@hookimpl
def pliant_rendezvous_backends() -> Sequence[RendezvousBackend]:
    return [
        RendezvousBackend(
            name="etcd",
            factory=create_handler,
            settings=ETCD_SETTINGS,
            client_store=client_store,
            description="Elastic rendezvous on an etcd cluster (v3 API); survives the loss of "
                        "any training node and, with 3+ members, of an etcd member.",
        ),
        RendezvousBackend(
            name="etcd-v2",
            factory=create_handler,
            settings=ETCD_SETTINGS,
            client_store=client_store,
            description="torchrun's name for its etcd backend, so its command lines run "
                        "unchanged: the same as etcd (pliant speaks etcd's v3 API).",
        ),
    ]
