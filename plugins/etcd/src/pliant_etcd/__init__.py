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
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pliant.errors import ConfigError
from pliant.hookspecs import hookimpl
from pliant.registrations import RendezvousBackend
from pliant.rendezvous import RendezvousHandler, RendezvousParameters
from pliant.rendezvous.elastic import ELASTIC_SETTINGS, ElasticRendezvousHandler, Timeouts
from pliant.settings import Setting, parse_choice, parse_float, parse_str

if TYPE_CHECKING:
    from pliant_etcd.store import EtcdConfig

__all__ = ["DEFAULT_PORT", "ETCD_SETTINGS", "EtcdRendezvousHandler", "config_from",
           "create_handler", "parse_endpoints"]

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
    members, https = [], False
    for item in endpoint.split(","):
        text = item.strip()
        if not text:
            continue
        scheme, sep, rest = text.partition("://")
        if sep:
            if scheme not in ("http", "https"):
                raise ConfigError(f"--rdzv-endpoint {endpoint!r}: {scheme!r} is not http or "
                                  "https")
            https, text = https or scheme == "https", rest.rstrip("/")
        host, port_text = text, ""
        if text.startswith("["):
            host, _, after = text[1:].partition("]")
            port_text = after.removeprefix(":")
        elif text.count(":") == 1:
            host, port_text = text.split(":")
            if not port_text:
                raise ConfigError(f"--rdzv-endpoint {endpoint!r}: {item.strip()!r} has a ':' "
                                  f"but no port; give HOST:PORT, or HOST for port {DEFAULT_PORT}")
        if not host:
            raise ConfigError(f"--rdzv-endpoint {endpoint!r}: {item.strip()!r} has no host")
        if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
            raise ConfigError(f"--rdzv-endpoint {endpoint!r}: port {port_text!r} is not a "
                              "number from 1 to 65535")
        members.append((host, int(port_text) if port_text else DEFAULT_PORT))
    if not members:
        raise ConfigError("the etcd rendezvous needs --rdzv-endpoint HOST[:PORT][,HOST:PORT...] "
                          "(the etcd members' client addresses)")
    return tuple(members), https


def _file(params: RendezvousParameters, name: str) -> str | None:
    path = params.get(name)
    if path is None:
        return None
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise ConfigError(f"{name}={path} (from {_WHERE}): no such file; give the PEM file's "
                          "path")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{name}={path} (from {_WHERE}): not readable by this user")
    return path


def config_from(params: RendezvousParameters) -> EtcdConfig:
    """The store's configuration from the endpoint and the ``--rdzv-conf`` settings."""
    from pliant_etcd.store import EtcdConfig

    members, https = parse_endpoints(params.endpoint)
    cacert, cert, key = _file(params, "cacert"), _file(params, "cert"), _file(params, "key")
    if (cert is None) != (key is None):
        raise ConfigError(f"cert and key (from {_WHERE}) go together: give both, or neither")
    protocol = params.get("protocol") or ("https" if https or cacert else "http")
    if protocol == "https" and cacert is None:
        raise ConfigError(f"protocol https needs cacert=FILE (from {_WHERE}): the CA that "
                          "signed the etcd members' certificates")
    user, password = params.get("user"), params.get("password")
    if (user is None) != (password is None):
        raise ConfigError(f"user and password (from {_WHERE}) go together: give both, or "
                          "neither")
    timeouts = Timeouts.from_params(params)
    return EtcdConfig(
        members=members, prefix=params.get("key_prefix") or "/pliant/",
        timeout=timeouts.read_timeout, lease_ttl=max(1, math.ceil(timeouts.dead_after)),
        cacert=cacert, cert=cert, key=key, tls=protocol == "https", user=user,
        password=password)


class EtcdRendezvousHandler(ElasticRendezvousHandler):
    """The core protocol on an etcd cluster."""

    def __init__(self, params: RendezvousParameters) -> None:
        from pliant_etcd.store import EtcdRendezvousStore

        store = EtcdRendezvousStore(config_from(params))
        super().__init__("etcd", store, params)


def create_handler(params: RendezvousParameters) -> RendezvousHandler:
    return EtcdRendezvousHandler(params)


@hookimpl
def pliant_rendezvous_backends() -> Sequence[RendezvousBackend]:
    return [
        RendezvousBackend(
            name="etcd",
            factory=create_handler,
            settings=ETCD_SETTINGS,
            description="Elastic rendezvous on an etcd cluster (v3 API); survives the loss of "
                        "any training node and, with 3+ members, of an etcd member.",
        ),
        RendezvousBackend(
            name="etcd-v2",
            factory=create_handler,
            settings=ETCD_SETTINGS,
            description="torchrun's name for its etcd backend, so its command lines run "
                        "unchanged: the same as etcd (pliant speaks etcd's v3 API).",
        ),
    ]
