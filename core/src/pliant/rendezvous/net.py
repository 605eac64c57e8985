"""Addresses: splitting ``--rdzv-endpoint`` values, and picking a free port.

Low level on purpose: the core's rendezvous and every store plugin parse
endpoints and pick ports here, so ``[v6]:port``, ``scheme://`` and comma lists
mean the same thing everywhere.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from pliant.errors import ConfigError

__all__ = ["bindable_here", "first_host", "free_port", "members", "route_addr", "split_host_port",
           "split_scheme"]


def members(endpoint: str) -> list[str]:
    """The members of ``host[:port][,host[:port]...]``, stripped, empty ones left out."""
    return [item.strip() for item in endpoint.split(",") if item.strip()]


def split_scheme(member: str) -> tuple[str, str]:
    """``scheme://rest`` to ``(scheme, rest)``; ``("", member)`` without a scheme."""
    scheme, sep, rest = member.partition("://")
    return (scheme, rest.rstrip("/")) if sep else ("", member)


def split_host_port(member: str, default_port: int, endpoint: str | None = None,
                    ) -> tuple[str, int]:
    """``host[:port]`` to a host and a port; IPv6 goes in brackets (``[::1]:5000``), and a bare
    IPv6 address has no port. ``endpoint`` is the whole value the member came from, for
    messages: a ``ConfigError`` names it and says how to fix it."""
    whole = member.strip() if endpoint is None else endpoint
    where = f"--rdzv-endpoint {whole!r}" + ("" if member.strip() == whole.strip()
                                            else f": {member.strip()!r}")
    text = member.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text:  # "node1:" is usually an unset $PORT, not a wish for the default
            raise ConfigError(f"{where} has a ':' but no port; give HOST:PORT, or just HOST "
                              f"for port {default_port}")
    if not host:
        raise ConfigError(f"{where} has no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--rdzv-endpoint {whole!r}: port {port_text!r} is not a number "
                          "from 1 to 65535")
    return host, int(port_text)


def bindable_here(addresses: Iterable[str]) -> bool:
    """Whether one of the IP ``addresses`` belongs to this machine: it can be bound here. How
    a node tells that an endpoint names itself (it then hosts the store), whatever the name."""
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((addr, 0))
                return True
        except OSError:
            continue
    return False


def first_host(endpoint: str) -> str:
    """The host of an endpoint's first member, "" when there is none; never raises (it only
    shows the route out, see the elastic rendezvous)."""
    items = members(endpoint)
    if not items:
        return ""
    text = split_scheme(items[0])[1]
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.split(":")[0] if text.count(":") == 1 else text


def free_port(addr: str) -> int:
    """A port nobody listens on right now at ``addr``, chosen by the kernel. For a host name
    rather than an address, any local port."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((addr, 0))
            return int(sock.getsockname()[1])
    except OSError:  # a host name, not an address: any local port will do
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", 0))
            return int(sock.getsockname()[1])


def route_addr(host: str) -> str:
    """The local address on the route to ``host``: the one other nodes can reach."""
    try:
        info = socket.getaddrinfo(host or "127.0.0.1", 9, type=socket.SOCK_DGRAM)[0]
        with socket.socket(info[0], socket.SOCK_DGRAM) as sock:
            sock.connect(info[4])
            return str(sock.getsockname()[0])
    except OSError:
        return socket.gethostname()
