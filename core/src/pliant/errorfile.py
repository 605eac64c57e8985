"""Worker error files: how a worker's exception reaches the agent's report.

The format is torch's, so ``torch.distributed.elastic.multiprocessing.errors.record``
and :func:`pliant.record` are interchangeable: both write JSON to the path in
``TORCHELASTIC_ERROR_FILE``, and the agent reads either.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ERROR_FILE_ENV", "error_timestamp", "read_error_file", "record", "write_error_file"]

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"

F = TypeVar("F", bound=Callable[..., Any])


def write_error_file(exc: BaseException, tb: Any = None, path: str | None = None) -> None:
    """Write ``exc`` to the error file, unless one was written already (first error wins)."""
    path = path or os.environ.get(ERROR_FILE_ENV)
    if not path or os.path.exists(path):
        return
    stack = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
    _write(path, {
        "message": {
            "message": f"{type(exc).__name__}: {exc}",
            "extraInfo": {"py_callstack": stack, "timestamp": str(int(time.time()))},
        }
    })


def _write(path: str, data: dict[str, Any]) -> None:
    try:
        # 0600: a traceback can hold what only the user should read.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass  # reporting must never turn one error into two


def read_error_file(path: str) -> dict[str, Any] | None:
    """The parsed error file, or None when the worker wrote none (or garbage)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def error_timestamp(data: dict[str, Any] | None) -> float | None:
    """When the worker wrote its error, as torch reads it: ``message.extraInfo.timestamp``,
    or the top-level ``timestamp`` when ``message`` is a string; None when there is none."""
    if not data:
        return None
    message = data.get("message")
    if isinstance(message, dict):
        extra = message.get("extraInfo")
        value = extra.get("timestamp") if isinstance(extra, dict) else None
    else:
        value = data.get("timestamp")
    try:
        return float(int(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def record(fn: F) -> F:
    """Decorate a worker's entrypoint so its exception reaches the agent's report.

    Like torch's ``@record``: the exception is written to
    ``TORCHELASTIC_ERROR_FILE`` and raised again. A ``ChildFailedError`` (raised by code
    that runs an agent) is recorded as torch records it: the root-cause worker's error
    file is copied there, with the worker's exit code as ``errorCode``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                write_error_file(exc)
            raise
        except BaseException as exc:
            if not _copy_root_cause(exc):
                write_error_file(exc)
            raise

    return wrapper  # type: ignore[return-value]


def _copy_root_cause(exc: BaseException) -> bool:
    """As torch's ``record`` given a ``ChildFailedError`` (pliant's or torch's: anything with
    ``get_first_failure()``): the root-cause worker's error file becomes this process's, its
    exit code set as ``errorCode``, replacing one already there. False when that worker
    wrote none: the exception itself is then recorded."""
    first_failure = getattr(exc, "get_first_failure", None)
    if not callable(first_failure):
        return False
    try:
        _, failure = first_failure()
    except Exception:  # reporting must never turn one error into two
        return False
    data = read_error_file(str(getattr(failure, "error_file", "") or ""))
    if data is None:
        return False
    exitcode = getattr(failure, "exitcode", 0)
    if exitcode and isinstance(data.get("message"), dict):
        data["message"]["errorCode"] = exitcode
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        with contextlib.suppress(OSError):
            os.remove(path)
        _write(path, data)
    return True
