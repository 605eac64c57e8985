"""One CloudWatch emulator (moto's server on a free loopback port) for the session's tests,
and an environment that points boto3 at it with dummy credentials."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pliant_cloudwatch.testing import CloudWatchEmulator, dummy_credentials


@pytest.fixture(scope="session")
def aws() -> Iterator[CloudWatchEmulator]:
    with CloudWatchEmulator() as emulator:
        yield emulator


@pytest.fixture
def aws_env(aws: CloudWatchEmulator, monkeypatch: pytest.MonkeyPatch) -> CloudWatchEmulator:
    """boto3 in this process talks to the emulator, whatever the machine's AWS setup."""
    _isolate(monkeypatch)
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    return aws


@pytest.fixture
def no_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and a region, and no endpoint from the environment."""
    _isolate(monkeypatch)
    for name, value in dummy_credentials().items():
        monkeypatch.setenv(name, value)


def _isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the machine's AWS environment, config and credentials files."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
