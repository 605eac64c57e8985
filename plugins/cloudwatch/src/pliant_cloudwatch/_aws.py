"""boto3 clients, and which AWS failures may pass.

boto3 is imported here, inside functions, so that importing the plugin (``pliant
plugins``) stays instant: only a handler that is built pays for it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

from pliant.plugin import ConfigError

__all__ = ["LazyClient", "client_of", "describe", "is_transient", "make_client"]

_USER_AGENT = "pliant-cloudwatch/0.1.0"

#: Error codes that say "later", not "never" (botocore has retried them already).
_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "LimitExceededException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalFailure", "InternalServiceError", "InternalServiceFault", "RequestTimeout",
    "RequestTimeoutException", "PriorRequestNotComplete", "ProvisionedThroughputExceededException",
})


class LazyClient:
    """A boto3 client made on first use, by whichever thread needs it first: the handler's
    sending thread, right after it starts, so that the caller (the agent, starting its
    workers) does not wait for botocore to load the service's model."""

    def __init__(self, session: Any, service: str, settings: Mapping[str, Any],
                 where: str) -> None:
        self._session = session
        self._service = service
        self._settings = dict(settings)
        self._where = where
        self._client: Any = None
        self._failed = False
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The client; raises what botocore raised if it cannot be made (tried again on
        the next call)."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._session.client(
                        self._service, config=_config(self._settings),
                        endpoint_url=self._settings["endpoint_url"])
                except Exception as exc:
                    if not self._failed:  # once, where the user sees it
                        self._failed = True
                        print(f"pliant: {self._where}: cannot make an AWS {self._service} "
                              f"client: {exc}; its values are dropped", file=sys.stderr)
                    raise
            return self._client


def make_client(service: str, settings: Mapping[str, Any], where: str) -> LazyClient:
    """A boto3 client for ``service`` ("cloudwatch" or "logs") from the handler's settings,
    made on first use; what it needs is checked now.

    Region and credentials come from boto3's usual chain unless ``region`` is set; the
    endpoint from ``endpoint_url``, else ``AWS_ENDPOINT_URL_<SERVICE>`` or
    ``AWS_ENDPOINT_URL`` (read by botocore itself). Retries are botocore's "standard" mode;
    each attempt is bounded by ``timeout`` to connect and again to read. Raises
    :class:`~pliant.errors.ConfigError` without a region or credentials.
    """
    import boto3
    from botocore.exceptions import BotoCoreError

    _quiet_botocore()
    try:
        session = boto3.session.Session(region_name=settings["region"])
        credentials = session.get_credentials()
        region = session.region_name
    except (BotoCoreError, ValueError) as exc:  # a malformed profile
        raise ConfigError(f"{where}: cannot make an AWS {service} client: {exc}") from None
    if not region:
        raise ConfigError(
            f"{where}: no AWS region; set one with the handler's 'region' setting, AWS_REGION "
            "or AWS_DEFAULT_REGION, or 'region' in ~/.aws/config")
    if credentials is None:
        raise ConfigError(
            f"{where}: no AWS credentials found; boto3 looks in AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, web identity, ECS and EC2 "
            "instance roles")
    return LazyClient(session, service, settings, where)


def _config(settings: Mapping[str, Any]) -> Any:
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "total_max_attempts": settings["max_attempts"]},
        connect_timeout=settings["timeout"],
        read_timeout=settings["timeout"],
        user_agent_extra=_USER_AGENT,
    )


def _quiet_botocore() -> None:
    """Keep botocore's INFO lines ("Found credentials in environment variables.") out of
    pliant's output, and its DEBUG lines (every request) out of ``--debug``, unless the
    user set botocore's level."""
    botocore_log = logging.getLogger("botocore")
    if botocore_log.level == logging.NOTSET:
        botocore_log.setLevel(logging.WARNING)


def is_transient(exc: BaseException) -> bool:
    """Whether a request that raised ``exc`` (after botocore's retries) may succeed later."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        CredentialRetrievalError,
        HTTPClientError,
    )

    if isinstance(exc, ConnectionError | HTTPClientError):  # refused, reset, timed out
        return True
    if isinstance(exc, CredentialRetrievalError):  # an instance role's endpoint hiccuped
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return bool(error.get("Code") in _TRANSIENT_CODES or status >= 500 or status == 429)
    return False


def describe(exc: BaseException) -> str:
    """A one-line account of a failed request, for the debug log."""
    return f"{type(exc).__name__}: {exc}"


def client_of(client: Any) -> Any:
    """The boto3 client a handler was given: ``client`` itself, or a :class:`LazyClient`'s."""
    return client.get() if isinstance(client, LazyClient) else client
