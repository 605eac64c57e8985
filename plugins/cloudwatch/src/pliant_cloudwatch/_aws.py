"""boto3 clients, and which AWS failures may pass.

boto3 is imported here, inside functions, so that importing the plugin (``pliant
plugins``) stays instant: only a handler that is built pays for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pliant.errors import ConfigError

__all__ = ["describe", "is_transient", "make_client"]

_USER_AGENT = "pliant-cloudwatch/0.1.0"

#: Error codes that say "later", not "never" (botocore has retried them already).
_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "LimitExceededException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalFailure", "InternalServiceError", "InternalServiceFault", "RequestTimeout",
    "RequestTimeoutException", "PriorRequestNotComplete", "ProvisionedThroughputExceededException",
})


def make_client(service: str, settings: Mapping[str, Any], where: str) -> Any:
    """A boto3 client for ``service`` ("cloudwatch" or "logs") from the handler's settings.

    Region and credentials come from boto3's usual chain unless ``region`` is set; the
    endpoint from ``endpoint_url``, else ``AWS_ENDPOINT_URL_<SERVICE>`` or
    ``AWS_ENDPOINT_URL`` (read by botocore itself). Retries are botocore's "standard" mode;
    each attempt is bounded by ``timeout`` to connect and again to read.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, NoRegionError

    _quiet_botocore()
    config = Config(
        retries={"mode": "standard", "total_max_attempts": settings["max_attempts"]},
        connect_timeout=settings["timeout"],
        read_timeout=settings["timeout"],
        user_agent_extra=_USER_AGENT,
    )
    try:
        session = boto3.session.Session(region_name=settings["region"])
        client = session.client(service, config=config, endpoint_url=settings["endpoint_url"])
        credentials = session.get_credentials()
    except NoRegionError:
        raise ConfigError(
            f"{where}: no AWS region; set one with the handler's 'region' setting, AWS_REGION "
            "or AWS_DEFAULT_REGION, or 'region' in ~/.aws/config") from None
    except (BotoCoreError, ValueError) as exc:  # a malformed profile, endpoint or region
        raise ConfigError(f"{where}: cannot make an AWS {service} client: {exc}") from None
    if credentials is None:
        raise ConfigError(
            f"{where}: no AWS credentials found; boto3 looks in AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, web identity, ECS and EC2 "
            "instance roles")
    return client


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
