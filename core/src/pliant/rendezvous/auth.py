"""The job's secret: every value pliant's rendezvous writes, signed and checked.

Anyone who can reach a store without access control (torch's TCPStore) can read
and write its keys. With a token (``--rdzv-conf token_file=PATH``, or
``PLIANT_RDZV_TOKEN_FILE``), each value a node writes is sealed with an
HMAC-SHA256 over its key and its bytes (:meth:`Seal.wrap`), and every value a
node acts on is opened, and refused unless it verifies (:meth:`Seal.unwrap`).
The key is part of what is signed, so a signed value cannot be moved to another
key, round or run. A stranger can then still read, delete and flood (add to a
counter: delay a round, close a forming one), never make a node take a record
it did not get from a node with the token: not a join, an outcome, an address
or a heartbeat.

A sealed value reads ``pliant-hmac1:<hex digest>:<payload>``. Without a token
values are written as before, and a sealed value is refused with a message
that says so.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from pliant.errors import ConfigError
from pliant.rendezvous.api import RendezvousStateError

__all__ = ["PREFIX", "ForgedValueError", "Seal", "read_token"]

log = logging.getLogger("pliant.rendezvous")

#: How a sealed value starts; the version of the scheme is part of it.
PREFIX = b"pliant-hmac1:"
#: The environment variable naming the token file when ``--rdzv-conf`` does not.
TOKEN_ENV = "PLIANT_RDZV_TOKEN_FILE"


class ForgedValueError(RendezvousStateError):
    """A value in the store does not carry this job's signature."""


def read_token(path: str, source: str) -> bytes:
    """The secret in the file at ``path`` (surrounding whitespace removed); ``source`` says
    where the path came from, for the error."""
    file = Path(path).expanduser()
    try:
        token = file.read_bytes().strip()
        mode = file.stat().st_mode & 0o077
    except OSError as exc:
        raise ConfigError(f"cannot read the rendezvous token file {path!r} (from {source}): "
                          f"{exc.strerror}; give a readable file holding the job's secret"
                          ) from None
    if not token:
        raise ConfigError(f"the rendezvous token file {path!r} (from {source}) is empty; put "
                          "the job's secret in it (for example: "
                          "python -c 'import secrets; print(secrets.token_hex(32))' > FILE)")
    if mode:
        log.warning("the rendezvous token file %s (from %s) can be read by other users "
                    "(mode %o); chmod 600 it", path, source, file.stat().st_mode & 0o777)
    return token


def token_from(token_file: str | None) -> bytes | None:
    """The token named by the ``token_file`` setting, else by :data:`TOKEN_ENV`; None."""
    if token_file:
        return read_token(token_file, "--rdzv-conf token_file")
    env = os.environ.get(TOKEN_ENV)
    if env:
        return read_token(env, TOKEN_ENV)
    return None


class Seal:
    """Signs and checks the values of one run. Without a token it changes nothing."""

    def __init__(self, token: bytes | None, endpoint: str, run_id: str) -> None:
        self._token = token
        self._endpoint, self._run_id = endpoint, run_id
        #: Values refused because they did not verify (logged as they come).
        self.rejected = 0
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        # Heartbeats with a token are signed writes of a value that changes every beat.
        self._beats = itertools.count(1)
        self._left: set[str] = set()

    @property
    def signs(self) -> bool:
        return self._token is not None

    def _mac(self, key: str, payload: bytes) -> bytes:
        assert self._token is not None
        return hmac.new(self._token, key.encode() + b"\0" + payload,
                        hashlib.sha256).hexdigest().encode()

    def wrap(self, key: str, payload: bytes) -> bytes:
        if self._token is None:
            return payload
        return PREFIX + self._mac(key, payload) + b":" + payload

    def unwrap(self, key: str, value: bytes) -> bytes:
        """The payload of ``value`` read at ``key``; :class:`ForgedValueError` unless it is
        signed with this job's token (or, without a token, unless it is unsigned)."""
        signed = value.startswith(PREFIX)
        if self._token is None:
            if signed:
                raise ForgedValueError(
                    f"{key} at {self._endpoint} is signed with a rendezvous token, and this node "
                    f"has none: give every node of run {self._run_id!r} the same token_file "
                    f"(--rdzv-conf token_file=PATH or {TOKEN_ENV})")
            return value
        mac, sep, payload = value[len(PREFIX):].partition(b":")
        if not signed or not sep or not hmac.compare_digest(mac, self._mac(key, payload)):
            raise ForgedValueError(
                f"{key} at {self._endpoint} is not signed with this node's rendezvous token: "
                f"it was written by a node of run {self._run_id!r} with another token_file, or "
                "by someone else who can reach the store")
        return payload

    def reject(self, error: ForgedValueError) -> None:
        """Log and count a value that did not verify, which the caller then ignores."""
        with self._count_lock:
            self.rejected += 1
            count = self.rejected
        log.warning("ignored a rendezvous value (%d so far): %s", count, error)

    def signed_beat(self, key: str, write: Callable[[bytes], None], left: bool = False) -> None:
        """Write this node's heartbeat at ``key`` with ``write``: a new signed count, or
        (``left``, and for good once said) the signed word ``left``. One write at a time, so
        that a beat from another thread cannot land after the node said it left."""
        with self._lock:
            if left:
                self._left.add(key)
            payload = b"left" if key in self._left else str(next(self._beats)).encode()
            write(self.wrap(key, payload))
